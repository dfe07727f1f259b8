"""A vendor that answers with exact bytes, for answers no HTTP library would send.

FakeVendor (aiohttp) always frames its answers correctly; real vendors and
the networks in between do not: lying Content-Length, connections reset in
the middle of a body, bodies that never finish. RawVendor reads each request
head (and a Content-Length body), records it, and plays a script of byte
strings and actions back on the connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field
from typing import Final

CLOSE: Final = "close"  # close the connection cleanly (FIN)
RESET: Final = "reset"  # abort it with a TCP reset (RST)
READ_ALL_LIMIT: Final = 5.0

Step = bytes | str


@dataclass(frozen=True, slots=True)
class RawRequest:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")


@dataclass
class RawVendor:
    """Answers every request with `steps`, in order, on 127.0.0.1."""

    steps: list[Step]
    received: list[RawRequest] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await reader.readexactly(length) if length else b""
        self.received.append(RawRequest(head, body))
        await self._play(writer)

    async def _play(self, writer: asyncio.StreamWriter) -> None:
        for step in self.steps:
            if step == CLOSE:
                await writer.drain()
                writer.close()
                return
            if step == RESET:
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                writer.transport.abort()
                return
            assert isinstance(step, bytes)
            writer.write(step)
        await writer.drain()
        writer.close()


async def read_all(port: int, request: bytes) -> bytes:
    """Send `request` and read until the server closes the connection.

    Returns everything received; a server that keeps the connection open
    past READ_ALL_LIMIT seconds makes this raise TimeoutError.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(READ_ALL_LIMIT):
            while chunk := await _read_some(reader):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


async def _read_some(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(65536)
    except ConnectionResetError:
        return b""
