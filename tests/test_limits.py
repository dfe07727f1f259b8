"""Server-wide limits: idle and slow clients cannot hold the server.

These tests wait for a limit to act (a socket closed, a 408, a 503) with a
generous guard against hanging; they measure no speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.config import env_defaults
from proxy.errors import ConfigError
from proxy.limits import Limits, build_limits

from . import tally
from .conftest import StartProxy
from .fakes import FakeVendor, Reply, raw_request

PUBLIC = "https://www.example.com"
JS = [("Content-Type", "application/javascript")]
PARTIAL_HEAD = b"GET /pa/js/script.js HTTP/1.1\r\nHost: www.example.com\r\nX-Slow: "
GUARD = 30.0  # seconds before a test gives up waiting: a hang, not a measure


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def sockets() -> AsyncIterator[list[Conn]]:
    opened: list[Conn] = []
    yield opened
    for _, writer in opened:
        writer.close()


async def open_idle(port: int, count: int, opened: list[Conn], partial: bool) -> None:
    """`count` connections that send nothing, or an unfinished request head."""
    for start in range(0, count, 100):
        batch = await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", port)
                for _ in range(min(100, count - start))
            )
        )
        for reader, writer in batch:
            if partial:
                writer.write(PARTIAL_HEAD)
            opened.append((reader, writer))


async def test_thousand_idle_sockets_leave_service_unaffected(
    vendor: FakeVendor, start_proxy: StartProxy, sockets: list[Conn]
) -> None:
    vendor.reply("plausible.io", "/js/script.js", Reply(200, b"var a=1;", JS))
    proxy = await start_proxy(public_url=PUBLIC)
    await open_idle(proxy.port, 500, sockets, partial=False)
    await open_idle(proxy.port, 500, sockets, partial=True)
    assert len(sockets) == 1000

    async with asyncio.timeout(GUARD):
        async with proxy.client.get(f"{proxy.url}/pa/js/script.js") as response:
            assert response.status == 200
            assert await response.read() == b"var a=1;"
        async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as r:
            assert r.status == 204
    assert [r.path for r in vendor.received] == ["/js/script.js", "/api/event"]
    tally.add("idle sockets held open during a served request", len(sockets))


async def test_idle_and_slow_clients_are_disconnected(
    start_proxy: StartProxy, sockets: list[Conn]
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, limits=Limits(client_timeout=0.3))
    await open_idle(proxy.port, 100, sockets, partial=False)
    await open_idle(proxy.port, 100, sockets, partial=True)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        # One byte at a time never completes the head, so the timer set
        # when the connection opened still fires.
        for _ in range(100):
            writer.write(b"a")
            await asyncio.sleep(0.05)

    tricklers = [asyncio.create_task(trickle(w)) for _, w in sockets[100:150]]
    async with asyncio.timeout(GUARD):
        closed = await asyncio.gather(*(reader.read() for reader, _ in sockets))
    for task in tricklers:
        task.cancel()
    assert closed == [b""] * 200  # closed by the server, nothing answered


async def test_kept_alive_connection_closed_when_idle(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, limits=Limits(client_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /pa/api/event HTTP/1.1\r\nHost: www.example.com\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    async with asyncio.timeout(GUARD):
        answer = await reader.read()  # the answer, then EOF once idle too long
    writer.close()
    assert answer.startswith(b"HTTP/1.1 204")
    assert len(vendor.received) == 1


async def test_slow_body_gets_408_and_nothing_upstream(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, limits=Limits(body_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /pa/api/event HTTP/1.1\r\nHost: www.example.com\r\n"
        b'Content-Length: 100\r\n\r\n{"n":'
    )
    async with asyncio.timeout(GUARD):
        status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")
    assert vendor.received == []


async def test_connection_cap_answers_503_then_recovers(
    vendor: FakeVendor, start_proxy: StartProxy, sockets: list[Conn]
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, limits=Limits(max_connections=20))
    await open_idle(proxy.port, 20, sockets, partial=False)
    await asyncio.sleep(0)  # let the server register them

    over = await raw_request(
        proxy.port,
        "POST /pa/api/event HTTP/1.1\nHost: www.example.com\n"
        "Content-Length: 2\nConnection: close\n",
        b"{}",
    )
    assert over.status == 503
    assert over.header("Retry-After") == "1"
    assert vendor.received == []

    for _, writer in sockets:
        writer.close()
    async with asyncio.timeout(GUARD):
        while True:
            again = await raw_request(
                proxy.port,
                "POST /pa/api/event HTTP/1.1\nHost: www.example.com\n"
                "Content-Length: 2\nConnection: close\n",
                b"{}",
            )
            if again.status != 503:
                break
            await asyncio.sleep(0.05)
    assert again.status == 204
    assert len(vendor.received) == 1


# Oversized heads are refused by the parser, before routing or any upstream.
@pytest.mark.parametrize(
    "head",
    [
        "X-Big: " + "a" * 5000 + "\n",
        "".join(f"X-H{i}: 1\n" for i in range(40)),
        "Cookie: " + "c=1; " * 1000 + "\n",
    ],
)
async def test_oversized_heads_refused(
    vendor: FakeVendor, start_proxy: StartProxy, head: str
) -> None:
    limits = Limits(max_header_size=4096, max_headers=32)
    proxy = await start_proxy(public_url=PUBLIC, limits=limits)
    response = await raw_request(
        proxy.port,
        f"POST /pa/api/event HTTP/1.1\nHost: www.example.com\n{head}"
        "Content-Length: 2\nConnection: close\n",
        b"{}",
    )
    assert response.status in (400, 431)
    assert vendor.received == []


async def test_long_request_line_refused(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, limits=Limits(max_header_size=4096))
    response = await raw_request(
        proxy.port,
        f"GET /mp/track/?data={'a' * 5000} HTTP/1.1\nHost: www.example.com\n"
        "Connection: close\n",
    )
    assert response.status in (400, 414, 431)
    assert vendor.received == []


def test_limits_from_environment() -> None:
    env = env_defaults(
        {
            "TAGPROXY_MAX_CONNECTIONS": "500",
            "TAGPROXY_CLIENT_TIMEOUT": "5",
            "TAGPROXY_BODY_TIMEOUT": "30",
            "TAGPROXY_MAX_HEADER_SIZE": "8192",
            "TAGPROXY_MAX_HEADERS": "64",
        }
    )
    limits = build_limits(
        max_header_size=int(str(env["max_header_size"])),
        max_headers=int(str(env["max_headers"])),
        client_timeout=float(str(env["client_timeout"])),
        body_timeout=float(str(env["body_timeout"])),
        max_connections=int(str(env["max_connections"])),
    )
    assert limits == Limits(8192, 64, 5.0, 30.0, 500)
    assert limits.handler_args()["keepalive_timeout"] == 5.0


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("max_header_size", 10),
        ("max_headers", 0),
        ("client_timeout", 0.0),
        ("body_timeout", -1.0),
        ("max_connections", 0),
    ],
)
def test_bad_limits_name_the_flag(flag: str, value: float) -> None:
    values: dict[str, float] = {
        "max_header_size": 16384,
        "max_headers": 100,
        "client_timeout": 20.0,
        "body_timeout": 60.0,
        "max_connections": 100,
    }
    values[flag] = value
    with pytest.raises(ConfigError, match="--" + flag.replace("_", "-")):
        build_limits(**values)  # type: ignore[arg-type]


async def _head_then_wait(
    port: int, head: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return first, reader, writer


async def test_expect_100_continue_invites_the_body_and_relays_it(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202))
    proxy = await start_proxy()
    body = b'{"n":"pageview"}'
    head = (
        "POST /pa/api/event HTTP/1.1\r\nHost: t.example\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    first, reader, writer = await _head_then_wait(proxy.port, head)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202")
    (received,) = vendor.to("plausible.io")
    assert received.body == body
    assert received.header("Expect") is None


# Refused on the head alone: no 100 Continue, so the body is never sent.
@pytest.mark.parametrize(
    ("length", "expect", "status"),
    [(100_000_000, "100-continue", b"413"), (2, "teapot", b"417")],
    ids=["over the limit", "unknown expectation"],
)
async def test_refused_before_the_body_is_invited(
    vendor: FakeVendor, start_proxy: StartProxy, length: int, expect: str, status: bytes
) -> None:
    proxy = await start_proxy()
    head = (
        "POST /pa/api/event HTTP/1.1\r\nHost: t.example\r\n"
        f"Content-Length: {length}\r\nExpect: {expect}\r\n\r\n"
    ).encode()
    first, _, writer = await _head_then_wait(proxy.port, head)
    writer.close()
    assert first.startswith(b"HTTP/1.1 " + status)
    assert vendor.to("plausible.io") == []
