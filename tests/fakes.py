"""Local stand-ins for vendors and a raw HTTP client, all on 127.0.0.1.

The fake vendor records exactly what reached it: method, Host, raw path and
query, the header list in order with duplicates, and the body bytes. Tests
assert on that record, because real vendors answer 2xx and drop bad data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

Responder = Callable[[web.Request, "Received"], Awaitable[web.StreamResponse]]
Message = tuple[WSMsgType, bytes]


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    host: str
    raw_path: str  # path and query, as sent on the request line
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.raw_path.partition("?")[2]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class FakeVendor:
    """An HTTP server standing in for every vendor host at once (by Host)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.connections = 0
        self._replies: dict[tuple[str, str], Reply | Responder] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, host: str, path: str, reply: Reply | Responder) -> None:
        """Answer requests for host+path (path without query) this way."""
        self._replies[(host, path)] = reply

    def to(self, host: str) -> list[Received]:
        return [r for r in self.received if r.host == host]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host` (any loopback address) and `port` (0: a free one)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Bodies are recorded as they arrived on the wire, never decoded.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            method=request.method,
            host=request.headers.get("Host", ""),
            raw_path=request.raw_path,
            headers=[(k.decode(), v.decode()) for k, v in request.raw_headers],
            body=body,
        )
        self.received.append(received)
        reply = self._replies.get((received.host, received.path))
        if reply is None:
            return web.Response(status=204)
        if callable(reply):
            return await reply(request, received)
        response = web.Response(status=reply.status, body=reply.body)
        for name, value in reply.headers:
            response.headers.add(name, value)
        return response


@dataclass(slots=True)
class SocketRecord:
    """One WebSocket a vendor endpoint accepted: the upgrade and every message."""

    upgrade: Received
    protocol: str | None
    messages: list[Message] = field(default_factory=list)
    close_code: int | None = None  # the code the peer closed with (None: dropped)
    close_reason: str = ""
    closed: asyncio.Event = field(default_factory=asyncio.Event)


# What the endpoint does with a message: the messages to send back, or a
# (code, reason) to close with.
Answer = Callable[[Message], "list[Message] | tuple[int, str]"]


def echo(message: Message) -> list[Message]:
    return [message]


class SocketEndpoint:
    """A vendor WebSocket endpoint: records every message byte-exact.

    Use as a reply: ``vendor.reply(host, path, endpoint)``. It greets each
    socket with `greeting`, then gives every message to `answer` (default:
    echo it back unchanged). Text is never decoded, so what is recorded is
    exactly what arrived.
    """

    def __init__(
        self,
        answer: Answer = echo,
        greeting: list[Message] | None = None,
        protocols: tuple[str, ...] = (),
    ) -> None:
        self.answer = answer
        self.greeting = greeting or []
        self.protocols = protocols
        self.sockets: list[SocketRecord] = []
        self._opened = asyncio.Event()

    async def __call__(
        self, request: web.Request, received: Received
    ) -> web.StreamResponse:
        socket = web.WebSocketResponse(
            protocols=self.protocols, autoclose=False, decode_text=False
        )
        await socket.prepare(request)
        record = SocketRecord(received, socket.ws_protocol)
        self.sockets.append(record)
        self._opened.set()
        try:
            for kind, data in self.greeting:
                await socket.send_frame(data, kind)
            await self._serve(socket, record)
        finally:
            record.closed.set()
        return socket

    async def _serve(self, socket: web.WebSocketResponse, record: SocketRecord) -> None:
        while True:
            message = await socket.receive()
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            record.messages.append((message.type, message.data))
            answer = self.answer((message.type, message.data))
            if isinstance(answer, tuple):
                await socket.close(code=answer[0], message=answer[1].encode())
                return
            for kind, data in answer:
                await socket.send_frame(data, kind)
        if message.type is WSMsgType.CLOSE:
            record.close_code, record.close_reason = message.data, message.extra or ""
            await socket.close(code=message.data or 1000)

    async def socket(self, index: int = 0, within: float = 10.0) -> SocketRecord:
        """The index-th socket, once it has opened (bounded wait)."""
        async with asyncio.timeout(within):
            while len(self.sockets) <= index:
                self._opened.clear()
                await self._opened.wait()
        return self.sockets[index]


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def raw_request(port: int, head: str, body: bytes = b"") -> RawResponse:
    """Send exact request bytes (no client-side normalising) and read one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        headers = []
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers.append((name.strip(), value.strip()))
        is_head = head.startswith("HEAD ")
        data = b"" if is_head else await _read_body(reader, headers, status)
        return RawResponse(status, headers, data)
    finally:
        writer.close()


async def _read_body(
    reader: asyncio.StreamReader, headers: list[tuple[str, str]], status: int
) -> bytes:
    lookup = {k.lower(): v for k, v in headers}
    if status in (204, 304):
        return b""
    if "content-length" in lookup:
        return await reader.readexactly(int(lookup["content-length"]))
    if lookup.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    return await reader.read()
