// Plausible-like tracker, written for tagproxy's tests (no vendor code).
// Like the real one: reads data-domain from its own <script>, posts a JSON
// pageview with text/plain to the origin of its own src + "/api/event".
(function () {
  var me = document.currentScript;
  var endpoint = new URL(me.src).origin + "/api/event";
  var payload = {
    n: "pageview",
    u: location.href,
    d: me.getAttribute("data-domain"),
    r: document.referrer || null,
  };
  var xhr = new XMLHttpRequest();
  xhr.open("POST", endpoint, true);
  xhr.setRequestHeader("Content-Type", "text/plain");
  xhr.send(JSON.stringify(payload));
  window.plausible = function (name, opts) {
    var body = { n: name, u: location.href, d: payload.d, p: opts && opts.props };
    navigator.sendBeacon(endpoint, JSON.stringify(body));
  };
})();
