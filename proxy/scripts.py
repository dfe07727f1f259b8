"""Script routes: fetch a vendor script, rewrite it to first-party, cache, serve.

A cache entry holds the rewritten body once per encoding (identity, gzip,
brotli), compressed once at fill time, so a cache hit costs a dict look-up and
a write. One fill per key runs at a time; concurrent requests wait for it.

A vendor outage must not take the tags down: past its TTL a script is served
stale while one background fetch refreshes it (stale-while-revalidate), and
while the vendor fails (stale-if-error). A fetched script that no longer fits
its rule (scriptguard) never replaces the last one that did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import hashlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_plus

import brotli
from aiohttp import web
from cachetools import LRUCache
from multidict import CIMultiDict
from yarl import URL

from . import exchange, metrics
from . import headers as h
from .background import TaskSet
from .errors import UpstreamError
from .geo import Geo, set_geo_headers
from .http1 import ClientError, Response
from .rewrite import (
    BodyKind,
    ExtraRewrite,
    HostTarget,
    Rewriter,
    RewriteResult,
    kind_for_content_type,
)
from .rewrite.shim import shim_prelude
from .routing import Router, Target, mount_path, mount_url
from .rules import CacheMode, Rule, RuleSet, ScriptRoute
from .scriptguard import GuardFailure, check_script, report
from .upstream import Upstream, translate

log = logging.getLogger(__name__)

MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024
_COMPRESSIBLE_MIN: Final = 256
_ENCODED_SUFFIX: Final = {"gzip": "-gz", "br": "-br", "identity": ""}
# After a fetch fails its rule's guard with no good copy to fall back on,
# how soon to fetch again rather than wait out the whole TTL.
GUARD_RETRY: Final = 60.0

CacheKey = tuple[str, str, str]  # public URL, upstream URL, variant (geo)


@dataclass(frozen=True, slots=True)
class Script:
    """A served script body in every encoding, with what the browser is told."""

    status: int
    identity: bytes
    gzip: bytes | None
    br: bytes | None
    etag: str  # unquoted hash of the identity body
    content_type: str
    cache_control: str
    vary: str
    expires: float
    rewrites: int
    kept_original: bool
    guard_failure: GuardFailure | None = None  # None: it fits its rule
    # Response headers by encoding (and 304 or not), built on first use.
    _answers: dict[tuple[str, bool], CIMultiDict[str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def headers(self) -> CIMultiDict[str]:
        """What every answer with this script says about it."""
        return CIMultiDict(
            (
                (h.CONTENT_TYPE, self.content_type),
                (h.CACHE_CONTROL, self.cache_control),
                (h.VARY, self.vary),
            )
        )

    def answer_headers(
        self, encoding: str, not_modified: bool = False
    ) -> CIMultiDict[str]:
        """The headers of a 200 (or 304) answer in `encoding`; not to be edited."""
        headers = self._answers.get((encoding, not_modified))
        if headers is None:
            headers = self.headers
            headers[h.ETAG] = self.etag_for(encoding)
            if encoding != "identity" and not not_modified:
                headers[h.CONTENT_ENCODING] = encoding
            self._answers[(encoding, not_modified)] = headers
        return headers

    @property
    def size(self) -> int:
        return len(self.identity) + len(self.gzip or b"") + len(self.br or b"")

    def etag_for(self, encoding: str) -> str:
        return f'"{self.etag}{_ENCODED_SUFFIX[encoding]}"'

    def body_for(self, encoding: str) -> bytes:
        if encoding == "br" and self.br is not None:
            return self.br
        if encoding == "gzip" and self.gzip is not None:
            return self.gzip
        return self.identity


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long past its TTL a route's script may serve, and whose it is."""

    rule: Rule
    where: str  # upstream host and path, for log lines
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


class ScriptCache:
    """An LRU of scripts bounded by bytes, with one fill in flight per key."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._entries: LRUCache[CacheKey, Script] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda s: s.size
        )
        self._fills: dict[CacheKey, asyncio.Future[Script]] = {}
        self._refreshes = TaskSet("script refresh")

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: CacheKey) -> Script | None:
        """The entry for `key` if it is within its TTL: a hit, and nothing more."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires > time.monotonic():
            return entry
        return None

    async def get(
        self,
        key: CacheKey,
        fill: Callable[[], Awaitable[Script]],
        freshness: Freshness | None = None,
    ) -> tuple[Script, str]:
        """The entry for `key` and how it was had.

        hit, miss or wait (for another request's fill); stale (past its TTL,
        a refresh started), stale-error (the vendor failed), guard (the
        fetched script failed its rule; the last good one served).
        """
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            return entry, "hit"
        revalidating = freshness.stale_while_revalidate if freshness else 0.0
        if entry is not None and now < entry.expires + revalidating:
            assert freshness is not None
            self._refresh(key, fill, freshness)
            metrics.stale_served(freshness.rule.vendor, "revalidating")
            return entry, "stale"
        try:
            pending = self._fills.get(key)
            if pending is not None:
                return await asyncio.shield(pending), "wait"
            future = self._begin(key)
            return await self._complete(key, future, fill, freshness)
        except UpstreamError as exc:
            if freshness is None or entry is None:
                raise
            if now >= entry.expires + freshness.stale_if_error:
                raise
            log.warning(
                "%s: %s; serving the copy cached %.0f s past its TTL",
                freshness.where,
                exc.reason,
                now - entry.expires,
            )
            metrics.upstream_error(freshness.rule.vendor, exc.kind)
            metrics.stale_served(freshness.rule.vendor, "upstream_error")
            return entry, "stale-error"

    def _begin(self, key: CacheKey) -> asyncio.Future[Script]:
        future: asyncio.Future[Script] = asyncio.get_running_loop().create_future()
        # Waiters read the outcome; when nobody waits, reading it here keeps
        # asyncio from reporting an exception as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._fills[key] = future
        return future

    async def _complete(
        self,
        key: CacheKey,
        future: asyncio.Future[Script],
        fill: Callable[[], Awaitable[Script]],
        freshness: Freshness | None,
    ) -> tuple[Script, str]:
        try:
            fetched = await fill()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._fills[key]
        entry, how = self._store(key, fetched, freshness)
        future.set_result(entry)
        return entry, how

    def _store(
        self, key: CacheKey, fetched: Script, freshness: Freshness | None
    ) -> tuple[Script, str]:
        if fetched.status != 200 or fetched.size > self._entries.maxsize:
            return fetched, "miss"
        failure = fetched.guard_failure
        if failure is None:
            self._entries[key] = fetched
            return fetched, "miss"

        previous = self._entries.get(key)
        last_good = previous if previous and previous.guard_failure is None else None
        if freshness is not None:
            report(failure, freshness.rule, freshness.where, last_good is not None)
        if last_good is not None:
            # Checked again after a TTL, in case the vendor changes it back
            # or the operator updates the rule.
            kept = dataclasses.replace(last_good, expires=fetched.expires)
            self._entries[key] = kept
            if freshness is not None:
                metrics.stale_served(freshness.rule.vendor, "guard")
            return kept, "guard"
        retry = min(fetched.expires, time.monotonic() + GUARD_RETRY)
        self._entries[key] = dataclasses.replace(fetched, expires=retry)
        return fetched, "miss"

    def _refresh(
        self,
        key: CacheKey,
        fill: Callable[[], Awaitable[Script]],
        freshness: Freshness,
    ) -> None:
        if key in self._fills:
            return  # one refresh per key at a time
        future = self._begin(key)

        async def refresh() -> None:
            try:
                await self._complete(key, future, fill, freshness)
            except UpstreamError as exc:
                log.warning(
                    "%s: refresh failed (%s); the cached copy stays",
                    freshness.where,
                    exc.reason,
                )
                metrics.upstream_error(freshness.rule.vendor, exc.kind)

        self._refreshes.spawn(refresh(), freshness.where)

    async def close(self) -> None:
        """Stop refreshes still running (the upstream client is closing)."""
        await self._refreshes.cancel()

    def clear(self) -> None:
        self._entries.clear()


class Rewriters:
    """One compiled Rewriter (and shim prelude) per (public URL, vendor)."""

    def __init__(self, rules: RuleSet, limit: int = 64) -> None:
        self.rules = rules
        self._built: LRUCache[tuple[str, str], tuple[Rewriter, bytes]] = LRUCache(
            maxsize=limit
        )

    def get(self, public_url: URL, vendor: Rule) -> tuple[Rewriter, bytes]:
        key = (str(public_url), vendor.vendor)
        built = self._built.get(key)
        if built is None:
            built = (build_rewriter(self.rules, public_url, vendor), b"")
            if vendor.shim:
                prelude = shim_prelude(host_targets(self.rules, public_url))
                built = (built[0], prelude)
            self._built[key] = built
        return built


def build_rewriter(rules: RuleSet, public_url: URL, vendor: Rule) -> Rewriter:
    """Every host of every loaded rule, plus this vendor's own quirks.

    Rewriting all loaded vendors' hosts in every script is what keeps a tag
    manager container that embeds other vendors' loaders first-party. Hosts
    the vendor checks its own origin against are left to the runtime shim.
    """
    keep = set(vendor.keep_literals)
    targets = [t for t in host_targets(rules, public_url) if t.host not in keep]
    places = {
        "mount_url": mount_url(public_url, vendor),
        "mount_path": mount_path(public_url, vendor),
        "public_url": str(public_url).rstrip("/"),
    }
    extras = [
        ExtraRewrite(
            name=f"{vendor.vendor}:{extra.name}",
            find=extra.find,
            replace=extra.replace.format(**places).encode(),
        )
        for extra in vendor.rewrites
    ]
    return Rewriter(targets, extras)


def host_targets(rules: RuleSet, public_url: URL) -> list[HostTarget]:
    """Where each vendor host lives first-party under this public URL."""
    targets = []
    for rule in rules.rules:
        base = mount_url(public_url, rule)
        for host in rule.hosts:
            label = "/{label}" if host.is_pattern else ""
            targets.append(
                HostTarget(
                    host=host.host,
                    base_url=base + host.prefix + label,
                    label=host.label.pattern if host.label else None,
                    bare=host.bare,
                    paths=tuple(
                        p for r in rule.routes_for(host) for p in r.paths.patterns
                    ),
                )
            )
    return targets


# --- fetching and building an entry ------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    """What a fill needs from the visitor's request."""

    target: Target
    public_url: URL
    user_agent: str | None
    accept_language: str | None
    visitor_ip: str | None  # only when the body may depend on it
    geo: Geo | None = None  # likewise


def kept_query(raw_query: str, keep: frozenset[str]) -> str:
    """The raw query with only the parameters the rule keeps, in their order."""
    if not raw_query:
        return ""
    pieces = [p for p in raw_query.split("&") if _param_name(p) in keep]
    return "&".join(pieces)


def _param_name(piece: str) -> str:
    return unquote_plus(piece.partition("=")[0])


async def fetch_script(
    upstream: Upstream, rewriters: Rewriters, request: ScriptRequest
) -> Script:
    target = request.target
    route = target.route
    assert isinstance(route, ScriptRoute)
    query = kept_query(target.query, route.query)
    path_query = target.path + (f"?{query}" if query else "")
    prepared = upstream.prepare(target.host.scheme, target.upstream_host, path_query)

    headers = CIMultiDict({h.ACCEPT_ENCODING: "gzip, br", "Accept": "*/*"})
    if request.user_agent is not None:
        headers[h.USER_AGENT] = request.user_agent
    if request.accept_language is not None:
        headers["Accept-Language"] = request.accept_language
    if request.visitor_ip is not None:
        headers[h.X_FORWARDED_FOR] = request.visitor_ip
    set_geo_headers(headers, target.rule.request.geo_headers, request.geo)

    response = await upstream.request("GET", prepared, headers, None, route.timeouts)
    record = exchange.current()
    if record is not None:
        record[exchange.UPSTREAM_STATUS] = response.status
    async with response:
        if response.status >= 500:
            raise UpstreamError(
                f"upstream {target.upstream_host} answered {response.status}",
                kind="bad_status",
            )
        if response.status in (301, 302, 303, 307, 308):
            raise UpstreamError(
                f"upstream {target.upstream_host} redirected a script; not followed",
                kind="redirect",
            )
        raw = await _read_capped(response, target.upstream_host)
        encoding = response.headers.get(h.CONTENT_ENCODING, "identity")
        upstream_headers = response.headers.copy()
        status = response.status

    body = decode_body(raw, encoding, target.upstream_host)
    content_type = upstream_headers.get(h.CONTENT_TYPE, _guess_type(target.path))
    result = RewriteResult(body, {})
    failure = None
    if status == 200:
        kind = kind_for_content_type(content_type)
        rewriter, prelude = rewriters.get(request.public_url, target.rule)
        if kind is not None:
            result = await asyncio.to_thread(rewriter.rewrite, body, kind)
        # A rewrite that would break the script keeps the original body; the
        # guard then treats it like any other script that no longer fits.
        broken = result.reason if result.kept_original else None
        failure = check_script(
            route.guard, body, result.replacements, broken, target.rule.vendor
        )
        if kind is BodyKind.JS and prelude:
            # Prepended after rewriting: the shim's own host map must stay.
            result = dataclasses.replace(result, body=prelude + b"\n" + result.body)
    return await asyncio.to_thread(
        make_script,
        status,
        result.body,
        content_type,
        route,
        upstream_headers,
        sum(result.replacements.values()),
        result.kept_original,
        failure,
    )


async def _read_capped(response: Response, host: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await response.read_chunk(256 * 1024):
            size += len(chunk)
            if size > MAX_SCRIPT_BYTES:
                raise UpstreamError(
                    f"script from {host} is larger than we serve", kind="bad_body"
                )
            chunks.append(chunk)
    except (ClientError, OSError, TimeoutError) as exc:
        # A body cut short (a lying Content-Length, a reset) is the vendor's
        # failure like any other: 502, and nothing of it is cached.
        raise translate(exc, host) from exc
    return b"".join(chunks)


def decode_body(raw: bytes, encoding: str, host: str) -> bytes:
    """The identity bytes of an upstream body, whatever encoding it came in."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return raw
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(raw)
        if encoding == "br":
            return bytes(brotli.decompress(raw))
        if encoding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS)  # raw deflate
    except (OSError, EOFError, zlib.error, brotli.error) as exc:
        raise UpstreamError(
            f"script from {host} is not valid {encoding}", kind="bad_body"
        ) from exc
    raise UpstreamError(
        f"script from {host} uses unsupported encoding {encoding}", kind="bad_body"
    )


def _guess_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json"
    if path.endswith(".html"):
        return "text/html; charset=utf-8"
    return "application/javascript; charset=utf-8"


def make_script(
    status: int,
    body: bytes,
    content_type: str,
    route: ScriptRoute,
    upstream_headers: CIMultiDict[str],
    rewrites: int,
    kept_original: bool,
    guard_failure: GuardFailure | None = None,
) -> Script:
    compress = status == 200 and len(body) >= _COMPRESSIBLE_MIN
    vary = _merge_vary(upstream_headers.get(h.VARY, ""), "Accept-Encoding")
    cache_control = (
        route.cache_control or upstream_headers.get(h.CACHE_CONTROL) or "no-cache"
    )
    if status != 200:
        cache_control = "no-store"
    return Script(
        status=status,
        identity=body,
        gzip=gzip.compress(body, 6, mtime=0) if compress else None,
        br=bytes(brotli.compress(body, quality=9)) if compress else None,
        etag=hashlib.blake2b(body, digest_size=12).hexdigest(),
        content_type=content_type,
        cache_control=cache_control,
        vary=vary,
        expires=time.monotonic() + route.ttl,
        rewrites=rewrites,
        kept_original=kept_original,
        guard_failure=guard_failure,
    )


def _merge_vary(upstream: str, ours: str) -> str:
    names = [v.strip() for v in upstream.split(",") if v.strip()]
    if ours.lower() not in (n.lower() for n in names):
        names.append(ours)
    return ", ".join(names)


# --- serving -----------------------------------------------------------------


def choose_encoding(accept_encoding: str, script: Script) -> str:
    """br, then gzip, then identity, honouring q=0 refusals."""
    for encoding in _acceptable(accept_encoding):
        if script.body_for(encoding) is not script.identity:
            return encoding
    return "identity"


# Browsers send a handful of distinct Accept-Encoding values; parse each once.
@functools.lru_cache(maxsize=256)
def _acceptable(accept_encoding: str) -> tuple[str, ...]:
    """Of br and gzip, in our order of preference, those the client accepts."""
    accepted: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        accepted[name.strip().lower()] = q
    star = accepted.get("*", 0.0)
    return tuple(e for e in ("br", "gzip") if accepted.get(e, star) > 0)


def respond(request: web.Request, script: Script) -> web.Response:
    encoding = choose_encoding(request.headers.get(h.ACCEPT_ENCODING, ""), script)
    if script.status != 200:
        return web.Response(
            status=script.status, body=script.identity, headers=script.headers
        )
    # Built once per script and encoding; each response copies them.
    if _matches(request.headers.get(h.IF_NONE_MATCH), script):
        return web.Response(status=304, headers=script.answer_headers(encoding, True))
    headers = script.answer_headers(encoding)
    return web.Response(body=script.body_for(encoding), headers=headers)


def _matches(if_none_match: str | None, script: Script) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return any(script.etag_for(e) in tags for e in _ENCODED_SUFFIX)


def cache_key(target: Target, public_url: URL, geo: Geo | None) -> CacheKey | None:
    """Where a route's script is cached; None for routes cached per visitor."""
    route = target.route
    assert isinstance(route, ScriptRoute)
    if route.cache is CacheMode.NONE:
        return None
    query = kept_query(target.query, route.query)
    variant = geo.code if route.cache is CacheMode.GEO and geo is not None else ""
    upstream = f"{target.host.scheme}://{target.upstream_host}{target.path}"
    return str(public_url), f"{upstream}?{query}", variant


class ScriptService:
    """Serve script routes from the cache, filling it from upstream."""

    def __init__(self, upstream: Upstream, router: Router) -> None:
        self.upstream = upstream
        self.cache = ScriptCache()
        self.rewriters = Rewriters(router.rules)

    def hit(
        self, request: web.Request, target: Target, public_url: URL, geo: Geo | None
    ) -> web.Response | None:
        """The answer from a cached copy within its TTL, or None."""
        key = cache_key(target, public_url, geo)
        if key is None:
            return None
        script = self.cache.fresh(key)
        return None if script is None else respond(request, script)

    async def serve(
        self,
        request: web.Request,
        target: Target,
        public_url: URL,
        visitor: str | None,
        geo: Geo | None,
    ) -> tuple[web.Response, str]:
        route = target.route
        assert isinstance(route, ScriptRoute)
        per_visitor = route.cache is CacheMode.NONE
        by_geo = route.cache is CacheMode.GEO and geo is not None
        script_request = ScriptRequest(
            target=target,
            public_url=public_url,
            user_agent=request.headers.get(h.USER_AGENT),
            accept_language=request.headers.get("Accept-Language"),
            visitor_ip=visitor if (per_visitor or by_geo) else None,
            geo=geo if (per_visitor or by_geo) else None,
        )

        async def fill() -> Script:
            return await fetch_script(self.upstream, self.rewriters, script_request)

        where = f"{target.upstream_host}{target.path}"
        if per_visitor:
            # Per-visitor bodies are never kept, so there is no last good
            # copy to fall back on: a misfit is reported and served.
            script = await fill()
            if script.status == 200 and script.guard_failure is not None:
                report(script.guard_failure, target.rule, where, False)
            return respond(request, script), "bypass"

        key = cache_key(target, public_url, geo)
        assert key is not None
        freshness = Freshness(
            target.rule,
            where,
            route.stale_while_revalidate,
            route.stale_if_error,
        )
        script, how = await self.cache.get(key, fill, freshness)
        return respond(request, script), how
