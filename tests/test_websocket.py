"""WebSocket relay routes against a fake vendor endpoint that records every
message byte-exact, the upgrade request, and the close code it got."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import REGISTRY
from yarl import URL

from proxy.rules import RuleError, load_rule

from .conftest import Running, StartProxy
from .fakes import FakeVendor, Message, RawResponse, SocketEndpoint, raw_request
from .netguard import NetGuard

PUBLIC = "https://www.example.com"
ORIGIN = "https://www.example.com"
HOST = "ws.echo.example"
VISITOR = "203.0.113.7"
RULE = """
vendor = "wsecho"
mount = "/we"

[[hosts]]
host = "ws.echo.example"
path = ""

[[hosts]]
host = "api.echo.example"
path = "/api"

[[relays]]
host = "ws.echo.example"
paths = ["/socket"]
websocket = true
max_message = "4KiB"
max_connections = 2
tag_id = { query = "site_id" }

# The same endpoint with a short silence limit, for the idle test only.
[[relays]]
host = "ws.echo.example"
paths = ["/quiet"]
websocket = true
idle_timeout = "300ms"

[[relays]]
host = "api.echo.example"
paths = ["/hit"]

[request]
cookies = ["_echo_*"]
client_ip = [{ header = "X-Forwarded-For" }]

[privacy]
purpose = "analytics"
gpc = "drop"
"""
# Every byte value, and UTF-8 beyond ASCII: both must arrive unchanged.
BINARY = bytes(range(256)) * 3
TEXT = "h\u00e9llo \u2603 \U0001f600".encode()


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "wsecho.toml"
    path.write_text(RULE)
    return path


@pytest.fixture
async def proxy(start_proxy: StartProxy, rule_file: Path) -> Running:
    return await start_proxy(
        rules=[rule_file],
        public_url=PUBLIC,
        trusted_proxies=["127.0.0.1/32"],
        rule_vars=(),
    )


@pytest.fixture
def endpoint(vendor: FakeVendor) -> SocketEndpoint:
    socket = SocketEndpoint()
    vendor.reply(HOST, "/socket", socket)
    vendor.reply(HOST, "/quiet", socket)
    return socket


def ws_url(proxy: Running, path_query: str) -> URL:
    # encoded=True: the client sends the query exactly as written here.
    return URL(f"ws://127.0.0.1:{proxy.port}{path_query}", encoded=True)


Socket = aiohttp.ClientWebSocketResponse[Literal[False]]


async def connect(
    proxy: Running,
    path_query: str = "/we/socket",
    headers: dict[str, str] | None = None,
    protocols: tuple[str, ...] = (),
) -> Socket:
    """A visitor's socket: from the site's origin, with site and vendor cookies."""
    sent = {
        "X-Forwarded-For": VISITOR,
        "User-Agent": "Mozilla/5.0 test",
        "Cookie": "site_session=SECRET; _echo_id=v1",
        **(headers or {}),
    }
    return await proxy.client.ws_connect(
        ws_url(proxy, path_query),
        origin=ORIGIN,
        headers=sent,
        protocols=protocols,
        decode_text=False,
    )


async def receive(socket: Socket) -> Message:
    message = await socket.receive(timeout=10)
    return message.type, message.data


# While draining, answers say `Connection: close`, but a WebSocket handshake
# must say `Connection: Upgrade`: one accepted then is a valid socket (closed
# with 1001 when the runner shuts down), never a broken handshake after the
# vendor's socket was opened for nothing.
async def test_a_socket_opened_while_draining_is_a_valid_handshake(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    proxy.proxy.draining.set()
    socket = await connect(proxy, "/we/socket?site_id=7")
    await socket.send_bytes(b"hi")
    assert await receive(socket) == (WSMsgType.BINARY, b"hi")
    await socket.close()
    record = await endpoint.socket()
    await record.closed.wait()
    assert record.messages == [(WSMsgType.BINARY, b"hi")]


# --- messages ------------------------------------------------------------------


async def test_messages_pass_both_ways_byte_exact(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    socket = await connect(proxy, "/we/socket?site_id=7&v=a%2Fb+c")
    await socket.send_frame(TEXT, WSMsgType.TEXT)
    await socket.send_bytes(BINARY)
    await socket.send_bytes(b"")
    assert await receive(socket) == (WSMsgType.TEXT, TEXT)
    assert await receive(socket) == (WSMsgType.BINARY, BINARY)
    assert await receive(socket) == (WSMsgType.BINARY, b"")
    await socket.close()

    record = await endpoint.socket()
    await record.closed.wait()
    assert record.messages == [
        (WSMsgType.TEXT, TEXT),
        (WSMsgType.BINARY, BINARY),
        (WSMsgType.BINARY, b""),
    ]
    upgrade = record.upgrade
    assert upgrade.host == HOST
    assert upgrade.raw_path == "/socket?site_id=7&v=a%2Fb+c"
    assert upgrade.all("X-Forwarded-For") == [VISITOR]
    assert upgrade.all("User-Agent") == ["Mozilla/5.0 test"]
    assert upgrade.all("Cookie") == ["_echo_id=v1"]
    assert upgrade.all("Origin") == [ORIGIN]
    assert record.close_code == WSCloseCode.OK


async def test_vendor_speaks_first_and_chooses_the_subprotocol(
    proxy: Running, vendor: FakeVendor
) -> None:
    endpoint = SocketEndpoint(
        greeting=[(WSMsgType.TEXT, b'{"hello":1}'), (WSMsgType.BINARY, b"\x00\xff")],
        protocols=("v2.hj",),
    )
    vendor.reply(HOST, "/socket", endpoint)
    socket = await connect(proxy, protocols=("v1.hj", "v2.hj"))
    assert socket.protocol == "v2.hj"
    assert await receive(socket) == (WSMsgType.TEXT, b'{"hello":1}')
    assert await receive(socket) == (WSMsgType.BINARY, b"\x00\xff")
    await socket.close()

    upgrade = (await endpoint.socket()).upgrade
    assert upgrade.all("Sec-WebSocket-Protocol") == ["v1.hj,v2.hj"]
    # The vendor hop made its own key; the visitor's never travels.
    assert len(upgrade.all("Sec-WebSocket-Key")) == 1


# --- closing -------------------------------------------------------------------


async def test_visitor_close_code_and_reason_reach_the_vendor(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    socket = await connect(proxy)
    await socket.send_str("x")
    await receive(socket)
    await socket.close(code=4001, message=b"page hidden")
    record = await endpoint.socket()
    await record.closed.wait()
    assert (record.close_code, record.close_reason) == (4001, "page hidden")
    assert socket.close_code == 4001


async def test_vendor_close_code_and_reason_reach_the_visitor(
    proxy: Running, vendor: FakeVendor
) -> None:
    vendor.reply(HOST, "/socket", SocketEndpoint(answer=lambda m: (4002, "done")))
    socket = await connect(proxy)
    await socket.send_str("bye please")
    message = await socket.receive(timeout=10)
    assert message.type is WSMsgType.CLOSE
    assert (message.data, message.extra) == (4002, "done")


async def test_visitor_dropping_the_connection_closes_the_vendor_with_1001(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    head = await upgrade_head("/we/socket", f"Origin: {ORIGIN}\n")
    answer = await raw_request_head(proxy.port, head)  # then cut, no close frame
    assert answer.status == 101
    record = await endpoint.socket()
    await record.closed.wait()
    assert record.close_code == WSCloseCode.GOING_AWAY


async def test_vendor_dropping_the_connection_closes_the_visitor_with_1014(
    proxy: Running, vendor: FakeVendor
) -> None:
    async def drop(request: web.Request, received: object) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.receive()
        assert request.transport is not None
        request.transport.close()  # no close frame
        return socket

    vendor.reply(HOST, "/socket", drop)
    socket = await connect(proxy)
    await socket.send_str("anyone there?")
    message = await socket.receive(timeout=10)
    assert (message.type, message.data) == (WSMsgType.CLOSE, WSCloseCode.BAD_GATEWAY)


async def test_message_over_the_limit_closes_with_1009(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    socket = await connect(proxy)
    await socket.send_bytes(b"a" * 4096)  # exactly the limit passes
    assert await receive(socket) == (WSMsgType.BINARY, b"a" * 4096)
    await socket.send_bytes(b"a" * 4097)
    message = await socket.receive(timeout=10)
    assert message.type is WSMsgType.CLOSE
    assert message.data == WSCloseCode.MESSAGE_TOO_BIG

    record = await endpoint.socket()
    await record.closed.wait()
    assert [len(data) for _, data in record.messages] == [4096]
    assert record.close_code == WSCloseCode.GOING_AWAY


async def test_vendor_message_over_the_limit_closes_the_visitor_with_1014(
    proxy: Running, vendor: FakeVendor
) -> None:
    endpoint = SocketEndpoint(answer=lambda m: [(WSMsgType.BINARY, b"b" * 5000)])
    vendor.reply(HOST, "/socket", endpoint)
    socket = await connect(proxy)
    await socket.send_str("send me too much")
    message = await socket.receive(timeout=10)
    assert message.type is WSMsgType.CLOSE
    assert message.data == WSCloseCode.BAD_GATEWAY
    record = await endpoint.socket()
    await record.closed.wait()
    assert record.close_code == WSCloseCode.MESSAGE_TOO_BIG


async def test_silence_both_ways_closes_both_with_1001(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    socket = await connect(proxy, "/we/quiet")
    await socket.send_str("one")
    assert await receive(socket) == (WSMsgType.TEXT, b"one")
    message = await socket.receive(timeout=10)
    assert message.type is WSMsgType.CLOSE
    assert (message.data, message.extra) == (WSCloseCode.GOING_AWAY, "idle timeout")
    record = await endpoint.socket()
    await record.closed.wait()
    assert record.close_code == WSCloseCode.GOING_AWAY


async def test_shutdown_closes_both_sides_with_1001(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    socket = await connect(proxy)
    await socket.send_str("up")
    await receive(socket)
    assert proxy.proxy.websockets.open_connections == 1
    await proxy.proxy.websockets.close_all()
    message = await socket.receive(timeout=10)
    assert (message.type, message.data) == (WSMsgType.CLOSE, WSCloseCode.GOING_AWAY)
    record = await endpoint.socket()
    await record.closed.wait()
    assert record.close_code == WSCloseCode.GOING_AWAY


# --- the access log ------------------------------------------------------------


async def test_one_access_line_and_metrics_per_connection_at_close(
    proxy: Running, endpoint: SocketEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tagproxy.access")
    closed = {"vendor": "wsecho", "closed_by": "visitor"}
    inward = {"vendor": "wsecho", "direction": "in"}
    before = (
        REGISTRY.get_sample_value("tagproxy_websockets_total", closed) or 0.0,
        REGISTRY.get_sample_value("tagproxy_websocket_bytes_total", inward) or 0.0,
    )
    socket = await connect(proxy, "/we/socket?token=PRIVATE")
    await socket.send_bytes(b"12345")
    await socket.send_str("abc")
    await receive(socket)
    await receive(socket)
    assert not [r for r in caplog.records if r.name == "tagproxy.access"]
    await socket.close(code=4003)
    await (await endpoint.socket()).closed.wait()

    lines = [r for r in caplog.records if r.name == "tagproxy.access"]
    assert len(lines) == 1
    fields = lines[0].access  # type: ignore[attr-defined]
    assert fields["status"] == 101
    assert fields["vendor"] == "wsecho"
    assert fields["route"] == "websocket:ws.echo.example/socket"
    assert fields["upstream_status"] == 101
    assert (fields["messages_in"], fields["bytes_in"]) == (2, 8)
    assert (fields["messages_out"], fields["bytes_out"]) == (2, 8)
    assert (fields["closed_by"], fields["close_code"]) == ("visitor", 4003)
    assert isinstance(fields["ms"], float)
    assert "PRIVATE" not in lines[0].getMessage()
    after = (
        REGISTRY.get_sample_value("tagproxy_websockets_total", closed),
        REGISTRY.get_sample_value("tagproxy_websocket_bytes_total", inward),
    )
    assert after == (before[0] + 1, before[1] + 8)


# --- refusals ------------------------------------------------------------------


async def upgrade_head(path: str, extra: str = "") -> str:
    return (
        f"GET {path} HTTP/1.1\nHost: www.example.com\nConnection: Upgrade\n"
        "Upgrade: websocket\nSec-WebSocket-Version: 13\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n{extra}"
    )


# Origins a socket is refused from: another site, a look-alike, none at all.
@pytest.mark.parametrize(
    "origin_line",
    [
        "Origin: https://evil.example\n",
        "Origin: https://www.example.com.evil.example\n",
        "Origin: http://www.example.com\n",
        "Origin: null\n",
        "",
    ],
)
async def test_upgrade_from_another_origin_is_refused(
    proxy: Running, endpoint: SocketEndpoint, vendor: FakeVendor, origin_line: str
) -> None:
    head = await upgrade_head("/we/socket", origin_line)
    response = await raw_request(proxy.port, head + "Connection: close\n")
    assert response.status == 403
    assert vendor.received == []


async def test_plain_requests_get_426_or_405(
    proxy: Running, endpoint: SocketEndpoint, vendor: FakeVendor
) -> None:
    async with proxy.client.get(f"{proxy.url}/we/socket") as response:
        assert response.status == 426
        assert response.headers["Upgrade"] == "websocket"
    async with proxy.client.post(f"{proxy.url}/we/socket", data=b"x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
    assert vendor.received == []


async def test_privacy_refusal_opens_nothing_upstream(
    proxy: Running, endpoint: SocketEndpoint, vendor: FakeVendor
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy, headers={"Sec-GPC": "1"})
    assert refused.value.status == 403
    assert vendor.received == []


async def test_upgrade_for_another_sites_tag_is_refused(
    start_proxy: StartProxy, rule_file: Path, endpoint: SocketEndpoint
) -> None:
    proxy = await start_proxy(
        rules=[rule_file], public_url=PUBLIC, rule_vars=(), tag_ids=["wsecho=7"]
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy, "/we/socket?site_id=8")
    assert refused.value.status == 403
    assert endpoint.sockets == []
    socket = await connect(proxy, "/we/socket?site_id=7")
    await socket.close()


async def test_connection_cap_answers_503(
    proxy: Running, endpoint: SocketEndpoint
) -> None:
    first, second = await connect(proxy), await connect(proxy)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy)
    assert refused.value.status == 503
    await first.close()
    await (await endpoint.socket(0)).closed.wait()
    third = await connect(proxy)  # a slot is free again
    for socket in (second, third):
        await socket.close()


async def test_vendor_refusing_the_upgrade_is_a_502(
    proxy: Running, vendor: FakeVendor
) -> None:
    async def refuse(request: web.Request, received: object) -> web.Response:
        return web.Response(status=403, text="bad site id")

    vendor.reply(HOST, "/socket", refuse)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy)
    assert refused.value.status == 502
    assert len(vendor.received) == 1


# --- only the rule's host ------------------------------------------------------


async def test_vendor_redirect_on_upgrade_is_refused(
    proxy: Running, vendor: FakeVendor, net: NetGuard
) -> None:
    async def redirect(request: web.Request, received: object) -> web.Response:
        location = "ws://169.254.169.254/latest/meta-data/"
        return web.Response(status=302, headers={"Location": location})

    vendor.reply(HOST, "/socket", redirect)
    mark = net.mark()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy)
    assert refused.value.status == 502
    assert [r.path for r in vendor.received] == ["/socket"]
    assert net.foreign([vendor.port, proxy.port], mark) == []


# The visitor names a path and a query, never a host: none of these reaches
# anything but the rule's own host (or nothing at all).
@pytest.mark.parametrize(
    ("request_line", "extra", "status"),
    [
        ("GET /we/%2F%2Fevil.example/socket HTTP/1.1", "", 404),
        ("GET /we/socket/../../evil HTTP/1.1", "", 404),
        # A plain relay route relays a plain GET: Upgrade is hop-by-hop.
        ("GET /we/api/hit HTTP/1.1", "", 204),
        ("GET http://evil.example/we/socket HTTP/1.1", "", 404),
        ("GET /we/socket HTTP/1.1", "X-Forwarded-Host: evil.example\n", 101),
    ],
)
async def test_upgrade_reaches_only_the_rule_host(
    proxy: Running,
    endpoint: SocketEndpoint,
    vendor: FakeVendor,
    net: NetGuard,
    request_line: str,
    extra: str,
    status: int,
) -> None:
    mark = net.mark()
    head = (
        f"{request_line}\nHost: evil.example\nConnection: Upgrade\n"
        "Upgrade: websocket\nSec-WebSocket-Version: 13\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nOrigin: {ORIGIN}\n{extra}"
    )
    response: RawResponse = await raw_request_head(proxy.port, head)
    assert response.status == status
    assert {r.host for r in vendor.received} <= {HOST, "api.echo.example"}
    assert all(r.header("Upgrade") is None for r in vendor.to("api.echo.example"))
    assert net.foreign([vendor.port, proxy.port], mark) == []


async def raw_request_head(port: int, head: str) -> RawResponse:
    """Send an upgrade by hand and read only the answer's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        status = int((await reader.readline()).split()[1])
        headers = []
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers.append((name.strip(), value.strip()))
        return RawResponse(status, headers, b"")
    finally:
        writer.close()


async def test_no_override_means_no_connection(
    start_proxy: StartProxy, rule_file: Path, vendor: FakeVendor, net: NetGuard
) -> None:
    # Without an override the vendor host is looked up in DNS, which the
    # test net refuses: the upgrade fails with 502 and nothing is contacted.
    proxy = await start_proxy(
        rules=[rule_file],
        public_url=PUBLIC,
        rule_vars=(),
        overrides=["https://api.echo.example=http://127.0.0.1:9"],
    )
    mark = net.mark()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(proxy)
    assert refused.value.status == 502
    assert net.foreign([proxy.port], mark) == []


# --- rule validation -----------------------------------------------------------


# Websocket keys that do not fit together fail at load, naming key and reason.
@pytest.mark.parametrize(
    ("relay", "key", "reason"),
    [
        ('websocket = true\nmethods = ["POST"]', "methods", 'takes ["GET"]'),
        ('websocket = true\nmax_body = "1MiB"', "max_body", "max_message"),
        ('max_message = "1MiB"', "max_message", "only with websocket = true"),
        ('idle_timeout = "1m"', "idle_timeout", "only with websocket = true"),
        ("websocket = true\nmax_connections = 0", "max_connections", "more than"),
        ('websocket = true\nidle_timeout = "0s"', "idle_timeout", "more than"),
        ('websocket = "yes"', "websocket", "boolean"),
    ],
)
def test_websocket_rule_errors(
    tmp_path: Path, relay: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'vendor = "bad"\nmount = "/bd"\n[[hosts]]\nhost = "ws.bad.example"\n'
        f'[[relays]]\nhost = "ws.bad.example"\npaths = ["/ws"]\n{relay}\n'
    )
    with pytest.raises(RuleError) as error:
        load_rule(path)
    assert error.value.key == f"relays[0].{key}"
    assert reason in error.value.reason
