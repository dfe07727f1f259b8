// Snap-like scevent.min.js (sc-static.net), written for tagproxy's tests
// (no vendor code). Like the real one:
// - the collection host is glued from pieces ("tr." + "snapchat.com"), so
//   no whole literal exists to rewrite;
// - events are form-encoded and sent with sendBeacon to /p;
// - the cookie match is a GET form submitted into a hidden iframe (/cm/i);
// - the first-party _scid cookie is the visitor ID.
(function (w, d) {
  var host = "tr." + "snapchat.com";
  var pixelId = null;

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  var scid = cookie("_scid");
  if (!scid) {
    scid = "s" + Math.random().toString(36).slice(2);
    d.cookie = "_scid=" + scid + "; path=/; max-age=33696000";
  }

  function cookieMatch() {
    var frame = d.createElement("iframe");
    frame.name = "snap" + Date.now();
    frame.style.display = "none";
    d.body.appendChild(frame);
    var form = d.createElement("form");
    form.method = "GET";
    form.action = "https://" + host + "/cm/i";
    form.target = frame.name;
    form.style.display = "none";
    [["pid", pixelId], ["u_scsid", scid]].forEach(function (pair) {
      var input = d.createElement("input");
      input.type = "hidden";
      input.name = pair[0];
      input.value = pair[1];
      form.appendChild(input);
    });
    d.body.appendChild(form);
    form.submit();
  }

  function track(event, data) {
    var body = new URLSearchParams({
      pid: pixelId,
      ev: event,
      v: "1.5",
      ts: String(Date.now()),
      u_c1: scid,
      pl: location.href,
      rf: d.referrer,
    });
    if (data && data.price !== undefined) body.set("price", String(data.price));
    if (data && data.currency) body.set("currency", data.currency);
    navigator.sendBeacon("https://" + host + "/p", body);
  }

  function run(args) {
    if (args[0] === "init") {
      pixelId = args[1];
      cookieMatch();
    } else if (args[0] === "track") {
      track(args[1], args[2]);
    }
  }

  var queue = (w.snaptr && w.snaptr.queue) || [];
  w.snaptr = function () { run(Array.prototype.slice.call(arguments)); };
  queue.forEach(run);
})(window, document);
