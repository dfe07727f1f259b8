// Segment-like analytics.js (cdn.segment.com/analytics.js/v1/<key>/
// analytics.min.js), written for tagproxy's tests (no vendor code). Like
// analytics-next:
// - it finds its CDN base in its own script's src (everything before
//   "/analytics.js/v1/") and loads bundles and the source's settings JSON
//   from there;
// - the settings name the API host without a scheme ("apiHost":
//   "api.segment.io/v1"), glued to the protocol they name;
// - the visitor's anonymous ID lives in the ajs_anonymous_id cookie and
//   travels only in the JSON body;
// - page() goes out by sendBeacon, track() by fetch keepalive, both as
//   text/plain JSON, and a telemetry series to the metrics host.
(function (w, d) {
  "use strict";
  var analytics = w.analytics;
  var key = analytics._writeKey;
  var cdn = null;
  Array.prototype.forEach.call(d.querySelectorAll("script[src]"), function (s) {
    var found = /^(https:\/\/.*)\/analytics\.js\/v1\//.exec(s.getAttribute("src"));
    if (found) cdn = found[1];
  });

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  var anonymousId = cookie("ajs_anonymous_id") || "anon-" + Date.now().toString(36);
  d.cookie = "ajs_anonymous_id=" + anonymousId + "; path=/; max-age=31536000";

  function load(src) {
    return new Promise(function (resolve, reject) {
      var s = d.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = reject;
      d.head.appendChild(s);
    });
  }

  var settings = fetch(cdn + "/v1/projects/" + key + "/settings").then(function (r) {
    return r.json();
  });
  Promise.all([settings, load(cdn + "/analytics-next/bundles/ajs-destination.bundle.3c1f.js")])
    .then(function (loaded) {
      var io = loaded[0].integrations["Segment.io"];
      var api = io.protocol + "://" + io.apiHost;
      var metrics = "https://" + loaded[0].metrics.host;
      var sent = 0;

      function message(type, fields) {
        var body = {
          type: type,
          anonymousId: anonymousId,
          messageId: w.__ajsBundle.messageId(),
          writeKey: key,
          context: { page: { url: location.href, title: d.title },
            library: { name: "analytics.js", version: "next-1.70.0" } },
        };
        Object.keys(fields).forEach(function (k) { body[k] = fields[k]; });
        return JSON.stringify(body);
      }

      analytics.forEach(function (call) {
        if (call[0] === "page") {
          navigator.sendBeacon(api + "/p", message("page", { properties: {} }));
        } else if (call[0] === "track") {
          fetch(api + "/t", {
            method: "POST",
            keepalive: true,
            headers: { "Content-Type": "text/plain" },
            body: message("track", { event: call[1], properties: call[2] || {} }),
          });
        }
        sent++;
      });
      fetch(metrics + "/m", {
        method: "POST",
        keepalive: true,
        headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({ series: [{ type: "Counter", metric: "analytics_js.invoke",
          value: sent, tags: { library: "analytics.js" } }] }),
      });
    });
})(window, document);
