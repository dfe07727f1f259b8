// PostHog-like recorder (assets host, static/recorder.js), written for
// tagproxy's tests: hands the library a small recording of the page.
(function (w, d) {
  w.__phRecorder = {
    take: function () {
      return [{ type: 2, data: { href: location.href, title: d.title } },
        { type: 3, data: { source: 1, positions: [{ x: 5, y: 6 }] } }];
    },
  };
})(window, document);
