"""Processes: tagproxy `--workers 2` vs one process.

Run: .venv/bin/python bench/workers_bench.py [--duration S] [--rounds N]

Both serve the same cached script and relay the same GET beacon to the local
sink. On a 2-core machine wrk and the sink share the cores with the workers,
so the ratio shows what a second process buys on this machine, not on an
idle one. wrk gets two threads here so the load generator is not the limit.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import fixtures
from harness import (
    Options,
    ratio,
    rounds,
    run_reports,
    running,
    start_tagproxy,
    table,
    verdict,
)
from script_bench import Report, served_gzip, start_sink

CONNECTIONS = 100


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
                    served_gzip(server)
            reports = []
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
                            )
                        ],
                    )
                )
    return reports


def main() -> None:
    run_reports(__doc__, bench)


if __name__ == "__main__":
    main()
