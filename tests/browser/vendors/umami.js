// Umami-like tracker (script.js), written for tagproxy's tests (no vendor
// code). Like the real one:
// - its endpoint is data-host-url, else a host fixed at build time
//   ("__COLLECT_API_HOST__", empty in self-hosted builds, Umami Cloud's
//   gateway in its own build), else the directory of its own src, plus
//   "/api/send";
// - it POSTs JSON with fetch keepalive and sends back the session token
//   the first answer gave it in the x-umami-cache header;
// - umami.track(name, data) sends a custom event.
(function (w, d) {
  var me = d.currentScript;
  var website = me.getAttribute("data-website-id");
  var hostUrl = me.getAttribute("data-host-url");
  var host = hostUrl || "__COLLECT_API_HOST__" || me.src.split("/").slice(0, -1).join("/");
  var endpoint = host.replace(/\/$/, "") + "/api/send";
  var cache = null;
  var chain = Promise.resolve();

  function payload(extra) {
    var p = {
      website: website,
      hostname: location.hostname,
      screen: screen.width + "x" + screen.height,
      language: navigator.language,
      title: d.title,
      url: location.pathname,
      referrer: d.referrer,
    };
    Object.keys(extra || {}).forEach(function (k) { p[k] = extra[k]; });
    return p;
  }

  function send(body) {
    chain = chain.then(function () {
      var headers = { "Content-Type": "application/json" };
      if (cache) headers["x-umami-cache"] = cache;
      return fetch(endpoint, {
        method: "POST",
        keepalive: true,
        credentials: "omit",
        headers: headers,
        body: JSON.stringify({ type: "event", payload: body }),
      })
        .then(function (r) { return r.json(); })
        .then(function (answer) { cache = (answer && answer.cache) || cache; })
        .catch(function () {});
    });
    return chain;
  }

  w.umami = {
    track: function (name, data) { return send(payload({ name: name, data: data })); },
  };
  send(payload());
})(window, document);
