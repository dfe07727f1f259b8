// PostHog-like library (<region>-assets.i.posthog.com/static/array.js),
// written for tagproxy's tests (no vendor code). Like posthog-js:
// - it takes its project token and api_host from the snippet's queue;
// - on PostHog's own API hosts it builds the assets host at run time,
//   region + "-assets." + base; on any other api_host (a reverse proxy)
//   assets come from api_host itself;
// - it loads the project's remote config (array/<token>/config.js), asks
//   /flags/ for feature flags, and sends events as gzip made by
//   CompressionStream to /i/v0/e/ with compression=gzip-js;
// - with recording on it loads recorder.js and posts snapshots to /s/;
// - its state (distinct ID, session) lives in the ph_<token>_posthog cookie
//   and travels only inside bodies.
(function (w, d) {
  "use strict";
  var VERSION = "1.200.0";
  var ph = w.posthog;
  var init = ph._i[0];
  var token = init[0];
  var api = (init[1].api_host || "https://us.i.posthog.com").replace(/\/$/, "");
  var own = api.match(/^https:\/\/(us|eu)\.i\.posthog\.com$/);
  var assets = own ? "https://" + own[1] + "-assets." + "i.posthog.com" : api;

  var name = "ph_" + token + "_posthog";
  var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  var state = m ? JSON.parse(decodeURIComponent(m[1])) : { distinct_id: "anon-" + Date.now() };
  state.$sesid = state.$sesid || "ses-" + Math.random().toString(36).slice(2, 10);
  d.cookie = name + "=" + encodeURIComponent(JSON.stringify(state)) + "; path=/; max-age=31536000";

  function query() {
    return "?ip=0&_=" + Date.now() + "&ver=" + VERSION + "&compression=gzip-js";
  }
  function gzip(text) {
    var stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }
  function post(path, payload) {
    return gzip(JSON.stringify(payload)).then(function (body) {
      return fetch(api + path + query(), {
        method: "POST",
        body: body,
        keepalive: true,
        headers: { "Content-Type": "text/plain" },
      });
    });
  }
  function load(src) {
    return new Promise(function (resolve, reject) {
      var s = d.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = reject;
      d.head.appendChild(s);
    });
  }
  function event(name, properties, flags) {
    var props = { token: token, distinct_id: state.distinct_id, $session_id: state.$sesid,
      $current_url: location.href, $lib: "web", $lib_version: VERSION };
    Object.keys(flags).forEach(function (flag) { props["$feature/" + flag] = flags[flag]; });
    Object.keys(properties || {}).forEach(function (k) { props[k] = properties[k]; });
    return { event: name, properties: props };
  }

  var flagsRequest = fetch(api + "/flags/?v=2&config=true", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: token, distinct_id: state.distinct_id }),
  }).then(function (r) { return r.json(); });

  Promise.all([load(assets + "/array/" + token + "/config.js"), flagsRequest])
    .then(function (loaded) {
      var config = w._POSTHOG_REMOTE_CONFIG[token].config;
      var flags = loaded[1].featureFlags || {};
      var events = [event("$pageview", {}, flags)];
      ph._q.forEach(function (call) {
        if (call[0] === "capture") events.push(event(call[1], call[2], flags));
      });
      var sent = post("/i/v0/e/", events);
      if (!config.sessionRecording) return sent;
      return load(assets + "/static/recorder.js?v=" + VERSION).then(function () {
        return post("/s/", [{
          event: "$snapshot",
          properties: { $session_id: state.$sesid, $snapshot_data: w.__phRecorder.take() },
        }]);
      });
    });
})(window, document);
