// Amplitude-like Browser SDK (cdn.amplitude.com/libs/analytics-browser-*.js.gz),
// written for tagproxy's tests (no vendor code). Like the real one:
// - the snippet queues calls on window.amplitude._q;
// - the ingestion URL is picked by serverZone from two literals (US, EU),
//   unless serverUrl is given; remote config comes from a zone host too;
// - events are JSON POSTed with fetch (a CORS preflight when cross-origin),
//   each with ip "$remote" so Amplitude takes the request's address;
// - Session Replay data is gzip from CompressionStream, sent with
//   Content-Encoding: gzip;
// - the device and session IDs live in the first-party AMP_<key> cookie.
(function (w, d) {
  var SERVERS = {
    US: "https://api2.amplitude.com/2/httpapi",
    EU: "https://api.eu.amplitude.com/2/httpapi",
  };
  var REPLAY = {
    US: "https://api-sr.amplitude.com/sessions/v2/track",
    EU: "https://api-sr.eu.amplitude.com/sessions/v2/track",
  };
  var CONFIG = {
    US: "https://sr-client-cfg.amplitude.com/config",
    EU: "https://sr-client-cfg.eu.amplitude.com/config",
  };
  var apiKey = null;
  var zone = "US";
  var serverUrl = null;
  var deviceId = null;
  var sessionId = Date.now();
  var events = [];
  var ready = null;

  function init(key, options) {
    apiKey = key;
    options = options || {};
    zone = options.serverZone === "EU" ? "EU" : "US";
    serverUrl = options.serverUrl || SERVERS[zone];
    var name = "AMP_" + key.slice(0, 10);
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    var state = {};
    try {
      state = m ? JSON.parse(atob(decodeURIComponent(m[1]))) : {};
    } catch (e) {
      state = {};
    }
    deviceId = state.deviceId || "dev-" + Math.random().toString(36).slice(2);
    d.cookie = name + "=" + encodeURIComponent(btoa(JSON.stringify({ deviceId: deviceId, sessionId: sessionId }))) +
      "; path=/; max-age=31536000";
    ready = fetch(CONFIG[zone] + "?api_key=" + key + "&config_keys=analyticsSDK")
      .then(function (r) { return r.json(); })
      .catch(function () { return {}; });
  }

  function track(eventType, properties) {
    events.push({
      event_type: eventType,
      device_id: deviceId,
      session_id: sessionId,
      time: Date.now(),
      ip: "$remote",
      insert_id: Math.random().toString(36).slice(2),
      event_properties: properties || {},
    });
  }

  function flush() {
    var batch = events;
    events = [];
    return ready.then(function () {
      return fetch(serverUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "*/*" },
        body: JSON.stringify({ api_key: apiKey, events: batch, options: {} }),
      });
    });
  }

  function replay(snapshot) {
    var stream = new Blob([JSON.stringify(snapshot)]).stream()
      .pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (body) {
      var q = "?device_id=" + deviceId + "&session_id=" + sessionId + "&seq_number=1";
      return fetch(REPLAY[zone] + q, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Encoding": "gzip" },
        body: body,
      });
    });
  }

  var queued = (w.amplitude && w.amplitude._q) || [];
  w.amplitude = { init: init, track: track, flush: flush, replay: replay };
  queued.forEach(function (call) { w.amplitude[call[0]].apply(null, call[1]); });
})(window, document);
