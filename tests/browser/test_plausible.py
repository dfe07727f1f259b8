"""Plausible in Chromium: the script first-party, its pageview and event land."""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import vendor_script

SCRIPT = "https://plausible.io/js/script.js"


async def test_plausible_pageview_and_event(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(SCRIPT, vendor_script("plausible.js"))
    src = run.tag_url(SCRIPT)
    assert src == f"{run.proxy_url}/pa/js/script.js"

    await run.open(
        f'<script defer data-domain="shop.test" src="{src}"></script>'
        "<script>addEventListener('load', function () {"
        "  plausible('Signup', {props: {plan: 'pro'}}); });</script>"
    )
    beacons = await run.beacons("plausible.io", "/api/event", count=2)
    # XHR and sendBeacon race: tell the two apart by event name.
    by_name = {json.loads(b.body)["n"]: b for b in beacons}
    first, second = by_name["pageview"], by_name["Signup"]

    assert json.loads(first.body) == {
        "n": "pageview",
        "u": f"{run.site_url}/",
        "d": "shop.test",
        "r": None,
    }
    assert first.header("Content-Type") == "text/plain"
    assert json.loads(second.body)["n"] == "Signup"
    for beacon in (first, second):
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
