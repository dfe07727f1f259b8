"""Google tag in Chromium: GA4 with a run-time region host, Google Ads hits,
and field case F14 (hosts assembled at run time)."""

from __future__ import annotations

from .conftest import StartBrowser
from .harness import query_of, vendor_script

GTAG = "https://www.googletagmanager.com/gtag/js?id=G-TEST123"
GOOGLE_COOKIES = ["_ga", "_ga_*", "FPID", "FPLC", "FPAU", "FPGCLAW", "FPGCLDC"]
SNIPPET = """
<script async src="{src}"></script>
<script>
  window.dataLayer = window.dataLayer || [];
  function gtag(){{dataLayer.push(arguments);}}
  gtag('js', new Date());
  gtag('config', 'G-TEST123');
  gtag('config', 'AW-777');
  gtag('event', 'conversion', {{send_to: 'AW-777/AbC', value: 10, currency: 'EUR'}});
  gtag('event', 'purchase', {{value: 42}});
</script>
"""


async def test_gtag_ga4_and_ads_first_party(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(GTAG, vendor_script("gtag.js"))
    src = run.tag_url(GTAG)
    assert src == f"{run.proxy_url}/gt/gtag/js?id=G-TEST123"
    await run.open(
        SNIPPET.format(src=src),
        cookies={
            "_ga": "GA1.1.111.222",
            "_ga_TEST123": "GS1.1.1700000001.4",
            "_gcl_au": "1.1.5555.6666",
            "_fbp": "fb.1.1.2",
        },
    )

    # GA4: the region host glued at run time reached region1, first-party.
    hits = await run.beacons("region1.google-analytics.com", "/g/collect", count=2)
    page_view = next(h for h in hits if query_of(h).get("en") == "page_view")
    batch = next(h for h in hits if h.method == "POST" and h.body)
    assert query_of(page_view) | {"dl": "-"} == {
        "v": "2",
        "tid": "G-TEST123",
        "cid": "111.222",
        "sid": "1700000001",
        "dl": "-",
        "dt": "shop",
        "en": "page_view",
        "_s": "1",
    }
    assert query_of(page_view)["dl"] == f"{run.site_url}/"
    assert page_view.body == b""
    assert batch.body == b"en=purchase&epn.value=42"
    for hit in hits:
        run.assert_visitor(hit, cookies=GOOGLE_COOKIES)
        assert "_ga=GA1.1.111.222" in (hit.header("Cookie") or "")

    # Google signals, audiences and tag diagnostics: literals rewritten.
    signals = await run.beacon("stats.g.doubleclick.net", "/g/collect")
    assert query_of(signals)["aip"] == "1"
    await run.beacon("analytics.google.com", "/g/collect")
    td = await run.beacon("www.googletagmanager.com", "/td")
    assert query_of(td) == {"id": "G-TEST123", "v": "3"}

    # Google Ads: conversion, remarketing (glued host), user list and ccm
    # (www.google.com, kept literal, mapped by the shim).
    conversion = await run.beacon("www.googleadservices.com", "/pagead/conversion/777/")
    assert query_of(conversion) | {"auid": "5555.6666"} == {
        "label": "AbC",
        "value": "10",
        "currency_code": "EUR",
        "auid": "5555.6666",
    }
    remarketing = await run.beacon(
        "googleads.g.doubleclick.net", "/pagead/viewthroughconversion/777/"
    )
    assert query_of(remarketing)["url"] == f"{run.site_url}/"
    await run.beacon("www.google.com", "/pagead/1p-user-list/777/")
    ccm = await run.beacon("www.google.com", "/ccm/collect")
    assert query_of(ccm)["tid"] == "AW-777"
    for hit in (signals, conversion, remarketing, ccm):
        run.assert_visitor(hit, cookies=GOOGLE_COOKIES)

    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()


F14_SCRIPT = b"""
(function () {
  var a = window.gaRegion;
  var u="https://"+a+".google-analytics.com/g/collect";
  var w="https://region1.google-analytics.com/g/collect";
  navigator.sendBeacon(u + "?v=2&tid=G-F14&en=glued", "");
  navigator.sendBeacon(w + "?v=2&tid=G-F14&en=literal", "");
  window.f14Urls = [u, w];
})();
"""


async def test_f14_hosts_assembled_at_run_time(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(GTAG, F14_SCRIPT)
    src = run.tag_url(GTAG)
    await run.open(
        f"<script>window.gaRegion = 'region7';</script><script src='{src}'></script>"
    )

    glued = await run.beacon("region7.google-analytics.com", "/g/collect")
    literal = await run.beacon("region1.google-analytics.com", "/g/collect")
    assert query_of(glued)["en"] == "glued"
    assert query_of(literal)["en"] == "literal"
    for hit in (glued, literal):
        run.assert_visitor(hit, cookies=[])

    # The served script parsed (no page error) with the literal made
    # first-party statically; the glued one was first-party only at use.
    status, served = await run.proxy_get("/gt/gtag/js?id=G-TEST123")
    assert status == 200
    assert f'"{run.proxy_url}/gt/ga/region1/g/collect"'.encode() in served
    assert b'"https://"+a+".google-analytics.com/g/collect"' in served

    # The first-party path of region1 reaches region1; a label outside the
    # rule's pattern is refused by tagproxy without any upstream contact.
    status, _ = await run.proxy_get("/gt/ga/region1/g/collect?en=direct", "POST")
    assert status == 204
    direct = await run.beacons("region1.google-analytics.com", "/g/collect", count=2)
    assert any(query_of(d)["en"] == "direct" for d in direct)
    before = len(run.vendor.received)
    for label in ("evil.example.org", "evil", "region1.evil"):
        status, _ = await run.proxy_get(f"/gt/ga/{label}/g/collect")
        assert status == 404, label
    assert len(run.vendor.received) == before

    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()
