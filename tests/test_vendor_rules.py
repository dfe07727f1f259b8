"""Bundled vendor rules, relay by relay: each beacon reaches the vendor's host
and path byte-exact, with the visitor's address and User-Agent, and none of
the site's cookies (Matomo's own _pk_* cookies excepted)."""

from __future__ import annotations

import gzip
import json

import pytest

from .conftest import StartProxy
from .fakes import FakeVendor, Reply, raw_request

PUBLIC = "https://www.shop.example"
TRUSTED = ["127.0.0.1/32"]
VISITOR = "203.0.113.7"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
COOKIES = (
    "site_session=SECRET; _clck=u|2|f; _clsk=s|1|1|1|k.clarity.ms/collect; "
    "_uetvid=v1; li_fat_id=f1; _pin_unauth=p1; _scid=s1; _rdt_uuid=r1; "
    "_twclid=t1; mp_tok_mixpanel=%7B%7D; AMP_0123456789=x; "
    "_pk_id.1.a1b2=abc.1; _pk_ses.1.a1b2=1; mtm_consent=1"
)
GZIP = gzip.compress(b'{"e":[["page","https://www.shop.example/"]]}', mtime=0)

# (method, first-party target, content type, body, upstream host, raw path)
BEACONS = [
    # Clarity: gzip upload to a one-letter host, and the sync pixel.
    (
        "POST",
        "/cl/u/k/collect",
        "application/x-clarity-gzip",
        GZIP,
        "k.clarity.ms",
        "/collect",
    ),
    (
        "GET",
        "/cl/u/c/c.gif?ctsa=mr&CtsSyncId=u",
        None,
        b"",
        "c.clarity.ms",
        "/c.gif?ctsa=mr&CtsSyncId=u",
    ),
    # Bing UET: the image pixel.
    (
        "GET",
        "/bi/action/0?ti=5566778&Ver=2&evt=pageLoad&p=https%3A%2F%2Fwww.shop.example%2F",
        None,
        b"",
        "bat.bing.com",
        "/action/0?ti=5566778&Ver=2&evt=pageLoad&p=https%3A%2F%2Fwww.shop.example%2F",
    ),
    # LinkedIn: pixel and base64-of-gzip page data.
    (
        "GET",
        "/li/px/collect?v=2&fmt=gif&pid=987654",
        None,
        b"",
        "px.ads.linkedin.com",
        "/collect?v=2&fmt=gif&pid=987654",
    ),
    (
        "POST",
        "/li/px/wa/?medium=fetch&fmt=g",
        "text/plain;charset=UTF-8",
        b"H4sIAAAAAAAAA6tWKs7PTVWyUkrOzy1IzEvOTM7PTS1Jzc8tylCqBQA=",
        "px.ads.linkedin.com",
        "/wa/?medium=fetch&fmt=g",
    ),
    # Pinterest: event pixel with JSON in parameters.
    (
        "GET",
        "/pi/ct/v3/?tid=26&event=init&pd=%7B%22em%22%3A%22h%22%7D",
        None,
        b"",
        "ct.pinterest.com",
        "/v3/?tid=26&event=init&pd=%7B%22em%22%3A%22h%22%7D",
    ),
    # Snap: form-encoded event to the glued host, cookie match.
    (
        "POST",
        "/sn/tr/tr/p",
        "application/x-www-form-urlencoded;charset=UTF-8",
        b"pid=p1&ev=PAGE_VIEW&u_c1=s1",
        "tr.snapchat.com",
        "/p",
    ),
    (
        "GET",
        "/sn/tr/tr/cm/i?pid=p1&u_scsid=s1",
        None,
        b"",
        "tr.snapchat.com",
        "/cm/i?pid=p1&u_scsid=s1",
    ),
    # Reddit: pixel and JSON conversion.
    (
        "GET",
        "/rd/alb/rp.gif?id=a2_x&event=PageVisit&uuid=r1",
        None,
        b"",
        "alb.reddit.com",
        "/rp.gif?id=a2_x&event=PageVisit&uuid=r1",
    ),
    (
        "POST",
        "/rd/alb/rp",
        "text/plain;charset=UTF-8",
        b'{"event":"Purchase"}',
        "alb.reddit.com",
        "/rp",
    ),
    # X: both pixel hosts.
    (
        "GET",
        "/xt/tco/1/i/adsct?txn_id=o1&events=%5B%5B%22pageview%22%5D%5D",
        None,
        b"",
        "t.co",
        "/1/i/adsct?txn_id=o1&events=%5B%5B%22pageview%22%5D%5D",
    ),
    (
        "GET",
        "/xt/an/1/i/adsct?txn_id=o1",
        None,
        b"",
        "analytics.twitter.com",
        "/1/i/adsct?txn_id=o1",
    ),
    # Mixpanel US and EU.
    (
        "POST",
        "/mp/track/?verbose=1&ip=1",
        "application/x-www-form-urlencoded",
        b"data=eyJldmVudCI6IngifQ%3D%3D",
        "api-js.mixpanel.com",
        "/track/?verbose=1&ip=1",
    ),
    (
        "POST",
        "/mp/eu/track/?ip=1",
        "application/x-www-form-urlencoded",
        b"data=e30%3D",
        "api-eu.mixpanel.com",
        "/track/?ip=1",
    ),
    # Amplitude US, EU, batch and Session Replay.
    (
        "POST",
        "/am/api/2/httpapi",
        "application/json",
        b'{"api_key":"k","events":[]}',
        "api2.amplitude.com",
        "/2/httpapi",
    ),
    (
        "POST",
        "/am/eu/batch",
        "application/json",
        b'{"api_key":"k","events":[]}',
        "api.eu.amplitude.com",
        "/batch",
    ),
    (
        "POST",
        "/am/sr-eu/sessions/v2/track?device_id=d&seq_number=1",
        "application/json",
        GZIP,
        "api-sr.eu.amplitude.com",
        "/sessions/v2/track?device_id=d&seq_number=1",
    ),
    # Segment: analytics-next's batching delivery.
    (
        "POST",
        "/sg/api/v1/b",
        "text/plain",
        b'{"batch":[{"type":"track","event":"x","anonymousId":"a"}],"writeKey":"k"}',
        "api.segment.io",
        "/v1/b",
    ),
    # PostHog EU: gzip events, feature flags, session replay.
    (
        "POST",
        "/ph/eu/i/v0/e/?ip=0&_=1700000000000&ver=1.200.0&compression=gzip-js",
        "text/plain",
        GZIP,
        "eu.i.posthog.com",
        "/i/v0/e/?ip=0&_=1700000000000&ver=1.200.0&compression=gzip-js",
    ),
    (
        "POST",
        "/ph/eu/flags/?v=2",
        "application/json",
        b'{"token":"phc_x","distinct_id":"d"}',
        "eu.i.posthog.com",
        "/flags/?v=2",
    ),
    (
        "POST",
        "/ph/eu/s/?compression=gzip-js",
        "text/plain",
        GZIP,
        "eu.i.posthog.com",
        "/s/?compression=gzip-js",
    ),
    # Hotjar: visit data, page content (gzip), metrics.
    (
        "POST",
        "/hj/in/api/v2/client/sites/123/visit-data?sv=6",
        "text/plain; charset=UTF-8",
        b'{"user_id":"u","url":"https://www.shop.example/"}',
        "in.hotjar.com",
        "/api/v2/client/sites/123/visit-data?sv=6",
    ),
    (
        "POST",
        "/hj/content/?site_id=123&gzip=1",
        "text/plain; charset=UTF-8",
        GZIP,
        "content.hotjar.io",
        "/?site_id=123&gzip=1",
    ),
    (
        "POST",
        "/hj/metrics/",
        "text/plain",
        b'{"metrics":[{"name":"x","value":1}]}',
        "metrics.hotjar.io",
        "/",
    ),
    # Matomo (the field cases' host) and Umami.
    (
        "POST",
        "/mt/matomo.php",
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"idsite=1&rec=1&action_name=Home",
        "matomo.example.net",
        "/matomo.php",
    ),
    (
        "POST",
        "/um/api/send",
        "application/json",
        b'{"type":"event","payload":{"website":"w"}}',
        "cloud.umami.is",
        "/api/send",
    ),
    (
        "POST",
        "/um/gw/api/send",
        "application/json",
        b'{"type":"event","payload":{"website":"w"}}',
        "api-gateway.umami.dev",
        "/api/send",
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "content_type", "body", "host", "raw_path"), BEACONS
)
async def test_beacon_reaches_vendor(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    method: str,
    target: str,
    content_type: str | None,
    body: bytes,
    host: str,
    raw_path: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    head = (
        f"{method} {target} HTTP/1.1\nHost: www.shop.example\n"
        f"User-Agent: {CHROME}\nX-Forwarded-For: {VISITOR}\nCookie: {COOKIES}\n"
        + (f"Content-Type: {content_type}\n" if content_type else "")
        + f"Content-Length: {len(body)}\nConnection: close\n"
    )
    response = await raw_request(proxy.port, head, body)
    assert response.status == 204

    (received,) = vendor.received
    assert (received.method, received.host, received.raw_path) == (
        method,
        host,
        raw_path,
    )
    if host.endswith(("umami.is", "umami.dev")):
        # The rule writes the visitor's address into payload.ip for Umami.
        sent = json.loads(body)
        sent["payload"]["ip"] = VISITOR
        assert json.loads(received.body) == sent
    else:
        assert received.body == body
    assert received.all("Content-Type") == ([content_type] if content_type else [])
    assert received.all("User-Agent") == [CHROME]
    assert received.all("X-Forwarded-For") == [VISITOR]
    if host == "matomo.example.net":
        assert received.all("Cookie") == [
            "_pk_id.1.a1b2=abc.1; _pk_ses.1.a1b2=1; mtm_consent=1"
        ]
    else:
        assert received.all("Cookie") == []
    if host.endswith("mixpanel.com"):
        assert received.all("X-Real-IP") == [VISITOR]


# Bodies a browser compressed itself pass as they are, Content-Encoding too:
# neither tagproxy nor anything in front of the vendor inflates them.
async def test_content_encoded_body_passes_byte_exact(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    head = (
        "POST /am/sr/sessions/v2/track?seq_number=1 HTTP/1.1\n"
        "Host: www.shop.example\nContent-Type: application/json\n"
        f"Content-Encoding: gzip\nContent-Length: {len(GZIP)}\nConnection: close\n"
    )
    response = await raw_request(proxy.port, head, GZIP)
    assert response.status == 204
    (received,) = vendor.received
    assert received.host == "api-sr.amplitude.com"
    assert received.body == GZIP
    assert received.all("Content-Encoding") == ["gzip"]
    assert received.all("Content-Length") == [str(len(GZIP))]


# Vendor-set cookies are Microsoft's, LinkedIn's, ... third-party IDs: none
# of them becomes a first-party cookie of the site.
@pytest.mark.parametrize(
    ("target", "host", "path"),
    [
        ("/cl/u/c/c.gif", "c.clarity.ms", "/c.gif"),
        ("/bi/action/0?ti=1", "bat.bing.com", "/action/0"),
        ("/li/px/collect?pid=1", "px.ads.linkedin.com", "/collect"),
        ("/xt/tco/1/i/adsct?txn_id=1", "t.co", "/1/i/adsct"),
    ],
)
async def test_vendor_cookies_stay_third_party(
    vendor: FakeVendor, start_proxy: StartProxy, target: str, host: str, path: str
) -> None:
    vendor.reply(
        host,
        path,
        Reply(200, b"GIF89a", [("Set-Cookie", "MUID=abc; Domain=.vendor.example")]),
    )
    proxy = await start_proxy(public_url=PUBLIC, cookie_domain="shop.example")
    async with proxy.client.get(f"{proxy.url}{target}") as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers


# A config JSON fetched cross-origin (Reddit's pixel config) gets the CORS
# answer a relay would give, and points at first-party endpoints.
async def test_config_json_cors_and_rewrite(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    config = b'{"endpoint":"https://alb.reddit.com/rp"}'
    vendor.reply(
        "pixel-config.reddit.com",
        "/pixels/a2_x/config",
        Reply(200, config, [("Content-Type", "application/json")]),
    )
    proxy = await start_proxy(
        public_url="https://metrics.shop.example", cookie_domain="shop.example"
    )
    origin = "https://www.shop.example"
    async with proxy.client.get(
        f"{proxy.url}/rd/cfg/pixels/a2_x/config", headers={"Origin": origin}
    ) as response:
        assert response.status == 200
        assert response.headers.getall("Access-Control-Allow-Origin") == [origin]
        assert "Origin" in ", ".join(response.headers.getall("Vary"))
        body = await response.json()
    assert body == {"endpoint": "https://metrics.shop.example/rd/alb/rp"}

    async with proxy.client.get(
        f"{proxy.url}/rd/cfg/pixels/a2_x/config",
        headers={"Origin": "https://evil.example"},
    ) as response:
        assert "Access-Control-Allow-Origin" not in response.headers
