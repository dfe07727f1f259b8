// X-like website tag (static.ads-twitter.com/uwt.js), written for tagproxy's
// tests (no vendor code). Like the real one:
// - it runs the calls queued on window.twq (config, event);
// - each event is an image GET to /1/i/adsct on two hosts, the order and
//   the URL picked at run time by the page's domain, from bare host names;
// - the first-party _twclid cookie carries the ad click ID.
(function (w, d) {
  var pixel = null;
  var onX = /(^|\.)(twitter|x)\.com$/.test(location.hostname);
  var hosts = onX ? ["analytics.twitter.com", "t.co"] : ["t.co", "analytics.twitter.com"];
  var m = d.cookie.match(/(?:^|; )_twclid=([^;]*)/);
  var twclid = m ? decodeURIComponent(m[1]) : "";

  function send(events) {
    var q = {
      bci: 4,
      eci: 3,
      event_id: Math.random().toString(36).slice(2),
      events: JSON.stringify(events),
      integration: "advertiser",
      p_id: "Twitter",
      p_user_id: 0,
      pl_id: pixel,
      tw_document_href: location.href,
      tw_iframe_status: 0,
      twclid: twclid,
      txn_id: pixel,
      type: "javascript",
      version: "2.3.99",
    };
    var query = Object.keys(q)
      .map(function (k) { return k + "=" + encodeURIComponent(q[k]); })
      .join("&");
    hosts.forEach(function (host) {
      new Image().src = "https://" + host + "/1/i/adsct?" + query;
    });
  }

  function run(args) {
    if (args[0] === "config") {
      pixel = args[1];
      send([["pageview", {}]]);
    } else if (args[0] === "event") {
      send([[args[1], args[2] || {}]]);
    }
  }

  var queue = (w.twq && w.twq.queue) || [];
  w.twq = function () { run(Array.prototype.slice.call(arguments)); };
  w.twq.version = "1.1";
  queue.forEach(run);
})(window, document);
