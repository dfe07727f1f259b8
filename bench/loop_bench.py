"""Event loops on the relay: plain asyncio and uvloop versions side by side.

Run: .venv/bin/python bench/loop_bench.py [--uvloop 0.21.0 --uvloop 0.22.1]

The installed uvloop is the reference. Each extra `--uvloop VERSION` is
installed with pip into a scratch directory put first on the servers'
PYTHONPATH; `asyncio` runs the same servers with uvloop hidden. For every
loop a bare aiohttp relay and tagproxy relay GET beacons to the local sink,
all variants measured round by round, back to back.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import fixtures
from harness import (
    Options,
    Server,
    machine_note,
    rounds,
    running,
    scratch_dir,
    start_bare,
    start_tagproxy,
    table,
    wrk_or_exit,
)
from script_bench import Report, start_sink

CONNECTIONS = 50


def loop_dirs(scratch: Path, versions: list[str]) -> dict[str, str]:
    """PYTHONPATH prefix per loop variant ("" is the installed uvloop)."""
    found = {f"uvloop {version('uvloop')} (installed)": ""}
    hidden = scratch / "no-uvloop"
    hidden.mkdir()
    (hidden / "uvloop.py").write_text("raise ImportError('hidden by the bench')\n")
    found["asyncio"] = str(hidden)
    for wanted in versions:
        target = scratch / f"uvloop-{wanted}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                f"uvloop=={wanted}",
            ],
            check=True,
        )
        found[f"uvloop {wanted}"] = str(target)
    return found


def start_variants(scratch: Path, sink: Server, dirs: dict[str, str]) -> list[Server]:
    rule_dir = fixtures.write_rules(scratch / "rules", 5)
    servers = []
    for name, path in dirs.items():
        env = {"PYTHONPATH": path} if path else None
        servers.append(
            start_bare(f"bare relay, {name}", scratch, "relay", sink.url, _env(env))
        )
        servers.append(
            start_tagproxy(
                f"tagproxy, {name}",
                scratch,
                [rule_dir],
                fixtures.overrides(sink.url, 5),
                env=_env(env),
            )
        )
    return servers


def _env(extra: dict[str, str] | None) -> dict[str, str] | None:
    if extra is None:
        return None
    # harness puts the repository on PYTHONPATH; the loop directory goes first.
    from harness import ROOT

    return {"PYTHONPATH": f"{extra['PYTHONPATH']}:{ROOT}"}


def bench(opts: Options, scratch: Path, versions: list[str]) -> Report:
    dirs = loop_dirs(scratch, versions)
    sink = start_sink(scratch)
    with running(sink):
        servers = start_variants(scratch, sink, dirs)
        with running(*servers):
            load = fixtures.beacon_get()
            series = rounds([(s, load) for s in servers], CONNECTIONS, opts, scratch)
    reference_bare, reference_proxy = series[0], series[1]
    lines = []
    for s in series:
        reference = reference_bare if s.name.startswith("bare") else reference_proxy
        pairs = zip(s.runs, reference.runs, strict=True)
        speed = statistics.median(a.rps / b.rps for a, b in pairs)
        lines.append(f"  {s.name:<44} {speed:>5.2f}x the installed uvloop")
    return Report(
        f"event loops, relay GET beacon, {CONNECTIONS} connections",
        table(series),
        lines,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="append", default=[], metavar="VERSION")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    wrk_or_exit()
    print(machine_note())
    with scratch_dir() as scratch:
        print(
            bench(
                Options(args.duration, args.warmup, args.rounds, 1),
                scratch,
                args.uvloop,
            )
        )
    print(machine_note())


if __name__ == "__main__":
    main()
