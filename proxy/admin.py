"""The admin listener: metrics, health and reload, never on the public port.

    GET  /metrics   Prometheus text format
    GET  /healthz   200 while the process runs (liveness)
    GET  /readyz    200 when rules are loaded and the upstream pool is usable,
                    503 otherwise or while shutting down (readiness)
    GET  /config    the rules and sites serving: vendors, mounts, files, hosts
    POST /reload    re-read rules and sites; 200 with what changed, or 422
                    with the error while the old set keeps serving

Bind it to loopback or a cluster-internal address: it needs no secret
because it reveals no visitor data and can only make tagproxy re-read files
it already reads.
"""

from __future__ import annotations

import json
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.registry import Collector

_JSON = "application/json"


class Control(Protocol):
    """What the admin endpoints act on: one process, or the worker supervisor."""

    @property
    def registry(self) -> Collector: ...

    def readiness(self) -> tuple[bool, dict[str, object]]: ...

    async def reload(self, why: str) -> tuple[bool, dict[str, object]]: ...

    def serving(self) -> dict[str, object]: ...


def build_admin_app(control: Control) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(control.registry))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz(control))
    app.router.add_get("/config", _config(control))
    app.router.add_post("/reload", _reload(control))
    app.router.add_get("/", _index)
    return app


async def _index(_: web.Request) -> web.Response:
    return web.Response(
        text="tagproxy admin: /metrics /healthz /readyz /config /reload\n"
    )


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


def _readyz(control: Control) -> Handler:
    async def readyz(_: web.Request) -> web.Response:
        ready, detail = control.readiness()
        return _json(200 if ready else 503, {"ready": ready, **detail})

    return readyz


def _config(control: Control) -> Handler:
    async def config(_: web.Request) -> web.Response:
        return _json(200, control.serving())

    return config


def _reload(control: Control) -> Handler:
    async def reload(_: web.Request) -> web.Response:
        ok, report = await control.reload("admin API")
        return _json(200 if ok else 422, report)

    return reload


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, indent=2) + "\n",
        content_type=_JSON,
        headers={"Cache-Control": "no-store"},
    )
