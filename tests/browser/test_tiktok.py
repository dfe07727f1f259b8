"""TikTok Pixel in Chromium, directly and from inside a tag-manager container."""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import BrowserRun, query_of, vendor_script

EVENTS = "https://analytics.tiktok.com/i18n/pixel/events.js"
MAIN = "https://analytics.tiktok.com/i18n/pixel/static/main.test1.js"
GTM = "https://www.googletagmanager.com/gtm.js?id=GTM-TEST1"
# The pixel snippet as a site pastes it (written for these tests).
LOADER = """
!function (w, d, t) {
  var ttq = w[t] = w[t] || [];
  ttq.methods = ["page", "track"];
  ttq.methods.forEach(function (m) {
    ttq[m] = function () { ttq.push([m].concat([].slice.call(arguments))); };
  });
  ttq.load = function (id) {
    var u = "EVENTS_URL";
    var s = d.createElement("script");
    s.async = true;
    s.src = u + "?sdkid=" + id + "&lib=" + t;
    d.head.appendChild(s);
  };
  ttq.load("CTEST01");
  ttq.page();
  ttq.track("AddToCart", {value: 5, currency: "EUR"});
}(window, document, "ttq");
"""


def serve_tiktok(run: BrowserRun) -> None:
    run.serve_vendor(EVENTS, vendor_script("tiktok-events.js"))
    run.serve_vendor(MAIN, vendor_script("tiktok-main.js"))


async def assert_tiktok_events(run: BrowserRun) -> None:
    hits = await run.beacons("analytics.tiktok.com", "/api/v2/pixel", count=2)
    events = {json.loads(h.body)["event"]: json.loads(h.body) for h in hits}
    assert set(events) == {"Pageview", "AddToCart"}
    cart = events["AddToCart"]
    assert cart["context"]["pixel"] == {"code": "CTEST01"}
    assert cart["context"]["user"] == {"ttp": "visitor-ttp-9"}
    assert cart["context"]["page"]["url"] == f"{run.site_url}/"
    assert cart["properties"] == {"value": 5, "currency": "EUR"}
    for hit in hits:
        assert hit.header("Content-Type") == "application/json"
        run.assert_visitor(hit, cookies=["_ttp"])
        assert hit.header("Cookie") == "_ttp=visitor-ttp-9"

    bootstrap = [
        r for r in run.vendor.to("analytics.tiktok.com") if r.path.endswith("events.js")
    ]
    assert [query_of(r) for r in bootstrap] == [{"sdkid": "CTEST01", "lib": "ttq"}]
    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()


async def test_tiktok_pixel_first_party(browser_run: StartBrowser) -> None:
    run = await browser_run()
    serve_tiktok(run)
    src = run.tag_url(EVENTS)
    assert src == f"{run.proxy_url}/tt/i18n/pixel/events.js"
    await run.open(
        "<script>" + LOADER.replace("EVENTS_URL", src) + "</script>",
        cookies={"_ttp": "visitor-ttp-9"},
    )
    await assert_tiktok_events(run)
    # The per-visitor bootstrap is never cached for everyone.
    status, _ = await run.proxy_get("/tt/i18n/pixel/events.js?sdkid=CTEST01&lib=ttq")
    assert status == 200
    assert len([r for r in run.vendor.received if r.path.endswith("events.js")]) == 2


def container(loader_html: str) -> bytes:
    """A GTM-like container holding a custom HTML tag, JSON-escaped twice.

    The tag's HTML is a JSON string (slashes escaped "\\/", as tag managers
    write them) inside a JSON document that is itself a JavaScript string
    literal: the vendor URL appears with its slashes escaped three times.
    """
    inner = json.dumps({"tags": [{"type": "html", "html": loader_html}]})
    inner = inner.replace("/", "\\/")
    return (
        b"(function () {\n"
        b"  var c = JSON.parse("
        + json.dumps(inner).replace("/", "\\/").encode()
        + b");\n"
        # Tag managers re-create <script> elements so that they execute.
        b"  c.tags.forEach(function (tag) {\n"
        b"    var holder = document.createElement('div');\n"
        b"    holder.innerHTML = tag.html;\n"
        b"    holder.querySelectorAll('script').forEach(function (old) {\n"
        b"      var s = document.createElement('script');\n"
        b"      s.text = old.text;\n"
        b"      document.head.appendChild(s);\n"
        b"    });\n"
        b"  });\n"
        b"})();\n"
    )


async def test_gtm_container_loads_tiktok_first_party(
    browser_run: StartBrowser,
) -> None:
    run = await browser_run()
    serve_tiktok(run)
    body = container("<script>" + LOADER.replace("EVENTS_URL", EVENTS) + "</script>")
    assert b"https:\\\\\\/\\\\\\/analytics.tiktok.com" in body  # escaped 3 times
    run.serve_vendor(GTM, body)

    src = run.tag_url(GTM)
    await run.open(
        f'<script async src="{src}"></script>', cookies={"_ttp": "visitor-ttp-9"}
    )
    await assert_tiktok_events(run)
