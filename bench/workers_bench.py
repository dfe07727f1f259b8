"""Processes: tagproxy `--workers 2` vs one process.

Run: .venv/bin/python bench/workers_bench.py [--duration S] [--rounds N]

Both serve the same cached script and relay the same GET beacon to the local
sink. On a 2-core machine wrk and the sink share the cores with the workers,
so the ratio shows what a second process buys on this machine, not on an
idle one. wrk gets two threads here so the load generator is not the limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import fixtures
from harness import (
    Options,
    Series,
    free_port,
    ratio,
    rounds,
    run_reports,
    running,
    start_nginx,
    start_tagproxy,
    table,
    verdict,
)
from script_bench import Report, reference_block, served_gzip, start_sink

CONNECTIONS = 100
CORES = os.cpu_count() or 1


def has_workers_flag() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "--workers" in help_text


def bench(opts: Options, scratch: Path) -> list[Report]:
    if not has_workers_flag():
        return [
            Report(
                "workers",
                "  `tagproxy serve` has no --workers flag in "
                "this build; nothing measured",
                [],
            )
        ]
    opts = replace(opts, threads=max(opts.threads, 2))
    sink = start_sink(scratch)
    with running(sink):
        rule_dir = fixtures.write_rules(scratch / "rules", 5)
        servers = [
            start_tagproxy(
                f"tagproxy --workers {n}",
                scratch,
                [rule_dir],
                fixtures.overrides(sink.url, 5),
                ["--workers", str(n)],
            )
            for n in (1, 2)
        ]
        with running(*servers):
            for server in servers:
                for _ in range(4):  # each worker fills its own cache
                    gz = served_gzip(server)
            reports = [machine_reference(opts, scratch, gz)]
            for title, load in (
                ("relay GET beacon", fixtures.beacon_get()),
                ("cached script", fixtures.script_load()),
            ):
                one, two = rounds(
                    [(s, load) for s in servers], CONNECTIONS, opts, scratch
                )
                gain = ratio(two, one)
                reports.append(
                    Report(
                        f"workers, {title}, {CONNECTIONS} connections",
                        table([one, two]),
                        [
                            verdict(
                                f"{title}: 2 workers / 1", gain, ">= 1.80", gain >= 1.8
                            ),
                            f"  {title}: tagproxy used {cores(one):.2f} cores with "
                            f"one worker, {cores(two):.2f} with two (of {CORES})",
                        ],
                    )
                )
    return reports


def cores(series: Series) -> float:
    """CPU the server used while measured, in cores (req/s x CPU per request)."""
    return series.median("rps") * series.median("cpu_us") / 1e6


def machine_reference(opts: Options, scratch: Path, gz: bytes) -> Report:
    """What a second process buys nginx here: the machine's own ceiling.

    nginx serves the same script with one and with two worker processes, so
    the share of the cores that wrk and the kernel take shows in its ratio
    as it does in ours.
    """
    root = scratch / "nginx-workers"
    where = root / fixtures.MOUNT.lstrip("/")
    where.mkdir(parents=True)
    for directory in (root, where):
        directory.chmod(0o755)
    name = fixtures.SCRIPT_PATH.lstrip("/")
    (where / f"{name}.gz").write_bytes(gz)
    (where / name).write_bytes(b"// only the .gz is served\n")
    servers = []
    for n in (1, 2):
        port = free_port()
        block = reference_block(port, root)
        servers.append(start_nginx(f"nginx, {n} worker(s)", scratch, block, port, n))
    with running(*servers):
        one, two = rounds(
            [(s, fixtures.script_load()) for s in servers], CONNECTIONS, opts, scratch
        )
    gain = ratio(two, one)
    return Report(
        f"workers, nginx reference, cached script, {CONNECTIONS} connections",
        table([one, two]),
        [
            f"  nginx: 2 workers / 1 on this machine: {gain:.2f} "
            "(the ceiling wrk and the kernel leave here)"
        ],
    )


def main() -> None:
    run_reports(__doc__, bench)


if __name__ == "__main__":
    main()
