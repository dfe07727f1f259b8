"""Field cases F07, F10, F11, F12, F14 (404 part) and F20 from FIELD.md.

Conventions: site https://www.example.com, visitor 203.0.113.7, attacker
192.0.2.66, trusted proxies 127.0.0.1/32 and 10.0.0.0/8; the test client
connects from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib

import pytest

from . import tally
from .conftest import StartProxy
from .fakes import FakeVendor, RawResponse, Received, Reply, raw_request
from .netguard import NetGuard

TRUSTED = ["127.0.0.1/32", "10.0.0.0/8"]
PUBLIC = "https://www.example.com"


def only(vendor: FakeVendor) -> Received:
    assert len(vendor.received) == 1, vendor.received
    return vendor.received[0]


async def test_f07_ip_in_json_body(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    body = (
        b'{"type":"event","payload":{"hostname":"www.example.com",'
        b'"ip":"192.0.2.66","url":"/","website":"abc","n":1.50}}'
    )
    response = await raw_request(
        proxy.port,
        "POST /um/api/send HTTP/1.1\nHost: www.example.com\n"
        "X-Forwarded-For: 203.0.113.7\nContent-Type: application/json\n"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )
    assert response.status == 204

    received = only(vendor)
    assert received.all("X-Forwarded-For") == ["203.0.113.7"]
    assert received.body == body.replace(b"192.0.2.66", b"203.0.113.7")
    assert received.all("Content-Length") == [str(len(received.body))]
    sent, got = json.loads(body), json.loads(received.body)
    assert got["payload"].pop("ip") == "203.0.113.7"
    sent["payload"].pop("ip")
    assert got == sent


APP_ORIGIN = "https://app.example.org"


async def test_f10_preflight_answered_locally(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, allowed_origins=[APP_ORIGIN])
    response = await raw_request(
        proxy.port,
        "OPTIONS /ph/e/ HTTP/1.1\nHost: www.example.com\n"
        f"Origin: {APP_ORIGIN}\nAccess-Control-Request-Method: POST\n"
        "Access-Control-Request-Headers: content-type\nConnection: close\n",
    )
    assert response.status == 204
    assert vendor.received == []
    assert response.all("Access-Control-Allow-Origin") == [APP_ORIGIN]
    methods = response.header("Access-Control-Allow-Methods") or ""
    assert "POST" in [m.strip() for m in methods.split(",")]
    allowed = response.header("Access-Control-Allow-Headers") or ""
    assert "content-type" in [n.strip().lower() for n in allowed.split(",")]
    assert "Origin" in [v.strip() for v in ",".join(response.all("Vary")).split(",")]


async def test_f10_one_allow_origin_even_if_upstream_sends_one(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply(
        "us.i.posthog.com",
        "/e/",
        Reply(
            200,
            b"{}",
            [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Origin", "https://us.posthog.com"),
                ("Vary", "Origin"),
            ],
        ),
    )
    proxy = await start_proxy(public_url=PUBLIC, allowed_origins=[APP_ORIGIN])
    body = b'{"event":"$pageview"}'
    response = await raw_request(
        proxy.port,
        f"POST /ph/e/ HTTP/1.1\nHost: www.example.com\nOrigin: {APP_ORIGIN}\n"
        "Content-Type: application/json\n"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )
    assert response.status == 200
    assert response.all("Access-Control-Allow-Origin") == [APP_ORIGIN]
    assert response.all("Access-Control-Allow-Credentials") == ["true"]
    vary = [v.strip() for v in ",".join(response.all("Vary")).split(",")]
    assert vary.count("Origin") == 1
    assert only(vendor).body == body


# F10: origins not allowed get no CORS grant, on preflight or on the call.
@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.org",
        "https://app.example.org.evil.test",
        "http://app.example.org",
        "null",
        "https://app.example.org:8443",
        "not a url",
        "http://[",
    ],
)
async def test_f10_other_origins_get_none(
    vendor: FakeVendor, start_proxy: StartProxy, origin: str
) -> None:
    vendor.reply(
        "us.i.posthog.com",
        "/e/",
        Reply(200, b"{}", [("Access-Control-Allow-Origin", "*")]),
    )
    proxy = await start_proxy(public_url=PUBLIC, allowed_origins=[APP_ORIGIN])
    preflight = await raw_request(
        proxy.port,
        f"OPTIONS /ph/e/ HTTP/1.1\nHost: www.example.com\nOrigin: {origin}\n"
        "Access-Control-Request-Method: POST\nConnection: close\n",
    )
    assert preflight.status == 204
    assert preflight.all("Access-Control-Allow-Origin") == []
    call = await raw_request(
        proxy.port,
        f"POST /ph/e/ HTTP/1.1\nHost: www.example.com\nOrigin: {origin}\n"
        "Content-Length: 2\nConnection: close\n",
        b"{}",
    )
    assert call.status == 200
    assert call.all("Access-Control-Allow-Origin") == []
    assert len(vendor.received) == 1  # the preflight never reached the vendor


# F14: a label outside the rule's pattern is no route at all.
@pytest.mark.parametrize(
    "label",
    [
        "evil.example.org",
        "evil",
        "region1.evil.example.org",
        "region1234",
        "127.0.0.1",
        "localhost",
        "www.google-analytics.com",
        "%77ww",
        "WWW%2eevil",
        "",
    ],
)
async def test_f14_label_outside_pattern_404(
    vendor: FakeVendor, start_proxy: StartProxy, label: str
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        f"GET /gt/ga/{label}/g/collect?v=2&tid=G-TEST HTTP/1.1\n"
        "Host: www.example.com\nConnection: close\n",
    )
    assert response.status == 404
    assert vendor.received == []


async def test_f14_label_inside_pattern_reaches_its_host(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "GET /gt/ga/region1/g/collect?v=2&tid=G-TEST HTTP/1.1\n"
        "Host: www.example.com\nConnection: close\n",
    )
    assert response.status == 204
    received = only(vendor)
    assert received.host == "region1.google-analytics.com"
    assert received.raw_path == "/g/collect?v=2&tid=G-TEST"


async def test_f20_privacy_signals_pass(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "GET /mt/matomo.php?idsite=1&rec=1 HTTP/1.1\nHost: www.example.com\n"
        "DNT: 1\nSec-GPC: 1\nConnection: close\n",
    )
    assert response.status == 204
    received = only(vendor)
    assert received.all("DNT") == ["1"]
    assert received.all("Sec-GPC") == ["1"]


# --- F11 and F12: the envelope tunnel ----------------------------------------

SENTRY = "o0.ingest.sentry.io"
DSN = "https://0123456789abcdef0123456789abcdef@o0.ingest.sentry.io/1"


def envelope(dsn: str, payload: bytes) -> bytes:
    header = json.dumps({"event_id": "9ec79c33ec9942ab8353589fcb2e04dc", "dsn": dsn})
    item = json.dumps({"type": "replay_recording", "length": len(payload)})
    return header.encode() + b"\n" + item.encode() + b"\n" + payload


def raw_deflate_2048() -> bytes:
    """2048 bytes of raw deflate data holding 00 FF C3 28 (invalid UTF-8)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = packer.compress(os.urandom(4096)) + packer.flush()
    data = data[:2044]
    return data[:1000] + b"\x00\xff\xc3\x28" + data[1000:]


async def post_tunnel(port: int, body: bytes) -> RawResponse:
    return await raw_request(
        port,
        "POST /se/tunnel HTTP/1.1\nHost: www.example.com\n"
        "Content-Type: text/plain;charset=UTF-8\n"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )


async def test_f11_binary_envelope_byte_exact(
    vendor: FakeVendor, start_proxy: StartProxy, net: NetGuard
) -> None:
    vendor.reply(SENTRY, "/api/1/envelope/", Reply(200, b'{"id":"x"}'))
    proxy = await start_proxy(public_url=PUBLIC)
    payload = raw_deflate_2048()
    assert len(payload) == 2048
    assert b"\x00\xff\xc3\x28" in payload
    body = envelope(DSN, payload)

    mark = net.mark()
    response = await post_tunnel(proxy.port, body)
    assert response.status == 200

    received = only(vendor)
    assert received.host == SENTRY
    assert received.raw_path == "/api/1/envelope/"
    assert len(received.body) == len(body)
    assert hashlib.sha256(received.body).digest() == hashlib.sha256(body).digest()
    assert received.header("Content-Type") == "text/plain;charset=UTF-8"
    assert net.foreign([proxy.port, vendor.port], mark) == []


# F12: DSNs naming anything but the tunnel's host and project.
@pytest.mark.parametrize(
    ("dsn", "status"),
    [
        ("https://k@attacker.example.org/1", 403),
        ("https://0123456789abcdef@attacker.example.org/1", 403),
        ("https://k@o0.ingest.sentry.io.attacker.example.org/1", 403),
        ("https://k@o0.ingest.sentry.io:8443/1", 403),
        ("http://k@o0.ingest.sentry.io/1", 403),
        ("https://k@o0.ingest.sentry.io/2", 403),
        ("https://k@o0.ingest.sentry.io/1/../2", 403),
        ("https://k@o0.ingest.sentry.io/api/1/store/", 403),
        ("https://k@127.0.0.1/1", 403),
        ("https://k@169.254.169.254/1", 403),
        ("https://o0.ingest.sentry.io/1", 400),
        ("not a dsn", 403),
    ],
)
async def test_f12_dsn_naming_another_destination(
    vendor: FakeVendor, start_proxy: StartProxy, net: NetGuard, dsn: str, status: int
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    mark = net.mark()
    response = await post_tunnel(proxy.port, envelope(dsn, b"{}"))
    tally.add("ssrf cases tried")
    assert response.status == status
    assert vendor.received == []
    assert net.foreign([proxy.port], mark) == []


async def test_f12_malformed_envelopes_refused(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    for body in (b"", b"\xff\xfe", b"[1]\n", b'{"dsn": 1}\n', b"{" * 70000):
        response = await post_tunnel(proxy.port, body)
        assert response.status == 400, body[:20]
    assert vendor.received == []


async def test_f12_redirect_to_metadata_not_followed(
    vendor: FakeVendor, start_proxy: StartProxy, net: NetGuard
) -> None:
    vendor.reply(
        SENTRY,
        "/api/1/envelope/",
        Reply(302, b"", [("Location", "http://169.254.169.254/latest/meta-data/")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    mark = net.mark()
    response = await post_tunnel(proxy.port, envelope(DSN, b"{}"))
    tally.add("ssrf cases tried")
    assert response.status == 502
    assert response.all("Location") == []
    assert len(vendor.received) == 1
    assert net.foreign([proxy.port, vendor.port], mark) == []
