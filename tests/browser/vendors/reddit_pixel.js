// Reddit-like pixel.js (www.redditstatic.com/ads/pixel.js), written for
// tagproxy's tests (no vendor code). Like the real one:
// - it runs the calls queued on window.rdt (init, track);
// - init fetches the pixel's config JSON from pixel-config.reddit.com, which
//   names the endpoint for conversion posts;
// - PageVisit is an image GET to alb.reddit.com/rp.gif; conversions are a
//   fetch POST (no-cors, JSON as text) to the configured endpoint;
// - the first-party _rdt_uuid cookie is the visitor ID.
(function (w, d) {
  var pixelId = null;
  var config = null;
  var pending = [];

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  var uuid = cookie("_rdt_uuid");
  if (!uuid) {
    uuid = Date.now() + "." + Math.random().toString(16).slice(2);
    d.cookie = "_rdt_uuid=" + uuid + "; path=/; max-age=7776000";
  }

  function pageVisit() {
    var q = "ts=" + Date.now() + "&id=" + pixelId + "&event=PageVisit&uuid=" +
      encodeURIComponent(uuid) + "&v=rdt_test&sh=" + screen.height + "&sw=" + screen.width;
    new Image().src = "https://alb.reddit.com/rp.gif?" + q;
  }

  function conversion(event, data) {
    var body = JSON.stringify({
      id: pixelId,
      event: event,
      uuid: uuid,
      url: location.href,
      metadata: data || {},
    });
    fetch(config.endpoint, {
      method: "POST",
      mode: "no-cors",
      keepalive: true,
      body: body,
    });
  }

  function run(args) {
    if (args[0] === "init") {
      pixelId = args[1];
      fetch("https://pixel-config.reddit.com/pixels/" + pixelId + "/config")
        .then(function (r) { return r.json(); })
        .then(function (cfg) {
          config = cfg;
          pending.forEach(run);
          pending = [];
        });
    } else if (args[0] === "track") {
      if (!config) {
        pending.push(args);
      } else if (args[1] === "PageVisit") {
        pageVisit();
      } else {
        conversion(args[1], args[2]);
      }
    }
  }

  var queue = (w.rdt && w.rdt.callQueue) || [];
  w.rdt = function () { run(Array.prototype.slice.call(arguments)); };
  queue.forEach(run);
})(window, document);
