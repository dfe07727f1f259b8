// Pinterest-like core.js (s.pinimg.com/ct/core.js), written for tagproxy's
// tests (no vendor code). Like the real one, it only loads the main library,
// whose file name carries its content hash.
(function (d) {
  var s = d.createElement("script");
  s.async = true;
  s.src = "https://s.pinimg.com/ct/lib/main.3f2a1b9c.js";
  d.head.appendChild(s);
})(document);
