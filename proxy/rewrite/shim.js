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

  var exact = Object.create(null); // "host" -> base URL
  var bySuffix = Object.create(null); // "suffix" -> [{label: RegExp|null, base}]

  function add(cfg) {
    var i, p, list;
    for (i = 0; i < cfg.hosts.length; i++) {
      exact[cfg.hosts[i][0]] = cfg.hosts[i][1];
    }
    for (i = 0; i < cfg.patterns.length; i++) {
      p = cfg.patterns[i];
      list = bySuffix[p.suffix] || (bySuffix[p.suffix] = []);
      if (list.some(function (q) { return q.source === p.label && q.base === p.base; })) {
        continue;
      }
      list.push({
        source: p.label,
        label: p.label === null ? null : new RegExp(p.label, "i"),
        base: p.base,
      });
      // A restricted label is more specific than "any label": tried first.
      list.sort(function (a, b) { return (a.label === null) - (b.label === null); });
    }
  }

  var DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
  var WEB_SCHEMES = { "http:": 1, "https:": 1, "ws:": 1, "wss:": 1 };

  function baseFor(host) {
    if (exact[host]) return exact[host];
    var dot = host.indexOf(".");
    if (dot < 1) return null;
    var label = host.slice(0, dot);
    var list = bySuffix[host.slice(dot + 1)];
    if (!list || !DNS_LABEL.test(label)) return null;
    for (var i = 0; i < list.length; i++) {
      if (list[i].label === null || list[i].label.test(label)) {
        return list[i].base.replace("{label}", label);
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
    var base = baseFor(url.hostname.toLowerCase());
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

  wrapMethod(global, "fetch", function (original) {
    return function fetch(input, init) {
      if (typeof Request !== "undefined" && input instanceof Request) {
        var to = mapped(input.url);
        if (to !== null) input = new Request(to, input);
      } else {
        input = map(input);
      }
      return original.call(this, input, init);
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
