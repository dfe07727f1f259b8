"""The HTTP front: one handler that routes, dispatches and logs each request."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from yarl import URL

from . import headers as h
from .config import Settings
from .errors import MethodNotAllowed, Rejection
from .relay import RelayService
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


class Proxy:
    """The running proxy: settings, the shared upstream client and the rules."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.upstream = Upstream(settings.overrides)
        self.services = self._services(rules)

    def _services(self, rules: RuleSet) -> Services:
        router = Router(rules)
        return Services(
            router=router,
            scripts=ScriptService(self.upstream, router),
            relays=RelayService(self.upstream, router, self.settings.site),
        )

    async def close(self) -> None:
        await self.upstream.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        services = self.services  # one rule set for the whole request
        outcome: dict[str, object] = {}
        status = 500
        try:
            response = await self._dispatch(request, services, outcome)
            status = response.status
            return response
        except Rejection as exc:
            status = exc.status
            outcome.setdefault("error", exc.reason)
            return exc.response()
        finally:
            self._log(request, status, outcome, time.monotonic() - started)

    async def _dispatch(
        self, request: web.Request, services: Services, outcome: dict[str, object]
    ) -> web.StreamResponse:
        target = services.router.match(request.raw_path)
        outcome["vendor"] = target.rule.vendor
        outcome["route"] = target.route.kind

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
        response, how = await services.scripts.serve(
            request, target, public_url, visitor, geo
        )
        outcome["cache"] = how
        return response

    def _log(
        self, request: web.Request, status: int, outcome: dict[str, object], took: float
    ) -> None:
        # The path without its query: beacon queries carry personal data.
        path = request.raw_path.partition("?")[0]
        fields = {
            "method": request.method,
            "path": path,
            "status": status,
            "vendor": outcome.get("vendor", "-"),
            "route": outcome.get("route", "-"),
            "upstream_status": outcome.get("upstream_status", "-"),
            "cache": outcome.get("cache", "-"),
            "ms": round(took * 1000, 1),
            "peer": request.remote,
        }
        if "error" in outcome:
            fields["error"] = outcome["error"]
        if self.settings.log_format == "json":
            access_log.info(json.dumps(fields), extra={"access": fields})
            return
        text = " ".join(
            f"{k}={v}" for k, v in fields.items() if k not in ("method", "path")
        )
        access_log.info(
            '"%s %s" %s', request.method, path, text, extra={"access": fields}
        )


def build_app(proxy: Proxy) -> web.Application:
    app = web.Application(
        handler_args={"max_field_size": 16384, "max_line_size": 16384}
    )
    app.router.add_route("*", "/{tail:.*}", proxy.handle)

    async def close(_: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    return app
