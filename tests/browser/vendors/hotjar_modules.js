// Hotjar-like modules script (script.hotjar.com/modules.<hash>.js), written
// for tagproxy's tests (no vendor code). Like the real one:
// - the visitor's ID lives in the _hjSessionUser_<site> cookie (base64 of a
//   small JSON), kept on the site, sent only inside messages;
// - visit data goes to in.hotjar.com with XHR (credentials on), the page's
//   content for heatmaps to content.hotjar.io as gzip made by
//   CompressionStream (fetch keepalive), queued hj() events by sendBeacon;
// - the live channel is a WebSocket to a host taken from _hjSettings.wsHost
//   or glued from pieces at run time: text messages (JSON) and binary ones
//   (gzip recording data); the server answers, and the client acknowledges.
(function (w, d) {
  "use strict";
  var hj = w.hj;
  var settings = w._hjSettings;
  var site = w.hjSiteSettings.site_id;
  var sv = settings.hjsv;
  var api = "https://in.hotjar.com/api/v2/client/sites/" + site;

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  var userCookie = "_hjSessionUser_" + site;
  var stored = cookie(userCookie);
  var user = stored ? JSON.parse(atob(stored)) : { id: "u-" + Date.now().toString(36) };
  d.cookie = userCookie + "=" + btoa(JSON.stringify(user)) + "; path=/; max-age=31536000";
  var session = "s-" + Math.random().toString(36).slice(2, 10);

  function gzip(text) {
    var stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  var visit = new XMLHttpRequest();
  visit.open("POST", api + "/visit-data?sv=" + sv);
  visit.withCredentials = true;
  visit.setRequestHeader("Content-Type", "text/plain; charset=UTF-8");
  visit.send(JSON.stringify({
    user_id: user.id,
    session_id: session,
    url: location.href,
    window_width: 1280,
  }));

  gzip(d.documentElement.outerHTML).then(function (body) {
    return fetch("https://content.hotjar.io/?site_id=" + site + "&gzip=1", {
      method: "POST",
      body: body,
      keepalive: true,
      headers: { "Content-Type": "text/plain; charset=UTF-8" },
    });
  });

  (hj.q || []).forEach(function (args) {
    if (args[0] === "event") {
      navigator.sendBeacon(api + "/events", JSON.stringify({
        user_id: user.id, name: args[1],
      }));
    }
  });

  var host = settings.wsHost || ["ws", "hotjar", "com"].join(".");
  var socket = new WebSocket(
    "wss://" + host + "/api/v2/client/ws?v=" + sv + "&site_id=" + site
  );
  socket.binaryType = "arraybuffer";
  w.hjSocket = socket;
  socket.onopen = function () {
    socket.send(JSON.stringify({
      type: "hello", site_id: site, user_id: user.id, session_id: session,
    }));
    gzip(JSON.stringify([{ t: "mouse", x: 10, y: 20 }, { t: "scroll", y: 300 }]))
      .then(function (chunk) { socket.send(chunk); });
  };
  socket.onmessage = function (event) {
    var message = JSON.parse(event.data);
    if (message.type === "ack") {
      socket.send(JSON.stringify({ type: "ack-seen", seq: message.seq }));
      socket.close(1000, "page done");
    }
  };
})(window, document);
