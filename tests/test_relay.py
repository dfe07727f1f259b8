"""Relay behaviour against a fake vendor that records what reached it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web

from proxy.upstream import GuardedResolver, is_forbidden_address, parse_override

from .conftest import BUNDLED_RULES, StartProxy
from .fakes import FakeVendor, Received, Reply, raw_request

PUBLIC = "https://www.example.com"
HOST_LINE = "Host: www.example.com\nConnection: close\n"


# Headers pass by allowlist; whatever a client adds beyond it stays behind.
@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("Authorization: Bearer secret", None),
        ("Proxy-Authorization: Basic x", None),
        ("CF-Connecting-IP: 192.0.2.66", None),
        ("CDN-Loop: cloudflare", None),
        ("X-Amz-Cf-Id: abc", None),
        ("X-Custom-Debug: 1", None),
        ("Forwarded: for=192.0.2.66", None),
        ("Via: 1.1 edge", None),
        ("Keep-Alive: timeout=5", None),
        ("Accept-Language: de-CH", "de-CH"),
        ("Referer: https://www.example.com/page", "https://www.example.com/page"),
        ("DNT: 1", "1"),
        ("Sec-GPC: 1", "1"),
        ('Sec-CH-UA: "Chromium";v="130"', '"Chromium";v="130"'),
    ],
)
async def test_request_header_allowlist(
    vendor: FakeVendor, start_proxy: StartProxy, sent: str, expected: str | None
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, f"GET /mt/matomo.php?rec=1 HTTP/1.1\n{HOST_LINE}{sent}\n"
    )
    assert response.status == 204
    name = sent.partition(":")[0]
    received = vendor.received[0]
    assert received.all(name) == ([expected] if expected else [])


async def test_connection_named_headers_never_pass(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "GET /mt/matomo.php HTTP/1.1\nHost: www.example.com\n"
        "Connection: close, Accept-Language\nAccept-Language: fr\n",
    )
    assert response.status == 204
    assert vendor.received[0].all("Accept-Language") == []


async def test_host_is_the_vendors(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    await raw_request(
        proxy.port, "GET /gt/ga/region7/g/collect?v=2 HTTP/1.1\n" + HOST_LINE
    )
    received = vendor.received[0]
    assert received.host == "region7.google-analytics.com"
    assert received.raw_path == "/g/collect?v=2"


# Bodies over the route's limit are refused before any upstream contact.
@pytest.mark.parametrize("chunked", [False, True])
async def test_body_limit(
    vendor: FakeVendor, start_proxy: StartProxy, chunked: bool
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    body = b"x" * (64 * 1024 + 1)  # plausible's /api/event limit is 64 KiB
    if chunked:
        framing = "Transfer-Encoding: chunked\n"
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        framing = f"Content-Length: {len(body)}\n"
        payload = body
    response = await raw_request(
        proxy.port, f"POST /pa/api/event HTTP/1.1\n{HOST_LINE}{framing}", payload
    )
    assert response.status == 413
    assert vendor.received == []


async def test_body_at_limit_passes_byte_exact(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    body = bytes(range(256)) * 256  # 64 KiB of every byte value
    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=body) as response:
        assert response.status == 204
    assert vendor.received[0].body == body


async def test_method_not_allowed(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    async with proxy.client.get(f"{proxy.url}/pa/api/event") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
    async with proxy.client.delete(f"{proxy.url}/gt/gtag/js?id=G-1") as response:
        assert response.status == 405
    assert vendor.received == []


async def test_head_and_no_body_statuses(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("matomo.example.net", "/matomo.php", Reply(200, b"GIF89a-pixel"))
    proxy = await start_proxy(public_url=PUBLIC)
    head = await raw_request(proxy.port, "HEAD /mt/matomo.php HTTP/1.1\n" + HOST_LINE)
    assert head.status == 200
    assert head.header("Content-Length") == "12"
    assert vendor.received[0].method == "HEAD"

    # 204 from the vendor: an answer with no body that does not hang.
    answer = await asyncio.wait_for(
        raw_request(proxy.port, "GET /mt/piwik.php HTTP/1.1\n" + HOST_LINE), 5
    )
    assert answer.status == 204
    assert answer.body == b""


# Redirects: made first-party inside the rule, refused outside it.
@pytest.mark.parametrize(
    ("location", "status", "expected"),
    [
        (
            "https://matomo.example.net/matomo.php?x=1",
            302,
            "https://www.example.com/mt/matomo.php?x=1",
        ),
        ("/piwik.php", 307, "https://www.example.com/mt/piwik.php"),
        ("http://169.254.169.254/latest/meta-data/", 302, None),
        ("https://attacker.example.org/", 301, None),
        ("https://plausible.io/api/event", 302, None),  # another rule's host
        ("http://matomo.example.net/matomo.php", 302, None),  # scheme downgrade
    ],
)
async def test_location(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    location: str,
    status: int,
    expected: str | None,
) -> None:
    vendor.reply(
        "matomo.example.net",
        "/matomo.php",
        Reply(status, b"", [("Location", location)]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, "GET /mt/matomo.php HTTP/1.1\n" + HOST_LINE
    )
    if expected is None:
        assert response.status == 502
        assert response.header("Location") is None
    else:
        assert response.status == status
        assert response.header("Location") == expected
    assert len(vendor.received) == 1  # never followed


# CORS: preflight answered here; one Allow-Origin on the real answer.
async def test_cors(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    vendor.reply(
        "us.i.posthog.com",
        "/e/",
        Reply(200, b"{}", [("Access-Control-Allow-Origin", "*")]),
    )
    proxy = await start_proxy(
        public_url="https://t.example.com", allowed_origins=["https://app.example.org"]
    )
    preflight = await raw_request(
        proxy.port,
        "OPTIONS /ph/e/ HTTP/1.1\nHost: t.example.com\nConnection: close\n"
        "Origin: https://app.example.org\nAccess-Control-Request-Method: POST\n"
        "Access-Control-Request-Headers: content-type\n",
    )
    assert preflight.status == 204
    assert preflight.header("Access-Control-Allow-Origin") == "https://app.example.org"
    assert "POST" in (preflight.header("Access-Control-Allow-Methods") or "")
    assert "content-type" in (preflight.header("Access-Control-Allow-Headers") or "")
    assert "Origin" in (preflight.header("Vary") or "")
    assert vendor.received == []

    post = await raw_request(
        proxy.port,
        "POST /ph/e/ HTTP/1.1\nHost: t.example.com\nConnection: close\n"
        "Origin: https://app.example.org\nContent-Length: 2\n",
        b"{}",
    )
    assert post.all("Access-Control-Allow-Origin") == ["https://app.example.org"]
    assert post.header("Access-Control-Allow-Credentials") == "true"

    other = await raw_request(
        proxy.port,
        "POST /ph/e/ HTTP/1.1\nHost: t.example.com\nConnection: close\n"
        "Origin: https://evil.example.net\nContent-Length: 2\n",
        b"{}",
    )
    assert other.all("Access-Control-Allow-Origin") == []


async def test_cors_default_is_site_origins(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        public_url="https://metrics.shop.example", cookie_domain="shop.example"
    )
    for origin, allowed in [
        ("https://www.shop.example", True),
        ("https://shop.example", True),
        ("https://metrics.shop.example", True),
        ("http://www.shop.example", False),
        ("https://shop.example.evil.net", False),
        ("https://evilshop.example", False),
    ]:
        answer = await raw_request(
            proxy.port,
            "POST /pa/api/event HTTP/1.1\nHost: metrics.shop.example\n"
            f"Connection: close\nOrigin: {origin}\nContent-Length: 2\n",
            b"{}",
        )
        assert (answer.header("Access-Control-Allow-Origin") == origin) is allowed


# Upstream trouble becomes a clean 502 or 504.
async def test_upstream_refused_is_502(start_proxy: StartProxy) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proxy = await start_proxy(
        public_url=PUBLIC, overrides=[f"https://plausible.io={dead}"]
    )
    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as response:
        assert response.status == 502


async def test_upstream_timeout_is_504(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    async def stall(request: web.Request, received: Received) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    vendor.reply("matomo.example.net", "/matomo.php", stall)
    vendor.reply("matomo.example.net", "/piwik.php", Reply(200, b"ok"))
    rule = (BUNDLED_RULES / "matomo.toml").read_text()
    (tmp_path / "matomo.toml").write_text(
        rule.replace('max_body = "2MiB"', 'max_body = "2MiB"\ntimeout = "300ms"')
    )
    proxy = await start_proxy(rules=[tmp_path], public_url=PUBLIC)

    async with proxy.client.get(f"{proxy.url}/mt/matomo.php") as response:
        assert response.status == 504
    # A stalled vendor connection holds nobody else up.
    async with proxy.client.get(f"{proxy.url}/mt/piwik.php") as response:
        assert response.status == 200


# Only hosts of loaded rules are ever addressed; inner ranges are refused.
@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("142.250.1.1", False),
        ("2a00:1450::1", False),
    ],
)
def test_forbidden_ranges(address: str, forbidden: bool) -> None:
    assert is_forbidden_address(address) is forbidden


async def test_resolver_refuses_names_pointing_inward() -> None:
    resolver = GuardedResolver()
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("localhost", 443, socket.AF_INET)
    allowed = GuardedResolver(frozenset({"localhost"}))
    answers = await allowed.resolve("localhost", 443, socket.AF_INET)
    assert answers
    await resolver.close()
    await allowed.close()


# Overrides: an origin pattern and a base URL, nothing looser.
@pytest.mark.parametrize(
    "spec",
    [
        "plausible.io=http://127.0.0.1:1",
        "https://plausible.io",
        "https://plausible.io=ftp://x",
        "https://a/b=http://127.0.0.1:1",
        "https://plausible.io=http://127.0.0.1:1/?q=1",
    ],
)
def test_bad_overrides(spec: str) -> None:
    with pytest.raises(ValueError, match="upstream-override"):
        parse_override(spec)


def test_override_pattern() -> None:
    override = parse_override("https://*.google-analytics.com=http://127.0.0.1:9")
    assert override.matches("https", "region1.google-analytics.com")
    assert not override.matches("https", "google-analytics.com")
    assert not override.matches("http", "region1.google-analytics.com")
    assert not override.matches("https", "region1.google-analytics.com.evil.net")
