"""The HTTP front: one handler that routes, dispatches and logs each request."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from yarl import URL

from . import exchange, metrics
from . import headers as h
from .config import Settings
from .errors import MethodNotAllowed, PayloadTooLarge, Rejection, UpstreamError
from .privacy import Privacy
from .relay import RelayService, add_vary, cors_headers
from .routing import Router, Target
from .rules import RelayRoute, RuleSet
from .scripts import ScriptService
from .upstream import Upstream

log = logging.getLogger(__name__)
access_log = logging.getLogger("tagproxy.access")

_SCRIPT_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(slots=True)
class Services:
    """What a request needs, swapped as one piece when rules change."""

    router: Router
    scripts: ScriptService
    relays: RelayService
    privacy: Privacy


class Proxy:
    """The running proxy: settings, the shared upstream client and the rules."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.upstream = Upstream(settings.overrides)
        self.services = self._services(rules)

    def _services(self, rules: RuleSet) -> Services:
        router = Router(rules)
        privacy = Privacy(rules, self.settings.consent)
        return Services(
            router=router,
            scripts=ScriptService(self.upstream, router),
            relays=RelayService(self.upstream, router, self.settings.site, privacy),
            privacy=privacy,
        )

    async def close(self) -> None:
        await self.upstream.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        services = self.services  # one rule set for the whole request
        outcome: exchange.Record = {}
        exchange.begin(outcome)
        metrics.IN_FLIGHT.inc()
        response: web.StreamResponse | None = None
        status = 500
        try:
            response = await self._dispatch(request, services, outcome)
            status = response.status
            return response
        except Rejection as exc:
            status = exc.status
            outcome.setdefault(exchange.ERROR, exc.reason)
            self._count_rejection(exc, outcome)
            response = exc.response()
            return response
        finally:
            metrics.IN_FLIGHT.dec()
            took = time.monotonic() - started
            self._count(status, outcome, took)
            self._log(request, response, status, outcome, took)

    async def _dispatch(
        self, request: web.Request, services: Services, outcome: dict[str, object]
    ) -> web.StreamResponse:
        target = services.router.match(request.raw_path)
        outcome[exchange.VENDOR] = target.rule.vendor
        outcome[exchange.ROUTE] = metrics.route_id(target.route)
        outcome[exchange.KIND] = target.route.kind

        trust = self.settings.trust
        peer = request.remote
        trusted_peer = trust.is_trusted_peer(peer)
        visitor = trust.visitor(
            peer, request.headers.getall(h.X_FORWARDED_FOR, []), request.headers
        )
        public_url = self.settings.site.public_url_for(request, trusted_peer)

        if isinstance(target.route, RelayRoute):
            return await services.relays.relay(
                request, target, public_url, visitor, outcome
            )
        return await self._script(
            request, services, target, public_url, visitor, trusted_peer, outcome
        )

    async def _script(
        self,
        request: web.Request,
        services: Services,
        target: Target,
        public_url: URL,
        visitor: str,
        trusted_peer: bool,
        outcome: dict[str, object],
    ) -> web.StreamResponse:
        if request.method not in _SCRIPT_METHODS:
            raise MethodNotAllowed(
                "scripts are fetched with GET", headers={"Allow": "GET, HEAD"}
            )
        geo = None
        if self.settings.geo_header and trusted_peer:
            geo = request.headers.get(self.settings.geo_header) or None
        address = services.privacy.script_visitor(target.rule, visitor)
        response, how = await services.scripts.serve(
            request, target, public_url, address, geo
        )
        outcome[exchange.CACHE] = how
        metrics.script_cache(target.rule.vendor, how)
        # Vendors fetch() their JSON config (Reddit, Segment): from the site
        # to a tagproxy subdomain that is cross-origin and needs the same
        # CORS answer a relay gives; <script> loads send no Origin.
        if h.ORIGIN in request.headers:
            response.headers.update(
                cors_headers(request, self.settings.site, public_url)
            )
            add_vary(response.headers, "Origin")
        return response

    @staticmethod
    def _count_rejection(exc: Rejection, outcome: exchange.Record) -> None:
        vendor = str(outcome.get(exchange.VENDOR, metrics.NO_VENDOR))
        if isinstance(exc, UpstreamError):
            metrics.upstream_error(vendor, exc.kind)
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
        if not access_log.isEnabledFor(logging.INFO):
            return
        # The path without its query: beacon queries carry personal data.
        path = request.raw_path.partition("?")[0]
        upstream_s = outcome.get(exchange.UPSTREAM_SECONDS)
        fields = {
            "method": request.method,
            "path": path,
            "host": request.host,
            "status": status,
            "vendor": outcome.get(exchange.VENDOR, "-"),
            "route": outcome.get(exchange.ROUTE, "-"),
            "upstream_status": outcome.get(exchange.UPSTREAM_STATUS, "-"),
            "cache": outcome.get(exchange.CACHE, "-"),
            "bytes_in": outcome.get(exchange.BYTES_IN, request.content_length or 0),
            "bytes_out": _bytes_out(response),
            "ms": round(took * 1000, 1),
            "upstream_ms": (
                round(upstream_s * 1000, 1) if isinstance(upstream_s, float) else "-"
            ),
            "peer": request.remote,
        }
        if exchange.PRIVACY in outcome:
            fields["privacy"] = outcome[exchange.PRIVACY]
        if exchange.ERROR in outcome:
            fields["error"] = outcome[exchange.ERROR]
        if self.settings.log_format == "json":
            access_log.info(json.dumps(fields), extra={"access": fields})
            return
        text = " ".join(
            f"{k}={v}" for k, v in fields.items() if k not in ("method", "path")
        )
        access_log.info(
            '"%s %s" %s', request.method, path, text, extra={"access": fields}
        )


def _bytes_out(response: web.StreamResponse | None) -> int:
    """Body bytes sent (relays stream) or about to be sent (whole responses)."""
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return 0


def build_app(proxy: Proxy) -> web.Application:
    # Request bodies reach the vendor as the browser encoded them: decoding a
    # gzip body here would send plain bytes labelled Content-Encoding: gzip.
    app = web.Application(
        handler_args={
            "max_field_size": 16384,
            "max_line_size": 16384,
            "auto_decompress": False,
        }
    )
    app.router.add_route("*", "/{tail:.*}", proxy.handle)

    async def close(_: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    return app
