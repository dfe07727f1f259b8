"""Reddit Pixel in Chromium: pixel.js, its config JSON fetched cross-origin
and rewritten, the PageVisit pixel and a conversion posted to the endpoint
the config names."""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import query_of, vendor_script

PIXEL = "https://www.redditstatic.com/ads/pixel.js"
CONFIG = "https://pixel-config.reddit.com/pixels/a2_test123/config"
SNIPPET = """<script>
!function(w,d){{if(!w.rdt){{var p=w.rdt=function(){{p.sendEvent?
p.sendEvent.apply(p,arguments):p.callQueue.push(arguments)}};p.callQueue=[];
var t=d.createElement("script");t.src="{src}",t.async=!0;
var s=d.getElementsByTagName("script")[0];
s.parentNode.insertBefore(t,s)}}}}(window,document);
rdt('init','a2_test123');
rdt('track', 'PageVisit');
rdt('track', 'Purchase', {{value: 12.5, currency: 'USD', itemCount: 1}});
</script>"""


async def test_reddit_pixel(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(PIXEL, vendor_script("reddit_pixel.js"))
    run.serve_vendor(CONFIG, vendor_script("reddit_config.json"), "application/json")
    src = run.tag_url(PIXEL)
    assert src == f"{run.proxy_url}/rd/ads/pixel.js"

    await run.open(SNIPPET.format(src=src), cookies={"_rdt_uuid": "1700.abcdef"})
    visit = await run.beacon("alb.reddit.com", "/rp.gif")
    purchase = await run.beacon("alb.reddit.com", "/rp")

    query = query_of(visit)
    assert (query["id"], query["event"], query["uuid"]) == (
        "a2_test123",
        "PageVisit",
        "1700.abcdef",
    )
    assert purchase.method == "POST"
    assert purchase.header("Content-Type") == "text/plain;charset=UTF-8"
    body = json.loads(purchase.body)
    assert body["event"] == "Purchase"
    assert body["metadata"] == {"value": 12.5, "currency": "USD", "itemCount": 1}
    assert body["url"] == f"{run.site_url}/"
    for beacon in (visit, purchase):
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
