// LinkedIn-like Insight Tag (snap.licdn.com/li.lms-analytics/insight.min.js),
// written for tagproxy's tests (no vendor code). Like the real one: partner
// IDs come from window._linkedin_data_partner_ids; a page view is an image
// GET to px.ads.linkedin.com/collect; page data is a base64 text of gzip
// (CompressionStream) POSTed with fetch keepalive to /wa/; the click ID is
// read from the first-party li_fat_id cookie; lintrk('track', ...) sends
// conversions.
(function (w, d) {
  var base = "https://px.ads.linkedin.com";
  var ids = w._linkedin_data_partner_ids || [];
  var m = d.cookie.match(/(?:^|; )li_fat_id=([^;]*)/);
  var fat = m ? decodeURIComponent(m[1]) : "";

  function pixel(extra) {
    ids.forEach(function (pid) {
      var q = "v=2&fmt=gif&pid=" + pid + "&time=" + Date.now() +
        "&url=" + encodeURIComponent(location.href) + (extra || "");
      new Image().src = base + "/collect?" + q;
    });
  }

  function gzipBase64(text) {
    var stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (buf) {
      var bytes = new Uint8Array(buf);
      var bin = "";
      for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
      return btoa(bin);
    });
  }

  function pageData() {
    var data = JSON.stringify({
      pids: ids.map(Number),
      scriptVersion: 1,
      time: Date.now(),
      url: location.href,
      title: d.title,
      liFatId: fat,
    });
    gzipBase64(data).then(function (body) {
      fetch(base + "/wa/?medium=fetch&fmt=g", {
        method: "POST",
        body: body,
        keepalive: true,
        credentials: "include",
        headers: { "Content-Type": "text/plain;charset=UTF-8" },
      });
    });
  }

  var queued = (w.lintrk && w.lintrk.q) || [];
  w.lintrk = function (action, data) {
    if (action === "track" && data && data.conversion_id) {
      pixel("&conversionId=" + data.conversion_id);
    }
  };
  pixel("");
  pageData();
  queued.forEach(function (args) { w.lintrk.apply(null, args); });
})(window, document);
