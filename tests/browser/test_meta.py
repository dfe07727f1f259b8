"""Meta Pixel in Chromium: kept literals pass the pixel's own checks, and the
runtime shim carries its Image and form-POST events first-party."""

from __future__ import annotations

from aiohttp import web

from ..fakes import Received
from .conftest import StartBrowser
from .harness import query_of, vendor_script

FBEVENTS = "https://connect.facebook.net/en_US/fbevents.js"
SNIPPET = """
<script>
!function(w){{ if (w.fbq) return; var n = w.fbq = function () {{
  n.callMethod ? n.callMethod.apply(n, arguments) : n.queue.push(arguments); }};
  n.queue = []; n.loaded = true; n.version = '2.0';
  var s = document.createElement('script'); s.async = true; s.src = '{src}';
  document.head.appendChild(s); }}(window);
fbq('init', '1234567890');
fbq('track', 'PageView');
fbq('track', 'Purchase', {{value: '9.99', currency: 'EUR', contents: '{long}'}});
</script>
"""


async def tr_answer(request: web.Request, received: Received) -> web.Response:
    # A pixel GIF for Image hits; an HTML page for the form post's iframe.
    if request.method == "POST":
        return web.Response(text="<html></html>", content_type="text/html")
    return web.Response(body=b"GIF89a", content_type="image/gif")


async def test_meta_pixel_first_party(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(FBEVENTS, vendor_script("fbevents.js"))
    run.serve_vendor(
        "https://connect.facebook.net/signals/config/1234567890",
        b"window.fbConfigLoaded = true;",
    )
    run.vendor.reply("www.facebook.com", "/tr/", tr_answer)
    src = run.tag_url(FBEVENTS)
    assert src == f"{run.proxy_url}/fb/en_US/fbevents.js"

    await run.open(
        SNIPPET.format(src=src, long="sku-1," * 400),
        cookies={"_fbp": "fb.1.1700000000000.42", "_ga": "GA1.1.1.2"},
    )
    hits = await run.beacons("www.facebook.com", "/tr/", count=2)
    page_view = next(h for h in hits if h.method == "GET")
    purchase = next(h for h in hits if h.method == "POST")

    assert query_of(page_view) | {"dl": "-", "ts": "-", "rl": "-"} == {
        "id": "1234567890",
        "ev": "PageView",
        "dl": "-",
        "rl": "-",
        "ts": "-",
        "fbp": "fb.1.1700000000000.42",
    }
    assert query_of(page_view)["dl"] == f"{run.site_url}/"
    assert b"ev=Purchase" in purchase.body
    assert b"cd%5Bcurrency%5D=EUR" in purchase.body
    assert purchase.header("Content-Type") == "application/x-www-form-urlencoded"
    for hit in hits:
        run.assert_visitor(hit, cookies=[])  # the pixel needs no cookie header

    # The config was fetched first-party through the CDN-base check.
    config = run.vendor.to("connect.facebook.net")
    assert [r.path for r in config] == [
        "/en_US/fbevents.js",
        "/signals/config/1234567890",
    ]
    assert await run.page.evaluate("window.fbConfigLoaded") is True
    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()
