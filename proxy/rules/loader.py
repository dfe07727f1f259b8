"""Read rule files into a validated RuleSet, or fail naming file, key and value.

Every check a request would otherwise trip over happens here, once: unknown
keys, wrong types, bad patterns, headers that must never pass, clashing mounts
and hosts claimed by two rules.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .. import headers as policy
from ..errors import ConfigError
from ..rewrite.shim import js_label_pattern
from .model import (
    DNS_LABEL,
    CacheMode,
    Durable,
    EnvelopeTunnel,
    ExtraRewrite,
    IpPassing,
    IpVia,
    NameMatcher,
    PathMatcher,
    RelayRoute,
    RequestPolicy,
    ResponsePolicy,
    Route,
    Rule,
    RuleSet,
    ScriptGuard,
    ScriptRoute,
    TagIdPlace,
    Timeouts,
    UpstreamHost,
    WebSocketLimits,
)
from .variables import RuleVariables, VariableError, substitute

if TYPE_CHECKING:
    from ..privacy.model import PrivacyPolicy

T = TypeVar("T")

MOUNT: Final = re.compile(r"/[a-z0-9][a-z0-9_.-]{0,62}")
HOST_PATH: Final = re.compile(r"(?:/[a-z0-9][a-z0-9_.-]*)*")
VENDOR_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")
HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
COOKIE_PATTERN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
SIZE: Final = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
DEFAULT_STALE_IF_ERROR: Final = 86400.0
RESERVED_MOUNTS: Final = frozenset({"/_tagproxy"})
PROJECT_ID: Final = re.compile(r"[0-9]{1,20}")
CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers that frame, route or authenticate the request: a visitor address
# written into one would break the request or pose as a credential.
NOT_FOR_ADDRESSES: Final = policy.HOP_BY_HOP | frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
    }
)

_DURATION_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS: Final = {
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


FILE_KEY: Final = "(file)"  # the key of problems with a file as a whole


class RuleError(ConfigError):
    """A rule file that cannot be used, with where and why."""

    def __init__(self, source: Path, key: str, value: object, reason: str) -> None:
        self.source, self.key, self.value, self.reason = source, key, value, reason
        if key == FILE_KEY:
            super().__init__(f"{source}: {reason}")
        else:
            super().__init__(f"{source}: {key} = {value!r}: {reason}")


class Table:
    """A TOML table being read: every key taken is ticked off, leftovers are errors."""

    def __init__(self, source: Path, path: str, data: Mapping[str, Any]) -> None:
        self.source, self.path, self.data = source, path, data
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, value: object, reason: str) -> RuleError:
        return RuleError(self.source, self.key(name), value, reason)

    def get(self, name: str, kind: type[T], default: T | None = None) -> T:
        self._seen.add(name)
        if name not in self.data:
            if default is None:
                raise self.fail(name, None, "is required")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(name, value, f"must be a {_type_word(kind)}")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = self.get(name, list, list(default))
        for item in values:
            if not isinstance(item, str):
                raise self.fail(name, values, "must be a list of strings")
        return tuple(values)

    def string_map(self, name: str) -> dict[str, str]:
        values = self.get(name, dict, {})
        for key, item in values.items():
            if not isinstance(item, str):
                raise self.fail(f"{name}.{key}", item, "must be a string")
        return dict(values)

    def table(self, name: str) -> Table:
        return Table(self.source, self.key(name), self.get(name, dict, {}))

    def tables(self, name: str) -> list[Table]:
        items = self.get(name, list, [])
        out = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.fail(name, item, "must be an array of tables ([[...]])")
            out.append(Table(self.source, f"{self.key(name)}[{index}]", item))
        return out

    def duration(self, name: str, default: float) -> float:
        raw = self.get(name, (str, int, float), default)  # type: ignore[arg-type]
        return parse_duration(raw, lambda why: self.fail(name, raw, why))

    def size(self, name: str, default: int) -> int:
        raw = self.get(name, (str, int), default)  # type: ignore[arg-type]
        return parse_size(raw, lambda why: self.fail(name, raw, why))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            name = unknown[0]
            raise self.fail(name, self.data[name], "unknown key (misspelt?)")


_TYPE_WORDS: Final[dict[object, str]] = {
    str: "string",
    int: "whole number",
    float: "number",
    bool: "boolean (true/false)",
    list: "list",
    dict: "table",
}


def _type_word(kind: object) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TYPE_WORDS.get(k, str(k)) for k in kinds)


def parse_duration(raw: object, fail: Callable[[str], Exception]) -> float:
    """Seconds from `10`, `2.5`, `"250ms"`, `"10s"`, `"5m"`, `"6h"` or `"1d"`."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    else:
        match = DURATION.fullmatch(str(raw).strip())
        if match is None:
            raise fail('must be a duration such as 10, "250ms", "10s", "5m" or "6h"')
        seconds = float(match[1]) * _DURATION_UNITS[match[2] or "s"]
    if not math.isfinite(seconds):
        raise fail("must be a finite duration")
    if seconds < 0:
        raise fail("must not be negative")
    return seconds


def parse_size(raw: object, fail: Callable[[str], Exception]) -> int:
    """Bytes from `65536`, `"64KiB"`, `"5MiB"` or `"1MB"`."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if raw >= 0 else _raise(fail("must not be negative"))
    match = SIZE.fullmatch(str(raw).strip())
    if match is None:
        raise fail('must be a size such as 65536, "64KiB" or "5MiB"')
    return int(match[1]) * _SIZE_UNITS[match[2] or "B"]


def _raise(exc: Exception) -> int:
    raise exc


# --- one file ----------------------------------------------------------------


def load_rule(source: Path, variables: RuleVariables | None = None) -> Rule:
    """Parse and validate one rule file, its `${variables}` filled in first."""
    try:
        # utf-8-sig: editors on Windows start UTF-8 files with a byte-order mark.
        data = tomllib.loads(source.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(source, FILE_KEY, None, f"not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(source, FILE_KEY, None, f"cannot be read: {exc}") from exc
    try:
        data, declared = substitute(source, data, variables or RuleVariables())
    except VariableError as exc:
        raise RuleError(source, exc.key, exc.value, exc.reason) from exc
    return dataclasses.replace(_rule(Table(source, "", data)), variables=declared)


def _rule(top: Table) -> Rule:
    vendor = top.get("vendor", str)
    if VENDOR_ID.fullmatch(vendor) is None:
        raise top.fail("vendor", vendor, "must be lower-case letters, digits, - or _")
    name = top.get("name", str, vendor)
    mount = top.get("mount", str)
    if MOUNT.fullmatch(mount) is None or mount in RESERVED_MOUNTS:
        raise top.fail("mount", mount, 'must be one path segment such as "/ga"')

    hosts = _hosts(top)
    scripts = tuple(_script(t, hosts) for t in top.tables("scripts"))
    relays = tuple(_relay(t, hosts) for t in top.tables("relays"))
    if not scripts and not relays:
        raise top.fail("scripts", [], "a rule needs at least one script or relay")
    rewrites = tuple(_rewrite(t) for t in top.tables("rewrites"))
    _check_guards(top, scripts, {r.name for r in rewrites})
    shim = top.get("shim", bool, False)
    keep_literals = tuple(h.lower() for h in top.strings("keep_literals"))
    for host in keep_literals:
        if not _valid_host(host):
            raise top.fail("keep_literals", host, "must be a DNS name or *.suffix")
    if keep_literals and not shim:
        raise top.fail(
            "keep_literals",
            list(keep_literals),
            "literals left alone need shim = true to reach tagproxy",
        )
    request = _request(top.table("request"))
    response = _response(top.table("response"), request)
    privacy = _privacy(top.table("privacy"), hosts, request)
    top.done()

    by_host: dict[str, list[Route]] = {}
    routes: list[Route] = [*scripts, *relays]
    for route in routes:
        by_host.setdefault(route.host.host, []).append(route)
    return Rule(
        vendor=vendor,
        name=name,
        source=top.source,
        mount=mount,
        hosts=hosts,
        scripts=scripts,
        relays=relays,
        rewrites=rewrites,
        request=request,
        response=response,
        shim=shim,
        keep_literals=keep_literals,
        routes_by_host={h: tuple(r) for h, r in by_host.items()},
        privacy=privacy,
    )


def _privacy(
    table: Table, hosts: tuple[UpstreamHost, ...], request: RequestPolicy
) -> PrivacyPolicy:
    # Imported here: the privacy package builds on this module's Table.
    from ..privacy.parse import parse_privacy

    return parse_privacy(table, hosts, request)


def _hosts(top: Table) -> tuple[UpstreamHost, ...]:
    entries = top.tables("hosts")
    if not entries:
        raise top.fail("hosts", [], "a rule needs at least one [[hosts]] entry")
    hosts: list[UpstreamHost] = []
    for table in entries:
        host = _host(table)
        if host.host in (h.host for h in hosts):
            raise table.fail("host", host.host, "listed twice in this rule")
        clash = [h for h in hosts if h.prefix == host.prefix and h.is_pattern]
        if clash or (host.is_pattern and host.prefix in (h.prefix for h in hosts)):
            other = (clash or [h for h in hosts if h.prefix == host.prefix])[0]
            raise table.fail("path", host.prefix, f"already used by host {other.host}")
        hosts.append(host)
    return tuple(hosts)


def _host(table: Table) -> UpstreamHost:
    host = table.get("host", str).lower()
    if not _valid_host(host):
        raise table.fail("host", host, 'must be a DNS name or "*.suffix" pattern')
    prefix = table.get("path", str, "")
    if prefix == "/":
        prefix = ""
    if HOST_PATH.fullmatch(prefix) is None:
        raise table.fail("path", prefix, 'must be "" or like "/ga" (no trailing /)')

    label = None
    raw_label = table.get("label", str, "")
    if raw_label:
        if not host.startswith("*."):
            raise table.fail("label", raw_label, 'only for "*." host patterns')
        label = _compile(table, "label", raw_label, re.IGNORECASE)
        try:
            # The runtime shim checks labels in the browser with this regex.
            js_label_pattern(raw_label)
        except ValueError as exc:
            raise table.fail("label", raw_label, str(exc)) from None
    if host.startswith("*.") and not prefix:
        raise table.fail("path", prefix, "a pattern host needs its own path")
    scheme = table.get("scheme", str, "https")
    if scheme not in ("https", "http"):
        raise table.fail("scheme", scheme, 'must be "https" or "http"')
    bare = table.get("bare", bool, False)
    table.done()
    return UpstreamHost(host, prefix, label, bare, scheme)


def _valid_host(host: str) -> bool:
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if len(labels) < 2 or labels[-1].isdigit():
        return False  # IP literals and single labels are never vendor hosts
    return all(DNS_LABEL.fullmatch(label) for label in labels)


def _compile(table: Table, key: str, raw: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(raw, flags)
    except re.error as exc:
        raise table.fail(key, raw, f"not a valid regular expression: {exc}") from exc


def _route_host(table: Table, hosts: tuple[UpstreamHost, ...]) -> UpstreamHost:
    name = table.get("host", str).lower()
    for host in hosts:
        if host.host == name:
            return host
    known = ", ".join(h.host for h in hosts)
    raise table.fail("host", name, f"not one of this rule's [[hosts]] ({known})")


def _paths(table: Table) -> PathMatcher:
    paths = table.strings("paths")
    if not paths:
        raise table.fail("paths", [], "must list at least one upstream path")
    for path in paths:
        if not path.startswith("/") or "?" in path or "#" in path:
            raise table.fail("paths", path, 'must start with "/" and hold no query')
    return PathMatcher.of(paths)


def _timeouts(table: Table, connect: float, total: float) -> Timeouts:
    timeouts = Timeouts(
        connect=table.duration("connect_timeout", connect),
        total=table.duration("timeout", total),
    )
    if timeouts.total <= 0 or timeouts.connect <= 0:
        raise table.fail("timeout", timeouts.total, "must be more than zero")
    return timeouts


def _script(table: Table, hosts: tuple[UpstreamHost, ...]) -> ScriptRoute:
    host = _route_host(table, hosts)
    paths = _paths(table)
    raw_cache = table.get("cache", str, "shared")
    try:
        cache = CacheMode(raw_cache)
    except ValueError:
        allowed = ", ".join(m.value for m in CacheMode)
        raise table.fail("cache", raw_cache, f"must be one of {allowed}") from None
    ttl = table.duration("ttl", 3600)
    route = ScriptRoute(
        host=host,
        paths=paths,
        cache=cache,
        ttl=ttl,
        query=frozenset(table.strings("query")),
        cache_control=table.get("cache_control", str, "") or None,
        timeouts=_timeouts(table, connect=5, total=15),
        tag_id=_tag_id(table, relay=False),
        # By default a script may be served as long again as its TTL while
        # one request refreshes it, and for a day while the vendor fails.
        stale_while_revalidate=table.duration("stale_while_revalidate", ttl),
        stale_if_error=table.duration("stale_if_error", DEFAULT_STALE_IF_ERROR),
        guard=_guard(table),
    )
    table.done()
    return route


def _guard(table: Table) -> ScriptGuard | None:
    if "guard" not in table.data:
        return None
    guard = table.table("guard")
    contains = guard.strings("contains")
    if any(not text for text in contains):
        raise guard.fail("contains", list(contains), "strings must not be empty")
    result = ScriptGuard(
        contains=tuple(text.encode() for text in contains),
        min_size=guard.size("min_size", 0),
        min_rewrites=guard.get("min_rewrites", int, 0),
        rewrites=guard.strings("rewrites"),
    )
    guard.done()
    if result.min_rewrites < 0:
        raise guard.fail("min_rewrites", result.min_rewrites, "must not be negative")
    return result


def _check_guards(
    top: Table, scripts: tuple[ScriptRoute, ...], names: set[str]
) -> None:
    for index, route in enumerate(scripts):
        for name in route.guard.rewrites if route.guard else ():
            if name not in names:
                known = ", ".join(sorted(names)) or "none"
                raise RuleError(
                    top.source,
                    f"scripts[{index}].guard.rewrites",
                    name,
                    f"no [[rewrites]] entry has this name (known: {known})",
                )


def _relay(table: Table, hosts: tuple[UpstreamHost, ...]) -> RelayRoute:
    host = _route_host(table, hosts)
    paths = _paths(table)
    websocket = _websocket(table)
    if websocket is not None:
        return _websocket_relay(table, host, paths, websocket)
    methods = frozenset(m.upper() for m in table.strings("methods", ("GET", "POST")))
    if not methods:
        raise table.fail("methods", [], 'must list at least one method, e.g. ["POST"]')
    unknown = methods - policy.RELAY_METHODS
    if unknown:
        allowed = ", ".join(sorted(policy.RELAY_METHODS))
        raise table.fail("methods", sorted(unknown), f"allowed methods: {allowed}")
    if "GET" in methods:
        methods |= {"HEAD"}
    route = RelayRoute(
        host=host,
        paths=paths,
        methods=methods | {"OPTIONS"},
        max_body=table.size("max_body", 64 * 1024),
        timeouts=_timeouts(table, connect=5, total=10),
        envelope=_envelope(table, host),
        durable=_durable(table) if "durable" in table.data else None,
        tag_id=_tag_id(table, relay=True),
    )
    table.done()
    return route


def _tag_id(table: Table, relay: bool) -> TagIdPlace | None:
    if "tag_id" not in table.data:
        return None
    place = table.table("tag_id")
    query = place.get("query", str, "") or None
    segment = place.get("segment", int, 0) or None
    member = place.get("json", str, "") or None
    place.done()
    if [query, segment, member].count(None) != 2:
        raise table.fail(
            "tag_id",
            table.data["tag_id"],
            'give one of { query = "id" }, { segment = 3 } or { json = "d" }',
        )
    if segment is not None and not 1 <= segment <= 32:
        raise place.fail("segment", segment, "a path segment number from 1")
    if member is not None and (not relay or not all(member.split("."))):
        why = 'a dotted member path like "payload.id", on relays only'
        raise place.fail("json", member, why)
    return TagIdPlace(query, segment, member)


_WEBSOCKET_ONLY: Final = ("max_message", "idle_timeout", "max_connections")
_NOT_WEBSOCKET: Final = {
    "max_body": "a websocket relay limits each message with max_message",
    "envelope": "an envelope tunnel is not a websocket relay",
    "durable": "a websocket relay has no beacons to spool",
}


def _websocket(table: Table) -> WebSocketLimits | None:
    """A websocket relay's limits, or None for a relay of plain requests."""
    if not table.get("websocket", bool, False):
        for key in _WEBSOCKET_ONLY:
            if key in table.data:
                raise table.fail(key, table.data[key], "only with websocket = true")
        return None
    for key, why in _NOT_WEBSOCKET.items():
        if key in table.data:
            raise table.fail(key, table.data[key], why)
    limits = WebSocketLimits(
        max_message=table.size("max_message", 1024 * 1024),
        idle_timeout=table.duration("idle_timeout", 300),
        max_connections=table.get("max_connections", int, 10_000),
    )
    for key in _WEBSOCKET_ONLY:
        if getattr(limits, key) <= 0:
            raise table.fail(key, table.data.get(key), "must be more than zero")
    return limits


def _websocket_relay(
    table: Table, host: UpstreamHost, paths: PathMatcher, limits: WebSocketLimits
) -> RelayRoute:
    methods = [m.upper() for m in table.strings("methods", ("GET",))]
    if methods != ["GET"]:
        raise table.fail(
            "methods", methods, 'a websocket relay takes ["GET"] (the upgrade) only'
        )
    route = RelayRoute(
        host=host,
        paths=paths,
        methods=frozenset({"GET"}),
        max_body=0,
        timeouts=_timeouts(table, connect=5, total=10),
        kind="websocket",
        websocket=limits,
        tag_id=_tag_id(table, relay=False),  # an upgrade has no body to read
    )
    table.done()
    return route


def _envelope(table: Table, host: UpstreamHost) -> EnvelopeTunnel | None:
    if "envelope" not in table.data:
        return None
    tunnel = table.table("envelope")
    projects = tunnel.strings("projects")
    if not projects or not all(PROJECT_ID.fullmatch(p) for p in projects):
        raise tunnel.fail("projects", list(projects), 'list project IDs, e.g. ["1"]')
    if host.is_pattern:
        raise table.fail("host", host.host, "an envelope tunnel needs a concrete host")
    tunnel.done()
    return EnvelopeTunnel(frozenset(projects))


def _durable(relay: Table) -> Durable:
    """`[relays.durable]`: answer from the spool, deliver in the background."""
    table = relay.table("durable")
    status = table.get("status", int, 204)
    if not 200 <= status <= 299:
        raise table.fail(
            "status", status, "must be a 2xx status (the beacon is accepted)"
        )
    body = table.get("body", str, "")
    if body and status in (204, 205):
        raise table.fail("body", body, f"a {status} answer has no body")
    content_type = table.get("content_type", str, "text/plain" if body else "")
    durable = Durable(
        status=status,
        body=body.encode(),
        content_type=content_type or None,
        max_age=table.duration("max_age", 24 * 3600),
        retry_initial=table.duration("retry_initial", 1),
        retry_max=table.duration("retry_max", 300),
    )
    if durable.max_age <= 0:
        raise table.fail("max_age", durable.max_age, "must be more than zero")
    if durable.retry_initial <= 0:
        raise table.fail(
            "retry_initial", durable.retry_initial, "must be more than zero"
        )
    if durable.retry_max < durable.retry_initial:
        raise table.fail(
            "retry_max", durable.retry_max, "must not be less than retry_initial"
        )
    table.done()
    return durable


def _rewrite(table: Table) -> ExtraRewrite:
    name = table.get("name", str)
    literal = table.get("find", str, "")
    pattern = table.get("pattern", str, "")
    if bool(literal) == bool(pattern):
        raise table.fail(
            "find", literal or None, 'give exactly one of "find" or "pattern"'
        )
    if literal:
        # A literal names a whole string's content, so "/api/event" never
        # matches inside a URL that host rewriting has already made ours.
        quoted = re.escape(literal.encode())
        find = re.compile(rb"(?<=[\"'`])" + quoted + rb"(?=[\"'`])")
    else:
        find = re.compile(_compile(table, "pattern", pattern).pattern.encode())
    replace = table.get("replace", str)
    try:
        replace.format(mount_url="", mount_path="", public_url="")
    except (KeyError, IndexError, ValueError) as exc:
        why = "placeholders are {mount_url}, {mount_path} and {public_url}"
        raise table.fail("replace", replace, f"{why} ({exc})") from None
    table.done()
    return ExtraRewrite(name, find, replace)


def _header_names(table: Table, key: str) -> tuple[str, ...]:
    names = tuple(n.lower() for n in table.strings(key))
    for name in names:
        if HEADER_NAME.fullmatch(name.rstrip("*")) is None:
            raise table.fail(key, name, "not a valid header name")
    return names


def _header_map(table: Table, key: str) -> dict[str, str]:
    """Header names and values a rule sets: each must make one valid line."""
    headers = table.string_map(key)
    for name, value in headers.items():
        if HEADER_NAME.fullmatch(name) is None:
            raise table.fail(f"{key}.{name}", value, "not a valid header name")
        if CONTROL.search(value):
            raise table.fail(
                f"{key}.{name}",
                value,
                "holds a control character (CR, LF, ...); a header value is one line",
            )
    return headers


def _request(table: Table) -> RequestPolicy:
    extra = _header_names(table, "headers")
    dropped = set(_header_names(table, "drop_headers"))
    for name in extra:
        why = policy.never_forwarded(name.rstrip("*"))
        if why:
            raise table.fail("headers", name, why)
    allowed = [n for n in (*policy.DEFAULT_REQUEST_HEADERS, *extra) if n not in dropped]
    set_headers = _header_map(table, "set_headers")
    for name in set_headers:
        why = policy.never_forwarded(name.lower())
        if why:
            raise table.fail(f"set_headers.{name}", set_headers[name], why)

    result = RequestPolicy(
        headers=frozenset(n for n in allowed if not n.endswith("*")),
        header_prefixes=tuple(n[:-1] for n in allowed if n.endswith("*")),
        set_headers=tuple(set_headers.items()),
        cookies=_cookie_names(table, "cookies"),
        drop_query=frozenset(table.strings("drop_query")),
        set_query=tuple(table.string_map("set_query").items()),
        rename_query=table.string_map("rename_query"),
        client_ip=_client_ip(table),
        geo_headers=_geo_headers(table),
    )
    table.done()
    return result


def _geo_headers(table: Table) -> tuple[str, ...]:
    names = table.strings("geo_headers")
    for name in names:
        why = policy.never_forwarded(name.lower())
        if HEADER_NAME.fullmatch(name) is None or why:
            raise table.fail("geo_headers", name, why or "not a valid header name")
    return names


def _cookie_names(table: Table, key: str, default: Iterable[str] = ()) -> NameMatcher:
    names = table.strings(key, tuple(default))
    for name in names:
        if COOKIE_PATTERN.fullmatch(name) is None:
            raise table.fail(key, name, "not a cookie name (wildcard: *)")
        if not name.strip("*"):
            raise table.fail(
                key,
                name,
                "names every cookie, the site's own sessions included; "
                'list the vendor\'s cookies, e.g. "_ga" or "_ga_*"',
            )
    return NameMatcher.of(names)


def _client_ip(table: Table) -> tuple[IpPassing, ...]:
    default = [{"header": "X-Forwarded-For"}]
    items = table.get("client_ip", list, default)
    out = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise table.fail("client_ip", item, 'each entry is like { header = "X" }')
        ((via_name, name),) = item.items()
        try:
            via = IpVia(via_name)
        except ValueError:
            allowed = ", ".join(v.value for v in IpVia)
            raise table.fail("client_ip", item, f"ways are: {allowed}") from None
        if not isinstance(name, str) or not name:
            raise table.fail("client_ip", item, "needs a non-empty name")
        if via is IpVia.HEADER:
            _address_header(table, item, name)
        if via is IpVia.JSON_BODY and not all(name.split(".")):
            raise table.fail(
                "client_ip", item, 'a dotted member path like "payload.ip"'
            )
        out.append(IpPassing(via, name))
    return tuple(out)


def _address_header(table: Table, item: object, name: str) -> None:
    if HEADER_NAME.fullmatch(name) is None:
        raise table.fail("client_ip", item, "not a valid header name")
    if name.lower() in NOT_FOR_ADDRESSES:
        raise table.fail(
            "client_ip",
            item,
            f"{name} cannot carry the visitor's address; use a header such as "
            "X-Forwarded-For or X-Real-IP",
        )


def _response(table: Table, request: RequestPolicy) -> ResponsePolicy:
    result = ResponsePolicy(
        drop_headers=frozenset(_header_names(table, "drop_headers")),
        set_headers=tuple(_header_map(table, "set_headers").items()),
        cookies=_cookie_names(table, "cookies", request.cookies.patterns),
    )
    table.done()
    return result


# --- a directory -------------------------------------------------------------


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The .toml files named, or found directly in the directories named."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        elif path.exists():
            files.append(path)
        else:
            raise RuleError(
                path,
                FILE_KEY,
                None,
                f"no such rule file or directory (looked for {path.absolute()})",
            )
    return files


def load_rules(
    paths: Iterable[Path], variables: RuleVariables | None = None
) -> RuleSet:
    """Load every rule file named (or in the directories named) into a RuleSet."""
    files = rule_files(paths)
    if not files:
        raise ConfigError(f"no rule files (*.toml) in {', '.join(map(str, paths))}")
    variables = variables or RuleVariables()
    rules = build_rule_set([load_rule(f, variables) for f in files])
    variables.check_all_declared(v for rule in rules.rules for v in rule.variables)
    return rules


def build_rule_set(rules: list[Rule]) -> RuleSet:
    """Join rules, refusing clashing vendors, mounts and hosts across files."""
    by_mount: dict[str, Rule] = {}
    by_vendor: dict[str, Rule] = {}
    host_owner: dict[str, Rule] = {}
    for rule in rules:
        if rule.vendor in by_vendor:
            other = by_vendor[rule.vendor].source
            raise RuleError(rule.source, "vendor", rule.vendor, f"also in {other}")
        if rule.mount in by_mount:
            other = by_mount[rule.mount].source
            raise RuleError(rule.source, "mount", rule.mount, f"also used by {other}")
        for host in rule.hosts:
            if host.host in host_owner:
                other = host_owner[host.host].source
                raise RuleError(
                    rule.source, "hosts.host", host.host, f"also in {other}"
                )
            host_owner[host.host] = rule
        by_mount[rule.mount] = rule
        by_vendor[rule.vendor] = rule
    return RuleSet(tuple(rules), by_mount, by_vendor)
