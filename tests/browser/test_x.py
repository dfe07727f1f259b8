"""X website tag in Chromium: one event to two hosts picked at run time.

uwt.js joins "https://" to bare host names it chooses by the page's domain;
the runtime shim maps both hosts when the images are requested.
"""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import query_of, vendor_script

UWT = "https://static.ads-twitter.com/uwt.js"
SNIPPET = """<script>
!function(e,t,n,s,u,a){{e.twq||(s=e.twq=function(){{s.exe?s.exe.apply(s,arguments)
:s.queue.push(arguments);}},s.version='1.1',s.queue=[],u=t.createElement(n),
u.async=!0,u.src='{src}',a=t.getElementsByTagName(n)[0],
a.parentNode.insertBefore(u,a))}}(window,document,'script');
twq('config','o1x2y');
twq('event', 'tw-o1x2y-purchase', {{value: 30, currency: 'USD'}});
</script>"""


async def test_x_website_tag(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(UWT, vendor_script("x_uwt.js"))
    src = run.tag_url(UWT)
    assert src == f"{run.proxy_url}/xt/uwt.js"

    await run.open(SNIPPET.format(src=src), cookies={"_twclid": "click-77"})
    tco = await run.beacons("t.co", "/1/i/adsct", count=2)
    analytics = await run.beacons("analytics.twitter.com", "/1/i/adsct", count=2)

    for host_beacons in (tco, analytics):
        events = [json.loads(query_of(b)["events"])[0][0] for b in host_beacons]
        assert sorted(events) == ["pageview", "tw-o1x2y-purchase"]
    query = query_of(tco[0])
    assert (query["txn_id"], query["twclid"]) == ("o1x2y", "click-77")
    assert query["tw_document_href"] == f"{run.site_url}/"
    for beacon in [*tco, *analytics]:
        assert beacon.method == "GET"
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
