// Pinterest-like tag library (s.pinimg.com/ct/lib/main.<hash>.js), written
// for tagproxy's tests (no vendor code). Like the real one:
// - it runs the calls queued on window.pintrk (load, page, track);
// - events are image GETs to ct.pinterest.com/v3/ with JSON in parameters,
//   and the enhanced-match call is a fetch to /user/;
// - the first-party _pin_unauth and _epik cookies go in the parameters;
// - messages from Pinterest's own pages are accepted only from origins that
//   match a pattern (a regex literal, which rewriting must leave alone).
(function (w, d) {
  var BASE = "https://ct.pinterest.com";
  var PINTEREST_ORIGIN = /^https:\/\/([a-z0-9-]+\.)?pinterest\.com$/;
  var tid = null;
  var email = null;

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  var unauth = cookie("_pin_unauth");
  if (!unauth) {
    unauth = btoa(String(Math.random()));
    d.cookie = "_pin_unauth=" + unauth + "; path=/; max-age=31536000";
  }

  function params(event, extra) {
    var ad = { loc: location.href, ref: d.referrer, if: false, sh: screen.height, sw: screen.width };
    var epik = cookie("_epik");
    if (epik) ad.epik = epik;
    var q = {
      tid: tid,
      pd: JSON.stringify({ em: email, pin_unauth: unauth }),
      event: event,
      ad: JSON.stringify(ad),
      cb: Date.now(),
    };
    if (extra) q.ed = JSON.stringify(extra);
    return Object.keys(q)
      .map(function (k) { return k + "=" + encodeURIComponent(q[k]); })
      .join("&");
  }

  function run(args) {
    var action = args[0];
    if (action === "load") {
      tid = args[1];
      email = (args[2] && args[2].em) || null;
      new Image().src = BASE + "/v3/?" + params("init");
      fetch(BASE + "/user/?" + params("init"), { credentials: "include", mode: "no-cors" });
    } else if (action === "page") {
      new Image().src = BASE + "/v3/?" + params("pagevisit");
    } else if (action === "track") {
      new Image().src = BASE + "/v3/?" + params(args[1], args[2]);
    }
  }

  w.addEventListener("message", function (event) {
    if (!PINTEREST_ORIGIN.test(event.origin)) return;
    w.__pintrkVerified = true;
  });

  var queue = (w.pintrk && w.pintrk.queue) || [];
  w.pintrk = function () { run(Array.prototype.slice.call(arguments)); };
  w.pintrk.version = "3.0";
  queue.forEach(run);
})(window, document);
