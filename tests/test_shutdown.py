"""Graceful shutdown of a real `tagproxy serve` under load: SIGTERM fails nothing.

Clients keep sending durable beacons and live relay requests (to a vendor
that takes 2.5 s, so requests and deliveries are in flight at the signal)
while tagproxy gets SIGTERM. A request is *failed* if it
was sent on a connection tagproxy had accepted and got no proper answer;
*refused* means the connection was never made (nothing was sent; a load
balancer would send it to another instance). After the restart every
beacon that was answered 202 reaches the vendor.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from . import tally
from .chaos_support import (
    ChaosVendor,
    Load,
    ServeProcess,
    duplicates,
    free_port,
    until_delivered,
)

GRACE = 5.0


@pytest.fixture
async def chaos_vendor() -> AsyncIterator[ChaosVendor]:
    vendor = ChaosVendor()
    await vendor.up()
    yield vendor
    await vendor.down()


async def test_sigterm_under_load_fails_no_request_and_loses_no_beacon(
    chaos_vendor: ChaosVendor, tmp_path: Path
) -> None:
    chaos_vendor.slow_ratio, chaos_vendor.slow_delay = 1.0, 2.5
    port = free_port()
    spool, log = tmp_path / "spool.db", tmp_path / "tagproxy.log"
    serve = ServeProcess(
        port, chaos_vendor.url, spool, log, "--shutdown-grace", f"{GRACE}s"
    )
    await serve.start()
    try:
        load = Load(serve.url, clients=16, live_share=0.5, tag="sd")
        load.start(seconds=30)
        await asyncio.sleep(1.5)

        serve.signal(signal.SIGTERM)
        started = time.monotonic()
        code = await serve.wait(GRACE + 10)
        took = time.monotonic() - started
        await asyncio.sleep(0.2)  # clients now meet a closed port
        report = await load.finish()
    finally:
        await serve.stop()

    assert code == 0, serve.tail()
    assert took < GRACE + 3
    assert report.failed == 0, report.reasons
    assert not report.other, report.other
    assert report.accepted
    assert report.live_ok
    assert report.refused  # the port really closed under the clients

    # What the stopped process had not delivered waits in the spool.
    chaos_vendor.healthy()
    again = ServeProcess(port, chaos_vendor.url, spool, log)
    await again.start()
    try:
        missing = await until_delivered(chaos_vendor, report.accepted, 15)
    finally:
        again.signal(signal.SIGTERM)
        await again.wait(GRACE + 10)
    assert not missing

    tally.add("shutdown: requests answered", len(report.accepted) + report.live_ok)
    tally.add("shutdown: requests failed", report.failed)
    tally.add("shutdown: beacons accepted", len(report.accepted))
    tally.add("shutdown: beacons delivered", len(report.accepted) - len(missing))
    print(
        f"\nshutdown under load: {report.sent} answered or failed "
        f"({len(report.accepted)} beacons accepted, {report.live_ok} live), "
        f"{report.failed} failed, {report.refused} refused after close, "
        f"exit in {took:.2f}s; delivered {len(report.accepted) - len(missing)} "
        f"of {len(report.accepted)} accepted, {duplicates(chaos_vendor)} duplicates"
    )
