"""SSRF and open-relay suite: the client never chooses where tagproxy connects.

Every case checks what actually left the process: the autouse net guard
records every outgoing connection attempt, and a counting sentinel listener
on loopback stands where a leak would land. Passing means the fake vendor
was the only destination, in every case.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.upstream import GuardedResolver, is_forbidden_address

from . import tally
from .conftest import Running, StartProxy
from .fakes import FakeVendor, RawResponse, Reply, raw_request
from .netguard import NetGuard, fixed_dns

PUBLIC_URL = "https://www.example.com"
# Given so that no override is made for the rule under test.
UNUSED_OVERRIDE = "https://unused.ssrf-test.example=http://127.0.0.1:9"

# --- the resolver guard, unit level -------------------------------------------

# Addresses a vendor name must never resolve to, in every spelling that
# reaches the same place.
INWARD = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.0.0.9",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "198.18.0.1",  # benchmarking
    "192.0.0.170",
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fd00::1",
    "fec0::1",  # deprecated site-local
    "ff02::1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::7f00:1",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fd00:ec2::254",  # AWS metadata over IPv6
    "not-an-address",
]
PUBLIC = ["8.8.8.8", "142.250.185.78", "2606:4700::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", INWARD)
def test_inward_addresses_are_forbidden(address: str) -> None:
    tally.add("ssrf cases tried")
    assert is_forbidden_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(address)


@pytest.mark.parametrize("address", INWARD[:-1])
async def test_resolver_refuses_vendor_names_pointing_inward(address: str) -> None:
    tally.add("ssrf cases tried")
    resolver = GuardedResolver(lookup=fixed_dns({"vendor.example": [address]}))
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("vendor.example", 443)
    assert resolver.refused == 1


async def test_resolver_keeps_only_public_answers() -> None:
    answers = {"vendor.example": ["10.0.0.1", "8.8.8.8", "169.254.169.254"]}
    resolver = GuardedResolver(lookup=fixed_dns(answers))
    results = await resolver.resolve("vendor.example", 443)
    assert [r["host"] for r in results] == ["8.8.8.8"]


async def test_resolver_allows_names_an_override_names() -> None:
    answers = {"staging.internal": ["10.0.0.5"]}
    resolver = GuardedResolver(frozenset({"staging.internal"}), fixed_dns(answers))
    results = await resolver.resolve("staging.internal", 80)
    assert [r["host"] for r in results] == ["10.0.0.5"]


# --- end to end: a counting sentinel stands where a leak would land -----------


class Sentinel:
    """A loopback listener that counts every connection made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(
        self, _: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def sentinel() -> AsyncIterator[Sentinel]:
    listener = Sentinel()
    await listener.start()
    yield listener
    await listener.stop()


async def send(port: int, head: str, body: bytes = b"") -> RawResponse:
    """A raw request; a connection closed without an answer reads as status 0."""
    try:
        return await raw_request(port, head, body)
    except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
        return RawResponse(0, [], b"")


def vendor_hosts(proxy: Running) -> set[str]:
    rules = proxy.proxy.generation.rules
    return {h.host for rule in rules.rules for h in rule.hosts}


def assert_contained(
    proxy: Running,
    vendor: FakeVendor,
    sentinel: Sentinel,
    net: NetGuard,
    mark: int,
    response: RawResponse,
) -> None:
    """Nothing but the fake vendor was contacted, as a vendor host, for this case."""
    tally.add("ssrf cases tried")
    foreign = (
        net.foreign([proxy.port, vendor.port], mark)
        + [("sentinel", sentinel.port)] * sentinel.connections
    )
    tally.add("connections to foreign addresses", len(foreign))
    assert foreign == []
    assert response.status not in range(500, 502)
    assert response.status not in range(503, 504)
    assert response.status < 505
    hosts = vendor_hosts(proxy)
    for received in vendor.received:
        matched = received.host in hosts or any(
            h.startswith("*.") and received.host.endswith(h[1:]) for h in hosts
        )
        assert matched, received.host
        assert str(sentinel.port) not in received.host


# Where the client may try to name a destination: {S} is the sentinel's port.
PATHS = [
    "/http://127.0.0.1:{S}/",
    "/pa/http://127.0.0.1:{S}/api/event",
    "//127.0.0.1:{S}/pa/api/event",
    "/ph//127.0.0.1:{S}/e/",
    "/ph/@127.0.0.1:{S}/e/",
    "/ph/http:/127.0.0.1:{S}/e/",
    "/ph/%2f%2f127.0.0.1:{S}/e/",
    "/ph/%252f%252f127.0.0.1:{S}/e/",
    "/ph\\@127.0.0.1:{S}/",
    "/ph/e/%0d%0aHost:%20127.0.0.1:{S}",
    "/ph/e/#@127.0.0.1:{S}",
    "/ph/e/?@127.0.0.1:{S}",
    "/gt/ga/127.0.0.1:{S}/g/collect",
    "/gt/ga/127.0.0.1/g/collect",
    "/gt/ga/localhost/g/collect",
    "/gt/ga/www@127.0.0.1:{S}/g/collect",
    "/gt/ga/www%40127.0.0.1:{S}/g/collect",
    "/gt/ga/region1.google-analytics.com@127.0.0.1:{S}/g/collect",
    "/gt/ga/region1%2e127.0.0.1/g/collect",
    "/gt/ga/www%2f..%2f..%2f127.0.0.1:{S}/g/collect",
    "/pa%2f..%2f..%2f127.0.0.1:{S}",
    "/%2e%2e/127.0.0.1:{S}",
    "/pa/api/event/..%2f..%2f127.0.0.1:{S}",
    "/pa/./../127.0.0.1:{S}",
    "/ph/e/..;/127.0.0.1:{S}",
    "/mp/track/?ip=1&host=127.0.0.1:{S}&url=http://127.0.0.1:{S}/",
    "/ph/e/?url=http%3A%2F%2F127.0.0.1%3A{S}%2F&redirect=//127.0.0.1:{S}",
    "/gt/gtag/js?id=G-TEST&url=http://127.0.0.1:{S}/&l=//127.0.0.1:{S}",
    "/gt/gtag/js?id=G-TEST%26url%3Dhttp://127.0.0.1:{S}",
    "/fb/signals/config/..%2f..%2f127.0.0.1:{S}",
]


@pytest.mark.parametrize("path", PATHS)
async def test_client_named_host_in_path_or_query(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    path: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC_URL)
    mark = net.mark()
    response = await send(
        proxy.port,
        f"GET {path.format(S=sentinel.port)} HTTP/1.1\n"
        "Host: www.example.com\nConnection: close\n",
    )
    assert_contained(proxy, vendor, sentinel, net, mark, response)


# Request lines that name an authority: absolute-form, authority-form, "*".
REQUEST_LINES = [
    "GET http://127.0.0.1:{S}/pa/api/event HTTP/1.1",
    "GET http://127.0.0.1:{S}/ HTTP/1.1",
    "GET http://127.0.0.1:{S} HTTP/1.1",
    "GET http://www.example.com@127.0.0.1:{S}/ph/e/ HTTP/1.1",
    "GET https://us.i.posthog.com/e/ HTTP/1.1",
    "GET //127.0.0.1:{S}/ph/e/ HTTP/1.1",
    "CONNECT 127.0.0.1:{S} HTTP/1.1",
    "CONNECT us.i.posthog.com:443 HTTP/1.1",
    "OPTIONS * HTTP/1.1",
    "GET 127.0.0.1:{S}/ph/e/ HTTP/1.1",
    "GET http://127.0.0.1:{S}/ph/e/ HTTP/1.0",
]


@pytest.mark.parametrize("line", REQUEST_LINES)
async def test_absolute_form_targets(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    line: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC_URL)
    mark = net.mark()
    response = await send(
        proxy.port,
        f"{line.format(S=sentinel.port)}\nHost: 127.0.0.1:{sentinel.port}\n"
        "Connection: close\n",
    )
    assert_contained(proxy, vendor, sentinel, net, mark, response)
    assert response.status in (0, 400, 404, 405)
    assert vendor.received == []


# Headers that name a destination somewhere. Each is tried with the public
# URL configured, and derived from the request by a trusted and an untrusted
# peer.
HEADERS = [
    "Host: 127.0.0.1:{S}",
    "Host: www.example.com@127.0.0.1:{S}",
    "Host: 127.0.0.1:{S}/ph/e/",
    "Host: www.example.com\nHost: 127.0.0.1:{S}",
    "X-Forwarded-Host: 127.0.0.1:{S}",
    "X-Forwarded-Host: 127.0.0.1:{S}\nX-Forwarded-Proto: http\nX-Forwarded-Prefix: /x",
    "X-Forwarded-Prefix: //127.0.0.1:{S}",
    "X-Forwarded-Proto: gopher",
    "Forwarded: for=192.0.2.66;host=127.0.0.1:{S};proto=http",
    "X-Original-URL: http://127.0.0.1:{S}/",
    "X-Rewrite-URL: http://127.0.0.1:{S}/",
    "X-Host: 127.0.0.1:{S}",
    "X-Forwarded-Server: 127.0.0.1:{S}",
    "X-HTTP-Host-Override: 127.0.0.1:{S}",
    "Referer: http://127.0.0.1:{S}/",
    "Origin: http://127.0.0.1:{S}",
    "Proxy: http://127.0.0.1:{S}",
    "Destination: http://127.0.0.1:{S}/",
    "Connection: Host\nX-Forwarded-Host: 127.0.0.1:{S}",
    "Upgrade: websocket\nConnection: Upgrade",
    "X-Forwarded-For: 127.0.0.1:{S}",
    "True-Client-IP: 127.0.0.1",
]
MODES = ["configured", "untrusted", "trusted"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("header", HEADERS)
async def test_client_named_host_in_headers(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    header: str,
    mode: str,
) -> None:
    proxy = await start_proxy(
        public_url=PUBLIC_URL if mode == "configured" else None,
        trusted_proxies=["127.0.0.1/32"] if mode == "trusted" else [],
    )
    host = "" if header.startswith("Host:") else "Host: www.example.com\n"
    mark = net.mark()
    for path in ("/ph/e/", "/gt/gtag/js?id=G-TEST", "/pa/api/event"):
        method = "POST" if path == "/pa/api/event" else "GET"
        response = await send(
            proxy.port,
            f"{method} {path} HTTP/1.1\n{host}{header.format(S=sentinel.port)}\n"
            "Content-Length: 2\nConnection: close\n",
            b"{}",
        )
        assert_contained(proxy, vendor, sentinel, net, mark, response)


# Bodies that name a destination; only the envelope tunnel reads one.
BODIES = [
    (
        "/ph/e/",
        "application/json",
        '{"url":"http://127.0.0.1:{S}/","$host":"127.0.0.1:{S}"}',
    ),
    ("/pa/api/event", "text/plain", '{"n":"pageview","u":"http://127.0.0.1:{S}/"}'),
    (
        "/mp/track/",
        "application/x-www-form-urlencoded",
        "url=http%3A%2F%2F127.0.0.1%3A{S}",
    ),
    ("/um/api/send", "application/json", '{"payload":{"hostname":"127.0.0.1:{S}"}}'),
    ("/se/tunnel", "text/plain", '{"dsn":"https://k@127.0.0.1:{S}/1"}\n{}'),
    ("/se/tunnel", "text/plain", '{"dsn":"http://k@127.0.0.1:{S}/1"}\n{}'),
    (
        "/se/tunnel",
        "text/plain",
        '{"dsn":"https://k@o0.ingest.sentry.io@127.0.0.1:{S}/1"}\n',
    ),
    ("/se/tunnel", "text/plain", '{"dsn":"https://k@o0.ingest.sentry.io:{S}/1"}\n'),
    ("/se/tunnel", "text/plain", '{"dsn":"//k@127.0.0.1:{S}/1"}\n'),
    ("/se/tunnel", "text/plain", '{"dsn":"https://k@[::1]:{S}/1"}\n'),
]


@pytest.mark.parametrize(("path", "content_type", "body"), BODIES)
async def test_client_named_host_in_body(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    path: str,
    content_type: str,
    body: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC_URL)
    data = body.replace("{S}", str(sentinel.port)).encode()
    mark = net.mark()
    response = await send(
        proxy.port,
        f"POST {path} HTTP/1.1\nHost: www.example.com\n"
        f"Content-Type: {content_type}\nContent-Length: {len(data)}\n"
        "Connection: close\n",
        data,
    )
    assert_contained(proxy, vendor, sentinel, net, mark, response)
    if path == "/se/tunnel":
        assert response.status == 403
        assert vendor.received == []


# A Host header shapes only what that request is served: a script rewritten
# for one Host is never served to another.
async def test_host_header_cannot_poison_the_script_cache(
    vendor: FakeVendor, start_proxy: StartProxy, sentinel: Sentinel
) -> None:
    vendor.reply(
        "plausible.io",
        "/js/script.js",
        Reply(
            200,
            b'var u="https://plausible.io/api/event";',
            [("Content-Type", "application/javascript")],
        ),
    )
    proxy = await start_proxy()  # public URL from each request's Host
    evil = await send(
        proxy.port,
        f"GET /pa/js/script.js HTTP/1.1\nHost: 127.0.0.1:{sentinel.port}\n"
        "Connection: close\n",
    )
    good = await send(
        proxy.port,
        "GET /pa/js/script.js HTTP/1.1\nHost: www.example.com\nConnection: close\n",
    )
    assert f"127.0.0.1:{sentinel.port}".encode() in evil.body
    assert b"http://www.example.com/pa/api/event" in good.body
    assert str(sentinel.port).encode() not in good.body
    assert sentinel.connections == 0


# --- upstream redirects ---------------------------------------------------------

FOREIGN_LOCATIONS = [
    "http://127.0.0.1:{S}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "//127.0.0.1:{S}/x",
    "https://attacker.example.org/",
    "http://us.i.posthog.com/e/",  # a scheme downgrade
    "https://us.i.posthog.com@127.0.0.1:{S}/",
    "https://us.i.posthog.com.attacker.example.org/",
    "https://us.i.posthog.com:{S}/",
    "https://plausible.io/api/event",  # another rule's host
    "https://evil.google-analytics.com/g/collect",
    "javascript:alert(1)",
    "https://[::1]:{S}/",
    "http://localhost:{S}/",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", FOREIGN_LOCATIONS)
async def test_redirects_leaving_the_rule_refused(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    location: str,
    status: int,
) -> None:
    target = location.format(S=sentinel.port)
    vendor.reply("us.i.posthog.com", "/e/", Reply(status, b"", [("Location", target)]))
    vendor.reply(
        "us-assets.i.posthog.com",
        "/static/array.js",
        Reply(status, b"", [("Location", target)]),
    )
    proxy = await start_proxy(public_url=PUBLIC_URL)
    mark = net.mark()
    for path in ("/ph/e/", "/ph/static/array.js"):
        response = await send(
            proxy.port,
            f"GET {path} HTTP/1.1\nHost: www.example.com\nConnection: close\n",
        )
        assert_contained(proxy, vendor, sentinel, net, mark, response)
        assert response.status == 502
        assert response.all("Location") == []
    assert len(vendor.received) == 2


# A redirect within the rule is passed on, made first-party; never followed.
@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/e/?retry=1", f"{PUBLIC_URL}/ph/e/?retry=1"),
        (
            "https://us-assets.i.posthog.com/static/array.js",
            f"{PUBLIC_URL}/ph/static/array.js",
        ),
        ("https://eu.i.posthog.com/e/", f"{PUBLIC_URL}/ph/eu/e/"),
    ],
)
async def test_redirects_within_the_rule_made_first_party(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    net: NetGuard,
    location: str,
    expected: str,
) -> None:
    vendor.reply("us.i.posthog.com", "/e/", Reply(302, b"", [("Location", location)]))
    proxy = await start_proxy(public_url=PUBLIC_URL)
    mark = net.mark()
    response = await send(
        proxy.port, "GET /ph/e/ HTTP/1.1\nHost: www.example.com\nConnection: close\n"
    )
    assert response.status == 302
    assert response.all("Location") == [expected]
    assert len(vendor.received) == 1
    assert net.foreign([proxy.port, vendor.port], mark) == []


# A Location on a non-redirect answer that leaves the rule is dropped.
async def test_foreign_location_on_other_statuses_dropped(
    vendor: FakeVendor, start_proxy: StartProxy, sentinel: Sentinel
) -> None:
    target = f"http://127.0.0.1:{sentinel.port}/"
    vendor.reply("us.i.posthog.com", "/e/", Reply(201, b"{}", [("Location", target)]))
    proxy = await start_proxy(public_url=PUBLIC_URL)
    response = await send(
        proxy.port, "GET /ph/e/ HTTP/1.1\nHost: www.example.com\nConnection: close\n"
    )
    assert response.status == 201
    assert response.all("Location") == []


# --- vendor names that resolve inward, with no override ---------------------------

SSRF_RULE = """
vendor = "ssrftest"
mount = "/st"

[[hosts]]
host = "vendor.ssrf-test.example"
path = ""

[[scripts]]
host = "vendor.ssrf-test.example"
paths = ["/tag.js"]

[[relays]]
host = "vendor.ssrf-test.example"
paths = ["/collect"]
methods = ["GET", "POST"]
"""
VENDOR_NAME = "vendor.ssrf-test.example"


@pytest.fixture
def ssrf_rule(tmp_path: Path) -> Path:
    path = tmp_path / "ssrftest.toml"
    path.write_text(SSRF_RULE)
    return path


# The sentinel's loopback address, and inner addresses a broken guard would
# try to reach (the net guard refuses those before a packet leaves, and
# records the attempt, so a regression fails here instead of escaping).
@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["::1"],
        ["10.0.0.9"],
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["192.168.0.1", "172.16.0.1"],
        ["100.64.0.1"],
        ["fe80::1"],
        ["fd00:ec2::254"],
        ["64:ff9b::a9fe:a9fe"],
        ["0.0.0.0"],
    ],
)
async def test_vendor_name_resolving_inward_is_refused(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    ssrf_rule: Path,
    answers: list[str],
) -> None:
    proxy = await start_proxy(
        rules=[ssrf_rule],
        public_url=PUBLIC_URL,
        overrides=[UNUSED_OVERRIDE],
        rule_vars=[],
    )
    resolver = proxy.proxy.upstream.resolver
    resolver.lookup = fixed_dns({VENDOR_NAME: answers}, port=sentinel.port)
    mark = net.mark()
    for line in ("GET /st/collect?v=1", "GET /st/tag.js"):
        response = await send(
            proxy.port, f"{line} HTTP/1.1\nHost: www.example.com\nConnection: close\n"
        )
        assert_contained(proxy, vendor, sentinel, net, mark, response)
        assert response.status == 502
    assert net.since(mark) == [("127.0.0.1", proxy.port)] * 2
    assert resolver.refused >= 1


# The control: with the operator's override naming the destination, the same
# DNS answer is used, and the sentinel sees it. This is what proves the
# listener above would notice a leak.
async def test_sentinel_notices_a_connection(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    sentinel: Sentinel,
    net: NetGuard,
    ssrf_rule: Path,
) -> None:
    override = (
        f"https://{VENDOR_NAME}=http://sentinel.ssrf-test.example:{sentinel.port}"
    )
    proxy = await start_proxy(
        rules=[ssrf_rule],
        public_url=PUBLIC_URL,
        overrides=[override],
        rule_vars=[],
    )
    proxy.proxy.upstream.resolver.lookup = fixed_dns(
        {"sentinel.ssrf-test.example": ["127.0.0.1"]}
    )
    response = await send(
        proxy.port,
        "GET /st/collect?v=1 HTTP/1.1\nHost: www.example.com\nConnection: close\n",
    )
    assert response.status == 200
    assert response.body == b"leaked"
    assert sentinel.connections == 1
    assert ("127.0.0.1", sentinel.port) in net.attempts
