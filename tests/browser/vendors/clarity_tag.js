// Clarity-like project tag (www.clarity.ms/tag/<project>), written for
// tagproxy's tests (no vendor code). Like the real one: it carries the
// project's config, upload URL included, and loads the versioned library
// from scripts.clarity.ms, which reads the config and the queued calls.
(function (w, d) {
  var c = w.clarity || function () { (c.q = c.q || []).push(arguments); };
  w.clarity = c;
  c.v = {
    projectId: "proj1234",
    upload: "https://k.clarity.ms/collect",
    pixel: "https://c.clarity.ms/c.gif",
    version: "0.8.9",
  };
  var s = d.createElement("script");
  s.async = true;
  s.src = "https://scripts.clarity.ms/0.8.9/clarity.js";
  d.head.appendChild(s);
})(window, document);
