"""Chaos: faults while beacons flow through a real `tagproxy serve` with a spool.

Each case drives clients at durable beacons for a few seconds while one
fault happens, then lets the vendor recover and checks the one promise:
every beacon tagproxy answered 202 reaches the vendor. Duplicates are
allowed (delivery is at least once) and counted. The counts are printed
and added to the suite summary.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from proxy.delivery import CONCURRENCY

from . import tally
from .chaos_support import (
    ChaosVendor,
    Load,
    ServeProcess,
    duplicates,
    free_port,
    until_delivered,
)

LOAD_SECONDS = 2.0
Fault = Callable[[ChaosVendor, ServeProcess], Awaitable[None]]


async def vendor_down(vendor: ChaosVendor, serve: ServeProcess) -> None:
    """The vendor refuses connections for 1.5 s."""
    await vendor.down()
    await asyncio.sleep(1.5)
    await vendor.up()


async def errors_burst(vendor: ChaosVendor, serve: ServeProcess) -> None:
    """Every answer is 503 for 1 s, then one in three."""
    vendor.fail_ratio = 1.0
    await asyncio.sleep(1.0)
    vendor.fail_ratio = 0.33


async def slow_vendor(vendor: ChaosVendor, serve: ServeProcess) -> None:
    """A third of answers come after the route's 1 s timeout."""
    vendor.slow_ratio, vendor.slow_delay = 0.33, 1.5


async def killed_and_restarted(vendor: ChaosVendor, serve: ServeProcess) -> None:
    """kill -9 of tagproxy mid-load, then a restart on the same spool."""
    vendor.fail_ratio = 0.2  # so the spool holds retries when it dies
    serve.kill()
    await serve.wait(10)
    await serve.start()


async def everything(vendor: ChaosVendor, serve: ServeProcess) -> None:
    """All of the above, one after the other."""
    await errors_burst(vendor, serve)
    await slow_vendor(vendor, serve)
    await vendor_down(vendor, serve)
    await killed_and_restarted(vendor, serve)


@pytest.mark.parametrize(
    "fault",
    [vendor_down, errors_burst, slow_vendor, killed_and_restarted, everything],
    ids=lambda f: f.__name__,
)
async def test_every_accepted_beacon_is_delivered(fault: Fault, tmp_path: Path) -> None:
    vendor = ChaosVendor()
    await vendor.up()
    serve = ServeProcess(
        free_port(), vendor.url, tmp_path / "spool.db", tmp_path / "tagproxy.log"
    )
    await serve.start()
    try:
        load = Load(serve.url, clients=12, tag=fault.__name__)
        load.start(LOAD_SECONDS + 2)
        await asyncio.sleep(0.5)
        await fault(vendor, serve)
        await asyncio.sleep(max(0.0, LOAD_SECONDS - 0.5))
        report = await load.finish()

        vendor.healthy()
        missing = await until_delivered(vendor, report.accepted, 20)
        serve.signal(signal.SIGTERM)
        assert await serve.wait(15) == 0, serve.tail()
    finally:
        await serve.stop()
        await vendor.down()

    delivered = len(report.accepted) - len(missing)
    name = fault.__name__
    print(
        f"\nchaos {name}: {report.sent} sent, {len(report.accepted)} accepted, "
        f"{delivered} delivered, {duplicates(vendor)} duplicates, "
        f"{vendor.attempts} vendor attempts, {report.failed} failed "
        f"({dict(report.reasons)}), {report.refused} refused"
    )
    tally.add("chaos cases tried")
    tally.add("chaos beacons accepted", len(report.accepted))
    tally.add("chaos beacons delivered", delivered)
    tally.add("chaos duplicates", duplicates(vendor))
    assert report.accepted
    assert not missing, f"{len(missing)} accepted beacons never arrived"
    if fault is killed_and_restarted:
        # At least once: only attempts in flight at the kill can repeat.
        assert duplicates(vendor) <= CONCURRENCY
    elif fault is not everything:
        assert report.failed == 0, report.reasons
