// Clarity-like library (scripts.clarity.ms/<version>/clarity.js), written
// for tagproxy's tests (no vendor code). Like the real one:
// - the user ID lives in the _clck cookie and the session in _clsk, whose
//   last field is the upload host (no scheme) chosen on an earlier page;
//   a remembered host wins over the one in the tag's config;
// - the page data is gzip made with CompressionStream and POSTed with fetch
//   keepalive; a cookie-sync pixel is an image GET.
(function (w, d) {
  var c = w.clarity;
  var config = c.v;

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function setCookie(name, value, days) {
    var exp = new Date(Date.now() + days * 864e5).toUTCString();
    d.cookie = name + "=" + value + "; expires=" + exp + "; path=/";
  }
  function id() {
    return Math.random().toString(36).slice(2, 10);
  }

  var clck = (cookie("_clck") || "").split("|");
  var clsk = (cookie("_clsk") || "").split("|");
  var user = clck[0] || id();
  var session = clsk[0] || id();
  var page = clsk.length > 2 ? Number(clsk[2]) + 1 : 1;
  // "k.clarity.ms/collect": stored without its scheme, glued back here.
  var upload = clsk.length > 4 && clsk[4] ? "https://" + clsk[4] : config.upload;
  setCookie("_clck", [user, "2", "f"].join("|"), 365);
  setCookie(
    "_clsk",
    [session, Date.now(), page, "1", upload.replace(/^https?:\/\//, "")].join("|"),
    1
  );

  var events = [["page", location.href, d.title]];
  (c.q || []).forEach(function (args) { events.push(Array.prototype.slice.call(args)); });
  c.q = [];

  var payload = JSON.stringify({
    p: config.projectId,
    u: user,
    s: session,
    n: page,
    e: events,
  });
  var gzip = new Blob([payload]).stream().pipeThrough(new CompressionStream("gzip"));
  new Response(gzip).arrayBuffer().then(function (body) {
    return fetch(upload, {
      method: "POST",
      body: body,
      keepalive: true,
      credentials: "include",
      headers: { "Content-Type": "application/x-clarity-gzip" },
    });
  });
  new Image().src = config.pixel + "?ctsa=mr&CtsSyncId=" + user;
})(window, document);
