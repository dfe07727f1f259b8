"""What every benchmark here shares: servers on loopback, wrk, CPU and memory.

Every server a benchmark measures is started by it, on 127.0.0.1, as a child
process with its own config and scratch directory, and stopped by its PID when
the benchmark ends. Nothing here sends traffic anywhere but loopback.

Absolute rates depend on the machine (and on whatever else runs on it), so
each benchmark measures its reference and tagproxy back to back, repeats that
a few times and prints medians of the per-round ratios. Server CPU time per
request (from /proc) is printed beside req/s: it is much less disturbed by
other work on a shared machine than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

BENCH_DIR: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH_DIR.parent
LOOPBACK: Final = "127.0.0.1"
_TICKS: Final = os.sysconf("SC_CLK_TCK")
_START_TIMEOUT: Final = 20.0


# --- options shared by every benchmark ---------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    duration: float  # seconds per measured wrk run
    warmup: float  # seconds of unmeasured load before the first measured run
    rounds: int  # back-to-back rounds; medians are taken over them
    threads: int  # wrk threads


def parse_options(description: str, argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=float, default=10.0, metavar="S")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="S")
    parser.add_argument("--rounds", type=int, default=3, metavar="N")
    parser.add_argument("--threads", type=int, default=1, metavar="N")
    args = parser.parse_args(argv)
    return Options(args.duration, args.warmup, args.rounds, args.threads)


def wrk_or_exit() -> str:
    """The wrk binary, or a clear message and exit status 2."""
    path = shutil.which("wrk")
    if path is None:
        print(
            "wrk not found: these benchmarks need the wrk load generator "
            "(Debian package `wrk`: apt-get install wrk). Nothing was measured.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return path


def machine_note() -> str:
    """The load average, so a reader can tell how busy the machine was."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{os.cpu_count()} cores, load average {' '.join(load)}"


# --- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start-up")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((LOOPBACK, port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} in time")


@dataclass
class Server:
    """A child process listening on a loopback port."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def pids(self) -> list[int]:
        """The process and its children (worker processes, nginx workers)."""
        return [self.proc.pid, *_children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        with contextlib.suppress(OSError):
            for child in path.read_text().split():
                found.append(int(child))
                found.extend(_children(int(child)))
    return found


def start(
    name: str,
    argv: Sequence[str],
    port: int,
    scratch: Path,
    env: dict[str, str] | None = None,
) -> Server:
    log = scratch / f"{name.replace(' ', '-')}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=_child_env(env),
        )
    server = Server(name, port, proc, log)
    try:
        wait_for_port(port, proc, name)
    except RuntimeError:
        server.stop()
        sys.stderr.write(log.read_text(errors="replace")[-2000:])
        raise
    return server


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    # No proxy or TAGPROXY_* settings from the caller's shell leak in.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().endswith("_PROXY") and not k.startswith("TAGPROXY_")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tagproxy-bench-"))
    # nginx workers drop to an unprivileged user when started as root; they
    # must be able to read the files served from here.
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


# --- the servers we compare ----------------------------------------------------


def start_nginx(
    name: str, scratch: Path, http_block: str, port: int, workers: int = 1
) -> Server:
    """nginx as our own process: one worker, our config, our prefix directory."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx not found (Debian package `nginx`)")
    prefix = scratch / f"nginx-{port}"
    prefix.mkdir()
    prefix.chmod(0o755)
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    sendfile on;
    # On, nginx's p99 grew for large bodies; off keeps the comparison fair.
    tcp_nopush off;
{http_block}
}}
"""
    )
    return start(
        name,
        [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        port,
        scratch,
    )


def start_tagproxy(
    name: str,
    scratch: Path,
    rules: Sequence[Path],
    overrides: Sequence[str],
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> Server:
    port = free_port()
    argv = [python, "-m", "proxy", "serve", "--listen", f"{LOOPBACK}:{port}"]
    for path in rules:
        argv += ["--rules", str(path)]
    for override in overrides:
        argv += ["--upstream-override", override]
    return start(name, [*argv, *extra], port, scratch, env)


def start_bare(
    name: str,
    scratch: Path,
    mode: str,
    arg: str,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> Server:
    """One of the bare aiohttp references in bench/bare.py."""
    port = free_port()
    argv = [python, str(BENCH_DIR / "bare.py"), mode, str(port), arg]
    return start(name, argv, port, scratch, env)


# --- measuring -----------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of the given processes so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of the given processes, in MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass(frozen=True, slots=True)
class Load:
    """What wrk sends: a URL, headers, and optionally a method and body."""

    path: str
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    body: bytes = b""

    def lua(self, scratch: Path) -> Path | None:
        if self.method == "GET" and not self.body:
            return None
        script = scratch / f"load-{abs(hash(self))}.lua"
        body = self.body.decode("latin-1")
        script.write_text(
            f"wrk.method = {_lua_string(self.method)}\nwrk.body = {_lua_string(body)}\n"
        )
        return script


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    requests: int
    errors: int  # socket errors plus non-2xx/3xx answers


_RPS: Final = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL: Final = re.compile(r"(\d+) requests in")
_PERCENTILE: Final = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_SOCKET_ERRORS: Final = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX: Final = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNIT: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_argv(
    server: Server,
    load: Load,
    connections: int,
    duration: float,
    scratch: Path,
    threads: int = 1,
) -> list[str]:
    """The wrk command line that sends `load` to `server`."""
    argv = [
        wrk_or_exit(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(duration, 1):.0f}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for name, value in load.headers:
        argv += ["-H", f"{name}: {value}"]
    lua = load.lua(scratch)
    if lua is not None:
        argv += ["-s", str(lua)]
    argv.append(server.url + load.path)
    return argv


def wrk(
    server: Server,
    load: Load,
    connections: int,
    duration: float,
    scratch: Path,
    threads: int = 1,
) -> Run:
    """One wrk run against `server`, with the server's CPU time over the run."""
    argv = wrk_argv(server, load, connections, duration, scratch, threads)
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - cpu_before
    return _parse(out, cpu)


def _parse(out: str, cpu: float) -> Run:
    rps = float(_match(_RPS, out))
    requests = int(_match(_TOTAL, out))
    percentiles = {m[0]: float(m[1]) * _UNIT[m[2]] for m in _PERCENTILE.findall(out)}
    errors = 0
    socket_errors = _SOCKET_ERRORS.search(out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = _NON_2XX.search(out)
    if non_2xx:
        errors += int(non_2xx[1])
    return Run(
        rps=rps,
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        cpu_us=cpu / requests * 1e6 if requests else float("nan"),
        requests=requests,
        errors=errors,
    )


def _match(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    return found[1]


def warm(server: Server, load: Load, connections: int, opts: Options, scratch: Path):
    """Unmeasured load first: opens connections, fills caches and pools."""
    if opts.warmup > 0:
        wrk(server, load, connections, opts.warmup, scratch, opts.threads)


# --- rounds and ratios ---------------------------------------------------------


@dataclass
class Series:
    """Repeated runs of one setup."""

    name: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def spread(self, attr: str = "rps") -> float:
        """(max - min) / median: how much the rounds disagreed."""
        values = [getattr(r, attr) for r in self.runs]
        middle = statistics.median(values)
        return (max(values) - min(values)) / middle if middle else float("nan")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


def rounds(
    setups: Sequence[tuple[Server, Load]],
    connections: int,
    opts: Options,
    scratch: Path,
) -> list[Series]:
    """Each setup once per round, back to back, `opts.rounds` times."""
    for server, load in setups:
        warm(server, load, connections, opts, scratch)
    series = [Series(server.name) for server, _ in setups]
    order = list(zip(setups, series, strict=True))
    for n in range(opts.rounds):
        # Every other round runs backwards, so a machine getting busier or
        # quieter during a round does not always favour the same setup.
        for (server, load), into in order if n % 2 == 0 else reversed(order):
            into.runs.append(
                wrk(server, load, connections, opts.duration, scratch, opts.threads)
            )
    return series


def ratio(ours: Series, reference: Series, attr: str = "rps") -> float:
    """Median over rounds of ours/reference, each pair measured back to back."""
    return statistics.median(
        getattr(a, attr) / getattr(b, attr)
        for a, b in zip(ours.runs, reference.runs, strict=True)
    )


def cpu_ratio(ours: Series, reference: Series) -> float:
    """reference's CPU per request / ours, median over rounds.

    What the throughput ratio would be if both were held back by CPU alone:
    on a machine shared with other work it moves far less than req/s do.
    """
    return statistics.median(
        b.cpu_us / a.cpu_us for a, b in zip(ours.runs, reference.runs, strict=True)
    )


def table(series: Sequence[Series]) -> str:
    rows = [
        f"  {'setup':<34}{'req/s':>10}{'cpu us/req':>12}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'spread':>8}{'errors':>8}"
    ]
    for s in series:
        rows.append(
            f"  {s.name:<34}{s.median('rps'):>10.0f}{s.median('cpu_us'):>12.1f}"
            f"{s.median('p50_ms'):>9.2f}{s.median('p99_ms'):>9.2f}"
            f"{s.spread():>7.0%} {s.errors:>7}"
        )
    return "\n".join(rows)


def verdict(label: str, value: float, target: str, ok: bool) -> str:
    mark = "ok  " if ok else "MISS"
    return f"  [{mark}] {label:<52} {value:>7.2f}  (target {target})"


def run_reports(
    doc: str | None, bench: Callable[[Options, Path], Iterable[object]]
) -> None:
    """The main of a benchmark script: options, wrk, machine notes, reports."""
    opts = parse_options((doc or "").splitlines()[0])
    wrk_or_exit()
    print(machine_note())
    with scratch_dir() as scratch:
        for report in bench(opts, scratch):
            print(report)
    print(machine_note())
