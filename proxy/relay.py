"""Relay routes: pass a beacon to its vendor under the rule's request and
response policies, and stream the vendor's answer back.

The path after the mount and the raw query reach the vendor byte-exact unless
a rule edits a parameter; bodies pass byte-exact. Headers pass by allowlist,
cookies by name, and the visitor's address in exactly the way the rule says.
"""

from __future__ import annotations

import functools
import logging
from typing import Final
from urllib.parse import quote, unquote_plus

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import exchange, metrics
from . import headers as h
from . import trace as tracing
from .cookies import cookie_name, filter_cookie_header, rewrite_set_cookie
from .delivery import Delivery, durable_answer
from .envelope import envelope_target
from .errors import MethodNotAllowed, PayloadTooLarge, UpstreamError
from .geo import Geo, set_geo_headers
from .http1 import ClientError, Response
from .jsonbody import client_ip_in_body
from .limits import DEFAULT_BODY_TIMEOUT, body_within, continue_if_expected
from .privacy import Decision, Privacy
from .routing import Router, Target
from .rules import IpVia, RelayRoute
from .rules.model import RequestPolicy
from .site import Site
from .tagids import TagAllowlist
from .upstream import Upstream, translate

log = logging.getLogger(__name__)

_CHUNK: Final = 64 * 1024
_WHOLE_BODY_MAX: Final = 64 * 1024
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_PREFLIGHT_MAX_AGE: Final = "600"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 before any upstream contact if too big.

    Bodies are read in full (up to the route's limit) before the vendor is
    contacted, so an oversized chunked upload is refused without a byte sent
    upstream and a failed attempt can be retried with the same bytes.
    """
    if not request.body_exists:
        return b""  # pixels and GET beacons: no body stream to iterate
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body over this route's limit of {limit} bytes")
    await continue_if_expected(request)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body over this route's limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_whole(upstream: Response, host: str) -> bytes:
    try:
        return await upstream.read()
    except (ClientError, OSError, TimeoutError) as exc:
        raise translate(exc, host) from exc


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names a Connection header marks as hop-by-hop for this request."""
    values = headers.getall("Connection", ())
    if not values:
        return _NO_TOKENS
    if len(values) == 1:
        return _tokens(values[0])  # "keep-alive" or "close", nearly always
    return frozenset(t for v in values for t in _tokens(v))


_NO_TOKENS: Final[frozenset[str]] = frozenset()


@functools.lru_cache(maxsize=256)
def _tokens(value: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def request_headers(
    incoming: CIMultiDictProxy[str], policy: RequestPolicy, visitor: str | None
) -> CIMultiDict[str]:
    """The headers the vendor gets: allowlisted, named cookies, the visitor IP."""
    hop = connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if policy.passes(name) and (not hop or name.lower() not in hop):
            out.add(name, value)

    cookies = filter_cookie_header(incoming.getall(h.COOKIE, []), policy.cookies)
    if cookies:
        out[h.COOKIE] = cookies
    for name, value in policy.set_headers:
        out[name] = value
    for way in policy.client_ip:
        if way.via is IpVia.HEADER and visitor is not None:
            out[way.name] = visitor
    return out


def edit_query(raw: str, policy: RequestPolicy, visitor: str | None) -> str:
    """The raw query with only the rule's edits; untouched pieces stay byte-exact."""
    ip_params = [w.name for w in policy.client_ip if w.via is IpVia.QUERY]
    if not (policy.drop_query or policy.set_query or policy.rename_query or ip_params):
        return raw

    # The visitor must not choose privileged parameters: whatever they sent
    # under a name we set is dropped before we set it.
    dropped = policy.drop_query | {n for n, _ in policy.set_query} | set(ip_params)
    pieces = []
    for piece in raw.split("&") if raw else []:
        name, sep, value = piece.partition("=")
        decoded = unquote_plus(name)
        if decoded in dropped:
            continue
        if decoded in policy.rename_query:
            piece = f"{quote(policy.rename_query[decoded], safe='')}{sep}{value}"
        pieces.append(piece)
    ip_values = [(p, visitor) for p in ip_params] if visitor is not None else []
    for name, value in (*policy.set_query, *ip_values):
        pieces.append(f"{quote(name, safe='')}={quote(value, safe='')}")
    return "&".join(pieces)


def cors_headers(request: web.Request, site: Site, public_url: URL) -> dict[str, str]:
    origin = request.headers.get(h.ORIGIN)
    if not origin or not site.origin_allowed(origin, public_url):
        return {}
    return {h.ACAO: origin, h.ACAC: "true"}


def add_vary(headers: CIMultiDict[str], name: str) -> None:
    """Name `name` in Vary once, however many Vary headers are there already."""
    listed = {
        v.strip().lower()
        for value in headers.getall(h.VARY, [])
        for v in value.split(",")
    }
    if name.lower() not in listed and "*" not in listed:
        headers.add(h.VARY, name)


def preflight(
    request: web.Request,
    route: RelayRoute,
    policy: RequestPolicy,
    site: Site,
    public_url: URL,
) -> web.Response:
    """Answer OPTIONS (a CORS preflight or not) ourselves: the vendor never sees it."""
    headers = {
        h.VARY: "Origin",
        h.CACHE_CONTROL: "no-store",
        h.ALLOW: ", ".join(sorted(route.methods)),
    }
    cors = cors_headers(request, site, public_url)
    headers |= cors
    if cors and h.ACRM in request.headers:
        asked = request.headers.get(h.ACRH, "")
        allowed = [n.strip() for n in asked.split(",") if _preflight_ok(n, policy)]
        methods = sorted(route.methods - {"OPTIONS", "HEAD"})
        headers |= {
            h.ACAM: ", ".join(methods),
            h.ACAH: ", ".join(allowed),
            h.ACMA: _PREFLIGHT_MAX_AGE,
        }
    return web.Response(status=204, headers=headers)


def _preflight_ok(name: str, policy: RequestPolicy) -> bool:
    lower = name.strip().lower()
    return bool(lower) and policy.passes_header(lower)


def cut_client(request: web.Request, error: UpstreamError) -> None:
    """End a response whose upstream broke off after its headers were sent.

    It is too late for a 502: another status line written now would land in
    the middle of the body the client is reading. Closing the connection
    without finishing the body is how the client learns the answer is
    incomplete (a short chunked body or fewer bytes than Content-Length).
    """
    record = exchange.current()
    if record is not None:
        record[exchange.ERROR] = error.reason
        vendor = str(record.get(exchange.VENDOR, metrics.NO_VENDOR))
        metrics.upstream_error(vendor, error.kind)
    if request.transport is not None:
        request.transport.close()


class RelayService:
    def __init__(
        self,
        upstream: Upstream,
        router: Router,
        site: Site,
        privacy: Privacy | None = None,
        delivery: Delivery | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        tag_ids: TagAllowlist | None = None,
    ) -> None:
        self.upstream = upstream
        self.router = router
        self.site = site
        self.privacy = privacy or Privacy(router.rules)
        self.delivery = delivery
        self.body_timeout = body_timeout
        self.tag_ids = tag_ids or TagAllowlist()

    async def relay(
        self,
        request: web.Request,
        target: Target,
        public_url: URL,
        visitor: str,
        outcome: dict[str, object],
        geo: Geo | None = None,
    ) -> web.StreamResponse:
        route = target.route
        assert isinstance(route, RelayRoute)
        policy = target.rule.request
        # OPTIONS is never one of a rule's methods: a CORS preflight or a
        # plain OPTIONS is answered here and the vendor never sees it.
        if request.method == "OPTIONS":
            return preflight(request, route, policy, self.site, public_url)
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            raise MethodNotAllowed("method not allowed here", headers={"Allow": allow})

        body = b""
        if request.body_exists:  # pixels and GET beacons: nothing to wait for
            reading = read_body(request, route.max_body)
            body = await body_within(self.body_timeout, reading)
        outcome["bytes_in"] = len(body)
        encoding = request.headers.get(h.CONTENT_ENCODING, "")
        if route.envelope is not None:
            target = envelope_target(target, route.envelope, body, encoding)
        self.tag_ids.check_body(target, body, encoding)
        # The visitor's address in the form the rule lets it leave (None: not
        # at all); every way of passing it below uses only this.
        address: str | None = visitor
        raw_query, decision = target.query, None
        plan = self.privacy.plan_for(target.rule)
        if plan is not None:
            decision = plan.decide(
                request.headers, target.host.host, raw_query, visitor, body
            )
            if decision.reason:
                outcome[exchange.PRIVACY] = decision.label
            if decision.drops:
                metrics.beacon_dropped(target.rule.vendor, decision.reason)
                return self._dropped(request, decision, public_url)
            address, raw_query, body = decision.visitor, decision.query, decision.body

        headers = request_headers(request.headers, policy, address)
        set_geo_headers(headers, policy.geo_headers, geo)
        query = edit_query(raw_query, policy, address)
        if decision is not None:
            decision.edit_headers(headers)
        body = client_ip_in_body(body, policy, address, request.headers, route.max_body)
        path_query = target.path + (f"?{query}" if query else "")
        if (
            route.durable is not None
            and self.delivery is not None
            and request.method != "HEAD"
            and await self.delivery.accept(
                target, request.method, path_query, headers, body
            )
        ):
            outcome["upstream_status"] = "spooled"
            return self._spooled(request, route, public_url, decision)
        prepared = self.upstream.prepare(
            target.host.scheme, target.upstream_host, path_query
        )
        send_body = body if body or request.method not in ("GET", "HEAD") else None
        trace = tracing.of(outcome)
        if trace is not None:
            trace.sent(prepared, headers, query, send_body, body)
        response = await self.upstream.request(
            request.method, prepared, headers, send_body, route.timeouts
        )
        outcome["upstream_status"] = response.status
        if trace is not None:
            trace.received(response.headers)
        async with response:
            if not 100 <= response.status <= 599:
                # Not an HTTP status (RFC 9110 15): browsers fail the request.
                raise UpstreamError(
                    f"upstream {target.upstream_host} answered {response.status}",
                    kind="bad_status",
                )
            return await self._answer(request, response, target, public_url, decision)

    def _dropped(
        self, request: web.Request, decision: Decision, public_url: URL
    ) -> web.Response:
        """A beacon privacy refused: answered as accepted, nothing sent upstream."""
        answer = decision.dropped(request.method, public_url, self.site.cookie_domain)
        answer.headers.update(cors_headers(request, self.site, public_url))
        if request.headers.get(h.ORIGIN):
            answer.headers.add(h.VARY, "Origin")
        return answer

    def _spooled(
        self,
        request: web.Request,
        route: RelayRoute,
        public_url: URL,
        decision: Decision | None,
    ) -> web.Response:
        """The rule's answer for a beacon now safe in the spool."""
        response = durable_answer(route)
        if decision is not None:  # tagproxy's own cookies, as on any answer
            decision.edit_response(
                response.headers, public_url, self.site.cookie_domain
            )
        response.headers.update(cors_headers(request, self.site, public_url))
        if request.headers.get(h.ORIGIN):
            response.headers.add(h.VARY, "Origin")
        return response

    async def _answer(
        self,
        request: web.Request,
        upstream: Response,
        target: Target,
        public_url: URL,
        decision: Decision | None = None,
    ) -> web.StreamResponse:
        no_body = upstream.status in _NO_BODY_STATUSES or request.method == "HEAD"
        length = upstream.content_length
        out: web.StreamResponse
        if not no_body and length is not None and length <= _WHOLE_BODY_MAX:
            # Beacon answers are a few bytes: read whole, they leave with the
            # headers in one write instead of two.
            body = await _read_whole(upstream, target.upstream_host)
            out = web.Response(
                status=upstream.status, reason=upstream.reason, body=body
            )
        else:
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        self._copy_headers(upstream, out, target, public_url)
        if decision is not None:
            decision.edit_response(out.headers, public_url, self.site.cookie_domain)
        out.headers.update(cors_headers(request, self.site, public_url))
        if request.headers.get(h.ORIGIN):
            add_vary(out.headers, "Origin")
        if isinstance(out, web.Response):
            return out

        if no_body:
            if request.method == "HEAD" and length is not None:
                out.headers[h.CONTENT_LENGTH] = str(length)
            await out.prepare(request)
            await out.write_eof()
            return out

        if length is not None:
            out.content_length = length
        try:
            await out.prepare(request)
            while True:
                try:
                    chunk = await upstream.read_chunk(_CHUNK)
                except (ClientError, OSError, TimeoutError) as exc:
                    cut_client(request, translate(exc, target.upstream_host))
                    return out
                if not chunk:
                    break
                await out.write(chunk)
            await out.write_eof()
        except ConnectionError:
            # The visitor left mid-answer: ordinary traffic, not a 500 (the
            # status already sent stands); the unread rest of the upstream
            # answer closes its connection as it is released.
            record = exchange.current()
            if record is not None:
                record[exchange.ERROR] = "client left mid-answer"
        return out

    def _copy_headers(
        self,
        upstream: Response,
        out: web.StreamResponse,
        target: Target,
        public_url: URL,
    ) -> None:
        policy = target.rule.response
        hop = connection_tokens(upstream.headers)
        for name, value in upstream.headers.items():
            lower = name.lower()
            if (
                lower in h.RESPONSE_DROPPED
                or lower in policy.drop_headers
                or lower in hop
            ):
                continue
            if lower == "set-cookie":
                if policy.cookies(cookie_name(value)):
                    out.headers.add(
                        h.SET_COOKIE, rewrite_set_cookie(value, self.site.cookie_domain)
                    )
                continue
            if lower == "location":
                location = self.location(value, target, public_url, upstream.status)
                if location is None:
                    continue
                value = location
            out.headers.add(name, value)
        for name, value in policy.set_headers:
            out.headers[name] = value

    def location(
        self, value: str, target: Target, public_url: URL, status: int
    ) -> str | None:
        """A vendor redirect, made first-party, or refused if it leaves the rule.

        Following or passing on a redirect to anywhere else would turn
        tagproxy into a relay for hosts no rule names (metadata services,
        internal hosts, other sites).
        """
        try:
            absolute = URL(target.upstream_url).join(URL(value))
        except ValueError as exc:
            raise UpstreamError(
                "upstream sent a malformed Location", kind="redirect"
            ) from exc
        owner = self.router.rules.owner_of(absolute.raw_host or "")
        if (
            owner is None
            or owner[0] is not target.rule
            or absolute.scheme != owner[1].scheme
            or absolute.port != _DEFAULT_PORTS[owner[1].scheme]
        ):
            if status in _REDIRECTS:
                raise UpstreamError(
                    "upstream redirected outside its rule; refused", kind="redirect"
                )
            return None
        url = self.router.first_party_url(public_url, absolute)
        assert url is not None
        return url
