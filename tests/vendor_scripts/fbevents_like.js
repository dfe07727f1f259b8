/* An fbevents.js stand-in written for tagproxy's tests: a loader that pulls
   per-pixel config and a plugin from its CDN base, then sends to /tr/. */
(function (w, d) {
  "use strict";
  var CDN = "https://connect.facebook.net";
  var VERSION = "2.9.999";
  var ENDPOINT = "https://www.facebook.com/tr/";
  var FREE_MAIL = ["gmail.com", "facebook.com", "hotmail.com"];
  function load(src) {
    var s = d.createElement("script");
    s.async = true;
    s.src = src;
    d.head.appendChild(s);
  }
  w.__fbLike = {
    init: function (pixel) {
      load(CDN + "/signals/config/" + pixel + "?v=" + VERSION + "&r=stable");
      load(CDN + "/signals/plugins/identity.js?v=" + VERSION);
    },
    track: function (pixel, ev) {
      new Image().src = ENDPOINT + "?id=" + pixel + "&ev=" + ev + "&v=" + VERSION;
    },
    freeMail: FREE_MAIL
  };
})(window, document);
