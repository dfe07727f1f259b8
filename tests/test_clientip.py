"""Trusted client address and location: believed only from trusted peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.clientip import Trust, parse_networks
from proxy.errors import ConfigError
from proxy.geo import Geo, GeoSource, geo_source, parse_geo

from .conftest import StartProxy
from .fakes import FakeVendor, Reply, raw_request

PUBLIC = "https://www.example.com"
TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"])
CF = ("CF-Connecting-IP", "True-Client-IP")


# (peer, X-Forwarded-For values, single-address headers) -> the visitor.
@pytest.mark.parametrize(
    ("peer", "forwarded", "headers", "visitor"),
    [
        # Untrusted peers are the visitor, whatever they claim.
        ("198.51.100.1", ["203.0.113.7"], {}, "198.51.100.1"),
        ("198.51.100.1", [], {"CF-Connecting-IP": "192.0.2.66"}, "198.51.100.1"),
        ("198.51.100.1", [], {"True-Client-IP": "192.0.2.66"}, "198.51.100.1"),
        # Trusted peers: their client-IP header first, ...
        (
            "127.0.0.1",
            ["192.0.2.66"],
            {"CF-Connecting-IP": "203.0.113.7"},
            "203.0.113.7",
        ),
        ("10.1.2.3", [], {"True-Client-IP": "203.0.113.7"}, "203.0.113.7"),
        ("127.0.0.1", [], {"CF-Connecting-IP": "2001:db8:1::7"}, "2001:db8:1::7"),
        ("127.0.0.1", [], {"CF-Connecting-IP": "[2606:4700::7]:443"}, "2606:4700::7"),
        # ... ignoring one that is not an address, ...
        ("127.0.0.1", ["203.0.113.7"], {"CF-Connecting-IP": "evil"}, "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7"], {"CF-Connecting-IP": ""}, "203.0.113.7"),
        # ... then X-Forwarded-For walked from the right past trusted hops.
        ("127.0.0.1", ["192.0.2.66, 203.0.113.7"], {}, "203.0.113.7"),
        ("127.0.0.1", ["192.0.2.66, 203.0.113.7, 10.0.0.9"], {}, "203.0.113.7"),
        ("127.0.0.1", ["192.0.2.66", "203.0.113.7"], {}, "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7:5555"], {}, "203.0.113.7"),
        ("127.0.0.1", ["[2001:db9::1]:80"], {}, "2001:db9::1"),
        ("127.0.0.1", ["::ffff:203.0.113.7"], {}, "203.0.113.7"),
        ("127.0.0.1", ["192.0.2.66, garbage"], {}, "127.0.0.1"),
        ("127.0.0.1", [], {}, "127.0.0.1"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], {}, "203.0.113.7"),
    ],
)
def test_visitor_address(
    peer: str, forwarded: list[str], headers: dict[str, str], visitor: str
) -> None:
    trust = Trust(TRUSTED, CF)
    assert trust.visitor(peer, forwarded, headers) == visitor


def test_client_ip_headers_need_trusted_proxies() -> None:
    trust = Trust((), CF)
    assert trust.visitor("127.0.0.1", [], {"CF-Connecting-IP": "192.0.2.66"}) == (
        "127.0.0.1"
    )


# (trusted proxies, the header) -> what the vendor sees; the header never passes.
@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(["127.0.0.1/32"], "203.0.113.7"), ([], "127.0.0.1")],
)
async def test_cdn_client_ip_header_end_to_end(
    vendor: FakeVendor, start_proxy: StartProxy, trusted: list[str], expected: str
) -> None:
    proxy = await start_proxy(
        public_url=PUBLIC,
        trusted_proxies=trusted,
        client_ip_headers=["CF-Connecting-IP", "True-Client-IP"],
    )
    response = await raw_request(
        proxy.port,
        "POST /pa/api/event HTTP/1.1\nHost: www.example.com\n"
        "CF-Connecting-IP: 203.0.113.7\nTrue-Client-IP: 192.0.2.66\n"
        "X-Forwarded-For: 192.0.2.66\nContent-Length: 2\nConnection: close\n",
        b"{}",
    )
    assert response.status == 204
    received = vendor.received[0]
    assert received.all("X-Forwarded-For") == [expected]
    for name in ("CF-Connecting-IP", "True-Client-IP"):
        assert received.all(name) == []
    assert "192.0.2.66" not in str(received.headers)


# --- location ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "geo"),
    [
        ("US-CA", Geo("US", "CA")),
        ("us-ca", Geo("US", "CA")),
        (" DE-BE ", Geo("DE", "BE")),
        ("FR-75", Geo("FR", "75")),
        ("GB", Geo("GB")),
        ("GB-ENGLAND", Geo("GB")),
        ("XX", None),
        ("T1", None),
        ("USA", None),
        ("", None),
        ("U1-CA", None),
        ("US-CA\r\nX-Evil: 1", Geo("US")),
    ],
)
def test_parse_geo(value: str, geo: Geo | None) -> None:
    assert parse_geo(value) == geo


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"CF-IPCountry": "US", "cf-region-code": "CA"}, "US-CA"),
        ({"CF-IPCountry": "US", "cf-region-code": "US-CA"}, "US-CA"),
        ({"CF-IPCountry": "US", "cf-region-code": "California"}, "US"),
        ({"CF-IPCountry": "US"}, "US"),
        ({"CF-IPCountry": "XX", "cf-region-code": "CA"}, None),
        ({"cf-region-code": "CA"}, None),
        ({"X-Geo": "JP-13", "CF-IPCountry": "US"}, "JP-13"),
        ({"X-Geo": "bogus", "CF-IPCountry": "US"}, "US"),
    ],
)
def test_geo_from_headers(headers: dict[str, str], code: str | None) -> None:
    source = GeoSource("X-Geo", "CF-IPCountry", "cf-region-code")
    geo = source.read(headers)
    assert (geo.code if geo else None) == code


def test_geo_flags_checked() -> None:
    with pytest.raises(ConfigError, match="--geo-region-header"):
        geo_source(None, None, "cf-region-code")
    with pytest.raises(ConfigError, match="not a header name"):
        geo_source("X Geo", None, None)


GATEWAY_RULE = """
vendor = "gateway"
mount = "/gw"

[[hosts]]
host = "g-test.gateway.example"
path = ""

[[scripts]]
host = "g-test.gateway.example"
paths = ["/gtag/js"]
cache = "geo"
query = ["id"]

[[relays]]
host = "g-test.gateway.example"
paths = ["/g/collect"]

[request]
geo_headers = ["X-Forwarded-CountryRegion"]
"""
JS = [("Content-Type", "application/javascript")]


@pytest.fixture
def gateway_rule(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(GATEWAY_RULE)
    return path


# (trusted?, the CDN's headers, what the visitor adds) -> the vendor's header.
@pytest.mark.parametrize(
    ("trusted", "sent", "expected"),
    [
        (True, "CF-IPCountry: US\ncf-region-code: CA\n", ["US-CA"]),
        (True, "CF-IPCountry: US\n", ["US"]),
        (True, "X-Forwarded-CountryRegion: KP-01\n", []),
        (True, "CF-IPCountry: DE\nX-Forwarded-CountryRegion: KP-01\n", ["DE"]),
        (True, "CF-IPCountry: bogus\n", []),
        (False, "CF-IPCountry: US\ncf-region-code: CA\n", []),
        (False, "X-Forwarded-CountryRegion: KP-01\n", []),
    ],
)
async def test_geo_reaches_vendor_from_trusted_cdn_only(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    gateway_rule: Path,
    trusted: bool,
    sent: str,
    expected: list[str],
) -> None:
    proxy = await start_proxy(
        rules=[gateway_rule],
        rule_vars=[],
        public_url=PUBLIC,
        trusted_proxies=["127.0.0.1/32"] if trusted else [],
        geo_country_header="CF-IPCountry",
        geo_region_header="cf-region-code",
    )
    response = await raw_request(
        proxy.port,
        f"GET /gw/g/collect?v=2 HTTP/1.1\nHost: www.example.com\n{sent}"
        "Connection: close\n",
    )
    assert response.status == 204
    received = vendor.received[0]
    assert received.all("X-Forwarded-CountryRegion") == expected
    assert received.all("CF-IPCountry") == []


async def test_scripts_cached_per_trusted_geo(
    vendor: FakeVendor, start_proxy: StartProxy, gateway_rule: Path
) -> None:
    vendor.reply("g-test.gateway.example", "/gtag/js", Reply(200, b"var g=1;", JS))
    proxy = await start_proxy(
        rules=[gateway_rule],
        rule_vars=[],
        public_url=PUBLIC,
        trusted_proxies=["127.0.0.1/32"],
        geo_country_header="CF-IPCountry",
        geo_region_header="cf-region-code",
    )
    visits = [
        ("US", "CA", "203.0.113.7"),
        ("US", "CA", "203.0.113.8"),
        ("US", "NY", "203.0.113.9"),
        ("us", "ca", "203.0.113.10"),
    ]
    for country, region, address in visits:
        response = await raw_request(
            proxy.port,
            "GET /gw/gtag/js?id=G-TEST HTTP/1.1\nHost: www.example.com\n"
            f"CF-IPCountry: {country}\ncf-region-code: {region}\n"
            f"X-Forwarded-For: {address}\nConnection: close\n",
        )
        assert response.status == 200
    fetched = vendor.to("g-test.gateway.example")
    assert [r.all("X-Forwarded-CountryRegion") for r in fetched] == [
        ["US-CA"],
        ["US-NY"],
    ]
    assert [r.all("X-Forwarded-For") for r in fetched] == [
        ["203.0.113.7"],
        ["203.0.113.9"],
    ]
