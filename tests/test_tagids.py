"""Tag-ID allowlist: a site's tagproxy serves its own tags and nobody else's."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from proxy.errors import ConfigError
from proxy.rules import load_rules
from proxy.rules.model import TagIdPlace
from proxy.tagids import parse_tag_ids, tag_ids_in

from . import tally
from .conftest import BUNDLED_RULES, StartProxy
from .fakes import FakeVendor, Reply, raw_request

PUBLIC = "https://www.example.com"
ALLOWED = ["google=G-MINE", "google=GTM-MINE", "meta=1234", "posthog=phc_MINE"]
JS = [("Content-Type", "application/javascript")]


# Every value a vendor could read counts, decoded as the vendor decodes it.
@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("id=G-A", ["G-A"]),
        ("id=G-A&id=G-B", ["G-A", "G-B"]),
        ("l=dataLayer&id=G-A", ["G-A"]),
        ("i%64=G-B", ["G-B"]),
        ("id=G%2DB", ["G-B"]),
        ("id=G+B", ["G B"]),
        ("idx=G-B", []),
        ("", []),
        ("id", [""]),
    ],
)
def test_ids_in_query(query: str, found: list[str]) -> None:
    assert tag_ids_in(TagIdPlace(query="id"), "/gtag/js", query) == found


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/signals/config/1234", ["1234"]),
        ("/signals/config/12%334", ["1234"]),
        ("/signals/config/", [""]),
        ("/signals/config", []),
    ],
)
def test_ids_in_path_segment(path: str, found: list[str]) -> None:
    assert tag_ids_in(TagIdPlace(segment=3), path, "") == found


# Operator mistakes fail at start-up, naming the flag and the fix.
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("G-MINE", "expected VENDOR=ID"),
        ("google=", "expected VENDOR=ID"),
        ("google=G MINE", "expected VENDOR=ID"),
        ("nosuch=1", "no loaded rule 'nosuch'"),
        ("mixpanel=TOKEN", "says nowhere where its tag IDs appear"),
    ],
)
def test_bad_tag_id_flags(spec: str, message: str) -> None:
    rules = load_rules([BUNDLED_RULES])
    with pytest.raises(ConfigError, match=message):
        parse_tag_ids([spec], rules)


# Requests naming IDs the site does not serve: 403, no upstream contact.
@pytest.mark.parametrize(
    "path",
    [
        "/gt/gtag/js?id=G-OTHER",
        "/gt/gtag/js?id=G-MINE&id=G-OTHER",
        "/gt/gtag/js?id=G-OTHER&id=G-MINE",
        "/gt/gtag/js?i%64=G-OTHER",
        "/gt/gtag/js?id=G%2DOTHER",
        "/gt/gtag/js?id=g-mine",
        "/gt/gtag/js?id=G-MINE%00",
        "/gt/gtag/js?id=",
        "/gt/gtag/js",
        "/gt/gtm.js?id=GTM-OTHER",
        "/gt/ga/region1/g/collect?v=2&tid=G-OTHER",
        "/gt/ga/www/g/collect?v=2",
        "/fb/signals/config/9999?v=2.9",
        "/fb/signals/config/%39999",
        "/fb/w/tr?id=9999&ev=PageView",
        "/ph/array/phc_OTHER/config.js",
    ],
)
async def test_other_tag_ids_refused(
    vendor: FakeVendor, start_proxy: StartProxy, path: str
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, tag_ids=ALLOWED)
    response = await raw_request(
        proxy.port, f"GET {path} HTTP/1.1\nHost: www.example.com\nConnection: close\n"
    )
    tally.add("tag-ID cases tried")
    assert response.status == 403
    assert vendor.received == []


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/gt/gtag/js?id=G-MINE", "www.googletagmanager.com"),
        ("/gt/gtag/js?id=G-MINE&l=dataLayer", "www.googletagmanager.com"),
        ("/gt/gtm.js?id=GTM-MINE", "www.googletagmanager.com"),
        ("/gt/ga/region1/g/collect?v=2&tid=G-MINE", "region1.google-analytics.com"),
        ("/fb/signals/config/1234?v=2.9", "connect.facebook.net"),
        ("/fb/w/tr?id=1234&ev=PageView", "www.facebook.com"),
        ("/ph/array/phc_MINE/config.js", "us-assets.i.posthog.com"),
        # Routes with no tag ID, and vendors with no IDs listed, are not limited.
        ("/gt/static/service_worker/5/sw.js", "www.googletagmanager.com"),
        ("/fb/en_US/fbevents.js", "connect.facebook.net"),
        ("/sg/analytics.js/v1/ANYKEY/analytics.min.js", "cdn.segment.com"),
    ],
)
async def test_own_tag_ids_served(
    vendor: FakeVendor, start_proxy: StartProxy, path: str, host: str
) -> None:
    vendor.reply(host, path.partition("?")[0].split("/", 2)[2], Reply(200, b"1;", JS))
    proxy = await start_proxy(public_url=PUBLIC, tag_ids=ALLOWED)
    response = await raw_request(
        proxy.port, f"GET {path} HTTP/1.1\nHost: www.example.com\nConnection: close\n"
    )
    tally.add("tag-ID cases tried")
    assert response.status in (200, 204)
    assert [r.host for r in vendor.received] == [host]


async def test_refusals_are_counted(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    labels = {"vendor": "google", "reason": "tag_id"}
    before = REGISTRY.get_sample_value("tagproxy_beacons_dropped_total", labels) or 0
    proxy = await start_proxy(public_url=PUBLIC, tag_ids=ALLOWED)
    await raw_request(
        proxy.port,
        "GET /gt/gtag/js?id=G-OTHER HTTP/1.1\nHost: www.example.com\n"
        "Connection: close\n",
    )
    after = REGISTRY.get_sample_value("tagproxy_beacons_dropped_total", labels)
    assert after == before + 1


async def test_unknown_vendor_fails_start_up(start_proxy: StartProxy) -> None:
    with pytest.raises(ConfigError, match="no loaded rule"):
        await start_proxy(public_url=PUBLIC, tag_ids=["nosuchvendor=C123"])


# IDs inside JSON bodies: Plausible's site domain, Umami's website ID.
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/pa/api/event", b'{"n":"pageview","d":"example.com"}', 202),
        ("/pa/api/event", b'{"n":"pageview","d":"other.example"}', 403),
        ("/pa/api/event", b'{"n":"pageview"}', 403),
        ("/pa/api/event", b'{"n":"pageview","d":["example.com"]}', 403),
        ("/pa/api/event", b"not json", 403),
        ("/um/api/send", b'{"payload":{"website":"w-1"}}', 202),
        (
            "/um/api/send",
            b'[{"payload":{"website":"w-1"}},{"payload":{"website":"w-2"}}]',
            403,
        ),
        ("/um/api/send", b'{"payload":{"website":"w-2"}}', 403),
    ],
)
async def test_ids_in_json_bodies(
    vendor: FakeVendor, start_proxy: StartProxy, path: str, body: bytes, status: int
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202, b"ok"))
    vendor.reply("cloud.umami.is", "/api/send", Reply(202, b"ok"))
    proxy = await start_proxy(
        public_url=PUBLIC, tag_ids=["plausible=example.com", "umami=w-1"]
    )
    response = await raw_request(
        proxy.port,
        f"POST {path} HTTP/1.1\nHost: www.example.com\n"
        f"Content-Type: text/plain\nContent-Length: {len(body)}\nConnection: close\n",
        body,
    )
    tally.add("tag-ID cases tried")
    assert response.status == status
    assert len(vendor.received) == (1 if status == 202 else 0)
