"""Snap Pixel in Chromium: a host glued from pieces, reached through the shim.

The library builds "tr." + "snapchat.com": no literal holds the whole host,
so static rewriting cannot find it; the beacon and the cookie-match form
still land first-party because the runtime shim maps them when used.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from ..fakes import Reply
from .conftest import StartBrowser
from .harness import query_of, vendor_script

SCEVENT = "https://sc-static.net/scevent.min.js"
SNIPPET = """<script type='text/javascript'>
(function(e,t,n){{if(e.snaptr)return;var a=e.snaptr=function()
{{a.handleRequest?a.handleRequest.apply(a,arguments):a.queue.push(arguments)}};
a.queue=[];var s='script';var r=t.createElement(s);r.async=!0;
r.src=n;var u=t.getElementsByTagName(s)[0];
u.parentNode.insertBefore(r,u);}})(window,document,"{src}");
snaptr('init', 'pixel-0001');
snaptr('track', 'PAGE_VIEW');
snaptr('track', 'PURCHASE', {{price: 42, currency: 'EUR'}});
</script>"""


async def test_snap_pixel_glued_host(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(SCEVENT, vendor_script("snapchat_scevent.js"))
    # The cookie match answers the hidden iframe with a small page.
    page = Reply(
        200, b"<!doctype html><title>cm</title>", [("Content-Type", "text/html")]
    )
    run.vendor.reply("tr.snapchat.com", "/cm/i", page)
    src = run.tag_url(SCEVENT)
    assert src == f"{run.proxy_url}/sn/scevent.min.js"

    await run.open(SNIPPET.format(src=src), cookies={"_scid": "scid-visitor-7"})
    events = await run.beacons("tr.snapchat.com", "/p", count=2)
    match = await run.beacon("tr.snapchat.com", "/cm/i")

    bodies = {}
    for event in events:
        assert event.method == "POST"
        assert event.header("Content-Type") == (
            "application/x-www-form-urlencoded;charset=UTF-8"
        )
        form = dict(parse_qsl(event.body.decode()))
        bodies[form["ev"]] = form
    assert set(bodies) == {"PAGE_VIEW", "PURCHASE"}
    assert bodies["PAGE_VIEW"]["pid"] == "pixel-0001"
    assert bodies["PAGE_VIEW"]["u_c1"] == "scid-visitor-7"
    assert bodies["PAGE_VIEW"]["pl"] == f"{run.site_url}/"
    assert (bodies["PURCHASE"]["price"], bodies["PURCHASE"]["currency"]) == (
        "42",
        "EUR",
    )
    assert query_of(match) == {"pid": "pixel-0001", "u_scsid": "scid-visitor-7"}
    for beacon in [*events, match]:
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
