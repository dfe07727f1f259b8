"""Umami in Chromium: self-hosted and Umami Cloud builds of the tracker.

A self-hosted build posts to the directory of its own src, under the mount
once first-party; Umami Cloud's build names its gateway host, rewritten.
The session token of the first answer comes back in x-umami-cache.
"""

from __future__ import annotations

import json

import pytest

from ..fakes import Reply
from .conftest import StartBrowser
from .harness import vendor_script

SCRIPT = "https://cloud.umami.is/script.js"
SNIPPET = (
    '<script defer src="{src}" data-website-id="wid-1"></script>'
    "<script>addEventListener('load', function () {{"
    " setTimeout(function () {{ umami.track('signup', {{plan: 'pro'}}); }}, 50); }});"
    "</script>"
)


# What the build step writes for __COLLECT_API_HOST__, and where beacons go.
@pytest.mark.parametrize(
    ("build_host", "collect_host"),
    [
        (b'""', "cloud.umami.is"),
        (b'"https://api-gateway.umami.dev"', "api-gateway.umami.dev"),
    ],
)
async def test_umami(
    browser_run: StartBrowser, build_host: bytes, collect_host: str
) -> None:
    run = await browser_run()
    tracker = vendor_script("umami.js").replace(b'"__COLLECT_API_HOST__"', build_host)
    run.serve_vendor(SCRIPT, tracker)
    answer = Reply(200, b'{"cache":"tok-123"}', [("Content-Type", "application/json")])
    run.vendor.reply(collect_host, "/api/send", answer)
    src = run.tag_url(SCRIPT)
    assert src == f"{run.proxy_url}/um/script.js"

    await run.open(SNIPPET.format(src=src))
    first, second = await run.beacons(collect_host, "/api/send", count=2)

    view, event = json.loads(first.body), json.loads(second.body)
    assert view["payload"]["website"] == "wid-1"
    assert view["payload"]["url"] == "/"
    assert "name" not in view["payload"]
    assert (event["payload"]["name"], event["payload"]["data"]) == (
        "signup",
        {"plan": "pro"},
    )
    assert first.all("x-umami-cache") == []
    assert second.all("x-umami-cache") == ["tok-123"]
    for beacon in (first, second):
        assert beacon.header("Content-Type") == "application/json"
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
