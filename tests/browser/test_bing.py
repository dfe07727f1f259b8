"""Microsoft Advertising UET in Chromium: bat.js, its tag settings, pixels.

bat.js builds every URL as "//" + domain + path from a bare "bat.bing.com":
the rule rewrites that bare host, and the beacons reach tagproxy.
"""

from __future__ import annotations

from .conftest import StartBrowser
from .harness import query_of, vendor_script

BAT = "https://bat.bing.com/bat.js"
SNIPPET = """<script>
(function(w,d,t,r,u){{var f,n,i;w[u]=w[u]||[],f=function(){{var o={{ti:"5566778"}};
o.q=w[u],w[u]=new UET(o),w[u].push("pageLoad")}},n=d.createElement(t),n.src=r,
n.async=1,n.onload=f,i=d.getElementsByTagName(t)[0],i.parentNode.insertBefore(n,i)
}})(window,document,"script","{src}","uetq");
window.uetq = window.uetq || [];
window.uetq.push("event", "purchase", {{revenue_value: 25.5, currency: "EUR"}});
</script>"""


async def test_bing_uet_page_load_and_event(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(BAT, vendor_script("bing_bat.js"))
    run.serve_vendor(
        "https://bat.bing.com/p/action/5566778.js", vendor_script("bing_tag.js")
    )
    src = run.tag_url("//bat.bing.com/bat.js".replace("//", "https://", 1))
    assert src == f"{run.proxy_url}/bi/bat.js"

    await run.open(SNIPPET.format(src=src), cookies={"_uetvid": "v0123456789abcdef"})
    beacons = await run.beacons("bat.bing.com", "/action/0", count=2)
    by_event = {query_of(b)["evt"]: query_of(b) for b in beacons}

    custom, page = by_event["custom"], by_event["pageLoad"]
    assert (custom["ea"], custom["gv"], custom["gc"]) == ("purchase", "25.5", "EUR")
    assert page["ti"] == "5566778"
    assert page["Ver"] == "2"
    assert page["vid"] == "v0123456789abcdef"
    assert page["p"] == f"{run.site_url}/"
    assert page["ts"] == "cfg"  # the tag settings script loaded first-party
    for beacon in beacons:
        assert beacon.method == "GET"
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
