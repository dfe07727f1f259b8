/* A Plausible-style tracker written for tagproxy's tests: it posts to the
   origin of its own src unless data-api says otherwise. */
(function (w, d) {
  "use strict";
  var me = d.currentScript;
  var api = me.getAttribute("data-api") || new URL(me.src).origin + "/api/event";
  function send(name) {
    var body = JSON.stringify({ n: name, u: w.location.href, d: me.getAttribute("data-domain") });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", api, true);
    xhr.setRequestHeader("Content-Type", "text/plain");
    xhr.send(body);
  }
  w.plausibleLike = send;
})(window, document);
