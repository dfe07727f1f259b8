"""A lean HTTP/1.1 client for vendor requests: pooled keep-alive connections,
requests written in one piece, answers parsed by llhttp.

On the beacon path aiohttp's ClientSession cost more CPU than the rest of
the relay together: cookie jar, automatic headers, redirect and
decompression machinery, tracing hooks and several timer objects per
request, none of which a relay wants. This client does only what tagproxy
asks of it:

- a request goes out exactly as given: method, the already-encoded target,
  Host, the caller's headers in order, Content-Length; nothing invented, and
  the head is built once, even when the request is sent a second time;
- answers are parsed by llhttp (through httptools), never by hand: framing
  mistakes are how request smuggling and silently short bodies happen;
- a connection goes back to the pool only after an answer that arrived in
  full and allowed it; anything else closes it;
- each request has one deadline, checked by one timer for all requests,
  rather than a timeout object per read.

It never follows redirects, decompresses, keeps cookies or reads proxy
settings from the environment. Which address to connect to is the caller's
choice: Upstream resolves vendor names through its guarded resolver.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Final

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# Where a connection goes: address, port and the TLS server name (None for
# plain HTTP). The server name is part of the key: one address may serve
# several vendor names, each with its own certificate.
Origin = tuple[str, int, str | None]

IDLE_TIMEOUT: Final = 30.0  # seconds a kept-alive connection waits for reuse
PER_ORIGIN_LIMIT: Final = 256  # open connections to one origin; more requests wait
MAX_HEAD: Final = 64 * 1024  # status line and headers of one answer, in bytes
# Body bytes buffered ahead of the reader before reading from the socket
# pauses, and the level at which it resumes: a 5 MB script streams through
# a few hundred kilobytes, not all of it at once.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
# Bodies up to this size leave with their head in one write; larger ones are
# written in chunks that wait for the socket to drain in between.
WHOLE_WRITE_MAX: Final = 1024 * 1024
WRITE_CHUNK: Final = 256 * 1024
# How often the deadlines of requests in flight are checked: a deadline
# fires at most this late.
DEADLINE_TICK: Final = 0.05

# RFC 9110 9.2.2: sending one of these twice has the effect of sending it
# once, so a request lost to a connection the vendor had just closed may be
# sent again (RFC 9112 9.3.1). aiohttp retries the same set.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods whose requests carry no Content-Length when they have no body;
# any other method says `Content-Length: 0`, as aiohttp did.
_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CONTENT_LENGTH: Final = "Content-Length"
_TRANSFER_ENCODING: Final = "Transfer-Encoding"


class ClientError(Exception):
    """An exchange with an upstream that failed."""


class ConnectError(ClientError):
    """A connection that never opened, so nothing was sent on it."""


class ConnectTimeout(ConnectError, TimeoutError):
    """A connection that did not open within the connect timeout."""


class ProtocolError(ClientError):
    """An answer this client refuses: not HTTP/1.x, or framed dangerously."""


class Disconnected(ClientError):
    """The connection closed or broke before the answer was complete."""


class _Stale(Disconnected):
    """A pooled connection the upstream closed before answering this request."""


def encode_request(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request head: request line, Host, the headers as given, the length.

    `headers` must not frame the message (no Content-Length, Transfer-Encoding
    or Connection): rules cannot name those, and the length is ours to state.
    Values are encoded back to the bytes the visitor sent (aiohttp decodes
    UTF-8 with surrogate escapes), so nothing is re-encoded on the way.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(map(": ".join, headers))
    if body is not None:
        lines.append(f"{_CONTENT_LENGTH}: {len(body)}")
    elif method not in _BODYLESS:
        lines.append(f"{_CONTENT_LENGTH}: 0")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # Exactly one CR and one LF per line: any more would let a header value
    # or the target start a line of its own (request splitting). Two scans
    # in C are cheaper than a check per header.
    if (
        text.count("\n") != len(lines)
        or text.count("\r") != len(lines)
        or " " in target
    ):
        raise ClientError("request target or header would split the request")
    return text.encode("utf-8", "surrogateescape")


class Response:
    """An upstream answer: its head at once, its body as it arrives.

    Read the body with `read()` (all of it) or `read_chunk()` (streaming),
    then `release()` it, or use it as an async context manager. Its
    connection returns to the pool once the whole answer has arrived; an
    answer released before that closes its connection.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_eof",
        "_error",
        "_size",
        "_waiter",
        "content_length",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: _Connection,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        length = headers.get(_CONTENT_LENGTH)
        # llhttp has checked that a Content-Length is digits and single.
        self.content_length = int(length) if length is not None else None
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def buffered(self) -> int:
        """Body bytes received and not read yet."""
        return self._size

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        conn = self._conn
        if conn is not None:
            # The rest of this answer would be read as the next one's start.
            self._conn = None
            conn.close()

    async def read(self) -> bytes:
        """The whole body; raises if the connection broke before its end."""
        chunks = self._chunks
        if self._eof and len(chunks) == 1:
            self._size = 0
            return chunks.popleft()
        parts: list[bytes] = []
        while True:
            if chunks:
                parts.extend(chunks)
                chunks.clear()
                self._drained()
            if self._eof:
                return b"".join(parts)
            await self._wait()

    async def read_chunk(self, limit: int = 64 * 1024) -> bytes:
        """Up to `limit` bytes of the body, b"" at its end."""
        chunks = self._chunks
        while not chunks:
            if self._eof:
                return b""
            await self._wait()
        chunk = chunks.popleft()
        if len(chunk) > limit:
            chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self._size -= len(chunk)
        if self._size <= LOW_WATER:
            self._drained()
        return chunk

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _drained(self) -> None:
        if not self._chunks:
            self._size = 0
        if self._conn is not None:
            self._conn.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> bool:
        """Buffer body bytes; True when the reader is far behind."""
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return self._size > HIGH_WATER

    def _end(self) -> None:
        self._conn = None
        self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._conn = None
        if self._error is None and not self._eof:
            self._error = error
        self._wake()

    def _until_close(self) -> bool:
        """Whether this answer's body ends where the connection does."""
        if self.content_length is not None:
            return False
        codings = self.headers.getall(_TRANSFER_ENCODING, ())
        return not codings or not codings[-1].lower().rstrip().endswith("chunked")


class _Pool:
    """The connections to one origin: idle ones, how many are open, who waits."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []  # oldest first; reuse takes the newest
        self.open = 0  # idle, busy and opening
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()


class _Connection(asyncio.Protocol):
    """One connection to an upstream; it parses the answers to its requests.

    httptools calls the on_* methods while it parses; they collect the head,
    hand the Response to the waiting request and feed it the body.
    """

    __slots__ = (
        "_busy",
        "_done",
        "_head_bytes",
        "_head_size",
        "_head_waiter",
        "_method",
        "_paused_reading",
        "_paused_writing",
        "_raw_headers",
        "_reason",
        "_received",
        "_reusable",
        "_writable",
        "_writing",
        "client",
        "closed",
        "deadline",
        "idle_since",
        "loop",
        "parser",
        "pool",
        "response",
        "transport",
        "used",
    )

    def __init__(self, client: Client, pool: _Pool) -> None:
        self.client = client
        self.pool = pool
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.used = 0  # answers completed on this connection
        self.idle_since = 0.0
        self._busy = False
        self._method = ""
        self.deadline = 0.0  # in loop time, while busy
        self._head_waiter: asyncio.Future[Response] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._paused_reading = False
        self._received = False  # any byte of the current answer
        self._done = False  # the current answer is complete
        self._reusable = True
        # A large body is still being written: an answer that arrives first
        # (a 413) leaves the rest of the body on the connection, and the
        # vendor would read the next request as more of it.
        self._writing = False
        self._reason = b""
        self._raw_headers: list[tuple[str, str]] = []
        self._head_size = 0  # header bytes of the current answer
        self._head_bytes = 0  # bytes fed while its head was unfinished

    # --- sending ------------------------------------------------------------

    async def send(
        self, method: str, head: bytes, body: bytes | None, deadline: float
    ) -> Response:
        transport = self.transport
        assert transport is not None
        if self.closed or transport.is_closing():
            # Handed over by a request that just finished, and closed by the
            # vendor since.
            error = _Stale if self.used else Disconnected
            raise error("connection closed before sending")
        self._busy = True
        self._method = method
        self._received = False
        self._reusable = True
        self._head_size = self._head_bytes = 0
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._head_waiter = waiter
        self.deadline = deadline
        self.client._watch(self)
        try:
            if not body:
                transport.write(head)
            elif len(body) <= WHOLE_WRITE_MAX:
                transport.write(head + body)
            else:
                transport.write(head)
                self._writing = True
                try:
                    await self._write_large(body)
                finally:
                    self._writing = False
        except (OSError, RuntimeError) as exc:
            # uvloop refuses writes to a transport that is closing.
            error = _Stale if self.used else Disconnected
            raise error("connection closed before sending") from exc
        return await waiter

    async def _write_large(self, body: bytes) -> None:
        """Write in chunks, waiting whenever the socket's buffer is full, so
        the loop is never held and the body is never copied whole."""
        view = memoryview(body)
        for start in range(0, len(view), WRITE_CHUNK):
            if self._head_waiter is None or self.closed or self.transport is None:
                # Answered early (a 413), timed out or broken: the rest of
                # the body would be taken for the next request's start.
                self._reusable = False
                return
            self.transport.write(view[start : start + WRITE_CHUNK])
            if self._paused_writing:
                self._writable = self.loop.create_future()
                try:
                    await self._writable
                finally:
                    self._writable = None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- receiving ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Bytes nobody asked for (a 408 before an idle close, garbage):
            # this connection can no longer be trusted to frame an answer.
            self.close()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError):
                self._fail(cause)
            else:
                self._fail(ProtocolError(f"malformed answer: {exc}"))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._done:
                self._fail(ProtocolError(f"malformed answer: {exc}"))
                return
            self._reusable = False  # bytes after a complete answer
        if self._done:
            self._complete()
        elif self._head_waiter is not None:
            # An unfinished head is kept by httptools until it ends: bound it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(ProtocolError("answer head too large"))

    def on_message_begin(self) -> None:
        if self._done:
            self._reusable = False  # a second answer to one request

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # llhttp may hand it over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            # A chunked answer's trailers: never passed on, and never kept
            # to turn up among the next answer's headers on this connection.
            return
        self._head_size += len(name) + len(value)
        self._raw_headers.append(
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        if self._done:
            self._raw_headers.clear()  # a second answer: dropped with the connection
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise ProtocolError("upstream switched protocols unasked")
            # 100 Continue and other informational answers: the real answer
            # follows on the same connection.
            self._raw_headers.clear()
            self._reason = b""
            return
        if self._head_size > MAX_HEAD:
            raise ProtocolError("answer head too large")
        headers = CIMultiDictProxy(CIMultiDict(self._raw_headers))
        self._raw_headers.clear()
        reason = self._reason.decode("utf-8", "surrogateescape")
        self._reason = b""
        response = self.response = Response(self, status, reason, headers)
        if self._method == "HEAD":
            # httptools cannot be told that an answer to HEAD has no body,
            # so it would wait for one: the answer ends here, and so does
            # the connection.
            self._done = True
            self._reusable = False
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        self._wake_writer()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is None or self._done:
            self._reusable = False
            return
        if response._feed(body) and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.response is None:
            return  # the end of an informational answer
        if not self._done:
            self._done = True
            if not self.parser.should_keep_alive():
                self._reusable = False

    def resume_reading(self) -> None:
        if self._paused_reading and not self.closed and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def _complete(self) -> None:
        response = self.response
        assert response is not None
        self._finish()
        self.used += 1
        response._end()
        if self._reusable and not self._writing:
            self.client._release(self)
        else:
            self.close()

    def _finish(self) -> None:
        """The current exchange is over, one way or another."""
        self.response = None
        self._busy = False
        self._done = False
        self.client._watched.discard(self)
        self.resume_reading()

    # --- failing and closing --------------------------------------------------

    def _expire(self) -> None:
        self._fail(TimeoutError("upstream did not answer in time"))

    def _fail(self, error: BaseException) -> None:
        waiter, response = self._head_waiter, self.response
        self._head_waiter = None
        self._finish()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if response is not None:
            response._fail(error)
        self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost says the rest

    def connection_lost(self, exc: Exception | None) -> None:
        response = self.response
        if self._head_waiter is not None:
            if self.used and not self._received:
                error: ClientError = _Stale("pooled connection closed before answer")
            else:
                error = Disconnected("upstream closed the connection before answering")
            error.__cause__ = exc
            self._fail(error)
        elif response is not None:
            if exc is None and response._until_close():
                self._finish()
                response._end()
            else:
                error = Disconnected("upstream closed the connection mid-answer")
                error.__cause__ = exc
                self._fail(error)
        self._wake_writer()
        self._closed()

    def close(self) -> None:
        """Close now, abandoning any exchange in progress."""
        waiter, response = self._head_waiter, self.response
        if waiter is not None or response is not None:
            self._head_waiter = None
            self._finish()
            if waiter is not None:
                waiter.cancel()
            if response is not None:
                response._fail(Disconnected("connection closed"))
        if self.transport is not None:
            self.transport.close()
        self._wake_writer()
        self._closed()

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.client._discard(self)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """Built once per process, at the first https connection: building one
    loads the system's CA store."""
    return ssl.create_default_context()


class Client:
    """Keep-alive connections to upstream origins, and requests over them."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        per_origin_limit: int = PER_ORIGIN_LIMIT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        # For tests with a CA of their own; production always verifies
        # against the system's CA store.
        self._ssl = ssl_context
        self._limit = per_origin_limit
        self._idle_timeout = idle_timeout
        self._pools: dict[Origin, _Pool] = {}
        self._conns: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._watched: set[_Connection] = set()  # busy, with a deadline
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(
        self,
        method: str,
        origin: Origin,
        head: bytes,
        body: bytes | None,
        connect_timeout: float,
        deadline: float,
    ) -> Response:
        """Send one request (head from encode_request) and wait for its answer.

        `deadline` is in loop time and bounds everything: waiting for a
        connection, sending, the head and the body of the answer. Raises
        ConnectError when no connection opened (nothing was sent), another
        ClientError or TimeoutError otherwise.
        """
        if self.closed:
            raise ClientError("client closed")
        conn = self._idle(origin)
        if conn is None:
            conn = await self._open(origin, connect_timeout, deadline)
        try:
            return await conn.send(method, head, body, deadline)
        except _Stale:
            # The vendor closed an idle connection as we reused it. Only an
            # idempotent request is sent again: the vendor may have acted on
            # a POST before closing, and sending it twice would count a
            # beacon twice. The caller reports it (durable routes retry
            # from their spool).
            conn.close()
            if method not in IDEMPOTENT:
                raise
        except BaseException:
            conn.close()
            raise
        conn = await self._open(origin, connect_timeout, deadline)
        try:
            return await conn.send(method, head, body, deadline)
        except BaseException:
            conn.close()
            raise

    async def close(self) -> None:
        self.closed = True
        for timer in (self._sweeper, self._ticker):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._ticker = None
        for pool in self._pools.values():
            while pool.waiters:
                waiter = pool.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(ClientError("client closed"))
        for conn in list(self._conns):
            conn.close()
        self._pools.clear()

    def _tls(self) -> ssl.SSLContext:
        return self._ssl or _default_tls()

    # --- deadlines -------------------------------------------------------------

    def _watch(self, conn: _Connection) -> None:
        """Check `conn`'s deadline until its exchange ends.

        One timer ticks for all requests while any is in flight: a timer per
        request cost uvloop about as much as parsing the answer (a libuv
        handle created, started, stopped and closed every time).
        """
        self._watched.add(conn)
        if self._ticker is None:
            self._ticker = self.loop.call_later(DEADLINE_TICK, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        now = self.loop.time()
        for conn in [c for c in self._watched if c.deadline <= now]:
            conn._expire()
        if self._watched:
            self._ticker = self.loop.call_later(DEADLINE_TICK, self._tick)

    # --- the pool -------------------------------------------------------------

    def _idle(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection still fit for reuse."""
        pool = self._pools.get(origin)
        if pool is None or not pool.idle:
            return None
        idle = pool.idle
        oldest = self.loop.time() - self._idle_timeout
        while idle:
            conn = idle.pop()
            if (
                not conn.closed
                and conn.idle_since > oldest
                and conn.transport is not None
                and not conn.transport.is_closing()
            ):
                return conn
            conn.close()
        return None

    async def _open(
        self, origin: Origin, connect_timeout: float, deadline: float
    ) -> _Connection:
        """A new connection, once the origin is under its limit."""
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        if pool.open >= self._limit:
            handed = await self._wait_for_slot(pool, deadline)
            if handed is not None:
                return handed
        else:
            pool.open += 1
        try:
            return await self._connect(origin, pool, connect_timeout, deadline)
        except BaseException:
            self._free_slot(pool)
            raise

    async def _wait_for_slot(self, pool: _Pool, deadline: float) -> _Connection | None:
        """Wait for a connection handed over, or for leave to open one (None).

        Only reached when an origin has its limit of connections busy, so
        the timeout context here is not on the common path.
        """
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        pool.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and not waiter.exception():
                handed = waiter.result()  # handed over as we gave up: pass it on
                if handed is not None:
                    self._release(handed)
                else:
                    self._free_slot(pool)
            elif waiter in pool.waiters:
                pool.waiters.remove(waiter)
            raise

    def _release(self, conn: _Connection) -> None:
        """A connection whose answer arrived in full and may be reused."""
        if self.closed:
            conn.close()
            return
        pool = conn.pool
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        pool.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_timeout, self._sweep)

    def _discard(self, conn: _Connection) -> None:
        """A connection closed: its slot goes to a waiter, or is freed."""
        if conn not in self._conns:
            # Closed before _connect returned it (cancelled at the very end
            # of create_connection): _open frees that slot itself.
            return
        self._conns.remove(conn)
        self._free_slot(conn.pool)

    def _free_slot(self, pool: _Pool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: open it anew
                return
        pool.open -= 1

    def _sweep(self) -> None:
        """Close connections idle too long; forget origins nothing uses."""
        self._sweeper = None
        oldest = self.loop.time() - self._idle_timeout
        unused = []
        for origin, pool in self._pools.items():
            idle = pool.idle
            expired = 0
            while expired < len(idle) and idle[expired].idle_since <= oldest:
                expired += 1
            for conn in idle[:expired]:
                conn.close()
            del idle[:expired]
            if not pool.open and not pool.waiters:
                unused.append(origin)
        for origin in unused:
            del self._pools[origin]
        if any(pool.idle for pool in self._pools.values()):
            self._sweeper = self.loop.call_later(self._idle_timeout / 2, self._sweep)

    async def _connect(
        self, origin: Origin, pool: _Pool, connect_timeout: float, deadline: float
    ) -> _Connection:
        address, port, server_name = origin
        loop = self.loop
        timeout = min(connect_timeout, deadline - loop.time())
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # Heads and bodies are written whole; waiting to coalesce them
            # (Nagle) would only add a round trip.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, port))
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self, pool),
                    sock=sock,
                    ssl=self._tls() if server_name is not None else None,
                    server_hostname=server_name,
                )
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(f"connect to {address}:{port} timed out") from exc
        except OSError as exc:  # refused, unreachable, TLS refused or unverified
            sock.close()
            raise ConnectError(f"cannot connect to {address}:{port}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        # uvloop may return before it calls connection_made.
        conn.transport = transport
        if conn.closed:  # lost before it was counted: _open frees its slot
            raise ConnectError(f"connection to {address}:{port} closed at once")
        self._conns.add(conn)
        return conn
