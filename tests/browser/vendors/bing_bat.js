// UET-like bat.js, written for tagproxy's tests (no vendor code). Like the
// real one: the snippet calls new UET({ti, q}); the library loads the tag's
// settings script, then sends each event as an image GET to a URL it builds
// as "//" + domain + "/action/0?...", from a bare domain string. Session and
// visitor IDs live in the _uetsid and _uetvid cookies.
(function (w, d) {
  var domain = "bat.bing.com";

  function url(path) {
    return "//" + domain + path;
  }
  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function uuid() {
    return "xxxxxxxxxxxx4xxxyxxxxxxxxxxxxxxx".replace(/[xy]/g, function () {
      return ((Math.random() * 16) | 0).toString(16);
    });
  }

  function UET(options) {
    this.ti = options.ti;
    this.queue = [];
    this.ready = false;
    this.sid = cookie("_uetsid") || uuid();
    this.vid = cookie("_uetvid") || uuid();
    d.cookie = "_uetsid=" + this.sid + "; path=/";
    d.cookie = "_uetvid=" + this.vid + "; path=/; max-age=33696000";
    var self = this;
    // The snippet's queue is flat: uetq.push("event", action, data) adds three
    // items, uetq.push("pageLoad") one.
    var q = options.q || [];
    for (var i = 0; i < q.length; i += q[i] === "event" ? 3 : 1) {
      self.push(q[i], q[i + 1], q[i + 2]);
    }

    var settings = d.createElement("script");
    settings.src = url("/p/action/" + this.ti + ".js");
    settings.onload = function () {
      self.ready = true;
      var waiting = self.queue;
      self.queue = [];
      waiting.forEach(function (params) { self.send(params); });
    };
    d.head.appendChild(settings);
  }

  UET.prototype.push = function (first, action, data) {
    var params;
    if (first === "pageLoad") {
      params = { evt: "pageLoad" };
    } else if (first === "event") {
      data = data || {};
      params = { evt: "custom", ea: action, gv: data.revenue_value, gc: data.currency };
    } else {
      return;
    }
    if (this.ready) this.send(params);
    else this.queue.push(params);
  };

  UET.prototype.send = function (params) {
    var all = {
      ti: this.ti,
      Ver: "2",
      mid: uuid(),
      sid: this.sid,
      vid: this.vid,
      p: location.href,
      tl: d.title,
      lg: navigator.language,
      sw: screen.width,
      sh: screen.height,
      ts: (w.uetConfigs || {})[this.ti] ? "cfg" : "nocfg",
    };
    Object.keys(params).forEach(function (k) {
      if (params[k] !== undefined) all[k] = params[k];
    });
    var query = Object.keys(all)
      .map(function (k) { return k + "=" + encodeURIComponent(all[k]); })
      .join("&");
    new Image().src = url("/action/0?" + query);
  };

  w.UET = UET;
})(window, document);
