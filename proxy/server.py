"""The HTTP front: one handler that routes, dispatches and logs each request."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from . import exchange, metrics
from . import headers as h
from . import trace as tracing
from .config import Settings
from .delivery import Delivery, require_spool
from .drain import close_when_sent
from .errors import (
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Rejection,
    UpstreamError,
)
from .geo import Geo
from .logs import ACCESS
from .privacy import Privacy
from .relay import RelayService, add_vary, cors_headers
from .routing import Router, Target
from .rules import RelayRoute, RuleSet
from .rules.loader import build_rule_set
from .scripts import ScriptCache, ScriptService
from .site import Site
from .sites import SiteConfig, Sites
from .spool import Spool
from .tagids import (
    TagAllowlist,
    TagIdRefused,
    log_unrestricted,
    parse_tag_ids,
    require_places,
)
from .trace import Trace, Tracer
from .upstream import Upstream
from .websocket import WebSocketRelay

log = logging.getLogger(__name__)

_PLAIN_SAFE: Final = re.compile(r'[^\s"\\]*')
_SCRIPT_METHODS: Final = frozenset({"GET", "HEAD"})
# How long delivery attempts in flight may finish at shutdown; the rest stay
# spooled and go after the restart.
_DELIVERY_STOP: Final = 2.0


@dataclass(slots=True)
class Services:
    """What a request to one site needs: its routes, caches and public face."""

    router: Router
    scripts: ScriptService
    relays: RelayService
    privacy: Privacy
    site: Site
    config: SiteConfig | None = None  # from the sites file; None: from flags
    tag_ids: TagAllowlist = field(default_factory=TagAllowlist)


@dataclass(frozen=True, slots=True)
class Generation:
    """One loaded configuration (rules, sites, their services), swapped whole.

    A request reads `Proxy.generation` once and keeps what it read, so a reload
    never changes the rules under a request already running.
    """

    rules: RuleSet
    sites: Sites | None
    single: Services | None  # without a sites file: the one site
    by_site: Mapping[str, Services]  # site name -> its services

    def services_for(self, request: web.Request, trusted_peer: bool) -> Services:
        if self.single is not None:
            return self.single
        assert self.sites is not None
        host = request.headers.get(h.HOST, "")
        if trusted_peer:
            host = request.headers.get(h.X_FORWARDED_HOST, host).split(",")[0]
        config = self.sites.for_host(host.strip())
        if config is None:
            raise NotFound("no site is configured for this Host")
        return self.by_site[config.name]


class Proxy:
    """The running proxy: settings, the shared upstream client and the rules."""

    def __init__(
        self, settings: Settings, rules: RuleSet, sites: Sites | None = None
    ) -> None:
        self.settings = settings
        parse_tag_ids(settings.tag_ids, rules)  # fail before opening a client
        durability = settings.durability
        require_spool(rules, durability.spool)
        self.upstream = Upstream(settings.overrides, durability.dns_servers)
        self.delivery: Delivery | None = None
        self.websockets = WebSocketRelay(self.upstream)  # outlives reloads
        self.draining = asyncio.Event()  # set on SIGTERM: answers close
        self.generation = self._generation(rules, sites)
        self.tracer = Tracer(settings.trace_secret) if settings.trace_secret else None

    @property
    def services(self) -> Services:
        """The services now serving the one site there is without a sites
        file (with one: the first site's), for tools and tests."""
        generation = self.generation
        if generation.single is not None:
            return generation.single
        return next(iter(generation.by_site.values()))

    def swap(self, rules: RuleSet, sites: Sites | None) -> None:
        """Serve new rules from the next request on; running ones keep theirs."""
        self.generation = self._generation(rules, sites)

    def _generation(self, rules: RuleSet, sites: Sites | None) -> Generation:
        require_spool(rules, self.settings.durability.spool)
        if sites is None:
            single = self._services(rules, self.settings.site, None)
            return Generation(rules, None, single, {})
        # One script cache for all sites: keys hold the public URL already,
        # and one byte bound for the process is what operators size for.
        cache = ScriptCache()
        by_site = {}
        for config in sites.sites:
            enabled = rules
            if config.vendors is not None:
                enabled = build_rule_set(
                    [r for r in rules.rules if r.vendor in config.vendors]
                )
            services = self._services(enabled, config.site, config)
            services.scripts.cache = cache
            by_site[config.name] = services
        return Generation(rules, sites, None, by_site)

    def _services(
        self, rules: RuleSet, site: Site, config: SiteConfig | None
    ) -> Services:
        router = Router(rules)
        consent = self.settings.consent
        if config is not None and config.consent is not None:
            consent = config.consent
        privacy = Privacy(rules, consent)
        if config is None:
            tag_ids = parse_tag_ids(self.settings.tag_ids, rules)
        else:
            tag_ids = require_places(config.tag_ids, rules, f"site {config.name}")
        log_unrestricted(tag_ids, rules)
        return Services(
            router=router,
            scripts=ScriptService(self.upstream, router),
            relays=RelayService(
                self.upstream,
                router,
                site,
                privacy,
                self.delivery,
                body_timeout=self.settings.limits.body_timeout,
                tag_ids=tag_ids,
            ),
            privacy=privacy,
            site=site,
            config=config,
            tag_ids=tag_ids,
        )

    async def start(self) -> None:
        """Open the spool and start delivering from it, before serving."""
        durability = self.settings.durability
        if durability.spool is None:
            return
        spool = await Spool.open(
            durability.spool, durability.spool_max_size, durability.spool_sync
        )
        self.delivery = Delivery(
            spool,
            self.upstream,
            self._rules,
            concurrency=durability.delivery_concurrency,
        )
        self.delivery.start()
        generation = self.generation
        self.generation = self._generation(generation.rules, generation.sites)

    def _rules(self) -> RuleSet:
        return self.generation.rules

    async def close(self) -> None:
        """After the HTTP server stopped: the spool, then the upstream client."""
        if self.delivery is not None:
            await self.delivery.stop(
                min(_DELIVERY_STOP, self.settings.durability.shutdown_grace)
            )
        generation = self.generation
        services = [generation.single] if generation.single else []
        for each in (*services, *generation.by_site.values()):
            await each.scripts.cache.close()
        await self.upstream.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        generation = self.generation  # one rule set for the whole request
        outcome: exchange.Record = {}
        exchange.begin(outcome)
        if self.tracer is not None and self.tracer.wants(request):
            outcome[exchange.TRACE] = Trace(request)
        metrics.IN_FLIGHT.inc()
        response: web.StreamResponse | None = None
        status = 500
        try:
            answer = self._dispatch(request, generation, outcome)
            if not isinstance(answer, web.StreamResponse):
                answer = await answer
            response = answer
            status = response.status
            return response
        except Rejection as exc:
            status = exc.status
            outcome.setdefault(exchange.ERROR, exc.reason)
            tracing.note(outcome, error=exc.reason)
            self._count_rejection(exc, outcome)
            response = exc.response()
            return response
        finally:
            metrics.IN_FLIGHT.dec()
            took = time.monotonic() - started
            self._count(status, outcome, took)
            self._log(request, response, status, outcome, took)

    def _dispatch(
        self, request: web.Request, generation: Generation, outcome: exchange.Record
    ) -> web.StreamResponse | Coroutine[Any, Any, web.StreamResponse]:
        """Route the request; answer what needs no waiting (cached scripts) at
        once, else return the coroutine that will. Most requests for scripts
        are hits, and every coroutine layer costs them time."""
        peer = request.remote
        trusted_peer = self.settings.trust.is_trusted_peer(peer)
        services = generation.services_for(request, trusted_peer)

        target = services.router.match(request.raw_path)
        outcome[exchange.VENDOR] = target.rule.vendor
        outcome[exchange.ROUTE] = services.router.route_id(target.route)
        outcome[exchange.KIND] = target.route.kind
        if exchange.TRACE in outcome:
            tracing.note(
                outcome,
                vendor=target.rule.vendor,
                route=outcome[exchange.ROUTE],
                upstream=target.upstream_url,
            )
        services.tag_ids.check(target)

        public_url = services.site.public_url_for(request, trusted_peer)
        geo = self.settings.geo.read(request.headers) if trusted_peer else None
        if not isinstance(target.route, RelayRoute):
            if request.method not in _SCRIPT_METHODS:
                raise MethodNotAllowed(
                    "scripts are fetched with GET", headers={"Allow": "GET, HEAD"}
                )
            response = services.scripts.hit(request, target, public_url, geo)
            if response is None:
                return self._fill(request, services, target, public_url, geo, outcome)
            return self._script_answer(
                request, services, public_url, response, "hit", outcome
            )

        visitor = self._visitor(request, peer)
        if target.route.websocket is not None:
            return self.websockets.relay(
                request,
                target,
                services.site,
                services.privacy,
                public_url,
                visitor,
                outcome,
            )
        return services.relays.relay(
            request, target, public_url, visitor, outcome, geo=geo
        )

    def _visitor(self, request: web.Request, peer: str | None) -> str:
        """The visitor's address, believing forwarding headers of trusted peers."""
        forwarded_for = request.headers.getall(h.X_FORWARDED_FOR, [])
        return self.settings.trust.visitor(peer, forwarded_for, request.headers)

    async def _fill(
        self,
        request: web.Request,
        services: Services,
        target: Target,
        public_url: URL,
        geo: Geo | None,
        outcome: exchange.Record,
    ) -> web.StreamResponse:
        """A script not cached (or past its TTL): from the cache's fill."""
        visitor = self._visitor(request, request.remote)
        address = services.privacy.script_visitor(target.rule, visitor)
        response, how = await services.scripts.serve(
            request, target, public_url, address, geo
        )
        return self._script_answer(
            request, services, public_url, response, how, outcome
        )

    def _script_answer(
        self,
        request: web.Request,
        services: Services,
        public_url: URL,
        response: web.Response,
        how: str,
        outcome: exchange.Record,
    ) -> web.Response:
        outcome[exchange.CACHE] = how
        if exchange.TRACE in outcome:
            tracing.note(outcome, cache=how)
        metrics.script_cache(str(outcome[exchange.VENDOR]), how)
        # Vendors fetch() their JSON config (Reddit, Segment): from the site
        # to a tagproxy subdomain that is cross-origin and needs the same
        # CORS answer a relay gives; <script> loads send no Origin.
        if h.ORIGIN in request.headers:
            response.headers.update(cors_headers(request, services.site, public_url))
            add_vary(response.headers, "Origin")
        return response

    @staticmethod
    def _count_rejection(exc: Rejection, outcome: exchange.Record) -> None:
        vendor = str(outcome.get(exchange.VENDOR, metrics.NO_VENDOR))
        if isinstance(exc, UpstreamError):
            metrics.upstream_error(vendor, exc.kind)
        elif isinstance(exc, TagIdRefused):
            metrics.beacon_dropped(vendor, "tag_id")
        elif isinstance(exc, PayloadTooLarge):
            route = str(outcome.get(exchange.ROUTE, metrics.NO_ROUTE))
            metrics.body_rejected(vendor, route)

    @staticmethod
    def _count(status: int, outcome: exchange.Record, took: float) -> None:
        metrics.request_done(
            str(outcome.get(exchange.VENDOR, metrics.NO_VENDOR)),
            str(outcome.get(exchange.ROUTE, metrics.NO_ROUTE)),
            str(outcome.get(exchange.KIND, metrics.NO_ROUTE)),
            status,
            took,
        )

    def _log(
        self,
        request: web.Request,
        response: web.StreamResponse | None,
        status: int,
        outcome: exchange.Record,
        took: float,
    ) -> None:
        if not ACCESS.enabled():
            return
        # The path without its query: beacon queries carry personal data.
        method, path = request.method, request.raw_path.partition("?")[0]
        host, peer = request.host, request.remote
        get = outcome.get
        vendor, route = get(exchange.VENDOR, "-"), get(exchange.ROUTE, "-")
        upstream_status, cache = (
            get(exchange.UPSTREAM_STATUS, "-"),
            get(exchange.CACHE, "-"),
        )
        bytes_in = get(exchange.BYTES_IN)
        if bytes_in is None:
            bytes_in = request.content_length or 0
        bytes_out = _bytes_out(response)
        ms = round(took * 1000, 1)
        upstream_s = get(exchange.UPSTREAM_SECONDS)
        upstream_ms = (
            round(upstream_s * 1000, 1) if isinstance(upstream_s, float) else "-"
        )
        extra = _extra_fields(outcome)

        # In the plain line, what the client chose (Host, path) is quoted
        # when it could pass for more fields ("x status=200").
        message = (
            f'"{method} {_quote_path(path)}" host={_plain_value(host)} '
            f"status={status} vendor={vendor} route={route} "
            f"upstream_status={upstream_status} cache={cache} bytes_in={bytes_in} "
            f"bytes_out={bytes_out} ms={ms} upstream_ms={upstream_ms} peer={peer}"
        )
        if extra:
            message += "".join([f" {k}={v}" for k, v in extra.items()])
        if not ACCESS.wants_fields:
            ACCESS.write(message, None)
            return
        # The JSON format writes the fields themselves, unquoted.
        fields: dict[str, object] = {
            "method": method,
            "path": path,
            "host": host,
            "status": status,
            "vendor": vendor,
            "route": route,
            "upstream_status": upstream_status,
            "cache": cache,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "ms": ms,
            "upstream_ms": upstream_ms,
            "peer": peer,
        }
        fields.update(extra)
        ACCESS.write(message, fields)


def _extra_fields(outcome: exchange.Record) -> dict[str, object]:
    """What only some requests have to say: privacy, errors, WebSocket counts."""
    extra: dict[str, object] = {}
    if exchange.PRIVACY in outcome:
        extra["privacy"] = outcome[exchange.PRIVACY]
    if exchange.ERROR in outcome:
        extra["error"] = outcome[exchange.ERROR]
    socket = outcome.get(exchange.WEBSOCKET)
    if isinstance(socket, dict):
        extra.update(socket)  # at close: counts of the whole connection
    return extra


@functools.lru_cache(maxsize=1024)
def _plain_value(value: str) -> str:
    if _PLAIN_SAFE.fullmatch(value):
        return value
    return json.dumps(value)


def _quote_path(path: str) -> str:
    if '"' not in path and "\\" not in path:
        return path
    return path.replace("\\", "\\\\").replace('"', '\\"')


def _bytes_out(response: web.StreamResponse | None) -> int:
    """Body bytes sent (relays stream) or about to be sent (whole responses)."""
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return 0


class _RefusedByParser(logging.Filter):
    """Requests aiohttp's parser refuses, logged as one DEBUG line, not an ERROR.

    aiohttp answers them 400 itself and logs each with a full traceback at
    ERROR; on a public port that is every scanner and broken client, and
    would bury real errors. Our own failures (500s) are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= exc.code < 500:
            return True
        peer = record.args[0] if isinstance(record.args, tuple) else "-"
        log.debug("refused a malformed request from %s: %s", peer, exc.message)
        return False


_REFUSED_BY_PARSER: Final = _RefusedByParser()


class ProxyRunner(web.BaseRunner):
    """Runs the proxy on aiohttp's low-level server, without an Application.

    Every request goes to one handler that does its own routing, so the
    Application's URL dispatcher, match info and middleware chain would be
    pure cost on each request (about a fifth of a cached script's CPU,
    measured with bench/script_bench.py). What the Application gave besides
    is done here: the proxy's start and close around the server's life,
    WebSockets closed at shutdown, and a hook on each response before its
    headers go out (draining, tracing).
    """

    __slots__ = ("proxy",)

    def __init__(self, proxy: Proxy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proxy = proxy

    async def _make_server(self) -> web.Server:
        server_log = logging.getLogger("aiohttp.server")
        if _REFUSED_BY_PARSER not in server_log.filters:
            server_log.addFilter(_REFUSED_BY_PARSER)
        await self.proxy.start()
        request_class = _request_class(self.proxy)
        loop = asyncio.get_running_loop()

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            return request_class(message, payload, protocol, writer, task, loop)

        # Request bodies reach the vendor as the browser encoded them:
        # decoding a gzip body here would send plain bytes labelled
        # Content-Encoding: gzip.
        return web.Server(
            self.proxy.handle,  # type: ignore[arg-type]
            request_factory=make_request,
            **self.proxy.settings.limits.handler_args(),
            auto_decompress=False,
            **self._kwargs,
        )

    async def shutdown(self) -> None:
        await self.proxy.websockets.close_all()

    async def _cleanup_server(self) -> None:
        await self.proxy.close()


def _request_class(proxy: Proxy) -> type[web.Request]:
    """Requests whose responses pass our hook just before they are sent."""
    draining = proxy.draining
    tracing_on = proxy.tracer is not None

    class ProxyRequest(web.Request):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            if draining.is_set():
                close_when_sent(response)
            if tracing_on:
                tracing.finish(self, response)

    return ProxyRequest
