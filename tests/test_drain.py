"""The pieces of a graceful stop, one at a time, in-process and deterministic.

tests/test_shutdown.py checks the whole under load with a real process;
here each step is forced to happen at a known moment.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from proxy.drain import drain, listen
from proxy.server import ProxyRunner

from .conftest import StartProxy
from .fakes import FakeVendor, Reply


@dataclass
class Served:
    runner: web.BaseRunner
    listener: socket.socket
    draining: asyncio.Event
    port: int


@pytest.fixture
async def served(start_proxy: StartProxy, vendor: FakeVendor) -> AsyncIterator[Served]:
    """The proxy as served, on a listener of ours; the script says hello."""
    js = Reply(200, b"hello", [("Content-Type", "application/javascript")])
    vendor.reply("plausible.io", "/js/script.js", js)
    proxy = (await start_proxy(public_url="https://t.example")).proxy
    runner = ProxyRunner(proxy, access_log=None, shutdown_timeout=2)
    await runner.setup()
    listener = listen("127.0.0.1", 0, backlog=16)
    await web.SockSite(runner, listener).start()
    yield Served(runner, listener, proxy.draining, listener.getsockname()[1])
    await runner.cleanup()


REQUEST = b"GET /pa/js/script.js HTTP/1.1\r\nHost: t.example\r\n\r\n"


def read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while b"hello" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


async def test_a_connection_waiting_in_the_queue_is_served_not_reset(
    served: Served,
) -> None:
    # Connected and sent before the event loop could accept it: it waits in
    # the kernel's queue when the stop begins (no await in between).
    client = socket.create_connection(("127.0.0.1", served.port))
    client.sendall(REQUEST)
    await drain(served.runner, [served.listener], None, served.draining, 0.2)

    answer = await asyncio.to_thread(read_answer, client)
    client.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in answer
    assert answer.endswith(b"hello")


async def test_after_the_stop_new_connections_are_refused(served: Served) -> None:
    await drain(served.runner, [served.listener], None, served.draining, 0.0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2)


async def test_open_connections_are_answered_with_connection_close(
    served: Served,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(REQUEST)
    first = await reader.readuntil(b"hello")
    assert b"Connection: close" not in first  # keep-alive before the stop

    stopping = asyncio.create_task(
        drain(served.runner, [served.listener], None, served.draining, 0.5)
    )
    await asyncio.sleep(0.05)
    # The idle keep-alive connection is still served during the linger.
    writer.write(REQUEST)
    second = await reader.readuntil(b"hello")
    assert b"Connection: close" in second
    assert await reader.read() == b""  # and then closed by tagproxy
    writer.close()
    await stopping
