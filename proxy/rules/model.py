"""The rule model: what one vendor rule file means, as frozen objects.

The loader builds these once per load; request code only reads them, so a
rule can never fail a request halfway through being understood.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..headers import never_forwarded
from .variables import Variable

if TYPE_CHECKING:
    from ..privacy.model import PrivacyPolicy

# Answers kept per matcher or policy for names seen before. Names come from
# visitors (header and cookie names), so the memo stops growing here.
MEMO_MAX: Final = 1024
DNS_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class CacheMode(enum.StrEnum):
    """How a rewritten script may be shared between visitors."""

    SHARED = "shared"  # one copy for everyone
    GEO = "geo"  # one copy per visitor country and region (from a trusted header)
    NONE = "none"  # fetched and rewritten per request: the body is per visitor


class IpVia(enum.StrEnum):
    """Where the visitor's address is put on the upstream request."""

    HEADER = "header"
    QUERY = "query"
    JSON_BODY = "json_body"


@dataclass(frozen=True, slots=True)
class IpPassing:
    via: IpVia
    name: str  # header name, query parameter, or dotted JSON member path


@dataclass(frozen=True, slots=True)
class NameMatcher:
    """Case-sensitive names with `*` wildcards, e.g. cookie names `_ga_*`."""

    patterns: tuple[str, ...] = ()
    exact: frozenset[str] = frozenset()
    regex: re.Pattern[str] | None = None

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> NameMatcher:
        exact = frozenset(p for p in patterns if "*" not in p)
        wild = [p for p in patterns if "*" in p]
        regex = None
        if wild:
            parts = (re.escape(p).replace(r"\*", ".*") for p in wild)
            regex = re.compile("|".join(f"(?:{part})" for part in parts))
        return cls(patterns, exact, regex)

    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, name: str) -> bool:
        known = self._known.get(name)
        if known is None:
            known = name in self.exact or (
                self.regex is not None and self.regex.fullmatch(name) is not None
            )
            if len(self._known) < MEMO_MAX:
                self._known[name] = known
        return known

    def __bool__(self) -> bool:
        return bool(self.patterns)


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """Upstream paths a route covers: exact paths, `*` within a segment, `**` across."""

    patterns: tuple[str, ...]
    exact: frozenset[str]
    regex: re.Pattern[str] | None

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> PathMatcher:
        exact = frozenset(p for p in patterns if "*" not in p)
        wild = [_glob_to_regex(p) for p in patterns if "*" in p]
        regex = re.compile("|".join(wild)) if wild else None
        return cls(patterns, exact, regex)

    def __call__(self, path: str) -> bool:
        if path in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(path) is not None


def _glob_to_regex(pattern: str) -> str:
    out = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*")
    return "(?:" + out.replace("\0", ".*") + ")"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    total: float


@dataclass(frozen=True, slots=True)
class UpstreamHost:
    """One vendor host (or `*.suffix` pattern) and its first-party path."""

    host: str  # "www.google-analytics.com" or "*.google-analytics.com"
    prefix: str  # under the mount: "" or "/ga"; a pattern host adds the label
    label: re.Pattern[str] | None = None  # what the `*` label may be
    bare: bool = False  # rewrite bare-host pieces of this host too
    scheme: str = "https"

    @property
    def is_pattern(self) -> bool:
        return self.host.startswith("*.")

    @property
    def suffix(self) -> str:
        return self.host[1:] if self.is_pattern else self.host

    def label_of(self, host: str) -> str | None:
        """The `*` label if `host` belongs to this pattern, else None."""
        if not self.is_pattern or not host.endswith(self.suffix):
            return None
        label = host[: -len(self.suffix)]
        if DNS_LABEL.fullmatch(label) is None:
            return None
        if self.label is not None and self.label.fullmatch(label) is None:
            return None
        return label

    def concrete(self, label: str | None) -> str:
        return f"{label}{self.suffix}" if label is not None else self.host

    def path_for(self, label: str | None) -> str:
        return f"{self.prefix}/{label}" if label is not None else self.prefix


@dataclass(frozen=True, slots=True)
class TagIdPlace:
    """Where a route's requests name the tag, pixel or container they are for.

    `query`: a query parameter (`id` for gtag.js, `tid` for GA4 hits);
    `segment`: the n-th segment of the upstream path, from 1 (Meta's
    `/signals/config/<pixel id>` is segment 3); `json`: a dotted member of a
    relay's JSON body (Plausible's `d`, the site's domain). Operators list
    the IDs their site serves; requests naming any other ID are refused.
    """

    query: str | None = None
    segment: int | None = None
    json: str | None = None


@dataclass(frozen=True, slots=True)
class ScriptGuard:
    """What a rule expects of the vendor's script, checked on every fetch.

    When a vendor changes its script so the rule no longer fits (a host it
    rewrites is gone, a quirk's literal no longer matches, an error page
    arrives with status 200), the check fails and tagproxy keeps serving the
    last script that passed, warns and counts, instead of a broken rewrite.
    """

    contains: tuple[bytes, ...] = ()  # must all be in the upstream body
    min_size: int = 0  # bytes of the decoded upstream body
    min_rewrites: int = 0  # host and quirk replacements made, at least
    rewrites: tuple[str, ...] = ()  # names of [[rewrites]] that must match


@dataclass(frozen=True, slots=True)
class ScriptRoute:
    """Upstream paths fetched, rewritten, cached and served."""

    host: UpstreamHost
    paths: PathMatcher
    cache: CacheMode
    ttl: float
    query: frozenset[str]  # parameters that reach upstream and the cache key
    cache_control: str | None  # for browsers; None: upstream's, else no-cache
    timeouts: Timeouts
    kind: str = "script"
    tag_id: TagIdPlace | None = None
    # Past the TTL, the cached copy is served while one fetch refreshes it
    # (for this long), or while the vendor fails (for this long).
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    guard: ScriptGuard | None = None


@dataclass(frozen=True, slots=True)
class EnvelopeTunnel:
    """An error-reporting envelope tunnel: the destination is read from the body.

    Browser SDKs post envelopes to the site (`tunnel`) so ad blockers do not
    drop them; each envelope's first line names its DSN. Only DSNs naming the
    route's own host and one of `projects` are forwarded, to the project's
    envelope endpoint; the client never picks a host or a path.
    """

    projects: frozenset[str]


@dataclass(frozen=True, slots=True)
class Durable:
    """A relay route whose beacons are spooled, answered, then delivered.

    The client gets `status` and `body` as soon as the beacon is on disk;
    a background worker sends it with retries until the vendor takes it or
    it is older than `max_age`. Only for fire-and-forget beacons: the client
    never sees the vendor's own answer (body, cookies).
    """

    status: int
    body: bytes
    content_type: str | None
    max_age: float
    retry_initial: float
    retry_max: float


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    """What one relayed WebSocket may use: message size, silence, how many."""

    max_message: int  # bytes of one message, either way; larger closes with 1009
    idle_timeout: float  # seconds without a message either way; then 1001
    max_connections: int  # open at once on this route, per process; then 503


@dataclass(frozen=True, slots=True)
class RelayRoute:
    """Upstream paths relayed as they are, under the rule's policies.

    With `envelope` set, `paths` are where envelopes are accepted and the
    upstream path comes from each envelope's DSN instead. With `websocket`
    set, the route takes WebSocket upgrades only and relays messages both
    ways (proxy/websocket.py).
    """

    host: UpstreamHost
    paths: PathMatcher
    methods: frozenset[str]
    max_body: int
    timeouts: Timeouts
    kind: str = "relay"
    envelope: EnvelopeTunnel | None = None
    durable: Durable | None = None  # spool and answer at once (opt-in)
    tag_id: TagIdPlace | None = None
    websocket: WebSocketLimits | None = None


Route = ScriptRoute | RelayRoute


@dataclass(frozen=True, slots=True)
class ExtraRewrite:
    """A vendor quirk: a literal or pattern replaced in this vendor's scripts."""

    name: str
    find: re.Pattern[bytes]
    replace: str  # may hold {mount_url}, {mount_path}, {public_url}


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    headers: frozenset[str]  # lower-case names that pass
    header_prefixes: tuple[str, ...]  # lower-case prefixes that pass
    set_headers: tuple[tuple[str, str], ...]
    cookies: NameMatcher
    drop_query: frozenset[str]
    set_query: tuple[tuple[str, str], ...]
    rename_query: Mapping[str, str]
    client_ip: tuple[IpPassing, ...]
    # Headers that get the visitor's "CC-RR" location from a trusted CDN.
    geo_headers: tuple[str, ...] = ()
    _passes: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def passes(self, name: str) -> bool:
        """`passes_header` for a name in any case, remembered per name."""
        known = self._passes.get(name)
        if known is None:
            known = self.passes_header(name.lower())
            if len(self._passes) < MEMO_MAX:
                self._passes[name] = known
        return known

    def passes_header(self, lower_name: str) -> bool:
        if lower_name in self.headers:
            return True
        # Exact names were checked at load; a wildcard such as "x-*" also
        # covers names no rule may forward (X-Real-IP, X-Forwarded-Host).
        return (
            lower_name.startswith(self.header_prefixes)
            and never_forwarded(lower_name) is None
        )


@dataclass(frozen=True, slots=True)
class ResponsePolicy:
    drop_headers: frozenset[str]
    set_headers: tuple[tuple[str, str], ...]
    cookies: NameMatcher  # Set-Cookie names that pass


@dataclass(frozen=True, slots=True)
class Rule:
    vendor: str
    name: str
    source: Path
    mount: str  # "/pa": one path segment
    hosts: tuple[UpstreamHost, ...]
    scripts: tuple[ScriptRoute, ...]
    relays: tuple[RelayRoute, ...]
    rewrites: tuple[ExtraRewrite, ...]
    request: RequestPolicy
    response: ResponsePolicy
    shim: bool = False  # prepend the runtime URL shim to this vendor's scripts
    keep_literals: tuple[str, ...] = ()  # hosts left as they are in its scripts
    routes_by_host: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    variables: tuple[Variable, ...] = ()  # operator settings used in this file
    privacy: PrivacyPolicy | None = None  # the loader always sets it

    def routes_for(self, host: UpstreamHost) -> tuple[Route, ...]:
        return self.routes_by_host.get(host.host, ())


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    by_mount: Mapping[str, Rule]
    by_vendor: Mapping[str, Rule]

    def owner_of(self, host: str) -> tuple[Rule, UpstreamHost, str | None] | None:
        """The rule and host entry that own a concrete upstream host name."""
        host = host.lower()
        for rule in self.rules:
            for entry in rule.hosts:
                if entry.host == host:
                    return rule, entry, None
        for rule in self.rules:
            for entry in rule.hosts:
                label = entry.label_of(host)
                if label is not None:
                    return rule, entry, label
        return None
