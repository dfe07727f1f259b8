"""Upstream faults: vendor addresses that move (F18), vendors that accept and
never answer, connects that hang, and large bodies (F19).

F18 runs tagproxy's real resolver code against a fake DNS server on
127.0.0.1 (`--dns-server`), which hands out loopback addresses with chosen
TTLs; the vendors listen on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from proxy.upstream import GuardedResolver

from . import netguard
from .conftest import StartProxy
from .durable_support import HOST, DurableProxy
from .fakedns import FakeDns
from .fakes import FakeVendor, Received, Reply, raw_request

# Saved at import, before the `net` fixture swaps in its no-DNS stand-in.
REAL_LOOKUP = GuardedResolver._lookup
MOVING = "vendor.f18.test"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def dns(
    net: netguard.NetGuard, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeDns]:
    """A fake DNS server, and the real resolver code pointed at it.

    The whole 127.0.0.0/8 range is loopback; the net guard is told about the
    two extra addresses these tests listen on.
    """
    monkeypatch.setattr(GuardedResolver, "_lookup", REAL_LOOKUP)
    monkeypatch.setattr(
        netguard, "LOOPBACK", netguard.LOOPBACK | {"127.0.0.2", "127.0.0.3"}
    )
    server = FakeDns()
    await server.start()
    yield server
    server.stop()


@pytest.fixture
async def moved() -> AsyncIterator[tuple[FakeVendor, FakeVendor]]:
    """The vendor's old address (127.0.0.2) and new one (127.0.0.3), one port."""
    old, new = FakeVendor(), FakeVendor()
    await old.start("127.0.0.2")
    await new.start("127.0.0.3", old.port)
    yield old, new
    await new.stop()
    await old.stop()


async def test_f18_requests_after_the_ttl_reach_the_new_address(
    dns: FakeDns,
    moved: tuple[FakeVendor, FakeVendor],
    client: aiohttp.ClientSession,
) -> None:
    old, new = moved
    dns.answer(MOVING, "127.0.0.2", ttl=1)
    proxy = DurableProxy(f"http://{MOVING}:{old.port}", None, dns_servers=(dns.server,))
    await proxy.start()
    released = asyncio.Event()
    try:
        async with client.get(f"{proxy.url}/bc/live?n=1") as response:
            assert response.status == 204
        assert [r.raw_path for r in old.received] == ["/live?n=1"]

        # The vendor moves. The old address keeps its connections open (one
        # is pooled in tagproxy) but never answers again.
        async def never(request: web.Request, received: Received) -> web.Response:
            await released.wait()
            return web.Response(status=204)

        old.reply(HOST, "/live", never)
        dns.answer(MOVING, "127.0.0.3", ttl=1)
        await asyncio.sleep(1.2)  # past the TTL

        for n in (2, 3, 4):
            async with client.get(f"{proxy.url}/bc/live?n={n}") as response:
                assert response.status == 204
        assert [r.raw_path for r in new.received] == [f"/live?n={n}" for n in (2, 3, 4)]
        assert len(old.received) == 1
        assert all(r.host == HOST for r in new.received)
        assert dns.queries[MOVING] >= 3  # A and AAAA, then A again after the TTL
    finally:
        released.set()
        await proxy.stop()


async def test_f18_an_address_that_refuses_is_skipped_body_intact(
    dns: FakeDns,
    moved: tuple[FakeVendor, FakeVendor],
    client: aiohttp.ClientSession,
) -> None:
    old, new = moved
    await old.stop()  # 127.0.0.2 now refuses connections
    dns.answer(MOVING, ["127.0.0.2", "127.0.0.3"], ttl=60)
    proxy = DurableProxy(f"http://{MOVING}:{new.port}", None, dns_servers=(dns.server,))
    await proxy.start()
    try:
        for n in range(3):
            body = b"beacon %d" % n
            async with client.post(f"{proxy.url}/bc/live", data=body) as response:
                assert response.status == 204
        assert [r.body for r in new.received] == [b"beacon 0", b"beacon 1", b"beacon 2"]
    finally:
        await proxy.stop()


async def test_f18_names_the_dns_server_does_not_know_fail_without_leaking(
    dns: FakeDns, client: aiohttp.ClientSession, net: netguard.NetGuard
) -> None:
    proxy = DurableProxy("http://unknown.f18.test:9", None, dns_servers=(dns.server,))
    await proxy.start()
    try:
        async with client.get(f"{proxy.url}/bc/live") as response:
            assert response.status == 502
        assert dns.queries["unknown.f18.test"] >= 1
        assert not net.refused
    finally:
        await proxy.stop()


async def test_f18_a_vendor_that_never_answers_gets_504_and_blocks_nothing(
    vendor: FakeVendor, client: aiohttp.ClientSession
) -> None:
    released = asyncio.Event()

    async def never(request: web.Request, received: Received) -> web.Response:
        await released.wait()
        return web.Response(status=200)

    vendor.reply(HOST, "/t", never)
    proxy = await DurableProxy(vendor.url, None).start()
    try:
        started = time.monotonic()
        stuck = [
            asyncio.create_task(_status(client, f"{proxy.url}/bc/t")) for _ in range(5)
        ]
        # While those hang, the same vendor's other route answers at once.
        for _ in range(20):
            assert await _status(client, f"{proxy.url}/bc/live") == 204
        assert not any(task.done() for task in stuck)

        assert await asyncio.gather(*stuck) == [504] * 5
        took = time.monotonic() - started
        assert 0.6 <= took < 0.6 + 1.4  # the route's timeout (slack for a busy CI)

        # Once the vendor answers again, so does the route.
        vendor.reply(HOST, "/t", Reply(200, b"back"))
        assert await _status(client, f"{proxy.url}/bc/t") == 200
    finally:
        released.set()
        await proxy.stop()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: new connections never complete."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listener.close()


async def test_connect_timeout_of_the_route_applies(
    blackhole: int, client: aiohttp.ClientSession
) -> None:
    proxy = await DurableProxy(f"http://127.0.0.1:{blackhole}", None).start()
    try:
        started = time.monotonic()
        assert await _status(client, f"{proxy.url}/bc/c") == 504
        took = time.monotonic() - started
        assert 0.3 <= took < 2.0  # connect_timeout (300ms), well before the 3s total
    finally:
        await proxy.stop()


async def _status(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        await response.read()
        return response.status


# --- F19: large session-replay bodies ------------------------------------------

POSTHOG = "us.i.posthog.com"


def replay_body(size: int) -> bytes:
    """gzip bytes like posthog-js's gzip-js: binary, nearly incompressible."""
    return gzip.compress(os.urandom(size), compresslevel=1)


async def test_f19_five_megabyte_replay_reaches_upstream_byte_identical(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy()
    body = replay_body(5 * 1000 * 1000)
    async with proxy.client.post(
        f"{proxy.url}/ph/s/?compression=gzip-js&ver=1.200.0",
        data=io.BytesIO(body),  # raw bytes this large make aiohttp warn
        headers={"Content-Type": "text/plain"},
    ) as response:
        assert response.status == 204

    (received,) = vendor.to(POSTHOG)
    assert received.raw_path == "/s/?compression=gzip-js&ver=1.200.0"
    assert received.body == body
    assert received.header("Content-Length") == str(len(body))
    assert received.header("Content-Encoding") is None  # gzip-js is in the query


async def test_f19_three_megabyte_chunked_upload_reaches_upstream_intact(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy()
    body = replay_body(3 * 1000 * 1000)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    async with proxy.client.post(
        f"{proxy.url}/ph/s/?compression=gzip-js", data=chunks()
    ) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 204
    (received,) = vendor.to(POSTHOG)
    assert received.body == body


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_f19_over_the_limit_gets_413_and_no_upstream_connection(
    vendor: FakeVendor, start_proxy: StartProxy, net: netguard.NetGuard, framing: str
) -> None:
    proxy = await start_proxy()
    mark = net.mark()
    limit = 20 * 1024 * 1024  # the PostHog rule's max_body for /s/
    if framing == "content-length":
        # Only the headers: the size it announces is refused before reading.
        response = await raw_request(
            proxy.port,
            f"POST /ph/s/?compression=gzip-js HTTP/1.1\nHost: t\n"
            f"Content-Length: {limit + 1}\nConnection: close\n",
        )
        status = response.status
    else:
        status = await _chunked_until_answered(proxy.port, limit + 1024 * 1024)
    assert status == 413
    assert vendor.received == []
    assert [port for _, port in net.since(mark) if port == vendor.port] == []


async def _chunked_until_answered(port: int, most: int) -> int:
    """Stream a chunked body until tagproxy answers; that answer's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /ph/s/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = os.urandom(256 * 1024)
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        answer = asyncio.create_task(reader.readline())
        sent = 0
        while sent < most and not answer.done():
            writer.write(framed)
            try:
                await writer.drain()
            except ConnectionError:
                break  # tagproxy answered and closed: read what it said
            sent += len(chunk)
        return int((await answer).split()[1])
    finally:
        writer.close()
