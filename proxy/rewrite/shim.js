// tagproxy runtime URL shim, prepended to the scripts of rules with shim = true.
//
// Vendor scripts build some URLs at run time ("https://" + region +
// ".google-analytics.com", hosts read from settings JSON or cookies) or keep
// literals that they check their own origin against, so static rewriting
// cannot reach them. This shim maps such URLs to tagproxy at the moment they
// are used: fetch, sendBeacon, XMLHttpRequest.open, img/script/iframe src
// (property and setAttribute), form action and submit, and WebSocket.
//
// Only hosts of loaded rules are touched; any other URL passes as the very
// same value. Installing it twice (several vendors) only adds hosts to the
// map: every API is wrapped once, guarded by one global.
(function (global, config) {
  "use strict";
  var KEY = "__tagproxyShim";
  var existing = global[KEY];
  if (existing && typeof existing.add === "function") {
    existing.add(config);
    return;
  }

  var exact = Object.create(null); // "host" -> {base, paths}
  var bySuffix = Object.create(null); // "suffix" -> [{label, base, paths}]

  function compiled(entry) {
    return {
      key: entry.label + " " + entry.base,
      label: entry.label ? new RegExp(entry.label, "i") : null,
      base: entry.base,
      // The route paths tagproxy serves for this host; others stay as they are.
      paths: entry.paths ? new RegExp(entry.paths) : null,
    };
  }

  function add(cfg) {
    var i, entry, list;
    for (i = 0; i < cfg.hosts.length; i++) {
      exact[cfg.hosts[i].host] = compiled(cfg.hosts[i]);
    }
    for (i = 0; i < cfg.patterns.length; i++) {
      entry = compiled(cfg.patterns[i]);
      list = bySuffix[cfg.patterns[i].suffix] || (bySuffix[cfg.patterns[i].suffix] = []);
      if (list.some(function (known) { return known.key === entry.key; })) continue;
      list.push(entry);
      // A restricted label is more specific than "any label": tried first.
      list.sort(function (a, b) { return (a.label === null) - (b.label === null); });
    }
  }

  var DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
  var WEB_SCHEMES = { "http:": 1, "https:": 1, "ws:": 1, "wss:": 1 };

  function served(entry, path) {
    return entry.paths === null || entry.paths.test(path);
  }

  function baseFor(host, path) {
    var entry = exact[host];
    if (entry) return served(entry, path) ? entry.base : null;
    var dot = host.indexOf(".");
    if (dot < 1) return null;
    var label = host.slice(0, dot);
    var list = bySuffix[host.slice(dot + 1)];
    if (!list || !DNS_LABEL.test(label)) return null;
    for (var i = 0; i < list.length; i++) {
      entry = list[i];
      if ((entry.label === null || entry.label.test(label)) && served(entry, path)) {
        return entry.base.replace("{label}", label);
      }
    }
    return null;
  }

  // The first-party URL for a vendor URL, or null to leave it alone.
  function mapped(value) {
    var text;
    try {
      text = String(value);
    } catch (e) {
      return null;
    }
    if (text.indexOf("//") < 0) return null; // relative: the page's own origin
    var url;
    try {
      url = new URL(text, global.document ? global.document.baseURI : undefined);
    } catch (e) {
      return null;
    }
    // A non-default port names another service, as in static rewriting.
    if (!WEB_SCHEMES[url.protocol] || url.port !== "" || url.username) return null;
    var base = baseFor(url.hostname.toLowerCase(), url.pathname);
    if (base === null) return null;
    if (url.protocol === "ws:" || url.protocol === "wss:") {
      base = base.replace(/^http/, "ws");
    }
    return base + url.pathname + url.search + url.hash;
  }

  function map(value) {
    var out = mapped(value);
    return out === null ? value : out;
  }

  function wrapMethod(owner, name, wrap) {
    if (!owner || typeof owner[name] !== "function") return;
    var original = owner[name];
    owner[name] = wrap(original);
  }

  function wrapSetter(proto, prop) {
    var d = proto && Object.getOwnPropertyDescriptor(proto, prop);
    if (!d || !d.set || !d.configurable) return;
    Object.defineProperty(proto, prop, {
      configurable: true,
      enumerable: d.enumerable,
      get: d.get,
      set: function (value) {
        return d.set.call(this, map(value));
      },
    });
  }

  var REQUEST_FIELDS = ["method", "headers", "mode", "credentials", "cache",
    "redirect", "referrer", "referrerPolicy", "integrity", "keepalive", "signal"];

  // A Request with a body cannot simply be re-addressed: new Request(url,
  // request) turns its body into a stream, which browsers send only over
  // HTTP/2. The body is read first and passed as bytes instead.
  function readdressed(request, to) {
    if (request.method === "GET" || request.method === "HEAD") {
      return Promise.resolve(new Request(to, request));
    }
    return request.arrayBuffer().then(function (body) {
      var init = { body: body };
      REQUEST_FIELDS.forEach(function (name) { init[name] = request[name]; });
      if (init.mode === "navigate") init.mode = "same-origin";
      return new Request(to, init);
    });
  }

  wrapMethod(global, "fetch", function (original) {
    return function fetch(input, init) {
      var self = this;
      if (typeof Request !== "undefined" && input instanceof Request) {
        var to = mapped(input.url);
        if (to === null) return original.call(self, input, init);
        return readdressed(input, to).then(function (request) {
          return original.call(self, request, init);
        });
      }
      return original.call(self, map(input), init);
    };
  });

  if (global.navigator) {
    wrapMethod(global.navigator, "sendBeacon", function (original) {
      return function sendBeacon(url, data) {
        return original.call(this, map(url), data);
      };
    });
  }

  if (global.XMLHttpRequest) {
    wrapMethod(global.XMLHttpRequest.prototype, "open", function (original) {
      return function open(method, url) {
        var args = Array.prototype.slice.call(arguments);
        args[1] = map(url);
        return original.apply(this, args);
      };
    });
  }

  var URL_ATTRIBUTES = { IMG: "src", SCRIPT: "src", IFRAME: "src", FORM: "action" };
  ["HTMLImageElement", "HTMLScriptElement", "HTMLIFrameElement"].forEach(
    function (name) {
      if (global[name]) wrapSetter(global[name].prototype, "src");
    }
  );
  if (global.HTMLFormElement) {
    var form = global.HTMLFormElement.prototype;
    wrapSetter(form, "action");
    // A form written as HTML never passes through the action setter.
    ["submit", "requestSubmit"].forEach(function (name) {
      wrapMethod(form, name, function (original) {
        return function () {
          var action = this.getAttribute("action");
          var to = action === null ? null : mapped(action);
          if (to !== null) this.setAttribute("action", to);
          return original.apply(this, arguments);
        };
      });
    });
  }
  if (global.Element) {
    wrapMethod(global.Element.prototype, "setAttribute", function (original) {
      return function setAttribute(name, value) {
        var attribute = URL_ATTRIBUTES[this.tagName];
        if (attribute && String(name).toLowerCase() === attribute) {
          value = map(value);
        }
        return original.call(this, name, value);
      };
    });
  }

  if (typeof global.WebSocket === "function" && typeof Proxy === "function") {
    // A Proxy keeps WebSocket's statics, prototype and instanceof intact.
    global.WebSocket = new Proxy(global.WebSocket, {
      construct: function (target, args, newTarget) {
        args = Array.prototype.slice.call(args);
        if (args.length) args[0] = map(args[0]);
        return Reflect.construct(target, args, newTarget);
      },
    });
  }

  add(config);
  try {
    Object.defineProperty(global, KEY, {
      value: Object.freeze({ add: add, map: map }),
      configurable: false,
      enumerable: false,
      writable: false,
    });
  } catch (e) {
    global[KEY] = { add: add, map: map };
  }
})(typeof window !== "undefined" ? window : self, /*TAGPROXY_SHIM_CONFIG*/);
