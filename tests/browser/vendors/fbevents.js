// A Meta Pixel-like loader (fbevents.js), written for tagproxy's tests.
// Reproduces, without Meta code: a tier URL validated against a pattern on
// www.<tier>.facebook.com/tr, a CDN base that script URLs must start with
// before the per-pixel config is loaded, the _fbp / _fbc first-party
// cookies sent as parameters, an Image GET per event, and a hidden form POST
// into an iframe for long payloads.
(function () {
  "use strict";
  var CDN = "https://connect.facebook.net";
  var TIER = "https://www.facebook.com/tr/";
  if (!/^https:\/\/www\.([A-Za-z0-9.]+\.)?facebook\.com\/tr\/?$/.test(TIER)) {
    throw new Error("fbevents: bad tier URL " + TIER);
  }
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? m[1] : null;
  }
  var fbp = cookie("_fbp");
  if (!fbp) {
    fbp = "fb.1." + Date.now() + "." + Math.floor(Math.random() * 1e9);
    document.cookie = "_fbp=" + fbp + "; domain=shop.test; path=/; secure; max-age=7776000";
  }
  var clickId = new URLSearchParams(location.search).get("fbclid");
  var fbc = cookie("_fbc") || (clickId ? "fb.1." + Date.now() + "." + clickId : "");

  function loadScript(url) {
    if (url.indexOf(CDN + "/") !== 0) throw new Error("fbevents: foreign " + url);
    var s = document.createElement("script");
    s.async = true;
    s.src = url;
    document.head.appendChild(s);
  }

  function send(pixel, event, data) {
    var p = new URLSearchParams({ id: pixel, ev: event, dl: location.href,
      rl: document.referrer, fbp: fbp, ts: String(Date.now()) });
    if (fbc) p.set("fbc", fbc);
    Object.keys(data || {}).forEach(function (k) { p.set("cd[" + k + "]", data[k]); });
    var query = p.toString();
    if (query.length < 2000) {
      new Image().src = TIER + "?" + query;
      return;
    }
    var name = "fb" + Math.random().toString(36).slice(2);
    var frame = document.createElement("iframe");
    frame.name = name;
    frame.style.display = "none";
    document.body.appendChild(frame);
    var form = document.createElement("form");
    form.method = "POST";
    form.target = name;
    form.action = TIER;
    form.style.display = "none";
    p.forEach(function (value, key) {
      var input = document.createElement("input");
      input.name = key;
      input.value = value;
      form.appendChild(input);
    });
    document.body.appendChild(form);
    form.submit();
  }

  var fbq = window.fbq;
  var queue = (fbq && fbq.queue) || [];
  var pixels = [];
  function call(args) {
    if (args[0] === "init") {
      pixels.push(args[1]);
      loadScript(CDN + "/signals/config/" + args[1] + "?v=2.9.180&r=stable");
    } else if (args[0] === "track") {
      pixels.forEach(function (id) { send(id, args[1], args[2]); });
    }
  }
  fbq.callMethod = function () { call(Array.prototype.slice.call(arguments)); };
  queue.forEach(function (args) { call(Array.prototype.slice.call(args)); });
  fbq.queue = [];
})();
