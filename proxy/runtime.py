"""Running tagproxy in one process: the public and admin listeners and signals.

SIGTERM or SIGINT: report not ready, stop accepting, let requests in flight
finish (up to --shutdown-grace), exit. SIGHUP: reload rules and sites. With
`--workers N` the supervisor in workers.py runs N of these, each on the
shared port, and serves the admin listener itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from .admin import build_admin_app
from .background import spawn
from .config import Settings, address_text
from .drain import LINGER, drain, listen
from .errors import ConfigError
from .limits import LimitedSite
from .reload import Loaded, Reloader, describe
from .server import Proxy, ProxyRunner

log = logging.getLogger("tagproxy")

BACKLOG: Final = 1024

# Called once the process serves: (its control, the event that stops it).
Attach = Callable[["ProcessControl", asyncio.Event], None]


class ProcessControl:
    """The admin view of one serving process."""

    def __init__(self, proxy: Proxy, reloader: Reloader) -> None:
        self.proxy = proxy
        self.reloader = reloader
        self.stopping = False

    @property
    def registry(self) -> Collector:
        return REGISTRY

    def readiness(self) -> tuple[bool, dict[str, object]]:
        generation = self.proxy.generation
        pool = not self.proxy.upstream.session.closed
        detail: dict[str, object] = {
            "rules": len(generation.rules.rules),
            "sites": len(generation.sites.sites) if generation.sites else 1,
            "upstream_pool": "open" if pool else "closed",
            "stopping": self.stopping,
        }
        return bool(generation.rules.rules) and pool and not self.stopping, detail

    async def reload(self, why: str) -> tuple[bool, dict[str, object]]:
        report = await self.reloader.reload(why)
        return report.ok, report.as_dict()

    def serving(self) -> dict[str, object]:
        generation = self.proxy.generation
        return describe(generation.rules, generation.sites)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(settings: Settings, loaded: Loaded) -> None:
    """Serve in this process until SIGTERM or SIGINT."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(settings, loaded))
    finally:
        loop.close()


async def serve(
    settings: Settings,
    loaded: Loaded,
    *,
    worker: bool = False,
    attach: Attach | None = None,
) -> None:
    proxy = Proxy(settings, loaded.rules, loaded.sites)
    control = ProcessControl(proxy, Reloader(proxy))
    runner = ProxyRunner(
        proxy,
        access_log=None,
        shutdown_timeout=settings.durability.shutdown_grace,
    )
    await runner.setup()
    host, port = settings.listen
    # Workers share the port: the kernel spreads new connections over them.
    try:
        listener = listen(host, port, backlog=BACKLOG, reuse_port=worker)
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen("--listen", settings.listen, exc) from exc
    site = LimitedSite(
        runner,
        host,
        port,
        max_connections=settings.limits.max_connections,
        backlog=BACKLOG,
        sock=listener,
    )
    await site.start()
    for address in runner.addresses:
        # The bound port, which differs from the flag when it was 0.
        log.info("listening on http://%s", address_text(address[:2]))

    admin = None
    if settings.admin_listen is not None and not worker:
        admin = await start_admin(build_admin_app(control), settings.admin_listen)

    stop = asyncio.Event()
    _handle_signals(control, stop, worker)
    if attach is not None:
        attach(control, stop)
    await stop.wait()

    control.stopping = True
    log.info("stopping: finishing requests in flight")
    grace = settings.durability.shutdown_grace
    await drain(runner, [listener], site.factory, proxy.draining, min(LINGER, grace))
    await runner.cleanup()
    if admin is not None:
        await admin.cleanup()
    # Batched log lines wait a few milliseconds; worker processes end
    # without the logging module's exit hook, so nothing may wait now.
    for handler in logging.getLogger().handlers:
        handler.flush()


async def start_admin(app: web.Application, listen: tuple[str, int]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    await listen_or_explain(
        web.TCPSite(runner, *listen), runner, "--admin-listen", listen
    )
    for address in runner.addresses:
        log.info(
            "admin (metrics, health, reload) on http://%s", address_text(address[:2])
        )
    return runner


async def listen_or_explain(
    site: web.TCPSite, runner: web.AppRunner, flag: str, listen: tuple[str, int]
) -> None:
    """Start listening, or fail naming the flag (port in use, address not ours)."""
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(flag, listen, exc) from exc


def cannot_listen(flag: str, listen: tuple[str, int], exc: OSError) -> ConfigError:
    """Port in use, an address not ours: said with the flag that chose it."""
    why = exc.strerror or str(exc)
    return ConfigError(f"{flag} {address_text(listen)}: cannot listen there: {why}")


def _handle_signals(control: ProcessControl, stop: asyncio.Event, worker: bool) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if worker:
        # Ctrl-C reaches the whole process group; the supervisor then stops
        # the workers in order.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
    else:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: spawn(control.reload("SIGHUP"), "reload")
    )
