/* A gtag.js stand-in written for tagproxy's tests: it keeps its hosts the
   ways the real loader does (full URLs, protocol-relative, JSON-escaped
   config, a region host glued at run time) next to data that must stay. */
(function (w) {
  "use strict";
  var LOADER = "https://www.googletagmanager.com/gtag/js";
  var COLLECT = "https://www.google-analytics.com/g/collect";
  var LEGACY = "//www.google-analytics.com/collect";
  var CONFIG = "{\"endpoint\":\"https:\\/\\/region1.google-analytics.com\\/g\\/collect\"}";
  var OWN_ORIGIN = /^https:\/\/www\.googletagmanager\.com$/;
  var SUPPORT = "support@google-analytics.com";
  var SUFFIXES = ["google-analytics.com", "googletagmanager.com"];
  // https://www.google-analytics.com/g/collect is where hits go.
  function regionCollect(region) {
    return "https://" + region + ".google-analytics.com/g/collect";
  }
  w.__gtagLike = {
    loader: LOADER, collect: COLLECT, legacy: LEGACY,
    config: JSON.parse(CONFIG), ownOrigin: OWN_ORIGIN, support: SUPPORT,
    suffixes: SUFFIXES, regionCollect: regionCollect
  };
})(window);
