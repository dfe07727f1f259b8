// A gtag.js-like Google tag, written for tagproxy's tests (no Google code).
// What it reproduces from the real tag's documented behaviour:
// - reads its measurement ID from its own src and commands from dataLayer;
// - reads and creates the first-party _ga / _ga_<id> cookies, reads _gcl_au;
// - builds the GA4 collection host at run time from a server-chosen region
//   ("https://" + region + ".google-analytics.com"), so only the runtime
//   shim can map it;
// - sends page_view with sendBeacon (query, empty body), batches events in
//   a fetch POST (keepalive, credentials, no-cors), uses Image pixels for
//   Google signals and audiences;
// - for an AW- tag: remarketing on a host glued from pieces, the conversion
//   on www.googleadservices.com, the user list and ccm on www.google.com.
(function () {
  "use strict";
  var me = document.currentScript;
  var tagId = new URL(me.src).searchParams.get("id");
  var region = "region1"; // the real bootstrap embeds the visitor's region
  var collect = "https://" + region + ".google-analytics.com/g/collect";
  var signals = "https://stats.g.doubleclick.net/g/collect";
  var audiences = "https://analytics.google.com/g/collect";
  var conversion = "https://www.googleadservices.com/pagead/conversion/";
  var remarketing = "https://" + "googleads." + "g.doubleclick.net" +
    "/pagead/viewthroughconversion/";
  var userList = "https://www.google.com/pagead/1p-user-list/";
  var ccm = "https://www.google.com/ccm/collect";
  var diagnostics = "https://www.googletagmanager.com/td";

  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function setCookie(name, value) {
    document.cookie = name + "=" + value + "; domain=shop.test; path=/; " +
      "max-age=63072000; secure; samesite=lax";
  }
  var ga = cookie("_ga");
  if (!ga) {
    ga = "GA1.1." + Math.floor(Math.random() * 1e9) + "." + Math.floor(Date.now() / 1000);
    setCookie("_ga", ga);
  }
  var cid = ga.split(".").slice(2).join(".");
  var sessionCookie = "_ga_" + String(tagId).replace(/^G-/, "");
  var sid = (cookie(sessionCookie) || "GS1.1.1700000000.1").split(".")[2];
  var auid = (cookie("_gcl_au") || "").split(".").slice(2).join(".");

  function params(extra) {
    var p = new URLSearchParams({ v: "2", tid: tagId, cid: cid, sid: sid });
    p.set("dl", location.href);
    p.set("dt", document.title);
    Object.keys(extra).forEach(function (k) { p.set(k, extra[k]); });
    return p.toString();
  }

  var config = {};
  var pending = [];
  function command(args) {
    var name = args[0], target = args[1], options = args[2] || {};
    if (name === "config" && /^G-/.test(target)) {
      config.ga = target;
      navigator.sendBeacon(collect + "?" + params({ en: "page_view", _s: "1" }));
      new Image().src = signals + "?" + params({ en: "page_view", aip: "1" });
      new Image().src = audiences + "?" + params({ en: "page_view", _a: "1" });
    } else if (name === "config" && /^AW-/.test(target)) {
      var aw = target.slice(3);
      config.aw = aw;
      var q = "?random=" + Date.now() + "&auid=" + auid + "&url=" +
        encodeURIComponent(location.href);
      var script = document.createElement("script");
      script.src = remarketing + aw + "/" + q;
      document.head.appendChild(script);
      new Image().src = userList + aw + "/" + q;
      navigator.sendBeacon(ccm + "?" + params({ en: "page_view", tid: target }));
    } else if (name === "event" && options.send_to && /^AW-/.test(options.send_to)) {
      var parts = options.send_to.slice(3).split("/");
      fetch(conversion + parts[0] + "/?label=" + parts[1] + "&value=" +
        options.value + "&currency_code=" + options.currency + "&auid=" + auid,
        { credentials: "include", mode: "no-cors", keepalive: true });
    } else if (name === "event") {
      pending.push("en=" + encodeURIComponent(target) + "&epn.value=" +
        (options.value || 0));
    }
  }

  var dataLayer = (window.dataLayer = window.dataLayer || []);
  dataLayer.forEach(command);
  dataLayer.push = function (args) { command(args); flush(); return 0; };

  function flush() {
    if (!pending.length) return;
    fetch(collect + "?" + params({}), {
      method: "POST", body: pending.join("\n"), keepalive: true,
      credentials: "include", mode: "no-cors",
    });
    pending = [];
  }
  flush();
  navigator.sendBeacon(diagnostics + "?id=" + tagId + "&v=3");
})();
