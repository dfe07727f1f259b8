"""Chaos run: load on durable beacons while the vendor fails and tagproxy dies.

Run: .venv/bin/python bench/chaos.py [--seconds S] [--clients N]

Not a timed benchmark: it prints what happened to every beacon. tagproxy
runs as `tagproxy serve --spool ...` in a child process on 127.0.0.1 with
the durable test rule (tests/rules_durable); the vendor is a local fake
that can refuse connections, answer 503 or answer late. Over the run:

  10%  the vendor answers 503 to everything, then to one in five
  25%  the vendor is down (connections refused)
  45%  tagproxy is killed with SIGKILL and started again on the same spool
  60%  a third of the vendor's answers come after the route's timeout
  75%  tagproxy is killed and restarted again

Then the load stops, the vendor recovers, and the run waits (bounded) for
every beacon tagproxy answered 202 to arrive. It prints accepted vs
delivered; a beacon accepted and never delivered is a failure (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' helpers: tagproxy process, vendor, load

from tests.chaos_support import (  # noqa: E402
    ChaosVendor,
    Load,
    ServeProcess,
    duplicates,
    free_port,
    until_delivered,
)


def note(started: float, text: str) -> None:
    print(f"{time.monotonic() - started:6.1f}s  {text}", flush=True)


async def restart(serve: ServeProcess, started: float) -> None:
    serve.kill()
    await serve.wait(10)
    note(started, "tagproxy killed (SIGKILL)")
    await serve.start()
    note(started, "tagproxy restarted on the same spool")


async def faults(
    vendor: ChaosVendor, serve: ServeProcess, seconds: float, started: float
) -> None:
    async def at(share: float) -> None:
        await asyncio.sleep(max(0.0, started + share * seconds - time.monotonic()))

    await at(0.10)
    vendor.fail_ratio = 1.0
    note(started, "vendor: 503 to everything")
    await at(0.18)
    vendor.fail_ratio = 0.2
    note(started, "vendor: 503 to one in five")
    await at(0.25)
    await vendor.down()
    note(started, "vendor: down")
    await at(0.40)
    await vendor.up()
    note(started, "vendor: up")
    await at(0.45)
    await restart(serve, started)
    await at(0.60)
    vendor.slow_ratio, vendor.slow_delay = 0.33, 1.5
    note(started, "vendor: a third of answers after the timeout")
    await at(0.75)
    await restart(serve, started)


async def run(seconds: float, clients: int) -> int:
    vendor = ChaosVendor()
    await vendor.up()
    with tempfile.TemporaryDirectory(prefix="tagproxy-chaos-") as scratch:
        spool, log = Path(scratch) / "spool.db", Path(scratch) / "tagproxy.log"
        serve = ServeProcess(free_port(), vendor.url, spool, log)
        await serve.start()
        started = time.monotonic()
        note(started, f"load: {clients} clients on durable beacons for {seconds:g}s")
        try:
            load = Load(serve.url, clients=clients, tag="chaos")
            load.start(seconds)
            await faults(vendor, serve, seconds, started)
            await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
            report = await load.finish()
            vendor.healthy()
            note(started, "load stopped; vendor healthy; waiting for delivery")
            drain_started = time.monotonic()
            missing = await until_delivered(vendor, report.accepted, 120)
            drained = time.monotonic() - drain_started
        finally:
            await serve.stop()
            await vendor.down()

    accepted = len(report.accepted)
    delivered = accepted - len(missing)
    print()
    print(f"requests sent            {report.sent}")
    print(f"  accepted (202)         {accepted}")
    print(f"  failed (no answer)     {report.failed}  {dict(report.reasons)}")
    print(f"  refused (not sent)     {report.refused}")
    print(f"  other statuses         {dict(report.other)}")
    print(f"beacons delivered        {delivered} of {accepted} accepted")
    print(f"  lost                   {len(missing)}")
    print(f"  duplicates             {duplicates(vendor)}")
    print(f"  vendor attempts        {vendor.attempts}")
    print(f"  backlog drained in     {drained:.1f}s after the load stopped")
    print()
    print("accepted == delivered" if not missing else "LOST BEACONS")
    return 1 if missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S")
    parser.add_argument("--clients", type=int, default=24, metavar="N")
    args = parser.parse_args()
    return asyncio.run(run(args.seconds, args.clients))


if __name__ == "__main__":
    sys.exit(main())
