"""Map first-party paths to vendor hosts and routes, and vendor URLs back.

A first-party path is `<mount><host path>[/<label>]<upstream path>`. Lookup
costs one dict access for the mount and a scan of that one rule's few hosts,
so it does not grow with the number of rules loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from yarl import URL

from . import metrics
from .errors import NotFound
from .rules import Route, Rule, RuleSet, UpstreamHost

# Encoded slashes and backslashes would let a path segment smuggle a path
# change past our routing and into a vendor's; we never need them.
_SMUGGLED: Final = re.compile(r"%2f|%5c|\\", re.IGNORECASE)
_MATCHED_MAX: Final = 4096

# A matched path: rule, host, label, concrete host, upstream path, route.
_Match = tuple[Rule, UpstreamHost, str | None, str, str, Route]


@dataclass(frozen=True, slots=True)
class Target:
    """Where one first-party request goes."""

    rule: Rule
    host: UpstreamHost
    label: str | None
    upstream_host: str  # concrete host name
    path: str  # raw upstream path, byte-exact as received
    query: str  # raw query without "?", byte-exact as received
    route: Route

    @property
    def upstream_url(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.host.scheme}://{self.upstream_host}{self.path}{query}"


def split_raw_target(raw: str) -> tuple[str, str]:
    path, _, query = raw.partition("?")
    return path, query.partition("#")[0]


def check_path(path: str) -> None:
    """Refuse paths that do not mean the same thing to us and to the vendor."""
    if not path.startswith("/"):
        raise NotFound("no such first-party path")
    if "%" not in path and "\\" not in path and "/." not in path:
        return  # most paths: nothing encoded, no dot segments, nothing to see
    if _SMUGGLED.search(path):
        raise NotFound("no such first-party path")
    for segment in path.split("/"):
        if unquote(segment) in (".", ".."):
            raise NotFound("no such first-party path")


class Router:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # Longest host path first, so "/ga" is tried before the root ""; hosts
        # sharing a path (API and assets at the root) are told apart by their
        # routes, in the order the rule lists them.
        self._hosts = {
            rule.mount: sorted(rule.hosts, key=lambda h: -len(h.prefix))
            for rule in rules.rules
        }
        # The same few paths come again and again (a site's tags, their
        # beacon endpoints): each is matched once. Paths are the visitor's
        # choice, so the memo is bounded; refused paths are never kept.
        self._matched: dict[str, _Match] = {}
        # Keyed by identity: the router holds its rules, so no id is reused
        # while it lives.
        routes: list[Route] = [r for rule in rules.rules for r in rule.scripts]
        routes += [r for rule in rules.rules for r in rule.relays]
        self._route_ids = {id(route): metrics.route_id(route) for route in routes}

    def match(self, raw_target: str) -> Target:
        path, query = split_raw_target(raw_target)
        found = self._matched.get(path)
        if found is None:
            found = self._find(path)
            if len(self._matched) >= _MATCHED_MAX:
                self._matched.clear()
            self._matched[path] = found
        rule, host, label, concrete, upstream_path, route = found
        return Target(rule, host, label, concrete, upstream_path, query, route)

    def route_id(self, route: Route) -> str:
        """The route's metric label (see metrics.route_id), looked up."""
        return self._route_ids.get(id(route)) or metrics.route_id(route)

    def _find(self, path: str) -> _Match:
        check_path(path)
        slash = path.find("/", 1)
        mount = path if slash < 0 else path[:slash]
        rule = self.rules.by_mount.get(mount)
        if rule is None:
            raise NotFound("no such first-party path")
        rest = "" if slash < 0 else path[slash:]

        for host in self._hosts[mount]:
            found = _strip_host(host, rest)
            if found is None:
                continue
            label, upstream_path = found
            for route in rule.routes_for(host):
                if route.paths(upstream_path):
                    concrete = host.concrete(label)
                    return rule, host, label, concrete, upstream_path, route
        raise NotFound("no route for this path")

    def first_party_url(self, public_url: URL, vendor_url: URL) -> str | None:
        """The first-party URL for a vendor URL, or None if no rule owns its host."""
        owner = self.rules.owner_of(vendor_url.raw_host or "")
        if owner is None:
            return None
        rule, host, label = owner
        base = mount_url(public_url, rule) + host.path_for(label)
        path = vendor_url.raw_path
        query = f"?{vendor_url.raw_query_string}" if vendor_url.raw_query_string else ""
        return f"{base}{path}{query}"


def _strip_host(host: UpstreamHost, rest: str) -> tuple[str | None, str] | None:
    """(label, upstream path) when `rest` lies under this host's path."""
    prefix = host.prefix
    if prefix and not (rest == prefix or rest.startswith(prefix + "/")):
        return None
    rest = rest[len(prefix) :]
    if not host.is_pattern:
        return None, rest or "/"

    slash = rest.find("/", 1)
    label = rest[1:] if slash < 0 else rest[1:slash]
    if host.label_of(f"{label}{host.suffix}") is None:
        return None
    return label, ("/" if slash < 0 else rest[slash:])


def mount_url(public_url: URL, rule: Rule) -> str:
    """Absolute URL of a rule's mount under a public URL, without a trailing /."""
    return str(public_url).rstrip("/") + rule.mount


def mount_path(public_url: URL, rule: Rule) -> str:
    return public_url.raw_path.rstrip("/") + rule.mount
