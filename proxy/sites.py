"""The sites file: several sites served by one tagproxy, chosen by Host.

Without a sites file tagproxy serves one site described by flags
(`--public-url`, `--cookie-domain`, `--allowed-origin`) with every loaded
rule. With one, each request's Host picks a site, and a Host no site lists
gets 404 with no upstream contact (or the `default` site, if the file names
one). The file is TOML:

    default = "shop"                # optional; else unknown Hosts get 404

    [[sites]]
    name = "shop"                   # optional; default: the first host
    hosts = ["metrics.shop.example", "www.shop.example"]
    public_url = "https://metrics.shop.example"   # default: from each request
    cookie_domain = "shop.example"                # default: host-only cookies
    allowed_origins = ["https://www.shop.example"]
    vendors = ["google", "plausible"]             # default: every loaded rule
    consent = "onetrust"            # preset or file; default: --consent

    [sites.tag_ids]                 # optional: tag IDs each vendor may serve
    google = ["G-ABC123", "GTM-XYZ9"]

It is validated together with the rules (a site naming a vendor no rule
defines is an error) and reloaded with them.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .errors import ConfigError
from .privacy.consent import ConsentConfig, load_consent
from .rules import Route, RuleSet
from .rules.loader import RuleError, Table
from .site import OriginMatcher, Site, is_origin_pattern, parse_public_url
from .tagids import TAG_ID

_HOST: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?::\d{1,5})?"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One site: the Hosts it answers, its public face and what it may serve."""

    name: str
    hosts: tuple[str, ...]
    site: Site
    vendors: frozenset[str] | None = None  # None: every loaded rule
    # Tag IDs (measurement IDs, container IDs, pixel IDs) each vendor may
    # serve for this site; a vendor missing here is not restricted.
    tag_ids: Mapping[str, frozenset[str]] = field(default_factory=dict)
    consent: ConsentConfig | None = None  # None: the --consent setting

    def enables(self, vendor: str) -> bool:
        return self.vendors is None or vendor in self.vendors


@dataclass(frozen=True, slots=True)
class Sites:
    source: Path
    sites: tuple[SiteConfig, ...]
    by_host: Mapping[str, SiteConfig]
    default: SiteConfig | None

    def for_host(self, host: str) -> SiteConfig | None:
        """The site for a Host header value (`name` or `name:port`)."""
        host = host.lower().rstrip(".")
        found = self.by_host.get(host)
        if found is None:
            found = self.by_host.get(host.rpartition(":")[0] if ":" in host else "")
        return found if found is not None else self.default


def load_sites(source: Path, rules: RuleSet) -> Sites:
    """Parse and validate a sites file against the loaded rules."""
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(source, "(file)", None, f"not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(source, "(file)", None, f"cannot be read: {exc}") from exc
    top = Table(source, "", data)
    tables = top.tables("sites")
    if not tables:
        raise top.fail("sites", [], "list at least one [[sites]] table")
    sites = [_site(table, rules) for table in tables]
    default_name = top.get("default", str, "")
    top.done()

    by_host: dict[str, SiteConfig] = {}
    names: dict[str, SiteConfig] = {}
    for table, site in zip(tables, sites, strict=True):
        for host in site.hosts:
            if host in by_host:
                other = by_host[host].name
                raise table.fail("hosts", host, f"also listed by site {other!r}")
            by_host[host] = site
        if site.name in names:
            raise table.fail("name", site.name, "another site has this name")
        names[site.name] = site
    default = None
    if default_name:
        default = names.get(default_name)
        if default is None:
            known = ", ".join(sorted(names))
            raise top.fail("default", default_name, f"no site has this name ({known})")
    return Sites(source, tuple(sites), by_host, default)


def _site(table: Table, rules: RuleSet) -> SiteConfig:
    hosts = tuple(h.lower().rstrip(".") for h in table.strings("hosts"))
    if not hosts:
        raise table.fail("hosts", [], "list the Host names this site answers")
    for host in hosts:
        if _HOST.fullmatch(host) is None:
            raise table.fail("hosts", host, "must be a host name, optionally :port")
    name = table.get("name", str, hosts[0])

    raw_url = table.get("public_url", str, "")
    try:
        public_url = parse_public_url(raw_url) if raw_url else None
    except ValueError as exc:
        raise table.fail("public_url", raw_url, str(exc).partition(": ")[2]) from exc
    domain = table.get("cookie_domain", str, "").strip().lstrip(".").lower() or None
    if domain is not None and _HOST.fullmatch(domain) is None:
        raise table.fail("cookie_domain", domain, "must be a domain like shop.example")
    origins = table.strings("allowed_origins")
    for origin in origins:
        if not is_origin_pattern(origin):
            raise table.fail(
                "allowed_origins",
                origin,
                "expected an origin like https://www.shop.example or "
                "https://*.shop.example",
            )
    site = Site(
        public_url,
        domain,
        OriginMatcher(tuple(o.lower().rstrip("/") for o in origins)),
    )

    vendors = _vendors(table, rules)
    tag_ids = _tag_ids(table.table("tag_ids"), vendors, rules)
    consent = _consent(table)
    table.done()
    return SiteConfig(name, hosts, site, vendors, tag_ids, consent)


def _consent(table: Table) -> ConsentConfig | None:
    """A consent preset, or a consent file relative to the sites file."""
    raw = table.get("consent", str, "")
    if not raw:
        return None
    spec = raw
    if "/" in raw or raw.endswith(".toml"):
        spec = str(table.source.parent / raw)
    try:
        return load_consent(spec)
    except ConfigError as exc:
        raise table.fail("consent", raw, str(exc)) from exc


def _vendors(table: Table, rules: RuleSet) -> frozenset[str] | None:
    if "vendors" not in table.data:
        table.get("vendors", list, [])  # ticks the key off
        return None
    vendors = table.strings("vendors")
    for vendor in vendors:
        if vendor not in rules.by_vendor:
            known = ", ".join(sorted(rules.by_vendor))
            raise table.fail("vendors", vendor, f"no loaded rule has it ({known})")
    return frozenset(vendors)


def _tag_ids(
    table: Table, vendors: frozenset[str] | None, rules: RuleSet
) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for vendor in list(table.data):
        ids = table.strings(vendor)
        if vendor not in rules.by_vendor:
            known = ", ".join(sorted(rules.by_vendor))
            raise table.fail(vendor, ids, f"no loaded rule has this vendor ({known})")
        if vendors is not None and vendor not in vendors:
            raise table.fail(vendor, ids, "vendor is not in this site's vendors")
        rule = rules.by_vendor[vendor]
        routes: list[Route] = [*rule.scripts, *rule.relays]
        if not any(route.tag_id for route in routes):
            raise table.fail(
                vendor,
                ids,
                f"its rule ({rule.source}) says nowhere where tag IDs appear "
                "(tag_id on a route), so listing IDs would restrict nothing",
            )
        for tag_id in ids:
            if TAG_ID.fullmatch(tag_id) is None:
                raise table.fail(vendor, tag_id, "not a tag ID (letters, digits, -_.:)")
        out[vendor] = frozenset(ids)
    table.done()
    return out


def log_sites(sites: Sites | None) -> None:
    """Start-up lines: each site, its hosts and what it serves."""
    if sites is None:
        return
    for site in sites.sites:
        log.info(
            "site %s: hosts %s; public URL %s; cookie domain %s; vendors %s",
            site.name,
            ", ".join(site.hosts),
            site.site.public_url or "from each request",
            site.site.cookie_domain or "none (host-only cookies)",
            ", ".join(sorted(site.vendors)) if site.vendors is not None else "all",
        )
    if sites.default is not None:
        log.info("other Hosts: served as site %s", sites.default.name)
    else:
        log.info("other Hosts: 404")
