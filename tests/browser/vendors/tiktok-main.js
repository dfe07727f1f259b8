// The TikTok-like SDK's main file: replays the snippet's queue.
(function () {
  var ttq = window.ttq;
  var queue = ttq.slice(0);
  ttq.length = 0;
  ttq.track = function (event, properties) { ttq._sdk.send(event, properties); };
  ttq.page = function () { ttq._sdk.send("Pageview"); };
  queue.forEach(function (call) { ttq[call[0]].apply(ttq, call.slice(1)); });
})();
