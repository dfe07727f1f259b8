"""`--workers N`: N serving processes on one port, under a supervisor.

Each worker is a whole tagproxy (runtime.serve) listening on the shared port
with SO_REUSEPORT, so the kernel spreads new connections over them. The
supervisor serves no traffic. It

- starts the workers and restarts one that exits unexpectedly, backing off
  while a worker keeps dying at start;
- serves the admin listener: metrics summed over all workers
  (prometheus-client's multiprocess mode), health, readiness and reload;
- on SIGHUP or POST /reload, asks every worker over its pipe to reload and
  reports each answer; new workers start with the last good configuration;
- on SIGTERM or SIGINT, sends SIGTERM to the workers, which finish their
  requests in flight, and waits for them;
- on SIGUSR2, replaces the workers one at a time (for instance after an
  upgrade), each new one serving before the old one stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from .admin import build_admin_app
from .background import spawn
from .config import Settings
from .errors import ConfigError
from .logs import setup_logging
from .reload import Loaded, compare, describe, load_config
from .runtime import ProcessControl, new_loop, serve, start_admin

log = logging.getLogger("tagproxy.workers")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT: Final = 30.0
RELOAD_TIMEOUT: Final = 60.0
STABLE_AFTER: Final = 10.0  # a worker up this long no longer counts as crashing
MAX_BACKOFF: Final = 30.0

_RELOAD: Final = "reload"
_READY: Final = "ready"
_RELOADED: Final = "reloaded"


def supervise(settings: Settings, loaded: Loaded) -> None:
    """Run `settings.workers` workers until SIGTERM or SIGINT."""
    _warn_orphan_spools(settings)
    metrics_dir, owned = _metrics_dir()
    holder = _hold_port(settings.listen)
    # Port 0 means "any": the workers must all take the one the holder got.
    settings = dataclasses.replace(
        settings, listen=(settings.listen[0], holder.getsockname()[1])
    )
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Supervisor(settings, loaded, metrics_dir).run())
    finally:
        loop.close()
        holder.close()
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics directory (the operator's, or our own)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        # Values left by an earlier run would be summed into this one's.
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="tagproxy-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the workers
    return path, True


def _hold_port(listen: tuple[str, int]) -> socket.socket:
    """Bind (not listen on) the port, so port 0 resolves and it stays ours.

    A socket that never listens receives no connections, so the workers,
    bound to the same port with SO_REUSEPORT, get all of them.
    """
    host, port = listen
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    holder = socket.socket(family, kind, proto)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind(address)
    except OSError as exc:
        holder.close()
        raise ConfigError(f"--listen {host}:{port}: cannot bind: {exc}") from exc
    return holder


# --- the worker side ---------------------------------------------------------


def spool_for_slot(spool: Path, slot: int) -> Path:
    """Worker `slot`'s own spool file: `beacons.db` becomes `beacons.2.db`."""
    return spool.with_name(f"{spool.stem}.{slot}{spool.suffix}")


def for_slot(settings: Settings, slot: int) -> Settings:
    """A worker's settings: its own spool file and its share of the size.

    A spool file belongs to one process at a time, so each worker keeps its
    own; a restarted worker reopens its slot's file and sends what its
    predecessor left. The operator's size bound is for all of them together.
    """
    durability = settings.durability
    if durability.spool is None:
        return settings
    return dataclasses.replace(
        settings,
        durability=dataclasses.replace(
            durability,
            spool=spool_for_slot(durability.spool, slot),
            spool_max_size=durability.spool_max_size // settings.workers,
        ),
    )


def _warn_orphan_spools(settings: Settings) -> None:
    spool = settings.durability.spool
    if spool is None:
        return
    for path in sorted(spool.parent.glob(f"{spool.stem}.*{spool.suffix}")):
        slot = path.name[len(spool.stem) + 1 : len(path.name) - len(spool.suffix)]
        if slot.isdigit() and int(slot) >= settings.workers:
            log.info(
                "spool %s belongs to worker %s, which this run does not start: "
                "a running worker takes over its beacons",
                path,
                slot,
            )


def worker_main(
    settings: Settings, loaded: Loaded, link: Connection, slot: int
) -> None:
    """Entry point of a worker process."""
    settings = for_slot(settings, slot)
    setup_logging(settings, worker=slot)
    loop = new_loop()
    asyncio.set_event_loop(loop)

    def attach(control: ProcessControl, stop: asyncio.Event) -> None:
        _attach_link(link, control, stop)

    try:
        loop.run_until_complete(serve(settings, loaded, worker=True, attach=attach))
    finally:
        loop.close()


def _attach_link(
    link: Connection, control: ProcessControl, stop: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    link.send((_READY, os.getpid()))

    def readable() -> None:
        try:
            message = link.recv()
        except (EOFError, OSError):
            # The supervisor is gone: nobody would restart or stop us.
            loop.remove_reader(link.fileno())
            log.warning("supervisor gone; stopping")
            stop.set()
            return
        if message == _RELOAD:
            spawn(_reload_and_answer(link, control), "reload")

    loop.add_reader(link.fileno(), readable)


async def _reload_and_answer(link: Connection, control: ProcessControl) -> None:
    ok, report = await control.reload("supervisor")
    link.send((_RELOADED, ok, report))


# --- the supervisor side -----------------------------------------------------


@dataclass(eq=False)
class Worker:
    slot: int
    process: BaseProcess
    link: Connection
    started: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    replies: asyncio.Queue[tuple[bool, dict[str, object]]] = field(
        default_factory=asyncio.Queue
    )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


class Supervisor:
    def __init__(self, settings: Settings, loaded: Loaded, metrics_dir: Path) -> None:
        self.settings = settings
        self.loaded = loaded  # the last good configuration, for new workers
        self.metrics_dir = metrics_dir
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self._backoff: dict[int, float] = {}
        self.retiring: set[Worker] = set()  # replaced, finishing their requests
        self._reload_lock = asyncio.Lock()
        self._restart_lock = asyncio.Lock()
        self._context = multiprocessing.get_context("spawn")
        self._registry = CollectorRegistry()
        self._live = Gauge(
            "tagproxy_workers", "Worker processes serving.", registry=self._registry
        )
        self._restarts = Counter(
            "tagproxy_worker_restarts",
            "Workers restarted after exiting unexpectedly.",
            registry=self._registry,
        )
        MultiProcessCollector(self._registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]

    # The admin Control protocol.

    @property
    def registry(self) -> Collector:
        return self._registry

    def readiness(self) -> tuple[bool, dict[str, object]]:
        serving = [
            w
            for w in (*self.workers.values(), *self.retiring)
            if w.ready.is_set() and not w.exited.is_set()
        ]
        detail: dict[str, object] = {
            "rules": len(self.loaded.rules.rules),
            "sites": len(self.loaded.sites.sites) if self.loaded.sites else 1,
            "workers": {str(w.slot): w.pid for w in serving},
            "workers_wanted": self.settings.workers,
            "stopping": self.stopping,
        }
        return bool(serving) and not self.stopping, detail

    async def reload(self, why: str) -> tuple[bool, dict[str, object]]:
        async with self._reload_lock:
            return await self._reload(why)

    def serving(self) -> dict[str, object]:
        """The configuration the workers last loaded (and new ones start with)."""
        return describe(self.loaded.rules, self.loaded.sites)

    # Running.

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: spawn(self.reload("SIGHUP"), "reload")
        )
        loop.add_signal_handler(
            signal.SIGUSR2, lambda: spawn(self.restart_all(), "rolling restart")
        )
        log.info(
            "supervisor %d starting %d workers on port %d",
            os.getpid(),
            self.settings.workers,
            self.settings.listen[1],
        )
        for slot in range(self.settings.workers):
            self._start(slot)
        admin = None
        if self.settings.admin_listen is not None:
            admin = await start_admin(build_admin_app(self), self.settings.admin_listen)

        await stop.wait()
        await self._stop_all()
        if admin is not None:
            await admin.cleanup()

    def _start(self, slot: int) -> Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(self.settings, self.loaded, child, slot),
            name=f"tagproxy-worker-{slot}",
        )
        process.start()
        child.close()
        worker = Worker(slot, process, parent, time.monotonic())
        self.workers[slot] = worker
        self._live.set(len(self.workers))
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._message, worker)
        loop.add_reader(process.sentinel, self._exited, worker)
        return worker

    def _message(self, worker: Worker) -> None:
        try:
            message: Any = worker.link.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.link.fileno())
            return
        if message[0] == _READY:
            log.info("worker %d (pid %d) serving", worker.slot, worker.pid)
            worker.ready.set()
        elif message[0] == _RELOADED:
            worker.replies.put_nowait((message[1], message[2]))

    def _exited(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        loop.remove_reader(worker.link.fileno())
        worker.process.join(0)
        worker.link.close()
        worker.exited.set()
        # Its live gauges (in-flight requests, spool depth) no longer count.
        mark_process_dead(worker.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        self.retiring.discard(worker)
        if self.workers.get(worker.slot) is not worker:
            return  # replaced in a rolling restart
        del self.workers[worker.slot]
        self._live.set(len(self.workers))
        if self.stopping:
            return
        delay = self._next_backoff(worker)
        log.error(
            "worker %d (pid %d) exited with code %s; restarting in %.1f s",
            worker.slot,
            worker.pid,
            worker.process.exitcode,
            delay,
        )
        self._restarts.inc()
        loop.call_later(delay, self._restart, worker.slot)

    def _next_backoff(self, worker: Worker) -> float:
        if time.monotonic() - worker.started >= STABLE_AFTER:
            self._backoff[worker.slot] = 0.0
            return 0.0
        delay = min(max(self._backoff.get(worker.slot, 0.0) * 2, 0.5), MAX_BACKOFF)
        self._backoff[worker.slot] = delay
        return delay

    def _restart(self, slot: int) -> None:
        if not self.stopping and slot not in self.workers:
            self._start(slot)

    async def _reload(self, why: str) -> tuple[bool, dict[str, object]]:
        try:
            new = await asyncio.to_thread(load_config, self.settings)
        except ConfigError as exc:
            # The workers will refuse it too, each counting the failure.
            log.error("reload (%s): %s", why, exc)
        else:
            changes = compare(self.loaded, new)
            self.loaded = new
            log.info("reload (%s): %s", why, changes.describe())

        workers = [w for w in self.workers.values() if w.ready.is_set()]
        for worker in workers:
            while not worker.replies.empty():
                worker.replies.get_nowait()
            worker.link.send(_RELOAD)
        answers: dict[str, object] = {}
        report: dict[str, object] = {"result": "error", "error": "no worker serving"}
        all_ok = bool(workers)
        for worker in workers:
            try:
                ok, report = await asyncio.wait_for(
                    worker.replies.get(), RELOAD_TIMEOUT
                )
            except TimeoutError:
                ok, report = False, {"result": "error", "error": "no answer"}
            answers[str(worker.slot)] = report.get("result")
            all_ok = all_ok and ok
        return all_ok, {**report, "workers": answers}

    async def restart_all(self) -> None:
        """Replace each worker in turn; stop at a new one that fails to serve."""
        async with self._restart_lock:
            log.info("rolling restart of %d workers", len(self.workers))
            for slot, old in sorted(self.workers.items()):
                if self.stopping or not await self._replace(slot, old):
                    return
            log.info("rolling restart done")

    async def _replace(self, slot: int, old: Worker) -> bool:
        # The old worker serves until the new one does; its exit is then
        # expected, not a crash. A spool file is one process's at a time,
        # so with a spool the old worker stops first and the others serve.
        self.retiring.add(old)
        overlap = self.settings.durability.spool is None
        if not overlap:
            del self.workers[slot]
            old.process.terminate()
            await old.exited.wait()
        new = self._start(slot)
        try:
            await asyncio.wait_for(new.ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            log.error("rolling restart: new worker %d did not serve; stopped", slot)
            if overlap:
                self.workers[slot] = old
                self.retiring.discard(old)
                new.process.kill()
            return False
        if overlap:
            old.process.terminate()
            await old.exited.wait()
        return True

    async def _stop_all(self) -> None:
        self.stopping = True
        workers = [*self.workers.values(), *self.retiring]
        log.info("stopping %d workers", len(workers))
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = self.settings.durability.shutdown_grace + 5
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.exited.wait() for w in workers)), deadline
            )
        except TimeoutError:
            for worker in workers:
                if worker.process.is_alive():
                    log.error("worker %d did not stop in time; killed", worker.slot)
                    worker.process.kill()
