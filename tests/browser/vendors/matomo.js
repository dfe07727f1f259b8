// Matomo-like tracker (matomo.js), written for tagproxy's tests (no vendor
// code). Like the real one:
// - it runs the commands pushed on window._paq (setTrackerUrl, setSiteId,
//   trackPageView, trackEvent, enableLinkTracking), configuration first;
// - a single request is sent with sendBeacon, form-encoded in the body;
//   several queued at once go as one bulk XHR POST of JSON
//   {"requests": ["?idsite=..", ...]};
// - the visitor ID lives in the first-party _pk_id.<site>.<hash> cookie and
//   the session in _pk_ses.<site>.<hash>.
(function (w, d) {
  var trackerUrl = null;
  var siteId = null;
  var pending = [];

  function cookieHash() {
    var h = 0;
    var host = location.hostname;
    for (var i = 0; i < host.length; i++) h = (h * 31 + host.charCodeAt(i)) >>> 0;
    return (h & 0xffff).toString(16);
  }
  function visitor() {
    var name = "_pk_id." + siteId + "." + cookieHash();
    var m = d.cookie.match(new RegExp("(?:^|; )" + name.replace(/\./g, "\\.") + "=([^;]*)"));
    var id = m ? decodeURIComponent(m[1]).split(".")[0] : Math.random().toString(16).slice(2, 18);
    d.cookie = name + "=" + id + "." + Math.floor(Date.now() / 1000) + "; path=/; max-age=33696000";
    d.cookie = "_pk_ses." + siteId + "." + cookieHash() + "=1; path=/; max-age=1800";
    return id;
  }

  function request(params) {
    var all = { idsite: siteId, rec: 1, r: Math.random().toString().slice(2, 8), _id: visitor(),
      url: location.href, urlref: d.referrer, res: screen.width + "x" + screen.height };
    Object.keys(params).forEach(function (k) { all[k] = params[k]; });
    return Object.keys(all)
      .map(function (k) { return k + "=" + encodeURIComponent(all[k]); })
      .join("&");
  }

  function flush() {
    var batch = pending;
    pending = [];
    if (batch.length === 1) {
      var blob = new Blob([batch[0]], { type: "application/x-www-form-urlencoded; charset=UTF-8" });
      navigator.sendBeacon(trackerUrl, blob);
    } else if (batch.length > 1) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", trackerUrl, true);
      xhr.withCredentials = true;
      xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8");
      xhr.send(JSON.stringify({ requests: batch.map(function (r) { return "?" + r; }) }));
    }
  }

  var commands = {
    setTrackerUrl: function (url) { trackerUrl = url; },
    setSiteId: function (id) { siteId = String(id); },
    trackPageView: function (title) {
      pending.push(request({ action_name: title || d.title }));
    },
    trackEvent: function (category, action, name) {
      pending.push(request({ e_c: category, e_a: action, e_n: name || "" }));
    },
    enableLinkTracking: function () {},
  };

  function run(args) {
    var fn = commands[args[0]];
    if (fn) fn.apply(null, args.slice(1));
  }

  // Like Matomo, configuration commands queued by the snippet run first,
  // wherever they stand, then the rest in order; the first page view goes
  // alone, what follows in one bulk request.
  var FIRST = { setTrackerUrl: 1, setSiteId: 1 };
  var queue = w._paq || [];
  queue.filter(function (args) { return FIRST[args[0]]; }).forEach(run);
  var first = true;
  queue.forEach(function (args) {
    if (FIRST[args[0]]) return;
    run(args);
    if (first && args[0] === "trackPageView") {
      flush();
      first = false;
    }
  });
  flush();
  w._paq = { push: function (args) { run(args); setTimeout(flush, 0); } };
})(window, document);
