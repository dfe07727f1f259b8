"""The upstream HTTP/1.1 client against real servers on 127.0.0.1.

Most upstreams here are raw asyncio servers (`Peer`) that record the exact
bytes they received and answer with exact bytes: framing mistakes, cut
bodies and hostile heads are what no HTTP library would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import trustme
import uvloop
from aiohttp import web

from proxy import http1
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.rules.model import Timeouts
from proxy.upstream import Upstream, parse_override

from .conftest import StartProxy

Step = bytes | str | float
CLOSE: Final = "close"  # close the connection (FIN)
RESET: Final = "reset"  # abort the connection (RST)
HANG: Final = "hang"  # never answer
GATE: Final = "gate"  # wait until the test opens the peer's gate
LINGER_NONE: Final = struct.pack("ii", 1, 0)  # close with a reset
DEADLINE: Final = 5.0  # generous: only the timeout tests wait for a deadline


@dataclass(frozen=True, slots=True)
class Seen:
    connection: int  # which accepted connection it came on, from 0
    head: bytes
    body: bytes


@dataclass
class Peer:
    """A keep-alive HTTP/1.1 server playing `answer(n)` for the n-th request."""

    answer: Callable[[int], list[Step]]
    received: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    port: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def origin(self) -> http1.Origin:
        return ("127.0.0.1", self.port, None)

    async def start(self, tls: ssl.SSLContext | None = None) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        number = self.connections
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while await self._one(number, reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def _one(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.received.append(Seen(number, head, body))
        for step in self.answer(len(self.received) - 1):
            if step == CLOSE:
                return False
            if step == HANG:
                await self._release.wait()
                return False
            if step == GATE:
                await self.gate.wait()
                continue
            if step == RESET:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NONE)
                writer.transport.abort()
                return False
            if isinstance(step, float):  # a pause, in seconds
                await asyncio.sleep(step)
                continue
            assert isinstance(step, bytes)
            writer.write(step)
            await writer.drain()
        return True


def always(*steps: Step) -> Callable[[int], list[Step]]:
    return lambda n: list(steps)


OK: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextlib.asynccontextmanager
async def peer_factory() -> AsyncIterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def make(answer: Callable[[int], list[Step]]) -> Peer:
        peer = Peer(answer)
        started.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in started:
            await peer.stop()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., Peer]]:
    async with peer_factory() as make:
        yield make


@pytest.fixture
async def client() -> AsyncIterator[http1.Client]:
    client = http1.Client()
    yield client
    await client.close()


async def send(
    client: http1.Client,
    origin: http1.Origin,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    seconds: float = DEADLINE,
) -> http1.Response:
    head = http1.encode_request(method, target, "vendor.test", headers or [], body)
    deadline = asyncio.get_running_loop().time() + seconds
    return await client.request(method, origin, head, body, seconds, deadline)


async def fetch(client: http1.Client, origin: http1.Origin, **kw: Any) -> bytes:
    async with await send(client, origin, **kw) as response:
        return await response.read()


# --- what goes out --------------------------------------------------------------


# The request leaves exactly as given: the target unquoted, Host first, the
# headers in order with duplicates, no User-Agent, Accept or Content-Type of
# ours; Content-Length only where a body is or a method expects one.
@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        (
            "GET",
            None,
            b"GET /g/collect?a=b+c%2F&a=d HTTP/1.1\r\nHost: vendor.test\r\n"
            b"X-One: 1\r\nx-two: 2\r\nX-One: 3\r\n\r\n",
        ),
        (
            "POST",
            b"{}",
            b"POST /g/collect?a=b+c%2F&a=d HTTP/1.1\r\nHost: vendor.test\r\n"
            b"X-One: 1\r\nx-two: 2\r\nX-One: 3\r\nContent-Length: 2\r\n\r\n",
        ),
        (
            "POST",
            None,
            b"POST /g/collect?a=b+c%2F&a=d HTTP/1.1\r\nHost: vendor.test\r\n"
            b"X-One: 1\r\nx-two: 2\r\nX-One: 3\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "POST",
            b"",
            b"POST /g/collect?a=b+c%2F&a=d HTTP/1.1\r\nHost: vendor.test\r\n"
            b"X-One: 1\r\nx-two: 2\r\nX-One: 3\r\nContent-Length: 0\r\n\r\n",
        ),
    ],
)
async def test_the_request_leaves_exactly_as_given(
    peers: Callable[..., Peer],
    client: http1.Client,
    method: str,
    body: bytes | None,
    expected: bytes,
) -> None:
    peer = await peers(always(OK)).start()
    headers = [("X-One", "1"), ("x-two", "2"), ("X-One", "3")]
    target = "/g/collect?a=b+c%2F&a=d"
    kw = {"method": method, "target": target, "headers": headers, "body": body}
    assert await fetch(client, peer.origin, **kw) == b"ok"
    (seen,) = peer.received
    assert seen.head == expected
    assert seen.body == (body or b"")


# Bytes the visitor sent that are not UTF-8 arrive as aiohttp decoded them
# (surrogate escapes) and leave as the same bytes.
async def test_header_bytes_pass_unchanged(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(OK)).start()
    raw = b"caf\xc3\xa9 \xff"
    value = raw.decode("utf-8", "surrogateescape")
    await fetch(client, peer.origin, headers=[("X-Note", value)])
    assert b"\r\nX-Note: " + raw + b"\r\n" in peer.received[0].head


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a\r\nX-Evil: 1", []),
        ("/a b", []),
        ("/", [("X-A", "1\r\nX-Evil: 1")]),
        ("/", [("X-A", "1\nX-Evil: 1")]),
        ("/", [("X-A\r\nX-Evil", "1")]),
    ],
)
def test_a_request_that_would_split_is_refused(
    target: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(http1.ClientError, match="split"):
        http1.encode_request("GET", target, "vendor.test", headers, None)


async def test_a_large_body_arrives_whole(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(OK)).start()
    body = bytes(range(256)) * (5 * 4096 + 7)  # about 5 MB, written in chunks
    assert await fetch(client, peer.origin, method="POST", body=body) == b"ok"
    assert peer.received[0].body == body


# --- what comes back -------------------------------------------------------------


async def test_head_of_the_answer(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    answer = (
        b"HTTP/1.1 201 Fine Indeed\r\nSet-Cookie: a=1; Path=/\r\n"
        b"X-Note: caf\xc3\xa9 \xff\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
    )
    peer = await peers(always(answer)).start()
    async with await send(client, peer.origin) as response:
        assert response.status == 201
        assert response.reason == "Fine Indeed"
        assert response.content_length == 2
        assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]
        # As aiohttp decodes them, so an aiohttp server sends the same bytes on.
        note = response.headers["X-Note"]
        assert note.encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff"
        assert list(response.headers)[1] == "X-Note"
        assert await response.read() == b"ok"


# Each framing a vendor may use: the body, and whether the connection is
# kept for the next request (one accepted connection) or not (two). Peers
# that announce a close keep the connection open: the client must not wait
# to be told twice.
@pytest.mark.parametrize(
    ("answer", "then_close", "body", "connections"),
    [
        (OK, False, b"ok", 1),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n3;ext=1\r\n!!!\r\n0\r\nX-Trailer: t\r\n\r\n",
            False,
            b"ok!!!",
            1,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False, b"ok", 1),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, False, b"ok", 1),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, b"", 1),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False, b"", 1),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            False,
            b"ok",
            2,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, b"ok", 2),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            False,
            b"ok",
            1,
        ),
        # Bodies that end where the connection does.
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", True, b"until close", 2),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", True, b"raw", 2),
    ],
)
async def test_framings(
    peers: Callable[..., Peer],
    client: http1.Client,
    answer: bytes,
    then_close: bool,
    body: bytes,
    connections: int,
) -> None:
    peer = peers(always(answer, CLOSE) if then_close else always(answer))
    await peer.start()
    for _ in range(2):
        assert await fetch(client, peer.origin) == body
    assert peer.connections == connections


async def test_an_answer_to_head_has_no_body(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    peer = await peers(always(head)).start()
    async with await send(client, peer.origin, method="HEAD") as response:
        assert response.content_length == 1000
        assert await response.read() == b""
    assert await fetch(client, peer.origin, method="HEAD") == b""


# --- keeping connections ---------------------------------------------------------


async def test_connections_are_reused(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(OK)).start()
    for _ in range(5):
        assert await fetch(client, peer.origin) == b"ok"
    assert peer.connections == 1
    assert [s.connection for s in peer.received] == [0] * 5


async def test_an_answer_released_unread_closes_its_connection(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000000
    peer = await peers(lambda n: [big] if n == 0 else [OK]).start()
    async with await send(client, peer.origin) as response:
        assert len(await response.read_chunk(10)) == 10
    assert await fetch(client, peer.origin) == b"ok"
    assert peer.connections == 2


async def test_the_pool_cap_makes_requests_wait_their_turn(
    peers: Callable[..., Peer],
) -> None:
    peer = await peers(always(GATE, OK)).start()
    capped = http1.Client(per_origin_limit=2)
    try:
        tasks = [asyncio.create_task(fetch(capped, peer.origin)) for _ in range(6)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks)
        peer.gate.set()
        assert await asyncio.gather(*tasks) == [b"ok"] * 6
    finally:
        await capped.close()
    assert peer.connections == 2
    assert peer.most_open == 2


async def test_a_waiter_that_times_out_leaves_the_queue(
    peers: Callable[..., Peer],
) -> None:
    peer = await peers(lambda n: [HANG] if n == 0 else [OK]).start()
    capped = http1.Client(per_origin_limit=1)
    try:
        stuck = asyncio.create_task(fetch(capped, peer.origin, seconds=0.3))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await fetch(capped, peer.origin, seconds=0.1)
        with pytest.raises(TimeoutError):
            await stuck
        assert await fetch(capped, peer.origin) == b"ok"
    finally:
        await capped.close()


# A vendor closes an idle kept-alive connection. Seen in time, the pool just
# opens another; missed (the close crosses our request), a GET is sent again
# on a fresh connection, a POST fails (the vendor may have counted it).
async def test_an_idle_connection_the_vendor_closed_is_not_used(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(OK, CLOSE)).start()
    assert await fetch(client, peer.origin) == b"ok"
    await asyncio.sleep(0.05)  # the close reaches the pool
    assert await fetch(client, peer.origin) == b"ok"
    assert peer.connections == 2


async def test_a_get_crossing_the_vendors_close_is_sent_again(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(lambda n: [CLOSE] if n == 1 else [OK]).start()
    assert await fetch(client, peer.origin) == b"ok"
    assert await fetch(client, peer.origin, target="/again") == b"ok"
    assert [s.connection for s in peer.received] == [0, 0, 1]
    assert peer.received[2].head.startswith(b"GET /again ")


async def test_a_post_crossing_the_vendors_close_is_not_sent_again(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(lambda n: [CLOSE] if n == 1 else [OK]).start()
    assert await fetch(client, peer.origin) == b"ok"
    with pytest.raises(http1.Disconnected):
        await fetch(client, peer.origin, method="POST", body=b"{}")
    assert len(peer.received) == 2


async def test_a_fresh_connection_closed_unanswered_is_not_retried(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(CLOSE)).start()
    with pytest.raises(http1.Disconnected):
        await fetch(client, peer.origin)
    assert len(peer.received) == 1


async def test_bytes_on_an_idle_connection_retire_it(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    extra = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    peer = await peers(always(OK + extra)).start()
    assert await fetch(client, peer.origin) == b"ok"
    await asyncio.sleep(0.05)
    assert await fetch(client, peer.origin) == b"ok"
    assert peer.connections == 2


async def test_idle_connections_time_out(peers: Callable[..., Peer]) -> None:
    peer = await peers(always(OK)).start()
    quick = http1.Client(idle_timeout=0.1)
    try:
        assert await fetch(quick, peer.origin) == b"ok"
        await asyncio.sleep(0.3)  # past the idle timeout: swept
        assert peer.open_now == 0
        assert await fetch(quick, peer.origin) == b"ok"
    finally:
        await quick.close()
    assert peer.connections == 2


# --- streaming ---------------------------------------------------------------------


async def test_a_big_body_streams_without_being_buffered_whole(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    size = 5 * 1024 * 1024
    body = bytes(range(256)) * (size // 256)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    peer = await peers(always(head + body)).start()
    async with await send(client, peer.origin) as response:
        first = await response.read_chunk(1024)
        await asyncio.sleep(0.1)  # the vendor writes as fast as it can
        assert response.buffered <= http1.HIGH_WATER + 512 * 1024
        parts = [first]
        while chunk := await response.read_chunk(64 * 1024):
            assert len(chunk) <= 64 * 1024
            parts.append(chunk)
    assert b"".join(parts) == body
    assert await fetch(client, peer.origin) == body  # and read() takes it all
    assert peer.connections == 1


# --- failures ------------------------------------------------------------------------


# A body that stops short of its framing is an error for the reader, never a
# short body.
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort\r\n",
    ],
)
async def test_a_body_cut_short_is_an_error(
    peers: Callable[..., Peer], client: http1.Client, answer: bytes
) -> None:
    peer = await peers(always(answer, CLOSE)).start()
    async with await send(client, peer.origin) as response:
        with pytest.raises(http1.Disconnected):
            await response.read()
    async with await send(client, peer.origin) as response:
        assert await response.read_chunk() == b"short"
        with pytest.raises(http1.Disconnected):
            await response.read_chunk()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        # A head over the limit, in one piece or trickled in pieces.
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1234567890\r\n" * 5000 + b"\r\n",
    ],
)
async def test_a_malformed_answer_is_refused(
    peers: Callable[..., Peer], client: http1.Client, answer: bytes
) -> None:
    peer = await peers(always(answer)).start()
    with pytest.raises(http1.ProtocolError):
        await fetch(client, peer.origin)


async def test_a_head_trickled_past_the_limit_is_refused(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    pieces: list[Step] = [b"HTTP/1.1 200 OK\r\nX-Endless: "]
    pieces += [b"a" * 8192] * 10
    peer = await peers(lambda n: pieces).start()
    with pytest.raises(http1.ProtocolError, match="too large"):
        await fetch(client, peer.origin)


async def test_no_answer_in_time_is_a_timeout(
    peers: Callable[..., Peer], client: http1.Client
) -> None:
    peer = await peers(always(HANG)).start()
    with pytest.raises(TimeoutError):
        await fetch(client, peer.origin, seconds=0.2)
    slow_body = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    peer = await peers(lambda n: [slow_body, HANG]).start()
    async with await send(client, peer.origin, seconds=0.2) as response:
        with pytest.raises(TimeoutError):
            await response.read()


async def test_a_refused_connection_is_a_connect_error(client: http1.Client) -> None:
    peer = Peer(always(OK))
    await peer.start()
    await peer.stop()  # nothing listens on its port any more
    with pytest.raises(http1.ConnectError):
        await fetch(client, peer.origin)


async def test_a_closed_client_refuses_requests(
    peers: Callable[..., Peer],
) -> None:
    peer = await peers(always(OK)).start()
    closing = http1.Client()
    assert await fetch(closing, peer.origin) == b"ok"
    await closing.close()
    with pytest.raises(http1.ClientError):
        await fetch(closing, peer.origin)


# --- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_verifies_the_vendors_name(
    peers: Callable[..., Peer], ca: trustme.CA
) -> None:
    await check_tls(peers, ca)


async def check_tls(peers: Callable[..., Peer], ca: trustme.CA) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("vendor.test").configure_cert(server)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    peer = await peers(always(OK)).start(tls=server)

    client = http1.Client(ssl_context=trusting)
    try:
        for _ in range(2):
            assert await fetch(client, ("127.0.0.1", peer.port, "vendor.test")) == b"ok"
        assert peer.connections == 1
        with pytest.raises(http1.ConnectError) as failed:
            await fetch(client, ("127.0.0.1", peer.port, "other.test"))
        assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await client.close()

    # The system's CA store does not know the test CA.
    default = http1.Client()
    try:
        with pytest.raises(http1.ConnectError):
            await fetch(default, ("127.0.0.1", peer.port, "vendor.test"))
    finally:
        await default.close()


# --- against aiohttp's server ----------------------------------------------------


async def test_against_an_aiohttp_server(client: http1.Client) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            for n in range(3):
                await response.write(b"part %d;" % n)
            await response.write_eof()
            return response
        body = await request.read()
        return web.Response(body=body[::-1], headers={"X-Method": request.method})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin: http1.Origin = ("127.0.0.1", runner.addresses[0][1], None)
    try:
        assert await fetch(client, origin, method="POST", body=b"abc") == b"cba"
        assert await fetch(client, origin, target="/stream") == b"part 0;part 1;part 2;"
        async with await send(client, origin, method="PUT", body=b"xy") as response:
            assert response.headers["X-Method"] == "PUT"
            assert await response.read() == b"yx"
    finally:
        await client.close()
        await runner.cleanup()


# --- through Upstream and tagproxy ---------------------------------------------

VENDOR: Final = "vendor.test"


def upstream_to(peer: Peer, scheme: str = "http", **kw: Any) -> Upstream:
    override = parse_override(f"https://{VENDOR}={scheme}://127.0.0.1:{peer.port}")
    return Upstream((override,), **kw)


async def upstream_get(upstream: Upstream, total: float = DEADLINE) -> bytes:
    prepared = upstream.prepare("https", VENDOR, "/p?q=a+b%2F")
    timeouts = Timeouts(connect=DEADLINE, total=total)
    async with await upstream.request(
        "GET", prepared, {"User-Agent": "ua"}, None, timeouts
    ) as response:
        return await response.read()


async def test_upstream_sends_host_first_and_nothing_else(
    peers: Callable[..., Peer],
) -> None:
    peer = await peers(always(OK)).start()
    upstream = upstream_to(peer)
    try:
        assert await upstream_get(upstream) == b"ok"
    finally:
        await upstream.close()
    assert peer.received[0].head == (
        b"GET /p?q=a+b%2F HTTP/1.1\r\nHost: vendor.test\r\nUser-Agent: ua\r\n\r\n"
    )


# Every way an upstream can fail ends as a 502 (of a kind the metrics name)
# or a 504, never as another exception.
@pytest.mark.parametrize(
    ("steps", "status", "kind"),
    [
        ([b"garbage\r\n\r\n"], 502, "protocol"),
        (
            [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"],
            502,
            "protocol",
        ),
        ([CLOSE], 502, "protocol"),
        ([HANG], 504, "timeout"),
    ],
)
async def test_upstream_failures_become_502_or_504(
    peers: Callable[..., Peer], steps: list[Step], status: int, kind: str
) -> None:
    peer = await peers(always(*steps)).start()
    upstream = upstream_to(peer)
    try:
        with pytest.raises(UpstreamError) as failed:
            await upstream_get(upstream, total=0.3)
    finally:
        await upstream.close()
    assert failed.value.status == status
    assert failed.value.kind == kind
    assert isinstance(failed.value, UpstreamTimeout) == (status == 504)


async def test_upstream_that_refuses_is_a_connect_error() -> None:
    peer = Peer(always(OK))
    await peer.start()
    await peer.stop()
    upstream = upstream_to(peer)
    try:
        with pytest.raises(UpstreamError) as failed:
            await upstream_get(upstream)
    finally:
        await upstream.close()
    assert (failed.value.status, failed.value.kind) == (502, "connect")


# An override to an https address still verifies the vendor's own name.
async def test_upstream_tls_verifies_the_vendor_name(
    peers: Callable[..., Peer], ca: trustme.CA
) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    for name, works in ((VENDOR, True), ("someone-else.test", False)):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(server)
        peer = await peers(always(OK)).start(tls=server)
        upstream = upstream_to(peer, "https", ssl_context=trusting)
        try:
            if works:
                assert await upstream_get(upstream) == b"ok"
            else:
                with pytest.raises(UpstreamError) as failed:
                    await upstream_get(upstream)
                assert failed.value.kind == "connect"
        finally:
            await upstream.close()


# Through tagproxy: the vendor's answer head reaches the browser byte for
# byte, repeated headers and non-ASCII bytes included.
async def test_relayed_answer_headers_pass_byte_exact(
    peers: Callable[..., Peer], start_proxy: StartProxy
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nX-Note: caf\xc3\xa9\r\nX-Twice: 1\r\n"
        b"X-Twice: 2\r\nContent-Length: 2\r\n\r\nok"
    )
    peer = await peers(always(answer)).start()
    url = f"http://127.0.0.1:{peer.port}"
    proxy = await start_proxy(
        public_url="https://www.example.com",
        overrides=[f"https://*.google-analytics.com={url}"],
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"GET /gt/ga/www/g/collect?v=2 HTTP/1.1\r\nHost: www.example.com\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = await reader.read()
    finally:
        writer.close()
    head = data.split(b"\r\n\r\n")[0]
    assert b"\r\nX-Note: caf\xc3\xa9\r\n" in head
    assert b"\r\nX-Twice: 1\r\nX-Twice: 2\r\n" in head
    (seen,) = peer.received
    assert seen.head.startswith(
        b"GET /g/collect?v=2 HTTP/1.1\r\nHost: www.google-analytics.com\r\n"
    )
    assert b"User-Agent" not in seen.head
    assert b"Content-Type" not in seen.head


# --- on uvloop ----------------------------------------------------------------------

Case = Callable[[Callable[..., Peer], http1.Client], Awaitable[None]]


# Production runs on uvloop, whose transports differ from asyncio's in the
# details this client depends on (flow control, pausing, writes after a
# close): the cases that exercise those run again on it.
@pytest.mark.parametrize(
    "case",
    [
        test_a_large_body_arrives_whole,
        test_connections_are_reused,
        test_an_answer_released_unread_closes_its_connection,
        test_an_idle_connection_the_vendor_closed_is_not_used,
        test_a_get_crossing_the_vendors_close_is_sent_again,
        test_a_post_crossing_the_vendors_close_is_not_sent_again,
        test_bytes_on_an_idle_connection_retire_it,
        test_a_big_body_streams_without_being_buffered_whole,
        test_a_head_trickled_past_the_limit_is_refused,
        test_no_answer_in_time_is_a_timeout,
        lambda peers, client: check_tls(peers, trustme.CA()),
    ],
)
def test_on_uvloop(case: Case) -> None:
    async def run() -> None:
        client = http1.Client()
        try:
            async with peer_factory() as make:
                await case(make, client)
        finally:
            await client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
