"""Rule count: tagproxy with 5 rule files loaded vs with 100.

Run: .venv/bin/python bench/rules_bench.py [--duration S] [--rounds N]

Route lookup must not grow with the number of rules. Two tagproxy processes,
one with the bench rule and 4 other vendors, one with the bench rule and 99,
serve the same cached script and relay the same GET beacon to the local sink,
measured round by round, back to back.
"""

from __future__ import annotations

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

CONNECTIONS = 50
FEW, MANY = 5, 100


def bench(opts: Options, scratch: Path) -> list[Report]:
    sink = start_sink(scratch)
    with running(sink):
        servers = []
        for count in (FEW, MANY):
            rule_dir = fixtures.write_rules(scratch / f"rules-{count}", count)
            servers.append(
                start_tagproxy(
                    f"tagproxy, {count} rule files",
                    scratch,
                    [rule_dir],
                    fixtures.overrides(sink.url, count),
                )
            )
        with running(*servers):
            for server in servers:
                served_gzip(server)  # fill the cache before measuring
            reports = []
            for title, load in (
                ("cached script", fixtures.script_load()),
                ("relay GET beacon", fixtures.beacon_get()),
            ):
                few, many = rounds(
                    [(s, load) for s in servers], CONNECTIONS, opts, scratch
                )
                share = ratio(many, few)
                reports.append(
                    Report(
                        f"rule count, {title}, {CONNECTIONS} connections",
                        table([few, many]),
                        [
                            verdict(
                                f"{title}: {MANY} rules / {FEW} rules",
                                share,
                                ">= 0.95",
                                share >= 0.95,
                            )
                        ],
                    )
                )
    return reports


def main() -> None:
    run_reports(__doc__, bench)


if __name__ == "__main__":
    main()
