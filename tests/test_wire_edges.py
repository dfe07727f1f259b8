"""Hostile vendors and visitors on the wire, against the lean upstream client
(proxy/http1.py) and the low-level front (proxy/server.py).

The vendors are raw asyncio servers (`Peer` from test_http1) that answer
with exact bytes and count the connections they accept; the visitors write
exact bytes too. Each case was an attack tried on a running tagproxy.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import pytest

from proxy import http1

from .conftest import Running, StartProxy
from .test_http1 import CLOSE, HANG, OK, Peer, Step, always, peer_factory, send

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
