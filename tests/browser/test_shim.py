"""The runtime URL shim in Chromium: every transport, the host map, idempotence."""

from __future__ import annotations

from pathlib import Path

from ..conftest import BUNDLED_RULES
from ..fakes import Reply
from .conftest import StartBrowser
from .harness import BrowserRun, query_of, vendor_script

ACME_RULE = Path(__file__).resolve().parent / "rules" / "acme.toml"
TAG = "https://cdn.acme.example/tag.js"
COLLECT = "collect.acme-analytics.example"
TRANSPORTS = (
    "fetch",
    "fetch-url",
    "fetch-request",
    "beacon",
    "xhr",
    "image",
    "setattribute",
    "script",
)


async def acme(browser_run: StartBrowser) -> BrowserRun:
    run = await browser_run(rules=[BUNDLED_RULES, ACME_RULE])
    run.serve_vendor(TAG, vendor_script("acme.js"))
    run.serve_vendor("https://cdn.acme.example/frame.html", b"<p>", "text/html")
    # A form post navigates the iframe: a 204 would abort that navigation.
    run.vendor.reply(
        COLLECT, "/form", Reply(200, b"ok", [("Content-Type", "text/plain")])
    )
    return run


async def test_every_transport_lands_first_party(browser_run: StartBrowser) -> None:
    run = await acme(browser_run)
    await run.open(
        f'<script src="{run.tag_url(TAG)}"></script>', cookies={"_acme_id": "a1"}
    )
    hits = await run.beacons(COLLECT, "/hit", count=6)
    hits += await run.beacons("eu.acme-analytics.example", "/hit", count=2)
    [form] = await run.beacons(COLLECT, "/form")

    assert sorted(query_of(h)["via"] for h in hits) == sorted(TRANSPORTS)
    bodies = {query_of(h)["via"]: h.body for h in hits}
    assert (bodies["fetch"], bodies["fetch-request"], bodies["beacon"]) == (
        b"f",
        b"r",
        b"b",
    )
    assert bodies["xhr"] == b"x"
    assert form.body == b"ev=PageView"
    for received in [*hits, form]:
        run.assert_visitor(received, cookies=["_acme_id"])
    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()


# Each row: a URL as a script might use it, and what the shim makes of it
# ("{proxy}" is tagproxy's public URL, "{site}" the page's origin).
MAP_CASES = [
    # exact host, any scheme form, case-insensitive, query and hash kept
    ("https://collect.acme-analytics.example/hit?a=1#x", "{proxy}/ac/c/hit?a=1#x"),
    ("//collect.acme-analytics.example/hit", "{proxy}/ac/c/hit"),
    ("http://collect.acme-analytics.example/hit", "{proxy}/ac/c/hit"),
    ("https://COLLECT.Acme-Analytics.example:443/hit", "{proxy}/ac/c/hit"),
    ("wss://collect.acme-analytics.example/hit", "{wsproxy}/ac/c/hit"),
    # pattern host: labels the rule allows, and ones it does not
    ("https://eu.acme-analytics.example/hit", "{proxy}/ac/r/eu/hit"),
    ("https://us2.acme-analytics.example/hit", "{proxy}/ac/r/us2/hit"),
    ("https://evil.acme-analytics.example/hit", None),
    ("https://a.eu.acme-analytics.example/hit", None),
    ("https://us22.acme-analytics.example/hit", None),
    # paths tagproxy has no route for, other ports, look-alike hosts
    ("https://collect.acme-analytics.example/admin", None),
    ("https://collect.acme-analytics.example:8443/hit", None),
    ("https://collect.acme-analytics.example.evil.test/hit", None),
    ("https://user@collect.acme-analytics.example/hit", None),
    # the page's own URLs, relative URLs, other schemes
    ("/hit", None),
    ("{site}/hit", None),
    ("data:text/plain,collect.acme-analytics.example/hit", None),
    # hosts of every other loaded rule are covered too
    ("https://plausible.io/api/event", "{proxy}/pa/api/event"),
]


async def test_host_map(browser_run: StartBrowser) -> None:
    run = await acme(browser_run)
    await run.open(f'<script src="{run.tag_url(TAG)}"></script>')
    places = {
        "proxy": run.proxy_url,
        "wsproxy": run.proxy_url.replace("https:", "wss:"),
        "site": run.site_url,
    }
    urls = [url.format(**places) for url, _ in MAP_CASES]
    mapped = await run.page.evaluate("us => us.map(window.__tagproxyShim.map)", urls)
    expected = [
        url if want is None else want.format(**places)
        for url, (_, want) in zip(urls, MAP_CASES, strict=True)
    ]
    assert dict(zip(urls, mapped, strict=True)) == dict(
        zip(urls, expected, strict=True)
    )
    # Values that are not URLs pass as the very same value.
    same = await run.page.evaluate(
        "() => [42, null, undefined].map(v => window.__tagproxyShim.map(v) === v)"
    )
    assert same == [True, True, True]


async def test_idempotent_and_touches_nothing_else(browser_run: StartBrowser) -> None:
    run = await acme(browser_run)
    src = run.tag_url(TAG)
    run.site.pages["/own"] = "own"
    await run.open(
        f'<script src="{src}"></script>'
        "<script>window.firstFetch = window.fetch;</script>"
        f'<script src="{src}?again=1"></script>'
    )
    # Same-URL images and scripts come from the memory cache the second time.
    hits = await run.beacons(COLLECT, "/hit", count=10)
    fetches = [h for h in hits if query_of(h)["via"] == "fetch"]
    assert len(fetches) == 2  # once per load, each mapped exactly once

    wrapped_once = await run.page.evaluate("window.fetch === window.firstFetch")
    assert wrapped_once
    own = await run.page.evaluate(
        "async () => { const r = await fetch('/own'); return r.status; }"
    )
    assert own == 200
    await run.page.evaluate(
        "s => { new Image().src = s + '/pixel.gif';"
        " navigator.sendBeacon(s + '/beacon', 'x'); }",
        run.site_url,
    )
    await run.settle()
    assert "/pixel.gif" in run.site.paths
    assert "/beacon" in run.site.paths
    run.assert_only_first_party()
    run.assert_no_errors()
