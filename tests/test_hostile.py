"""Hostile clients and broken vendors: a clear 4xx or a clean 502, never a 500.

Each case here was found by driving a running tagproxy with malformed
requests and a vendor that misbehaves on the wire; each asserts what the
client got and what the vendor received.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from .conftest import StartProxy
from .fakes import FakeVendor, Reply, raw_request
from .rawvendor import CLOSE, RESET, RawVendor, Step, read_all

PUBLIC = "https://www.example.com"
HOST_LINE = "Host: www.example.com\nConnection: close\n"
SCRIPT = b"var u='https://plausible.io/api/event';"

StartRaw = Callable[[list[Step]], Awaitable[RawVendor]]


@pytest.fixture
async def raw_vendor() -> AsyncIterator[StartRaw]:
    started: list[RawVendor] = []

    async def start(steps: list[Step]) -> RawVendor:
        fake = RawVendor(steps)
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.stop()


def _overrides(url: str) -> list[str]:
    return [
        f"https://plausible.io={url}",
        f"https://*.google-analytics.com={url}",
    ]


# The vendor gets the client's headers, not ones the HTTP client library adds.
@pytest.mark.parametrize(
    "request_line", ["POST /pa/api/event", "GET /mt/matomo.php?rec=1"]
)
async def test_no_content_type_is_invented(
    vendor: FakeVendor, start_proxy: StartProxy, request_line: str
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, f"{request_line} HTTP/1.1\n{HOST_LINE}Content-Length: 2\n", b"{}"
    )
    assert response.status == 204
    assert vendor.received[0].body == b"{}"
    assert vendor.received[0].all("Content-Type") == []


# Host headers a client may send when no public URL is configured: odd but
# valid forms are served, malformed ones are a 400, none is a 500.
@pytest.mark.parametrize(
    ("host", "status", "base"),
    [
        ("www.example.com:65536", 400, None),
        ("www.example.com:99999", 400, None),
        ("[::1]:8080", 200, b"http://[::1]:8080/pa/api/event"),
        ("[2001:db8::7]", 200, b"http://[2001:db8::7]/pa/api/event"),
        ("[1.2.3.4]", 400, None),
        ("[::1", 400, None),
    ],
)
async def test_host_header_forms(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    host: str,
    status: int,
    base: bytes | None,
) -> None:
    js = Reply(200, SCRIPT, [("Content-Type", "application/javascript")])
    vendor.reply("plausible.io", "/js/script.js", js)
    proxy = await start_proxy()
    response = await raw_request(
        proxy.port,
        f"GET /pa/js/script.js HTTP/1.1\nHost: {host}\nConnection: close\n",
    )
    assert response.status == status
    if base is not None:
        assert base in response.body
    else:
        assert vendor.received == []


# A script whose body breaks off (lying Content-Length, a reset) is an
# upstream failure: 502, not a 500, and nothing of it is cached.
@pytest.mark.parametrize(
    "steps",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nvar a=1;", CLOSE],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nvar a=1;", RESET],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nvar a\r\n", RESET],
    ],
)
async def test_script_cut_short_is_a_502(
    raw_vendor: StartRaw, start_proxy: StartProxy, steps: list[Step]
) -> None:
    fake = await raw_vendor(steps)
    proxy = await start_proxy(public_url=PUBLIC, overrides=_overrides(fake.url))
    response = await raw_request(
        proxy.port, "GET /pa/js/script.js HTTP/1.1\n" + HOST_LINE
    )
    assert response.status == 502
    assert len(fake.received) == 1
    assert fake.received[0].request_line == "GET /js/script.js HTTP/1.1"


# A relayed body that breaks off after the headers went out cannot become a
# 502 any more: the connection must be cut, never followed by a second
# response written into the first one's body.
@pytest.mark.parametrize(
    "steps",
    [
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", RESET],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000, RESET],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000, CLOSE],
    ],
)
async def test_relay_cut_mid_body_cuts_the_client(
    raw_vendor: StartRaw,
    start_proxy: StartProxy,
    caplog: pytest.LogCaptureFixture,
    steps: list[Step],
) -> None:
    fake = await raw_vendor(steps)
    proxy = await start_proxy(public_url=PUBLIC, overrides=_overrides(fake.url))
    # Keep-alive on purpose: tagproxy must close the connection itself.
    with caplog.at_level(logging.INFO):
        data = await read_all(
            proxy.port,
            b"GET /gt/ga/www/g/collect?v=2 HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        )
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.count(b"HTTP/1.") == 1
    assert b"502" not in data
    assert len(fake.received) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    (line,) = [r for r in caplog.records if r.name == "tagproxy.access"]
    assert "failed" in line.access["error"]  # type: ignore[attr-defined]


# OPTIONS is never in a rule's methods: a plain OPTIONS (no CORS preflight)
# is answered here like a preflight, and the vendor never sees it.
async def test_plain_options_is_not_relayed(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, "OPTIONS /pa/api/event HTTP/1.1\n" + HOST_LINE
    )
    assert response.status == 204
    assert response.header("Allow") == "OPTIONS, POST"
    assert vendor.received == []


# A status line outside 100-599 is not HTTP; browsers treat it as a network
# error, so the client gets a clean 502 instead.
@pytest.mark.parametrize("status", [b"600 Odd", b"999 Weird"])
async def test_invalid_upstream_status_is_a_502(
    raw_vendor: StartRaw, start_proxy: StartProxy, status: bytes
) -> None:
    fake = await raw_vendor(
        [b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok"]
    )
    proxy = await start_proxy(public_url=PUBLIC, overrides=_overrides(fake.url))
    response = await raw_request(
        proxy.port, "GET /gt/ga/www/g/collect?v=2 HTTP/1.1\n" + HOST_LINE
    )
    assert response.status == 502
    assert len(fake.received) == 1


# Script fills name the vendor's status in the access line, as relays do.
async def test_script_access_line_has_upstream_status(
    vendor: FakeVendor, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    js = Reply(200, SCRIPT, [("Content-Type", "application/javascript")])
    vendor.reply("plausible.io", "/js/script.js", js)
    proxy = await start_proxy(public_url=PUBLIC)
    with caplog.at_level(logging.INFO, logger="tagproxy.access"):
        response = await raw_request(
            proxy.port, "GET /pa/js/script.js HTTP/1.1\n" + HOST_LINE
        )
    assert response.status == 200
    (line,) = [r for r in caplog.records if r.name == "tagproxy.access"]
    assert line.access["upstream_status"] == 200  # type: ignore[attr-defined]


# Requests the HTTP parser refuses are a client's mistake (or a scanner):
# answered 400 without an ERROR traceback in the operator's log.
@pytest.mark.parametrize(
    "head",
    [
        "GET /pa/js/script.js HTTP/9.9\nHost: x\n",
        "GET /pa/js/script.js HTTP/1.1\nHost: x\nBad Header\n",
        "GET /pa/js/script.js HTTP/1.1\nHost: a\nHost: b\n",
        "POST /pa/api/event HTTP/1.1\nHost: x\nContent-Length: 1\n"
        "Transfer-Encoding: chunked\n",
    ],
)
async def test_malformed_requests_are_not_logged_as_errors(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    caplog: pytest.LogCaptureFixture,
    head: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    with caplog.at_level(logging.DEBUG):
        response = await raw_request(proxy.port, head + "Connection: close\n")
    assert response.status == 400
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert vendor.received == []


# What a client writes into Host or the path cannot forge fields of the
# plain access line (a parser reading `status=` must find ours).
@pytest.mark.parametrize(
    ("head", "logged"),
    [
        (
            "GET /pa/js/script.js HTTP/1.1\nHost: x status=200 vendor=google\n",
            'host="x status=200 vendor=google"',
        ),
        (
            'GET /pa/x"status=200 HTTP/1.1\nHost: www.example.com\n',
            '"GET /pa/x\\"status=200"',
        ),
    ],
)
async def test_access_line_fields_cannot_be_forged(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    caplog: pytest.LogCaptureFixture,
    head: str,
    logged: str,
) -> None:
    proxy = await start_proxy()
    with caplog.at_level(logging.INFO, logger="tagproxy.access"):
        response = await raw_request(proxy.port, head + "Connection: close\n")
    assert response.status in (400, 404)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tagproxy.access"]
    assert logged in line
    fields = shlex.split(line)
    assert [f for f in fields if f.startswith("status=")] == [
        f"status={response.status}"
    ]


# Deeply nested JSON is valid JSON but exhausts a recursive parser or
# walker: every route that reads JSON bodies refuses it with a 400 or passes
# it on untouched, never a 500.
@pytest.mark.parametrize(
    "body",
    [
        b'{"payload":' * 5000 + b"{}" + b"}" * 5000,
        b"[" * 900 + b"]" * 900,
        b'{"payload":{"x":' + b"[" * 900 + b"]" * 900 + b"}}",
    ],
)
async def test_deep_json_bodies_are_not_a_500(
    vendor: FakeVendor, start_proxy: StartProxy, body: bytes
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "POST /um/api/send HTTP/1.1\n" + HOST_LINE + "Content-Type: application/json\n"
        f"Content-Length: {len(body)}\n",
        body,
    )
    assert response.status in (204, 400)
    if response.status == 400:
        assert vendor.received == []


EMPTY_TEST_RULE = """
vendor = "emptytest"
mount = "/et"

[[hosts]]
host = "cdn.empty-test.example"

[[scripts]]
host = "cdn.empty-test.example"
paths = ["/tag.js"]
ttl = "50ms"
"""


# A 200 with no body is a vendor outage or a cut connection, never a new
# version of a tag: the last good script stays, even for rules with no
# [scripts.guard] of their own.
async def test_empty_script_never_replaces_a_good_one(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rule = tmp_path / "emptytest.toml"
    rule.write_text(EMPTY_TEST_RULE)
    js = [("Content-Type", "application/javascript")]
    vendor.reply("cdn.empty-test.example", "/tag.js", Reply(200, SCRIPT, js))
    proxy = await start_proxy(rules=[rule], rule_vars=[], public_url=PUBLIC)
    url = f"{proxy.url}/et/tag.js"
    async with proxy.client.get(url) as response:
        good = await response.read()
    assert good == SCRIPT

    vendor.reply("cdn.empty-test.example", "/tag.js", Reply(200, b"", js))
    await asyncio.sleep(0.1)  # the 50 ms TTL has passed
    async with proxy.client.get(url) as response:
        assert response.status == 200
        assert await response.read() == good
    assert len(vendor.received) == 2


# A vendor's answer speaks with the authority of the site's own origin (and,
# for some headers, of its whole registrable domain) once it is served
# first-party: headers that act on the site itself never pass.
@pytest.mark.parametrize(
    "header",
    [
        ("Clear-Site-Data", '"cookies", "storage"'),
        ("Service-Worker-Allowed", "/"),
        ("Reporting-Endpoints", 'default="https://collector.example/r"'),
    ],
)
async def test_vendor_headers_that_act_on_the_site_are_dropped(
    vendor: FakeVendor, start_proxy: StartProxy, header: tuple[str, str]
) -> None:
    vendor.reply(
        "www.google-analytics.com",
        "/g/collect",
        Reply(204, b"", [header, ("X-Kept", "1")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, "GET /gt/ga/www/g/collect?v=2 HTTP/1.1\n" + HOST_LINE
    )
    assert response.status == 204
    assert response.header("X-Kept") == "1"
    assert response.header(header[0]) is None
