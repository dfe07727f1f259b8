"""tagproxy as a user runs it: `tagproxy url`, then `tagproxy serve` in a
subprocess, with every vendor origin overridden to a local fake vendor that
serves vendor-like scripts we wrote (tests/vendor_scripts/).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import tree_sitter
import tree_sitter_javascript
from yarl import URL

from .conftest import BUNDLED_RULES
from .fakes import FakeVendor, Reply

SCRIPTS = Path(__file__).parent / "vendor_scripts"
JS = {"Content-Type": "application/javascript; charset=utf-8"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"

# A vendor URL literal in any escaping: https://, //, https:\/\/, ...
VENDOR_LITERAL = re.compile(
    rb"(?:https?:)?(?:\\*/){2}[A-Za-z0-9.-]*(?:google-analytics|googletagmanager)\.com"
)
VENDOR_ORIGINS = (
    "https://www.googletagmanager.com",
    "https://*.google-analytics.com",
    "https://connect.facebook.net",
    "https://www.facebook.com",
    "https://plausible.io",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tagproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_clean_env(),
    )


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TAGPROXY_") and not k.lower().endswith("_proxy")
    }


def parses(body: bytes) -> bool:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language()))
    return not parser.parse(body).root_node.has_error


@dataclass
class Served:
    public_url: str
    vendor: FakeVendor
    client: aiohttp.ClientSession


@pytest.fixture
async def served(vendor: FakeVendor) -> AsyncIterator[Served]:
    """`tagproxy serve` in a subprocess, every vendor origin sent to `vendor`."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "proxy", "serve", "--rules", str(BUNDLED_RULES)]
    command += ["--listen", f"127.0.0.1:{port}", "--public-url", public_url]
    for origin in VENDOR_ORIGINS:
        command += ["--upstream-override", f"{origin}={vendor.url}"]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
        command, env=_clean_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        await _wait_listening(port, process)
        async with aiohttp.ClientSession(
            auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
        ) as client:
            yield Served(public_url, vendor, client)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr


async def _wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"tagproxy serve exited: {process.stderr}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("tagproxy serve did not start listening")


async def test_gtag_like_script_and_beacon(served: Served) -> None:
    original = (SCRIPTS / "gtag_like.js").read_bytes()
    served.vendor.reply(
        "www.googletagmanager.com", "/gtag/js", Reply(200, original, list(JS.items()))
    )

    printed = tagproxy(
        "url",
        "https://www.googletagmanager.com/gtag/js?id=G-TEST",
        "--rules",
        str(BUNDLED_RULES),
        "--public-url",
        served.public_url,
    )
    assert printed.returncode == 0, printed.stderr
    src = printed.stdout.strip()
    assert src == f"{served.public_url}/gt/gtag/js?id=G-TEST"

    # Step 1: the script, gzip, with a strong ETag and nothing left to leak.
    headers = {"Accept-Encoding": "gzip", "User-Agent": FIREFOX}
    async with served.client.get(src, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        etag = response.headers["ETag"]
        assert etag.startswith('"')
        assert not etag.startswith("W/")
        body = gzip.decompress(await response.read())
    assert parses(body)
    comment = b"// https://www.google-analytics.com/g/collect is where hits go."
    for kept in (
        rb"/^https:\/\/www\.googletagmanager\.com$/",
        b'"support@google-analytics.com"',
        b'["google-analytics.com", "googletagmanager.com"]',
        b'".google-analytics.com/g/collect"',
        comment,
    ):
        assert kept in body, kept
    code = body.replace(comment, b"")
    assert VENDOR_LITERAL.search(code) is None, VENDOR_LITERAL.findall(code)
    fetched = served.vendor.to("www.googletagmanager.com")
    assert [r.raw_path for r in fetched] == ["/gtag/js?id=G-TEST"]

    # Step 2: a revalidation costs nothing upstream.
    revalidate = headers | {"If-None-Match": etag}
    async with served.client.get(src, headers=revalidate) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag
    assert len(served.vendor.to("www.googletagmanager.com")) == 1

    # Step 3: the beacon the served script would send.
    match = re.search(rb'COLLECT = "([^"]+)"', body)
    assert match is not None
    collect = match.group(1).decode()
    assert collect == f"{served.public_url}/gt/ga/www/g/collect"
    query = (
        "v=2&tid=G-TEST&cid=123.456&en=page_view"
        "&dl=https%3A%2F%2Fshop.example%2F%3Fa%3D1&_p=1+2"
    )
    cookies = "_ga=GA1.1.123.456; session=SECRET; _ga_TEST=GS1.1.1; wp_login=x"
    beacon_headers = {"User-Agent": FIREFOX, "Cookie": cookies}
    # encoded=True: the test client must not re-encode the query either.
    beacon = URL(f"{collect}?{query}", encoded=True)
    async with served.client.post(beacon, headers=beacon_headers) as response:
        assert response.status == 204

    hit = served.vendor.to("www.google-analytics.com")[-1]
    assert hit.raw_path == f"/g/collect?{query}"
    assert hit.all("Cookie") == ["_ga=GA1.1.123.456; _ga_TEST=GS1.1.1"]
    assert hit.all("User-Agent") == [FIREFOX]
    assert hit.all("X-Forwarded-For") == ["127.0.0.1"]
    ip_headers = {"x-real-ip", "forwarded", "true-client-ip", "cf-connecting-ip"}
    assert not [k for k, _ in hit.headers if k.lower() in ip_headers]


async def test_fbevents_like_loader_config_plugin_and_beacon(served: Served) -> None:
    vendor = served.vendor
    loader = (SCRIPTS / "fbevents_like.js").read_bytes()
    vendor.reply(
        "connect.facebook.net",
        "/en_US/fbevents.js",
        Reply(200, loader, list(JS.items())),
    )
    config = (
        b'fbq.registerPlugin("config", {"endpoint": "https://www.facebook.com/tr/"});'
    )
    vendor.reply(
        "connect.facebook.net",
        "/signals/config/1234567890",
        Reply(200, config, list(JS.items())),
    )
    vendor.reply(
        "connect.facebook.net",
        "/signals/plugins/identity.js",
        Reply(200, b"var p=1;", list(JS.items())),
    )

    src = tagproxy(
        "url",
        "https://connect.facebook.net/en_US/fbevents.js",
        "--rules",
        str(BUNDLED_RULES),
        "--public-url",
        served.public_url,
    ).stdout.strip()
    async with served.client.get(src) as response:
        body = await response.read()
    cdn = re.search(rb'CDN = "([^"]+)"', body)
    endpoint = re.search(rb'ENDPOINT = "([^"]+)"', body)
    assert cdn is not None
    assert endpoint is not None
    # Meta checks these literals itself, so the rule keeps them; the runtime
    # shim prepended to the script maps them when used (the browser test
    # tests/browser/test_meta.py shows that end to end).
    assert cdn.group(1).decode() == "https://connect.facebook.net"
    assert endpoint.group(1).decode() == "https://www.facebook.com/tr/"
    assert b"__tagproxyShim" in body[: body.index(b"CDN = ")]
    assert f'"base":"{served.public_url}/fb/w"'.encode() in body
    assert b'["gmail.com", "facebook.com", "hotmail.com"]' in body

    # What init() would load next, as the shim maps the script's URL.
    base = f"{served.public_url}/fb"
    async with served.client.get(
        f"{base}/signals/config/1234567890?v=2.9.999&r=stable&junk=1"
    ) as response:
        assert response.status == 200
        assert b'"endpoint": "' + endpoint.group(1) + b'"' in await response.read()
    async with served.client.get(
        f"{base}/signals/plugins/identity.js?v=2.9.999"
    ) as response:
        assert response.status == 200
    paths = [r.raw_path for r in vendor.to("connect.facebook.net")]
    assert paths == [
        "/en_US/fbevents.js",
        "/signals/config/1234567890?v=2.9.999&r=stable",
        "/signals/plugins/identity.js?v=2.9.999",
    ]

    # What track() would send.
    pixel = f"{base}/w/tr/?id=1234567890&ev=PageView&v=2.9.999"
    async with served.client.get(
        pixel, headers={"Cookie": "_fbp=fb.1.2.3; cart=9"}
    ) as response:
        assert response.status == 204
    hit = vendor.to("www.facebook.com")[-1]
    assert hit.raw_path == "/tr/?id=1234567890&ev=PageView&v=2.9.999"
    assert hit.all("Cookie") == []


async def test_plausible_like_posts_to_routed_endpoint(served: Served) -> None:
    tracker = (SCRIPTS / "plausible_like.js").read_bytes()
    served.vendor.reply(
        "plausible.io", "/js/script.js", Reply(200, tracker, list(JS.items()))
    )
    served.vendor.reply("plausible.io", "/api/event", Reply(202, b"ok"))
    src = tagproxy(
        "url",
        "https://plausible.io/js/script.js",
        "--rules",
        str(BUNDLED_RULES),
        "--public-url",
        served.public_url,
    ).stdout.strip()

    async with served.client.get(src) as response:
        body = await response.read()
    assert b'new URL(me.src).origin + "/pa/api/event"' in body

    # new URL(src).origin + the rewritten path: where the tracker will post.
    endpoint = f"{served.public_url}/pa/api/event"
    event = b'{"n":"pageview","u":"https://shop.example/","d":"shop.example"}'
    headers = {"Content-Type": "text/plain", "User-Agent": FIREFOX}
    async with served.client.post(endpoint, data=event, headers=headers) as response:
        assert response.status == 202
    hit = served.vendor.to("plausible.io")[-1]
    assert (hit.method, hit.raw_path, hit.body) == ("POST", "/api/event", event)
    assert hit.all("X-Forwarded-For") == ["127.0.0.1"]
    assert hit.all("User-Agent") == [FIREFOX]
