"""Hostile vendors and visitors on the wire, against the lean upstream client
(proxy/http1.py) and the low-level front (proxy/server.py).

The vendors are raw asyncio servers (`Peer` from test_http1) that answer
with exact bytes and count the connections they accept; the visitors write
exact bytes too. Each case was an attack tried on a running tagproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from proxy import http1

from .conftest import Running, StartProxy
from .durable_support import eventually
from .test_http1 import (
    CLOSE,
    GATE,
    HANG,
    OK,
    RESET,
    Peer,
    Step,
    always,
    fetch,
    peer_factory,
    send,
)

RULES: Final = Path(__file__).resolve().parent / "rules_wire"
HOST: Final = "wire.vendor.test"
RELAY: Final = "/wi/r"
SCRIPT: Final = "/wi/s.js"
ROUTE_TIMEOUT: Final = 0.8  # the relay route's timeout (rules_wire/wire.toml)


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., Peer]]:
    async with peer_factory() as make:
        yield make


@pytest.fixture
async def client() -> AsyncIterator[http1.Client]:
    client = http1.Client()
    yield client
    await client.close()


async def proxy_to(start_proxy: StartProxy, peer: Peer) -> Running:
    return await start_proxy(
        rules=[RULES],
        rule_vars=(),
        public_url="https://www.example.com",
        overrides=[f"https://{HOST}=http://127.0.0.1:{peer.port}"],
    )


async def visit(port: int, request: bytes, within: float = 5.0) -> bytes:
    """Send exact bytes and read until tagproxy closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(within):
            return await reader.read(-1)
    finally:
        writer.close()


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: www.example.com", *extra]
    return ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode()


# --- the upstream client ---------------------------------------------------------


# Trailers of a chunked answer belong to that answer: they must never turn
# up as headers of the next answer on the same kept-alive connection, where
# a Set-Cookie meant for one visitor would reach another.
async def test_trailers_do_not_leak_into_the_next_answer(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nSet-Cookie: id=visitor-a\r\n\r\n"
    )
    peer = await peers(lambda n: [chunked] if n == 0 else [OK]).start()
    async with await send(client, peer.origin) as first:
        assert await first.read() == b"ok"
    async with await send(client, peer.origin) as second:
        assert await second.read() == b"ok"
        assert list(second.headers.items()) == [("Content-Length", "2")]
    assert peer.connections == 1


# --- through tagproxy ------------------------------------------------------------


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


# A vendor that trickles its answer head a byte at a time keeps the
# connection busy but never finishes: the visitor gets a 504 once the
# route's timeout has passed, not when the vendor stops.
async def test_a_head_trickled_past_the_timeout_is_a_504(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200
    steps: list[Step] = []
    for byte in head:
        steps += [bytes([byte]), 0.02]
    peer = await peers(always(*steps)).start()
    proxy = await proxy_to(start_proxy, peer)
    started = time.monotonic()
    answer = await visit(proxy.port, get(RELAY))
    assert status_of(answer) == 504
    assert time.monotonic() - started < ROUTE_TIMEOUT + 2  # not the 4 s trickle


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Visitors that hang up while the vendor has not answered yet: nothing of
# theirs stays behind (sockets, pool slots), and the next visitors are served
# on connections the pool reuses.
async def test_visitors_hanging_up_leave_nothing_behind(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    peer = await peers(lambda n: [0.3, OK] if n < 100 else [OK]).start()
    proxy = await proxy_to(start_proxy, peer)
    before, tasks = fds(), len(asyncio.all_tasks())
    writers = []
    for _ in range(100):
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(get(RELAY))
        writers.append(writer)
    await eventually(lambda: len(peer.received) == 100, what="all requests sent")
    for writer in writers:
        writer.close()
    await asyncio.sleep(ROUTE_TIMEOUT + 0.2)
    for _ in range(20):
        assert status_of(await visit(proxy.port, get(RELAY))) == 200
    assert peer.most_open <= 100
    assert peer.open_now <= 100
    # Each connection to the in-process vendor is two descriptors.
    assert fds() <= before + 2 * peer.open_now + 5
    assert len(asyncio.all_tasks()) <= tasks + peer.open_now + 5  # the vendor's


FAILURES: Final[list[list[Step]]] = [
    [b"garbage\r\n\r\n"],
    [CLOSE],
    [RESET],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", CLOSE],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 70000, RESET],
    [OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"],
    [b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"],
    [b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok"],
    [b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok"],
    [b"HTTP/1.1 100 Continue\r\n\r\n", HANG],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", HANG],
]
STORM: Final = 1000


# A thousand requests whose vendor fails in every way above, some at once:
# afterwards the pool holds no stale slot, normal requests are served on
# reused connections, and no descriptor is left behind.
async def test_a_storm_of_failures_leaves_the_pool_healthy(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    peer = await peers(
        lambda n: FAILURES[n % len(FAILURES)] if n < STORM else [OK]
    ).start()
    proxy = await proxy_to(start_proxy, peer)
    before = fds()
    statuses: list[int] = []
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate, proxy.client.get(proxy.url + RELAY) as response:
            with contextlib.suppress(aiohttp.ClientError):  # a body cut short
                await response.read()
            statuses.append(response.status)

    await asyncio.gather(*(one() for _ in range(STORM)), return_exceptions=True)
    assert len(peer.received) == STORM
    assert set(statuses) <= {200, 204, 502, 504}

    connections = peer.connections
    for _ in range(20):
        assert status_of(await visit(proxy.port, get(RELAY))) == 200
    assert peer.connections <= connections + 1  # reused, not one per request
    pools = proxy.proxy.upstream.session._pools
    assert all(pool.open == len(pool.idle) for pool in pools.values())
    assert fds() <= before + 2 * peer.open_now + 5


class EarlyAnswer:
    """A vendor that refuses a large body before reading it (as servers do
    with a 413), then reads and discards it and keeps the connection."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                if length:
                    writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
                    await reader.readexactly(length)
                else:
                    writer.write(OK)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# A vendor may answer before it has read a large body. The connection then
# still carries the rest of that body, so it must not serve the next
# request: the vendor would read that request as body bytes.
async def test_an_answer_before_the_body_is_sent_retires_the_connection(
    client: http1.Client,
) -> None:
    vendor = EarlyAnswer()
    server = await vendor.start()
    origin: http1.Origin = ("127.0.0.1", vendor.port, None)
    try:
        body = b"x" * (16 * 1024 * 1024)  # more than the socket buffers hold
        async with await send(client, origin, method="POST", body=body) as refused:
            assert refused.status == 413
        async with await send(client, origin, target="/next") as answer:
            assert answer.status == 200
            assert await answer.read() == b"ok"
        assert vendor.heads[-1].startswith(b"GET /next ")
        assert vendor.connections == 2
    finally:
        server.close()


# Requests waiting for one of an origin's capped connections may be
# cancelled (their visitors left) at any moment, even just as a connection
# is handed to them: no slot or connection may be lost with them.
async def test_cancelled_waiters_take_no_slot(peers: Callable[..., Peer]) -> None:
    peer = await peers(lambda n: [GATE, OK] if n == 0 else [OK]).start()
    capped = http1.Client(per_origin_limit=1)
    try:
        waiters: list[asyncio.Task[bytes]] = []

        async def first() -> bytes:
            body = await fetch(capped, peer.origin)
            # Woken before the next waiter is: that one was just handed
            # the connection and is cancelled before it can use it.
            waiters[0].cancel()
            return body

        holder = asyncio.create_task(first())
        await eventually(lambda: len(peer.received) == 1, what="the first request")
        waiters += [asyncio.create_task(fetch(capped, peer.origin)) for _ in range(50)]
        await asyncio.sleep(0.05)
        for task in waiters[25:]:
            task.cancel()
        peer.gate.set()
        assert await holder == b"ok"
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:25] == [b"ok"] * 24
        assert await fetch(capped, peer.origin) == b"ok"
        (pool,) = capped._pools.values()
        assert (pool.open, len(pool.idle), len(pool.waiters)) == (1, 1, 0)
    finally:
        await capped.close()
    assert peer.connections == 1


# A 5 MB script the vendor resets part way: a 502, nothing cached, the
# broken connection never reused; the next visitor gets the whole script.
async def test_a_big_script_reset_mid_body_is_not_cached(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    script = b"var x = 1;\n" * (5 * 1024 * 1024 // 11)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
        b"Content-Length: %d\r\n\r\n" % len(script)
    )
    peer = await peers(
        lambda n: [head + script[: 1024 * 1024], RESET] if n == 0 else [head + script]
    ).start()
    proxy = await proxy_to(start_proxy, peer)
    url, plain = proxy.url + SCRIPT, {"Accept-Encoding": "identity"}
    async with proxy.client.get(url, headers=plain) as broken:
        assert broken.status == 502
    async with proxy.client.get(url, headers=plain) as whole:
        assert whole.status == 200
        assert await whole.read() == script
    async with proxy.client.get(url, headers=plain) as cached:
        assert await cached.read() == script
    assert len(peer.received) == 2
    assert peer.connections == 2


DRAINED: Final = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
    b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n',
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"garbage\r\n\r\n",
]


# While draining, every answer closes its connection and says so: streamed
# ones, answers without a body, errors, and script hits answered at once.
async def test_while_draining_every_answer_closes(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    script = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
        b"Content-Length: 9\r\n\r\nvar a=1;\n"
    )
    peer = await peers(lambda n: [script] if n == 0 else [DRAINED[n - 1]]).start()
    proxy = await proxy_to(start_proxy, peer)
    first = await visit(proxy.port, get(SCRIPT))
    etag = next(
        line.split(b": ", 1)[1]
        for line in first.split(b"\r\n")
        if line.lower().startswith(b"etag:")
    )
    proxy.proxy.draining.set()
    keep_alive = b"GET %s HTTP/1.1\r\nHost: www.example.com\r\n%s\r\n"
    requests = [keep_alive % (RELAY.encode(), b"")] * len(DRAINED) + [
        keep_alive % (SCRIPT.encode(), b""),
        keep_alive % (SCRIPT.encode(), b"If-None-Match: " + etag + b"\r\n"),
    ]
    statuses = []
    for request in requests:
        answer = await visit(proxy.port, request)  # returns at the close
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nConnection: close" in head
        statuses.append(status_of(answer))
    assert statuses == [200, 200, 304, 204, 502, 200, 304]


# A request cancelled (its deadline, a shutdown) just as its connection
# opens: asyncio closes the new transport as the cancellation unwinds
# create_connection. The slot it held is freed once, not twice: counted
# twice, the pool would let one more connection than its cap open each time.
async def test_a_connect_cancelled_at_its_end_frees_its_slot_once(
    peers: Callable[..., Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = await peers(always(OK)).start()
    capped = http1.Client(per_origin_limit=2)
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def cancelled_at_the_end(*args: Any, **kw: Any) -> Any:
        transport, _ = await create_connection(*args, **kw)
        transport.close()  # as asyncio does when cancelled at its last await
        raise asyncio.CancelledError

    try:
        monkeypatch.setattr(loop, "create_connection", cancelled_at_the_end)
        for _ in range(3):
            with pytest.raises(asyncio.CancelledError):
                await fetch(capped, peer.origin)
        monkeypatch.undo()
        await eventually(lambda: peer.open_now == 0, what="the connections closed")
        (pool,) = capped._pools.values()
        assert pool.open == 0
        assert await fetch(capped, peer.origin) == b"ok"
        assert pool.open == 1
    finally:
        await capped.close()


# A visitor who leaves in the middle of a large relayed answer is ordinary
# traffic: no ERROR traceback, the access line keeps the status that was
# sent (not a 500 nobody was sent), and the half-read upstream connection
# is closed rather than pooled.
async def test_a_visitor_leaving_mid_answer_is_not_an_error(
    peers: Callable[..., Peer],
    start_proxy: StartProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 5000000
    peer = await peers(lambda n: [big] if n == 0 else [OK]).start()
    proxy = await proxy_to(start_proxy, peer)
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(get(RELAY))
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1000)
        writer.transport.abort()
        await eventually(
            lambda: any(r.name == "tagproxy.access" for r in caplog.records),
            what="the access line",
        )
        assert status_of(await visit(proxy.port, get(RELAY))) == 200
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    line = next(r for r in caplog.records if r.name == "tagproxy.access")
    assert line.access["status"] == 200  # type: ignore[attr-defined]
    assert peer.connections == 2


EXPECT: Final = "Expect: 100-continue"
CHUNKED: Final = "Transfer-Encoding: chunked"


# `Expect: 100-continue` in the forms browsers and tools send: the body is
# invited only when a relay is about to read it, a chunked body over the
# route's limit is refused once it passes the limit, and requests without
# a body (a GET, a script) are answered without an invitation.
@pytest.mark.parametrize(
    ("method", "path", "extra", "body", "status", "invited", "relayed"),
    [
        ("POST", RELAY, CHUNKED, b"3\r\nabc\r\n0\r\n\r\n", 200, True, b"abc"),
        (
            "POST",
            RELAY,
            CHUNKED,
            b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n",
            413,
            True,
            None,
        ),
        ("POST", RELAY, "Content-Length: 2000", b"", 413, False, None),
        ("GET", RELAY, "", b"", 200, False, b""),
        ("GET", SCRIPT, "", b"", 200, False, None),
    ],
)
async def test_expect_100_continue(
    peers: Callable[..., Peer],
    start_proxy: StartProxy,
    method: str,
    path: str,
    extra: str,
    body: bytes,
    status: int,
    invited: bool,
    relayed: bytes | None,
) -> None:
    peer = await peers(always(OK)).start()
    proxy = await proxy_to(start_proxy, peer)
    lines = [f"{method} {path} HTTP/1.1", "Host: www.example.com", EXPECT, extra]
    head = "\r\n".join([line for line in lines if line] + ["Connection: close"])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(head.encode() + b"\r\n\r\n")
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"\r\n\r\n")
            if first == b"HTTP/1.1 100 Continue\r\n\r\n":
                writer.write(body)
                first = await reader.readuntil(b"\r\n\r\n")
                assert invited
            else:
                assert not invited
    finally:
        writer.close()
    assert status_of(first) == status
    if relayed is None:
        assert all(b"/r " not in seen.head for seen in peer.received)
    else:
        (seen,) = peer.received
        assert seen.body == relayed
        assert b"Expect" not in seen.head
