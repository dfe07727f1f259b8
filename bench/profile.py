"""Where the time goes: py-spy samples tagproxy and its bare reference under wrk.

Run: .venv/bin/python bench/profile.py [script|get|post] [--duration S]

For one load (the cached script, the GET beacon or the POST beacon), tagproxy
and the matching bare aiohttp server from bench/bare.py are each loaded by wrk
while py-spy samples them. Printed: the functions whose own time per request
differs most between the two, in microseconds per request (samples times the
sampling interval, over the requests wrk counted). py-spy comes from
`pip install py-spy`; without it the script says so and measures nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Final

import fixtures
import script_bench
from harness import (
    Load,
    Server,
    machine_note,
    running,
    scratch_dir,
    start_bare,
    start_tagproxy,
    wrk_argv,
)

RATE: Final = 500  # samples a second
CONNECTIONS: Final = 50
_LINE: Final = re.compile(r":\d+\)$")
# Time inside the event loop's C code (uvloop: polling, socket reads and
# writes, callbacks) shows as the Python frame that started the loop.
_EVENT_LOOP: Final = {
    "run (proxy/runtime.py)": "(event loop)",
    "run_app (aiohttp/web.py)": "(event loop)",
}


def py_spy_or_exit() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        print("py-spy not found (pip install py-spy). Nothing was measured.")
        raise SystemExit(2)
    return found


def sample(server: Server, load: Load, seconds: int, scratch: Path) -> Counter[str]:
    """Own-time samples per function of `server` under load, per request."""
    argv = wrk_argv(server, load, CONNECTIONS, seconds + 2, scratch)
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        load_run = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(1)  # past the start of the load
        spy = [py_spy_or_exit(), "record", "--pid", str(server.pids()[0])]
        spy += ["-d", str(seconds), "-r", str(RATE), "--nonblocking"]
        spy += ["-f", "raw", "-o", raw.name]
        subprocess.run(spy, capture_output=True, check=True)
        out = load_run.communicate()[0]
        counts: Counter[str] = Counter()
        for line in Path(raw.name).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frame = _LINE.sub(")", stack.split(";")[-1])
            counts[_EVENT_LOOP.get(frame, frame)] += int(n)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    per_request = 1e6 / RATE / (rps * seconds)
    return Counter({k: v * per_request for k, v in counts.items()})


def report(ours: Counter[str], bare: Counter[str], rows: int = 30) -> str:
    lines = [
        f"  total us/request: tagproxy {sum(ours.values()):.1f}, "
        f"bare {sum(bare.values()):.1f}",
        "  tagproxy   bare  own time per request (us), largest differences first",
    ]
    names = sorted(set(ours) | set(bare), key=lambda k: bare[k] - ours[k])
    for name in names[:rows]:
        lines.append(f"  {ours[name]:8.1f} {bare[name]:6.1f}  {name or '?'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("load", choices=("script", "get", "post"), default="script")
    parser.add_argument("--duration", type=int, default=6, metavar="S")
    opts = parser.parse_args()
    py_spy_or_exit()
    print(machine_note())
    with scratch_dir() as scratch:
        sink = script_bench.start_sink(scratch)
        with running(sink):
            rules = fixtures.write_rules(scratch / "rules", 5)
            overrides = fixtures.overrides(sink.url, 5)
            proxy = start_tagproxy("tagproxy", scratch, [rules], overrides)
            with running(proxy):
                gz = script_bench.served_gzip(proxy)
                if opts.load == "script":
                    (scratch / "t.js.gz").write_bytes(gz)
                    bare = start_bare(
                        "bare", scratch, "script", str(scratch / "t.js.gz")
                    )
                else:
                    bare = start_bare("bare", scratch, "relay", sink.url)
                with running(bare):
                    load = {
                        "script": fixtures.script_load,
                        "get": fixtures.beacon_get,
                        "post": fixtures.beacon_post,
                    }[opts.load]()
                    ours = sample(proxy, load, opts.duration, scratch)
                    theirs = sample(bare, load, opts.duration, scratch)
    print(f"profile, {opts.load}, {CONNECTIONS} connections")
    print(report(ours, theirs))
    print(machine_note())


if __name__ == "__main__":
    main()
