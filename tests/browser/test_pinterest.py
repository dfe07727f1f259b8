"""Pinterest Tag in Chromium: core.js loads the hashed library, events land."""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import query_of, vendor_script

CORE = "https://s.pinimg.com/ct/core.js"
SNIPPET = """<script>
!function(e){{if(!window.pintrk){{window.pintrk = function () {{
window.pintrk.queue.push(Array.prototype.slice.call(arguments))}};var
n=window.pintrk;n.queue=[],n.version="3.0";var
t=document.createElement("script");t.async=!0,t.src=e;var
r=document.getElementsByTagName("script")[0];
r.parentNode.insertBefore(t,r)}}}}("{src}");
pintrk('load', '2612345678901', {{em: 'hashed-email'}});
pintrk('page');
pintrk('track', 'checkout', {{value: 10, order_quantity: 1, currency: 'USD'}});
</script>"""


async def test_pinterest_tag(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(CORE, vendor_script("pinterest_core.js"))
    run.serve_vendor(
        "https://s.pinimg.com/ct/lib/main.3f2a1b9c.js",
        vendor_script("pinterest_main.js"),
    )
    src = run.tag_url(CORE)
    assert src == f"{run.proxy_url}/pi/ct/core.js"

    await run.open(
        SNIPPET.format(src=src),
        cookies={"_pin_unauth": "dWlkPTE", "_epik": "epik-click-1"},
    )
    events = await run.beacons("ct.pinterest.com", "/v3/", count=3)
    user = await run.beacon("ct.pinterest.com", "/user/")

    by_event = {query_of(e)["event"]: query_of(e) for e in events}
    assert set(by_event) == {"init", "pagevisit", "checkout"}
    init = by_event["init"]
    assert init["tid"] == "2612345678901"
    assert json.loads(init["pd"]) == {"em": "hashed-email", "pin_unauth": "dWlkPTE"}
    assert json.loads(init["ad"])["epik"] == "epik-click-1"
    assert json.loads(init["ad"])["loc"] == f"{run.site_url}/"
    assert json.loads(by_event["checkout"]["ed"])["value"] == 10
    assert query_of(user)["event"] == "init"
    for beacon in [*events, user]:
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()

    # The origin check is a regex literal: served untouched, still working.
    served = await run.page.evaluate(
        "url => fetch(url).then(r => r.text())",
        f"{run.proxy_url}/pi/ct/lib/main.3f2a1b9c.js",
    )
    assert r"/^https:\/\/([a-z0-9-]+\.)?pinterest\.com$/" in served
