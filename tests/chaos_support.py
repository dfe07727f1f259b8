"""Real `tagproxy serve` processes, a vendor that misbehaves on cue, and load.

Used by the shutdown and chaos tests and by bench/chaos.py. Everything runs
on 127.0.0.1; every loop here is bounded in count and time.

Each beacon carries a unique id as its body, so the vendor's record says
exactly which accepted beacons arrived, and how many times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
DURABLE_RULES = ROOT / "tests" / "rules_durable"
HOST = "collect.beacon.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    """`python -m proxy serve` on a fixed port, with a spool, in a subprocess."""

    def __init__(
        self, port: int, vendor_url: str, spool: Path, log: Path, *extra: str
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--rules",
            str(DURABLE_RULES),
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream-override",
            f"https://{HOST}={vendor_url}",
            "--spool",
            str(spool),
            "--log-level",
            "WARNING",
            *extra,
        ]
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    async def start(self, seconds: float = 15.0) -> None:
        """Start and wait until the port accepts connections."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TAGPROXY_") and not k.upper().endswith("_PROXY")
        }
        self._log_file = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"tagproxy exited at start:\n{self.tail()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"tagproxy did not listen in {seconds}s:\n{self.tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        self.signal(signal.SIGKILL)

    async def wait(self, seconds: float) -> int:
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), seconds)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        return code

    async def stop(self) -> None:
        """End the process if it still runs (test cleanup)."""
        if self.process is not None and self.process.returncode is None:
            self.kill()
            await self.wait(10)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ChaosVendor:
    """A vendor on a fixed port that can be down, failing, or slow, on cue.

    `delivered` counts, per beacon id, the answers that told tagproxy 2xx
    or that the vendor processed before answering too late (a slow vendor
    that has the beacon although tagproxy gave up on it).
    """

    port: int = 0
    fail_ratio: float = 0.0  # share of answers that are 503
    slow_ratio: float = 0.0  # share of answers delayed by `slow_delay`
    slow_delay: float = 1.5
    delivered: collections.Counter[bytes] = field(default_factory=collections.Counter)
    attempts: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(4))
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def down(self) -> None:
        """Stop listening and drop every connection: connects are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def healthy(self) -> None:
        self.fail_ratio = self.slow_ratio = 0.0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.rng.random() < self.fail_ratio:
            return web.Response(status=503)
        if body:
            self.delivered[body] += 1
        if self.rng.random() < self.slow_ratio:
            await asyncio.sleep(self.slow_delay)
        return web.Response(status=204)


@dataclass
class LoadReport:
    """What the clients saw."""

    accepted: set[bytes] = field(default_factory=set)  # 2xx: tagproxy has it
    live_ok: int = 0  # live relay answers (the vendor's own 204)
    refused: int = 0  # no connection: never sent (a load balancer retries)
    failed: int = 0  # sent, but no proper answer
    other: collections.Counter[int] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def sent(self) -> int:
        return (
            len(self.accepted) + self.live_ok + self.failed + sum(self.other.values())
        )


class Load:
    """Clients sending uniquely numbered beacons until told to stop."""

    def __init__(
        self, url: str, clients: int = 16, live_share: float = 0.0, tag: str = "b"
    ) -> None:
        self.url = url
        self.clients = clients
        self.live_share = live_share
        self.tag = tag
        self.report = LoadReport()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._next = 0

    def start(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for n in range(self.clients):
            self._tasks.append(asyncio.create_task(self._client(n, deadline)))

    async def finish(self) -> LoadReport:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.report

    async def _client(self, n: int, deadline: float) -> None:
        rng = random.Random(n)
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._next += 1
                body = f"{self.tag}-{n}-{self._next}".encode()
                live = rng.random() < self.live_share
                await self._send(s, body, live)

    async def _send(
        self, session: aiohttp.ClientSession, body: bytes, live: bool
    ) -> None:
        report = self.report
        path = "/bc/live" if live else "/bc/e"
        try:
            async with session.post(f"{self.url}{path}", data=body) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientConnectorError:
            report.refused += 1
            await asyncio.sleep(0.01)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            report.failed += 1
            report.reasons[type(exc).__name__] += 1
            return
        if status == 202 and not live:
            report.accepted.add(body)
        elif status == 204 and live:
            report.live_ok += 1
        else:
            report.other[status] += 1


async def until_delivered(
    vendor: ChaosVendor, accepted: Sequence[bytes] | set[bytes], seconds: float
) -> set[bytes]:
    """Wait (bounded) for every accepted beacon to reach the vendor; the missing."""
    deadline = time.monotonic() + seconds
    while True:
        missing = {b for b in accepted if not vendor.delivered[b]}
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.05)


def duplicates(vendor: ChaosVendor) -> int:
    return sum(count - 1 for count in vendor.delivered.values() if count > 1)
