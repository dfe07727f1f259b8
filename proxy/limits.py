"""Server-wide limits: header size, connections, and how long a client may take.

A tag proxy faces every visitor of a site, and anyone else who finds it. A
client that opens sockets and sends nothing, or sends its request a byte at
a time, must not hold the server: each connection has `client_timeout` to
send a complete request head (and may sit idle that long between requests),
and `body_timeout` to send its body. Past `max_connections`, new connections
get an immediate 503 instead of queueing behind the rest. Body size limits
are per route (rule key `max_body`), upstream timeouts per route too
(`connect_timeout`, `timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiohttp import HttpVersion11, hdrs, web

from .errors import ConfigError, ExpectationFailed, RequestTimeout

log = logging.getLogger(__name__)

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

T = TypeVar("T")

_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 22\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
    b"too many connections\r\n"
)
_WARN_EVERY: Final = 10.0
DEFAULT_BODY_TIMEOUT: Final = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_size: int = 16 * 1024  # one header or the request line, bytes
    max_headers: int = 100
    client_timeout: float = 20.0  # to send a request head; idle keep-alive
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # to send a whole request body
    max_connections: int = 10_000

    def handler_args(self) -> dict[str, Any]:
        """aiohttp's request handler settings that enforce these limits."""
        return {
            "max_line_size": self.max_header_size,
            "max_field_size": self.max_header_size,
            "max_headers": self.max_headers,
            # aiohttp arms this timer when a connection opens and after each
            # response, and closes the connection if no complete request head
            # has arrived when it fires: a request-head timeout that slow
            # senders cannot extend by trickling bytes.
            "keepalive_timeout": self.client_timeout,
        }


def build_limits(
    *,
    max_header_size: int,
    max_headers: int,
    client_timeout: float,
    body_timeout: float,
    max_connections: int,
) -> Limits:
    """Validate the limit flags, naming the flag on error."""
    checks = (
        ("--max-header-size", max_header_size, 1024),
        ("--max-headers", max_headers, 16),
        ("--client-timeout", client_timeout, 0.1),
        ("--body-timeout", body_timeout, 0.1),
        ("--max-connections", max_connections, 1),
    )
    for flag, value, least in checks:
        if value < least:
            raise ConfigError(f"{flag} {value!r}: must be at least {least}")
    return Limits(
        max_header_size, max_headers, client_timeout, body_timeout, max_connections
    )


async def body_within(seconds: float, reading: Awaitable[T]) -> T:
    """Await a request-body read, answering 408 if the client is too slow."""
    try:
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError as exc:
        raise RequestTimeout(
            f"request body not received within {seconds:g} seconds"
        ) from exc


class ConnectionLimiter:
    """A protocol factory that refuses connections past a limit with a 503.

    Counting uses the aiohttp server's own connection registry, so
    connections closed by any path (timeouts, client resets, shutdown) stop
    counting at once.
    """

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.refused = 0
        self._warned = 0.0

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) < self.limit:
            return self.server()
        self.refused += 1
        now = time.monotonic()
        if now - self._warned > _WARN_EVERY:
            self._warned = now
            log.warning(
                "connection limit %d reached: refusing new connections with 503 "
                "(%d so far; raise --max-connections if this is real traffic)",
                self.limit,
                self.refused,
            )
        return _Busy()


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class LimitedSite(web.BaseSite):
    """A TCP site whose connections pass through a ConnectionLimiter."""

    __slots__ = ("_host", "_limit", "_port", "_reuse_port", "_sock", "limiter")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        backlog: int = 1024,
        reuse_port: bool | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._sock = sock  # a listening socket of the caller's, else our own
        self.limiter: ConnectionLimiter | None = None
        self._limit = max_connections

    @property
    def factory(self) -> Callable[[], asyncio.BaseProtocol] | None:
        """What serves a connection accepted here (None before start)."""
        return self.limiter

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.limiter = ConnectionLimiter(server, self._limit)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                self.limiter, sock=self._sock, backlog=self._backlog
            )
            return
        self._server = await loop.create_server(
            self.limiter,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )


async def continue_if_expected(request: web.BaseRequest) -> None:
    """Invite a body the client holds back until told (`Expect: 100-continue`).

    Called just before the body is read, once the request has passed every
    check that could refuse it, so a refused request (404, 405, 413) never
    has its body sent at all.
    """
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None:
        return
    if expect.strip().lower() != "100-continue":
        raise ExpectationFailed(f"unsupported Expect: {expect[:64]!r}")
    if request.version == HttpVersion11:
        await request.writer.write(_CONTINUE)
        request.writer.output_size = 0  # counts the answer's bytes only
