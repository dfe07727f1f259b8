"""What a rule's `[privacy]` section means, as frozen objects.

The loader builds one `PrivacyPolicy` per rule, filling in the documented
defaults for everything the rule leaves out, so request code never asks
"was this set?" and the audit can say which values are defaults.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..rules.model import NameMatcher


class Action(enum.StrEnum):
    """What happens to a beacon when a privacy signal says so."""

    PASS = "pass"  # relayed under the rule's normal policy
    STRIP = "strip"  # relayed without the identifiers the rule lists
    DROP = "drop"  # answered by tagproxy as the vendor would; nothing sent

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY: Final = {Action.PASS: 0, Action.STRIP: 1, Action.DROP: 2}


class Purpose(enum.StrEnum):
    """Why a vendor receives a beacon, in the words consent managers use."""

    ANALYTICS = "analytics"  # measurement: statistics, performance
    ADS = "ads"  # advertising: marketing, targeting, conversion tracking
    FUNCTIONAL = "functional"  # preferences, support widgets
    NONE = "none"  # needs no consent: cookieless, no personal data kept


class IpHandling(enum.StrEnum):
    """The form in which the visitor's address leaves, in every way it leaves."""

    FORWARD = "forward"  # as it is
    TRUNCATE = "truncate"  # IPv4 to its /24, IPv6 to its /48
    WITHHOLD = "withhold"  # not at all: the vendor sees only tagproxy's address

    @property
    def severity(self) -> int:
        return _IP_SEVERITY[self]


_IP_SEVERITY: Final = {
    IpHandling.FORWARD: 0,
    IpHandling.TRUNCATE: 1,
    IpHandling.WITHHOLD: 2,
}


@dataclass(frozen=True, slots=True)
class Gate:
    """The consent purpose of some beacons and what each signal does to them."""

    purpose: Purpose
    without_consent: Action
    gpc: Action  # Sec-GPC: 1
    dnt: Action  # DNT: 1
    declared: frozenset[str] = frozenset()  # keys the rule set itself


# The documented defaults, by purpose: (without consent, on GPC, on DNT).
# Advertising is the strictest and is what a rule that names no purpose gets.
PURPOSE_DEFAULTS: Final[Mapping[Purpose, tuple[Action, Action, Action]]] = {
    Purpose.ANALYTICS: (Action.DROP, Action.STRIP, Action.PASS),
    Purpose.ADS: (Action.DROP, Action.DROP, Action.PASS),
    Purpose.FUNCTIONAL: (Action.STRIP, Action.PASS, Action.PASS),
    Purpose.NONE: (Action.PASS, Action.PASS, Action.PASS),
}
DEFAULT_PURPOSE: Final = Purpose.ADS

# Browsers cap a cookie's lifetime at 400 days, whatever it asks for.
BROWSER_COOKIE_CAP: Final = 400 * 86400


@dataclass(frozen=True, slots=True)
class Identifiers:
    """What `strip` removes: cookies, parameters, body fields, and the IP form."""

    cookies: NameMatcher
    query: NameMatcher
    body: tuple[str, ...]  # fields in the rule's declared body format
    ip: IpHandling


@dataclass(frozen=True, slots=True)
class QueryScrub:
    """Edits made to every relayed query, whatever consent says."""

    drop: NameMatcher
    replace: Mapping[str, str]
    urls: frozenset[str]  # URL-valued parameters: e-mails and phones redacted

    @property
    def active(self) -> bool:
        return bool(self.drop or self.replace or self.urls)


class BodyFormat(enum.StrEnum):
    """How a declared body is read for scrubbing."""

    FORM = "form"  # name=value&name=value
    JSON = "json"  # a JSON object, or an array of them
    FORM_LINES = "form-lines"  # one form-encoded record per line (batched hits)


@dataclass(frozen=True, slots=True)
class BodyScrub:
    """Edits made to request bodies of a declared format; others pass as sent."""

    format: BodyFormat
    content_types: frozenset[str]  # lower-case media types, no parameters
    drop: tuple[str, ...]
    replace: Mapping[str, str | int | float | bool]
    urls: tuple[str, ...]  # URL-valued fields: e-mails and phones redacted

    @property
    def edits(self) -> bool:
        return bool(self.drop or self.replace or self.urls)


class CookieDomain(enum.StrEnum):
    SITE = "site"  # the site's cookie domain (host-only when none is configured)
    HOST = "host"  # host-only: no Domain attribute


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How Set-Cookie reaches the browser, and which cookies tagproxy sets itself."""

    domain: CookieDomain = CookieDomain.SITE
    path: str | None = None  # None: as the vendor sent it
    secure: bool | None = None  # None: as sent; tagproxy's own follow the public URL
    same_site: str | None = None
    http_only: bool | None = None
    max_age: int | None = None  # lifetime cap in seconds; None: none
    reissue: NameMatcher | None = None  # JS-written cookies re-set by the server
    reissue_max_age: int = BROWSER_COOKIE_CAP
    # The consent that must hold for tagproxy to set cookies (re-issued and
    # visitor ID), whichever beacon carries them; None: the rule's purpose.
    purpose: Purpose | None = None
    declared: bool = False


@dataclass(frozen=True, slots=True)
class VisitorId:
    """A tagproxy-issued HttpOnly visitor-ID cookie, set only with consent."""

    cookie: str
    max_age: int
    forwarded: bool  # the rule's cookie allowlist lets it reach the vendor


@dataclass(frozen=True, slots=True)
class Answer:
    """What the browser gets for a dropped beacon."""

    status: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    gate: Gate
    host_gates: Mapping[str, Gate]  # by the rule's [[hosts]] host, when it differs
    consent_mode: bool  # read Google consent-mode parameters (gcs, gcd)
    ip: IpHandling
    identifiers: Identifiers
    query: QueryScrub
    body: BodyScrub | None
    cookies: CookiePolicy
    visitor_id: VisitorId | None
    answer: Answer | None  # None: by method (GET pixel, else 204)
    declared: bool  # the rule has a [privacy] section
    gates: tuple[Gate, ...] = field(default=())  # every distinct gate, for audits

    def gate_for(self, host: str) -> Gate:
        return self.host_gates.get(host, self.gate)


# A transparent 1x1 GIF: what an image pixel expects from an accepted beacon.
PIXEL_GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00"
    b"\x00\x02\x02D\x01\x00;"
)

SAME_SITE_VALUES: Final = {"strict": "Strict", "lax": "Lax", "none": "None"}
COOKIE_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
