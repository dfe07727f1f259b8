// Hotjar-like site bootstrap (static.hotjar.com/c/hotjar-<site id>.js),
// written for tagproxy's tests (no vendor code). Like the real one:
// - it carries the site's settings (what to record) as a global;
// - it loads the versioned modules script, named by a full URL literal;
// - it adds a hidden "remote vars" frame whose host is glued at run time
//   from _hjSettings.varsHost or a bare default host.
(function (w, d) {
  w.hjSiteSettings = w.hjSiteSettings || {
    site_id: 3210987,
    record: true,
    heatmaps: [{ id: 77, url: "/" }],
    r: 1,
  };
  w.hjBootstrap = w.hjBootstrap || function (modules, varsHost) {
    var s = d.createElement("script");
    s.async = true;
    s.src = modules;
    d.head.appendChild(s);

    var frame = d.createElement("iframe");
    frame.name = "_hjRemoteVarsFrame";
    frame.title = "remote vars";
    frame.style.cssText = "display:none";
    frame.src = "https://" + (w._hjSettings.varsHost || varsHost) + "/box-5d7e1a.html";
    d.body.appendChild(frame);
  };
  w.hjBootstrap("https://script.hotjar.com/modules.8c1d2e44.js", "vars.hotjar.com");
})(window, document);
