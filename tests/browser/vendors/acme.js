// A made-up tag for the shim tests: every transport the shim covers, each
// with a URL built at run time so static rewriting cannot reach it.
(function () {
  var base = "https://" + ["collect", "acme-analytics", "example"].join(".");
  var region = "https://" + "eu" + ".acme-analytics.example";
  var q = "?t=" + encodeURIComponent(document.title);
  fetch(base + "/hit" + q + "&via=fetch", { method: "POST", body: "f", keepalive: true });
  fetch(new URL(base + "/hit" + q + "&via=fetch-url"), { mode: "no-cors" });
  fetch(new Request(base + "/hit" + q + "&via=fetch-request", { method: "POST", body: "r" }));
  navigator.sendBeacon(region + "/hit" + q + "&via=beacon", "b");
  var xhr = new XMLHttpRequest();
  xhr.open("POST", base + "/hit" + q + "&via=xhr");
  xhr.withCredentials = true;
  xhr.send("x");
  new Image().src = region + "/hit" + q + "&via=image";
  var img = document.createElement("img");
  img.setAttribute("src", base + "/hit" + q + "&via=setattribute");
  document.body.appendChild(img);
  var script = document.createElement("script");
  script.src = base + "/hit" + q + "&via=script";
  document.head.appendChild(script);
  var frame = document.createElement("iframe");
  frame.name = "acme_sink_" + Math.random().toString(36).slice(2);
  frame.src = "https://cdn.acme.example/frame.html";
  frame.onload = function () {
    frame.onload = null; // the form post loads the frame again
    submitForm(base + "/form" + q, frame.name);
  };
  document.body.appendChild(frame);
})();

// A hidden form posting into the iframe, once the iframe has loaded.
function submitForm(action, target) {
  var form = document.createElement("form");
  form.method = "POST";
  form.target = target;
  form.action = action;
  var field = document.createElement("input");
  field.name = "ev";
  field.value = "PageView";
  form.appendChild(field);
  document.body.appendChild(form);
  form.submit();
}
