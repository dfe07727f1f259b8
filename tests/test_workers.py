"""`tagproxy serve --workers 2` as a subprocess: both workers serve the one
port, the supervisor's admin listener sums their metrics, SIGHUP reloads every
worker, a killed worker comes back, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.config import Durability, build_durability, build_settings
from proxy.workers import for_slot

from .conftest import BUNDLED_RULES
from .durable_support import DURABLE_RULES
from .fakes import FakeVendor, Received
from .test_end_to_end import _clean_env, free_port

WAIT_STEPS = 1200  # of 50 ms: a bound for fresh interpreters on a busy machine


async def until(check: object, what: str) -> None:
    assert callable(check)
    for _ in range(WAIT_STEPS):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def readiness(client: aiohttp.ClientSession, admin: str) -> dict[str, object]:
    try:
        async with client.get(f"{admin}/readyz") as response:
            body: dict[str, object] = await response.json()
            return body
    except aiohttp.ClientError:
        return {}


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    )


# Without a spool a rolling restart overlaps old and new workers; with one,
# each worker has its own spool file and the old worker stops first.
@pytest.mark.parametrize("spooled", [False, True], ids=["no spool", "spool"])
async def test_two_workers_share_port_reload_restart_and_stop(
    vendor: FakeVendor, tmp_path: Path, spooled: bool
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(BUNDLED_RULES / "plausible.toml", rules)
    spool = tmp_path / "spool" / "beacons.db"
    if spooled:
        shutil.copy(DURABLE_RULES / "beacon.toml", rules)
    port, admin_port = free_port(), free_port()
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    command = [sys.executable, "-m", "proxy", "serve", "--rules", str(rules)]
    command += ["--listen", f"127.0.0.1:{port}", "--workers", "2"]
    command += ["--admin-listen", f"127.0.0.1:{admin_port}", "--log-format", "json"]
    for host in ("plausible.io", "cloud.umami.is", "collect.beacon.test"):
        command += ["--upstream-override", f"https://{host}={vendor.url}"]
    if spooled:
        command += ["--spool", str(spool)]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
        command, env=_clean_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        async with aiohttp.ClientSession() as client:

            async def two_ready() -> bool:
                workers = (await readiness(client, admin)).get("workers")
                return isinstance(workers, dict) and len(workers) == 2

            await until(two_ready, "two workers serving")
            # Fresh connections each time, so the kernel spreads them.
            for _ in range(8):
                async with (
                    aiohttp.ClientSession() as one,
                    one.post(f"{url}/pa/api/event?q=1", data=b"{}") as r,
                ):
                    assert r.status == 204
            assert len(vendor.received) == 8

            async def counted() -> bool:
                # A relay's answer reaches the client just before its
                # worker counts it.
                async with client.get(f"{admin}/metrics") as response:
                    text = await response.text()
                assert metric(text, "tagproxy_workers ") == 2
                return metric(text, "tagproxy_requests_total{") == 8

            await until(counted, "both workers' requests in the sum")
            if spooled:
                await spooled_beacons_delivered(url, vendor, spool)

            # SIGHUP: every worker reloads and serves the added rule.
            shutil.copy(BUNDLED_RULES / "umami.toml", rules)
            process.send_signal(signal.SIGHUP)

            async def umami_routed() -> bool:
                async with client.post(f"{url}/um/api/send", data=b"{}") as r:
                    return r.status == 204

            for _ in range(4):  # whichever worker answers
                await until(umami_routed, "the reloaded rule")

            # A worker that dies is replaced.
            pids = (await readiness(client, admin))["workers"]
            assert isinstance(pids, dict)
            os.kill(int(pids["0"]), signal.SIGKILL)

            async def replaced() -> bool:
                workers = (await readiness(client, admin)).get("workers")
                return isinstance(workers, dict) and workers.get("0") not in (
                    None,
                    pids["0"],
                )

            await until(replaced, "the killed worker's replacement")
            async with client.get(f"{admin}/metrics") as response:
                text = await response.text()
            assert metric(text, "tagproxy_worker_restarts_total ") == 1

            # SIGUSR2: both replaced in turn, serving all along.
            before = (await readiness(client, admin))["workers"]
            assert isinstance(before, dict)
            process.send_signal(signal.SIGUSR2)

            async def all_new() -> bool:
                # A new connection each time: a kept-alive one may be closed
                # by its draining worker just as the next request goes out,
                # the race of RFC 9112 9.3.1 that clients settle by retrying
                # (what happens to new connections is what this checks).
                async with (
                    aiohttp.ClientSession() as one,
                    one.post(f"{url}/pa/api/event", data=b"{}") as r,
                ):
                    assert r.status == 204
                now = (await readiness(client, admin)).get("workers")
                assert isinstance(now, dict)
                assert now
                return len(now) == 2 and not set(now.values()) & set(before.values())

            await until(all_new, "a rolling restart")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr

    lines = [json.loads(line) for line in stderr.splitlines()]
    access = [line for line in lines if line["logger"] == "tagproxy.access"]
    assert len(access) >= 8
    first = access[0]
    assert first["vendor"] == "plausible"
    assert first["path"] == "/pa/api/event"
    assert "q=1" not in json.dumps(access)  # beacon queries never logged at INFO
    assert {"ms", "upstream_ms", "bytes_in", "bytes_out", "worker"} <= first.keys()
    reloads = [line["message"] for line in lines if "reload" in line["message"]]
    assert any("rules added: umami" in message for message in reloads)


async def spooled_beacons_delivered(url: str, vendor: FakeVendor, spool: Path) -> None:
    """Durable beacons through both workers, each with its own spool file."""
    for _ in range(6):
        async with (
            aiohttp.ClientSession() as one,
            one.post(f"{url}/bc/e", data=b"{}") as response,
        ):
            assert response.status == 202

    async def delivered() -> bool:
        return len(vendor.to("collect.beacon.test")) == 6

    await until(delivered, "spooled beacons delivered")
    assert sorted(p.name for p in spool.parent.glob("beacons.*.db")) == [
        "beacons.0.db",
        "beacons.1.db",
    ]


async def test_one_process_reloads_on_sighup_and_drains_on_sigterm(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(BUNDLED_RULES / "plausible.toml", rules)
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request, received: Received) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=202)

    vendor.reply("plausible.io", "/api/event", slow)
    port, admin_port = free_port(), free_port()
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    command = [sys.executable, "-m", "proxy", "serve", "--rules", str(rules)]
    command += ["--listen", f"127.0.0.1:{port}"]
    command += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    for host in ("plausible.io", "cloud.umami.is"):
        command += ["--upstream-override", f"https://{host}={vendor.url}"]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
        command, env=_clean_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        async with aiohttp.ClientSession() as client:

            async def ready() -> bool:
                return (await readiness(client, admin)).get("ready") is True

            await until(ready, "tagproxy serving")
            shutil.copy(BUNDLED_RULES / "umami.toml", rules)
            process.send_signal(signal.SIGHUP)

            async def umami_routed() -> bool:
                async with client.post(f"{url}/um/api/send", data=b"{}") as r:
                    return r.status == 204

            await until(umami_routed, "the reloaded rule")

            # SIGTERM while a beacon waits on its vendor: readiness drops at
            # once, the beacon still gets its answer, then the process exits.
            beacon = asyncio.create_task(client.post(f"{url}/pa/api/event"))
            await arrived.wait()
            process.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return (await readiness(client, admin)).get("stopping") is True

            await until(draining, "readiness to drop")
            release.set()
            async with await beacon as response:
                assert response.status == 202
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "reload (SIGHUP): rules added: umami" in stderr


def test_each_worker_gets_its_own_spool_and_share_of_its_size() -> None:
    settings = build_settings(
        rules=[str(BUNDLED_RULES)],
        listen="127.0.0.1:0",
        public_url=None,
        cookie_domain=None,
        allowed_origins=[],
        trusted_proxies=[],
        client_ip_headers=[],
        overrides=[],
        geo_header=None,
        log_format="plain",
        log_level="INFO",
        workers=4,
        durability=build_durability(spool="/var/lib/tagproxy/beacons.db"),
    )
    worker = for_slot(settings, 2).durability
    assert worker.spool == Path("/var/lib/tagproxy/beacons.2.db")
    assert worker.spool_max_size == settings.durability.spool_max_size // 4
    assert for_slot(dataclasses.replace(settings, durability=Durability()), 2) == (
        dataclasses.replace(settings, durability=Durability())
    )
