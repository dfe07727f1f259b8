// Mixpanel-like library (cdn.mxpnl.com/libs/mixpanel-2-latest.min.js),
// written for tagproxy's tests (no vendor code). Like the real one:
// - the snippet queues init and track calls on window.mixpanel._i;
// - the default API host is "https://api-js.mixpanel.com", replaced by the
//   api_host init option when given;
// - events are POSTed by XHR (with credentials) as a form field data=<base64
//   JSON> to /track/?verbose=1&ip=1&_=<ms>; ip=1 asks Mixpanel to locate the
//   visitor by address;
// - the distinct ID is kept in the first-party mp_<token>_mixpanel cookie.
(function (w, d) {
  var DEFAULT_API_HOST = "https://api-js.mixpanel.com";
  var stub = w.mixpanel;
  var token = null;
  var options = {};
  var distinctId = null;

  function cookieName() {
    return "mp_" + token + "_mixpanel";
  }
  function readState() {
    var m = d.cookie.match(new RegExp("(?:^|; )" + cookieName() + "=([^;]*)"));
    try {
      return m ? JSON.parse(decodeURIComponent(m[1])) : {};
    } catch (e) {
      return {};
    }
  }

  function init(t, opts) {
    token = t;
    options = opts || {};
    var state = readState();
    distinctId = state.distinct_id || "$device:" + Math.random().toString(36).slice(2);
    state.distinct_id = distinctId;
    d.cookie = cookieName() + "=" + encodeURIComponent(JSON.stringify(state)) +
      "; path=/; max-age=31536000";
  }

  function track(event, properties) {
    var props = { token: token, distinct_id: distinctId, $current_url: location.href, mp_lib: "web" };
    Object.keys(properties || {}).forEach(function (k) { props[k] = properties[k]; });
    var data = btoa(JSON.stringify({ event: event, properties: props }));
    var url = (options.api_host || DEFAULT_API_HOST) + "/track/?verbose=1&ip=1&_=" + Date.now();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url, true);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
    xhr.send("data=" + encodeURIComponent(data));
  }

  var calls = (stub && stub._i) || [];
  w.mixpanel = { init: init, track: track, __loaded: true };
  calls.forEach(function (call) {
    w.mixpanel[call[0]].apply(null, call.slice(1));
  });
})(window, document);
