"""Every benchmark in one run, then every ratio and its target in one list.

Run: bench/run [--duration S] [--rounds N] [--warmup S]

Each part starts its own servers on loopback (nginx and the bare aiohttp
references included) and stops them before the next part starts. With the
defaults (10 s runs, 3 rounds) the whole run takes about 15 minutes.
"""

from __future__ import annotations

import time

import loop_bench
import privacy_bench
import relay_bench
import rewrite_bench
import rules_bench
import script_bench
import workers_bench
from harness import machine_note, parse_options, scratch_dir, wrk_or_exit
from script_bench import Report


def main() -> None:
    opts = parse_options(__doc__.splitlines()[0])
    wrk_or_exit()
    started = time.monotonic()
    print(f"start: {machine_note()}")
    print(
        f"wrk -t{opts.threads}, {opts.duration:g} s runs after {opts.warmup:g} s "
        f"of warm-up, {opts.rounds} rounds; medians of per-round ratios\n"
    )
    reports: list[Report] = []
    parts = (
        ("cached script", lambda s: [script_bench.bench(opts, s)]),
        ("relay", lambda s: relay_bench.bench(opts, s)),
        ("rule count", lambda s: rules_bench.bench(opts, s)),
        ("privacy", lambda s: privacy_bench.bench(opts, s)),
        ("workers", lambda s: workers_bench.bench(opts, s)),
        ("event loops", lambda s: [loop_bench.bench(opts, s, [])]),
    )
    for name, part in parts:
        with scratch_dir() as scratch:
            for report in part(scratch):
                print(report, end="\n\n", flush=True)
                reports.append(report)
        print(f"({name} done; {machine_note()})\n", flush=True)

    print("rewrite of a 570 KB script and cost per cache fill")
    rewrite_bench.main()

    print("\nevery ratio against its target")
    for report in reports:
        for line in report.verdicts:
            print(line)
    print(f"\nend: {machine_note()}; took {(time.monotonic() - started) / 60:.0f} min")


if __name__ == "__main__":
    main()
