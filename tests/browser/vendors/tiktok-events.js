// A TikTok Pixel-like bootstrap (events.js), written for tagproxy's tests.
// Like the real per-pixel bootstrap it carries server-made values (country,
// a visitor ID), reads its pixel from its own src, loads the SDK's main
// file from the same host, and the SDK posts JSON events with sendBeacon
// to an endpoint glued from pieces. It reads and sets the _ttp cookie.
(function () {
  "use strict";
  var boot = { country: "DE", ttp: "srv-made-ttp-1" }; // per visitor upstream
  var me = document.currentScript;
  var pixel = new URL(me.src).searchParams.get("sdkid");
  var host = "analytics." + "tiktok.com";
  var m = document.cookie.match(/(?:^|; )_ttp=([^;]*)/);
  var ttp = m ? m[1] : boot.ttp;
  if (!m) document.cookie = "_ttp=" + ttp + "; domain=shop.test; path=/; secure";
  var ttq = window.ttq;
  ttq._sdk = {
    pixel: pixel,
    send: function (event, properties) {
      var body = JSON.stringify({
        event: event,
        context: { pixel: { code: pixel }, page: { url: location.href },
          user: { ttp: ttp }, country: boot.country },
        properties: properties || {},
      });
      navigator.sendBeacon("https://" + host + "/api/v2/pixel",
        new Blob([body], { type: "application/json" }));
    },
  };
  var s = document.createElement("script");
  s.src = "https://analytics.tiktok.com/i18n/pixel/static/main.test1.js";
  document.head.appendChild(s);
})();
