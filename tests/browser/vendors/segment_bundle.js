// Segment-like bundle (cdn base + /analytics-next/bundles/<name>.js),
// written for tagproxy's tests: a helper the library uses.
(function (w) {
  var n = 0;
  w.__ajsBundle = {
    messageId: function () { n += 1; return "ajs-next-" + Date.now() + "-" + n; },
  };
})(window);
