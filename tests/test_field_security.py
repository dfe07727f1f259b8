"""Field cases F07, F10, F11, F12, F14 (404 part) and F20 from FIELD.md.

Conventions: site https://www.example.com, visitor 203.0.113.7, attacker
192.0.2.66, trusted proxies 127.0.0.1/32 and 10.0.0.0/8; the test client
connects from 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest

from .conftest import StartProxy
from .fakes import FakeVendor, Received, Reply, raw_request

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
