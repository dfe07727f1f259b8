"""Field cases from ../shared/cases/FIELD.md, with the expected values given there.

Conventions: site https://www.example.com, cookie domain example.com, visitor
203.0.113.7, attacker 192.0.2.66, internal hop 10.0.0.9, trusted proxies
127.0.0.1/32 and 10.0.0.0/8; the test client connects from 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json

import brotli
import pytest

from .conftest import StartProxy
from .fakes import FakeVendor, Received, Reply, raw_request

TRUSTED = ["127.0.0.1/32", "10.0.0.0/8"]
PUBLIC = "https://www.example.com"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"

IP_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip")


def only(vendor: FakeVendor) -> Received:
    assert len(vendor.received) == 1, vendor.received
    return vendor.received[0]


def all_ip_values(received: Received) -> str:
    return " ".join(v for k, v in received.headers if k.lower() in IP_HEADERS)


async def test_f01_spoofed_forwarded_for(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202, b"ok"))
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    body = b'{"n":"pageview","u":"https://www.example.com/","d":"example.com"}'

    async with proxy.client.post(
        f"{proxy.url}/pa/api/event",
        data=body,
        headers={
            "X-Forwarded-For": "192.0.2.66, 203.0.113.7",
            "Content-Type": "text/plain",
        },
    ) as response:
        assert response.status == 202

    received = only(vendor)
    assert received.all("X-Forwarded-For") == ["203.0.113.7"]
    assert all("192.0.2.66" not in v for _, v in received.headers)
    assert received.body == body


async def test_f02_no_forwarding_headers(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)  # no trusted proxies
    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as response:
        assert response.status == 204

    assert only(vendor).all("X-Forwarded-For") == ["127.0.0.1"]


async def test_f03_internal_hop_in_chain(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    async with proxy.client.post(
        f"{proxy.url}/ph/e/?ip=1&ver=1.200.0",
        data=b"{}",
        headers={"X-Real-IP": "10.0.0.9", "X-Forwarded-For": "203.0.113.7, 10.0.0.9"},
    ) as response:
        assert response.status == 204

    received = only(vendor)
    assert received.host == "us.i.posthog.com"
    assert received.raw_path == "/e/?ip=1&ver=1.200.0"
    assert received.all("X-Forwarded-For") == ["203.0.113.7"]
    assert received.all("X-Real-IP") in ([], ["203.0.113.7"])
    for address in ("10.0.0.9", "127.0.0.1"):
        assert address not in all_ip_values(received)


# F04: the User-Agent as received, and none when none was sent.
@pytest.mark.parametrize("user_agent", [FIREFOX, None])
async def test_f04_user_agent_exact(
    vendor: FakeVendor, start_proxy: StartProxy, user_agent: str | None
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    ua_line = f"User-Agent: {user_agent}\n" if user_agent else ""
    response = await raw_request(
        proxy.port,
        "POST /um/api/send HTTP/1.1\nHost: www.example.com\n"
        f"{ua_line}Content-Type: application/json\nContent-Length: 2\n"
        "Connection: close\n",
        b"{}",
    )
    assert response.status == 204

    received = only(vendor)
    assert received.host == "cloud.umami.is"
    assert received.all("User-Agent") == ([user_agent] if user_agent else [])


async def test_f05_parameters_forwarded_exactly(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    body = b"data=eyJldmVudCI6InRlc3QifQ%3D%3D"
    response = await raw_request(
        proxy.port,
        "POST /mp/track/?ip=1&_=1700000000000&ver=2.55.0 HTTP/1.1\n"
        "Host: www.example.com\nContent-Type: application/x-www-form-urlencoded\n"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )
    assert response.status == 204

    received = only(vendor)
    assert received.raw_path == "/track/?ip=1&_=1700000000000&ver=2.55.0"
    assert received.body == body
    assert received.header("Content-Type") == "application/x-www-form-urlencoded"


# F05: repeated keys, "+", "%2F" and order survive.
@pytest.mark.parametrize(
    "query",
    [
        "a=1&a=2&b=3",
        "q=a+b&r=%2Fpath%2F&s=%20",
        "z=1&y=2&x=3&empty=&flag",
        "dl=https%3A%2F%2Fwww.example.com%2F%3Fx%3D1&dt=T%C3%ADtulo",
    ],
)
async def test_f05_query_survives(
    vendor: FakeVendor, start_proxy: StartProxy, query: str
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        f"GET /mp/track/?{query} HTTP/1.1\nHost: www.example.com\nConnection: close\n",
    )
    assert response.status == 204
    assert only(vendor).raw_path == f"/track/?{query}"


async def test_f06_mount_stripped(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    async with proxy.client.post(f"{proxy.url}/mp/track/?ip=1", data=b"x") as response:
        assert response.status == 204
    assert only(vendor).raw_path == "/track/?ip=1"


# F06: traversal and look-alike mounts get 404 with nothing sent upstream.
@pytest.mark.parametrize(
    "path",
    [
        "/mp/../admin",
        "/mp/%2e%2e/admin",
        "/mp/%2E%2E/admin",
        "/mpx/track",
        "/mp/./track/",
        "/mp/track%2f..%2fadmin",
        "/mp/..%5cadmin",
    ],
)
async def test_f06_traversal_refused(
    vendor: FakeVendor, start_proxy: StartProxy, path: str
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port, f"GET {path} HTTP/1.1\nHost: www.example.com\nConnection: close\n"
    )
    assert response.status == 404
    assert vendor.received == []


async def test_f08_site_cookies_never_leak(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    cookie = (
        "wordpress_logged_in_abc=SECRET; PHPSESSID=s1; "
        "_pk_id.1.1fff=abc.123; _pk_ses.1.1fff=1"
    )
    async with proxy.client.get(
        f"{proxy.url}/mt/matomo.php?idsite=1&rec=1", headers={"Cookie": cookie}
    ) as response:
        assert response.status == 204

    received = only(vendor)
    assert received.all("Cookie") == ["_pk_id.1.1fff=abc.123; _pk_ses.1.1fff=1"]


async def test_f08_cookieless_vendor_gets_no_cookie(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    cookie = "; ".join(f"site_cookie_{i}={'v' * 90}" for i in range(80))
    assert len(cookie) > 8000
    async with proxy.client.post(
        f"{proxy.url}/pa/api/event", data=b"{}", headers={"Cookie": cookie}
    ) as response:
        assert response.status == 204
    assert only(vendor).all("Cookie") == []


# F09: each Set-Cookie stays its own header, Domain scoped to the site.
@pytest.mark.parametrize(
    ("cookie_domain", "domain_attr"),
    [("example.com", " Domain=example.com"), (None, "")],
)
async def test_f09_set_cookie_rewritten_never_folded(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    cookie_domain: str | None,
    domain_attr: str,
) -> None:
    vendor.reply(
        "matomo.example.net",
        "/matomo.php",
        Reply(
            200,
            b"",
            [
                (
                    "Set-Cookie",
                    "_pk_id.1.1fff=abc; Domain=sgtm.internal.example.net; "
                    "Path=/; Max-Age=33696000; Secure; SameSite=Lax",
                ),
                (
                    "Set-Cookie",
                    "_pk_ses.1.1fff=1; Domain=matomo.example.net; Path=/; HttpOnly",
                ),
            ],
        ),
    )
    proxy = await start_proxy(public_url=PUBLIC, cookie_domain=cookie_domain)
    response = await raw_request(
        proxy.port,
        "GET /mt/matomo.php?idsite=1&rec=1 HTTP/1.1\nHost: www.example.com\n"
        "Connection: close\n",
    )
    sep = ";" if domain_attr else ""
    assert response.all("Set-Cookie") == [
        f"_pk_id.1.1fff=abc{sep}{domain_attr}; Path=/; Max-Age=33696000; Secure; "
        "SameSite=Lax",
        f"_pk_ses.1.1fff=1{sep}{domain_attr}; Path=/; HttpOnly",
    ]


SCRIPT_5000 = (b"/* fake vendor library */ var x = 'padding';\n" * 120)[:5000]


# F13: an upstream gzip or br body reaches the client consistently encoded.
@pytest.mark.parametrize("encoding", ["gzip", "br"])
@pytest.mark.parametrize("accept", ["gzip", "br", "gzip, br", ""])
async def test_f13_compressed_upstream(
    vendor: FakeVendor, start_proxy: StartProxy, encoding: str, accept: str
) -> None:
    if encoding == "gzip":
        packed = gzip.compress(SCRIPT_5000, mtime=0)
    else:
        packed = brotli.compress(SCRIPT_5000)
    # A rule without the runtime shim, so the served body is the script alone.
    vendor.reply(
        "cloud.umami.is",
        "/script.js",
        Reply(
            200,
            packed,
            [
                ("Content-Encoding", encoding),
                ("Content-Type", "application/javascript"),
            ],
        ),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    accept_line = f"Accept-Encoding: {accept}\n" if accept else ""
    response = await raw_request(
        proxy.port,
        f"GET /um/script.js HTTP/1.1\nHost: www.example.com\n{accept_line}"
        "Connection: close\n",
    )
    assert response.status == 200
    served_encoding = response.header("Content-Encoding")
    assert int(response.header("Content-Length") or -1) == len(response.body)
    if served_encoding is None:
        assert response.body == SCRIPT_5000
    else:
        assert served_encoding in accept
        decode = gzip.decompress if served_encoding == "gzip" else brotli.decompress
        assert decode(response.body) == SCRIPT_5000
    if not accept:
        assert served_encoding is None


# F13: a relayed (not rewritten) compressed body passes as it came.
async def test_f13_relay_passes_encoded_bytes(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    packed = gzip.compress(SCRIPT_5000, mtime=0)
    vendor.reply(
        "matomo.example.net",
        "/matomo.php",
        Reply(200, packed, [("Content-Encoding", "gzip")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "GET /mt/matomo.php HTTP/1.1\nHost: www.example.com\n"
        "Accept-Encoding: gzip\nConnection: close\n",
    )
    assert response.header("Content-Encoding") == "gzip"
    assert response.header("Content-Length") == str(len(packed))
    assert response.body == packed


async def test_f15_settings_json_points_first_party(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    settings = (
        b'{"integrations":{"Segment.io":{"apiHost":"api.segment.io/v1"}},'
        b'"metrics":{"host":"api.segment.io/v1"}}'
    )
    vendor.reply(
        "cdn.segment.com",
        "/v1/projects/WRITEKEY/settings",
        Reply(200, settings, [("Content-Type", "application/json")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    response = await raw_request(
        proxy.port,
        "GET /sg/v1/projects/WRITEKEY/settings HTTP/1.1\nHost: www.example.com\n"
        "Connection: close\n",
    )
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert int(response.header("Content-Length") or -1) == len(response.body)
    data = json.loads(response.body)
    assert data["integrations"]["Segment.io"]["apiHost"] == "www.example.com/sg/api/v1"
    assert data["metrics"]["host"] == "www.example.com/sg/api/v1"


async def test_f16_endpoint_from_own_src(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    script = (
        b"(function(){var s=document.currentScript;"
        b'var api=s.getAttribute("data-api")||new URL(s.src).origin+"/api/event";'
        b'navigator.sendBeacon(api,JSON.stringify({n:"pageview"}));})();'
    )
    vendor.reply(
        "plausible.io",
        "/js/script.js",
        Reply(200, script, [("Content-Type", "application/javascript")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)
    async with proxy.client.get(f"{proxy.url}/pa/js/script.js") as response:
        served = await response.read()
    assert b'origin+"/pa/api/event"' in served

    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as response:
        assert response.status == 204
    assert vendor.received[-1].raw_path == "/api/event"


async def test_f17_assets_and_api_hosts(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply(
        "us-assets.i.posthog.com",
        "/array/phc_TEST123/config.js",
        Reply(
            200,
            b"window.cfg={a:1};",
            [
                ("Content-Type", "application/javascript"),
                ("Cache-Control", "public, max-age=0"),
                ("Vary", "Accept-Encoding"),
            ],
        ),
    )
    vendor.reply(
        "us-assets.i.posthog.com",
        "/static/array.js",
        Reply(200, b"var lib=1;", [("Content-Type", "application/javascript")]),
    )
    proxy = await start_proxy(public_url=PUBLIC)

    async with proxy.client.get(f"{proxy.url}/ph/array/phc_TEST123/config.js") as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=0"
        assert r.headers["Vary"] == "Accept-Encoding"
    assert vendor.received[-1].host == "us-assets.i.posthog.com"

    async with proxy.client.get(f"{proxy.url}/ph/static/array.js") as r:
        assert r.headers["Cache-Control"] == "no-cache"

    # Our own cache follows the rule's TTL (5 minutes), not max-age=0.
    fetched = len(vendor.received)
    async with proxy.client.get(f"{proxy.url}/ph/array/phc_TEST123/config.js") as r:
        assert r.status == 200
    assert len(vendor.received) == fetched

    async with proxy.client.post(f"{proxy.url}/ph/e/", data=b"{}") as r:
        assert r.status == 204
    assert vendor.received[-1].host == "us.i.posthog.com"
