"""The visitor's country and region, from headers a trusted CDN sets.

CDNs and load balancers can add the visitor's location to each request
(Cloudflare `CF-IPCountry` and `cf-region-code`, CloudFront
`CloudFront-Viewer-Country` and `-Country-Region`, or one `COUNTRY-REGION`
header set by the operator's own edge). tagproxy reads them only from peers
the operator trusts, keeps only well-formed ISO 3166 codes, and uses the
result two ways: as the cache key of scripts cached per geo, and as the value
of the headers a rule names for vendors that geolocate from them (Google's
tag gateway reads `X-Forwarded-CountryRegion: CC-RR`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict

from .errors import ConfigError
from .rules.loader import HEADER_NAME

_COUNTRY: Final = re.compile(r"[A-Z]{2}")
_REGION: Final = re.compile(r"[A-Z0-9]{1,3}")
# Codes CDNs send when they do not know: unknown, Tor exit, anonymous proxy.
_NOT_A_COUNTRY: Final = frozenset({"XX", "T1", "A1", "A2", "O1", "ZZ"})


@dataclass(frozen=True, slots=True)
class Geo:
    country: str  # ISO 3166-1 alpha-2, upper case
    region: str | None = None  # ISO 3166-2 subdivision, without the country

    @property
    def code(self) -> str:
        """`US-CA`, or `US` when the region is unknown."""
        return f"{self.country}-{self.region}" if self.region else self.country


@dataclass(frozen=True, slots=True)
class GeoSource:
    """Which request headers carry the visitor's location (all optional)."""

    combined: str | None = None  # "CC-RR" or "CC" in one header
    country: str | None = None  # "CC"
    region: str | None = None  # "RR" (or "CC-RR")

    def __bool__(self) -> bool:
        return bool(self.combined or self.country)

    def read(self, headers: Mapping[str, str]) -> Geo | None:
        """The visitor's location, or None if absent or malformed.

        Call only for requests from trusted peers: anyone else could name
        any place, and with it pick which cached copy of a script they see.
        """
        if self.combined:
            geo = parse_geo(headers.get(self.combined, ""))
            if geo is not None:
                return geo
        if not self.country:
            return None
        country = parse_geo(headers.get(self.country, ""))
        if country is None:
            return None
        region = headers.get(self.region, "") if self.region else ""
        return Geo(country.country, _region(region, country.country))


def parse_geo(value: str) -> Geo | None:
    country, _, region = value.strip().upper().partition("-")
    if _COUNTRY.fullmatch(country) is None or country in _NOT_A_COUNTRY:
        return None
    if region and _REGION.fullmatch(region) is None:
        return Geo(country)
    return Geo(country, region or None)


def _region(value: str, country: str) -> str | None:
    value = value.strip().upper()
    if value.startswith(country + "-"):
        value = value[len(country) + 1 :]
    return value if _REGION.fullmatch(value) else None


def geo_source(
    combined: str | None, country: str | None, region: str | None
) -> GeoSource:
    """Validate the --geo-*-header flags."""
    for flag, name in (
        ("--geo-header", combined),
        ("--geo-country-header", country),
        ("--geo-region-header", region),
    ):
        if name and HEADER_NAME.fullmatch(name) is None:
            raise ConfigError(f"{flag} {name!r}: not a header name")
    if region and not country:
        raise ConfigError(
            f"--geo-region-header {region!r}: needs --geo-country-header too"
        )
    return GeoSource(combined or None, country or None, region or None)


def set_geo_headers(
    headers: CIMultiDict[str], names: tuple[str, ...], geo: Geo | None
) -> None:
    """Put the visitor's location in the headers a rule names, or none at all.

    Whatever the client sent under those names is removed first: only a
    location from a trusted CDN may reach the vendor.
    """
    for name in names:
        headers.popall(name, None)
        if geo is not None:
            headers[name] = geo.code
