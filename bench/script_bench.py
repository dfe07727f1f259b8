"""Cached script: tagproxy vs nginx `gzip_static` vs a bare aiohttp handler.

Run: .venv/bin/python bench/script_bench.py [--duration S] [--rounds N]

tagproxy fills its cache once from a local nginx standing in for the vendor;
the gzip bytes it then serves are written out and served by the two
references, so all three send the very same bytes. wrk fetches the script
over 50 keep-alive connections, accepting gzip.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

import fixtures
from harness import (
    LOOPBACK,
    Options,
    Series,
    Server,
    cpu_ratio,
    free_port,
    machine_note,
    parse_options,
    ratio,
    rounds,
    running,
    scratch_dir,
    start_bare,
    start_nginx,
    start_tagproxy,
    table,
    verdict,
    wrk_or_exit,
)

CONNECTIONS = 50


@dataclass
class Report:
    title: str
    table: str
    verdicts: list[str]

    def __str__(self) -> str:
        return "\n".join([self.title, self.table, *self.verdicts])


def start_sink(scratch: Path) -> Server:
    """The vendor: nginx serving the original script and answering beacons."""
    root = scratch / "vendor"
    root.mkdir()
    root.chmod(0o755)
    (root / fixtures.SCRIPT_PATH.lstrip("/")).write_bytes(fixtures.make_script())
    port = free_port()
    return start_nginx("sink", scratch, fixtures.sink_block(port, root), port)


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as answer:
        return answer.status, dict(answer.headers), answer.read()


def served_gzip(server: Server) -> bytes:
    """The script as tagproxy serves it to a browser accepting gzip."""
    url = server.url + fixtures.MOUNT + fixtures.SCRIPT_PATH
    status, headers, body = fetch(url, {"Accept-Encoding": "gzip"})
    if status != 200 or headers.get("Content-Encoding") != "gzip":
        raise RuntimeError(f"tagproxy did not serve the script gzipped: {status}")
    return body


def reference_block(port: int, root: Path) -> str:
    return f"""
    server {{
        listen {LOOPBACK}:{port} reuseport backlog=4096;
        root {root};
        location {fixtures.MOUNT}/ {{
            gzip_static on;
            gzip_vary on;
            etag on;
            default_type application/javascript;
            add_header Cache-Control "public, max-age=3600";
        }}
    }}
"""


def start_references(scratch: Path, gz: bytes) -> tuple[Server, Server]:
    root = scratch / "reference"
    where = root / fixtures.MOUNT.lstrip("/")
    where.mkdir(parents=True)
    root.chmod(0o755)
    where.chmod(0o755)
    name = fixtures.SCRIPT_PATH.lstrip("/")
    (where / f"{name}.gz").write_bytes(gz)
    (where / name).write_bytes(b"// only the .gz is served\n")
    port = free_port()
    nginx = start_nginx("nginx gzip_static", scratch, reference_block(port, root), port)
    bare = start_bare(
        "bare aiohttp handler", scratch, "script", str(where / f"{name}.gz")
    )
    return nginx, bare


def check_same_bytes(servers: list[Server], expected: bytes) -> None:
    load = fixtures.script_load()
    for server in servers:
        _, headers, body = fetch(server.url + load.path, dict(load.headers))
        if body != expected or headers.get("Content-Encoding") != "gzip":
            raise RuntimeError(f"{server.name} serves other bytes than tagproxy")


def bench(opts: Options, scratch: Path, rules: int = 5) -> Report:
    sink = start_sink(scratch)
    with running(sink):
        rule_dir = fixtures.write_rules(scratch / "rules", rules)
        proxy = start_tagproxy(
            "tagproxy", scratch, [rule_dir], fixtures.overrides(sink.url, rules)
        )
        with running(proxy):
            gz = served_gzip(proxy)
            nginx, bare = start_references(scratch, gz)
            with running(nginx, bare):
                check_same_bytes([nginx, bare, proxy], gz)
                load = fixtures.script_load()
                series = rounds(
                    [(nginx, load), (bare, load), (proxy, load)],
                    CONNECTIONS,
                    opts,
                    scratch,
                )
    return report(series, len(gz))


def report(series: list[Series], size: int) -> Report:
    nginx, bare, proxy = series
    vs_nginx = ratio(proxy, nginx)
    vs_bare = ratio(proxy, bare)
    by_cpu = cpu_ratio(proxy, bare)
    return Report(
        f"cached script ({size / 1024:.0f} KiB gzip), {CONNECTIONS} connections",
        table(series),
        [
            verdict(
                "cached script: tagproxy / nginx gzip_static",
                vs_nginx,
                ">= 0.30",
                vs_nginx >= 0.30,
            ),
            verdict(
                "cached script: tagproxy / bare aiohttp handler",
                vs_bare,
                ">= 0.90",
                vs_bare >= 0.90,
            ),
            verdict(
                "  same, by CPU per request (bare cpu / tagproxy cpu)",
                by_cpu,
                ">= 0.90",
                by_cpu >= 0.90,
            ),
        ],
    )


def main() -> None:
    opts = parse_options(__doc__.splitlines()[0])
    wrk_or_exit()
    print(machine_note())
    with scratch_dir() as scratch:
        print(bench(opts, scratch))
    print(machine_note())


if __name__ == "__main__":
    main()
