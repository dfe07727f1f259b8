"""Tag-ID allowlist: a site's tagproxy serves the site's own tags and no others.

Without it, anyone could load their own container or pixel through a site's
first-party domain (`/gt/gtag/js?id=G-SOMEONE-ELSE`), borrowing the site's
reputation with ad blockers and its cookies' first-party standing. Rules say
where a route's requests name their tag ID (a query parameter or a path
segment, or a member of a JSON body); the operator lists the IDs the site
serves, per vendor. A request naming any other ID, or none where one is
expected, is refused with 403 before any upstream contact. Vendors with no
IDs listed are not restricted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, unquote_plus

from .errors import ConfigError, Forbidden
from .routing import Target
from .rules import Route, RuleSet
from .rules.model import TagIdPlace

log = logging.getLogger(__name__)

TAG_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class TagIdRefused(Forbidden):
    """A request for a tag, pixel or container the site does not serve."""


@dataclass(frozen=True, slots=True)
class TagAllowlist:
    """The tag IDs each vendor may serve; a vendor missing here is unrestricted."""

    by_vendor: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def check(self, target: Target) -> None:
        """Refuse a request whose path or query names a tag ID not served here."""
        allowed = self.by_vendor.get(target.rule.vendor)
        place = target.route.tag_id
        if allowed is None or place is None or place.json is not None:
            return
        _judge(tag_ids_in(place, target.path, target.query), allowed)

    def check_body(self, target: Target, body: bytes, encoding: str) -> None:
        """The same for routes whose tag ID is in the JSON body (once read)."""
        allowed = self.by_vendor.get(target.rule.vendor)
        place = target.route.tag_id
        if allowed is None or place is None or place.json is None:
            return
        if encoding.strip().lower() not in ("", "identity"):
            raise TagIdRefused("cannot read the tag ID of an encoded body")
        _judge(tag_ids_in_body(place.json, body), allowed)

    def restricted(self) -> frozenset[str]:
        return frozenset(self.by_vendor)


def _judge(named: list[str], allowed: frozenset[str]) -> None:
    if not named:
        raise TagIdRefused("this route needs one of the site's tag IDs")
    for tag in named:
        if tag not in allowed:
            # Case matters: write keys and tokens are case-sensitive, and the
            # site's own pages use the exact spelling listed.
            raise TagIdRefused("tag ID not served by this site")


def tag_ids_in(place: TagIdPlace, path: str, query: str) -> list[str]:
    """Every tag ID a request names at `place`, decoded as the vendor reads it.

    All values of a repeated parameter count: a vendor may read either one,
    so each must be allowed.
    """
    if place.query is not None:
        found = []
        for piece in query.split("&") if query else []:
            name, _, value = piece.partition("=")
            if unquote_plus(name) == place.query:
                found.append(unquote_plus(value))
        return found
    assert place.segment is not None
    segments = path.split("/")
    if place.segment < len(segments):
        return [unquote(segments[place.segment])]
    return []


def tag_ids_in_body(member: str, body: bytes) -> list[str]:
    """Every value at a dotted member of a JSON body (each item of a batch).

    A value that is not a string counts as an empty ID, so it is refused.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []
    found: list[str] = []
    for item in data if isinstance(data, list) else [data]:
        for name in member.split("."):
            item = item.get(name) if isinstance(item, dict) else None
        if item is not None:
            found.append(item if isinstance(item, str) else "")
    return found


def parse_tag_ids(specs: Iterable[str], rules: RuleSet) -> TagAllowlist:
    """`VENDOR=ID` items (from --tag-id), checked against the loaded rules."""
    by_vendor: dict[str, set[str]] = {}
    for spec in specs:
        vendor, sep, tag = (part.strip() for part in spec.partition("="))
        if not sep or not vendor or TAG_ID.fullmatch(tag) is None:
            raise ConfigError(
                f"--tag-id {spec!r}: expected VENDOR=ID, e.g. google=G-ABC123"
            )
        rule = rules.by_vendor.get(vendor)
        if rule is None:
            known = ", ".join(sorted(rules.by_vendor))
            raise ConfigError(f"--tag-id {spec!r}: no loaded rule {vendor!r} ({known})")
        routes: list[Route] = [*rule.scripts, *rule.relays]
        if not any(route.tag_id for route in routes):
            raise ConfigError(
                f"--tag-id {spec!r}: rule {vendor!r} ({rule.source}) says nowhere "
                "where its tag IDs appear (tag_id on a route), so listing IDs "
                "would restrict nothing"
            )
        by_vendor.setdefault(vendor, set()).add(tag)
    return TagAllowlist({v: frozenset(ids) for v, ids in by_vendor.items()})


def require_places(
    by_vendor: Mapping[str, frozenset[str]], rules: RuleSet, where: str
) -> TagAllowlist:
    """An allowlist from another source (a sites file), checked like the flag."""
    for vendor in by_vendor:
        rule = rules.by_vendor.get(vendor)
        routes: list[Route] = [*rule.scripts, *rule.relays] if rule else []
        if not any(route.tag_id for route in routes):
            raise ConfigError(
                f"{where}: tag_ids for {vendor!r}: its rule says nowhere where "
                "tag IDs appear (tag_id on a route), so listing IDs would "
                "restrict nothing"
            )
    return TagAllowlist(dict(by_vendor))


def log_unrestricted(allowlist: TagAllowlist, rules: RuleSet) -> None:
    """Say at start-up which vendors would serve anyone's tags."""
    open_vendors = []
    for rule in rules.rules:
        routes: list[Route] = [*rule.scripts, *rule.relays]
        if rule.vendor not in allowlist.restricted() and any(r.tag_id for r in routes):
            open_vendors.append(rule.vendor)
    if open_vendors:
        log.info(
            "tag IDs not restricted for %s: any site's tags can be loaded "
            "through this proxy (set --tag-id VENDOR=ID)",
            ", ".join(open_vendors),
        )
