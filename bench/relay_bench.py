"""Beacon relay: tagproxy vs nginx `proxy_pass` vs a bare aiohttp relay.

Run: .venv/bin/python bench/relay_bench.py [--duration S] [--rounds N]

A local nginx stands in for the vendor (the sink: it reads each request and
answers 200). The three relays pass GET beacons with a 1 KB query and POST
beacons with a 2 KB body to it, with a browser's usual headers. Reported:
req/s and server CPU per request at 50 connections, p50/p99 latency at 50 and
200 connections (after a warm-up, and for the first run on fresh servers
with 200 new connections), RSS after the load, and RSS while 1,000 idle
keep-alive connections are open.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import fixtures
from harness import (
    LOOPBACK,
    Options,
    Series,
    Server,
    cpu_ratio,
    free_port,
    ratio,
    rounds,
    rss_mb,
    run_reports,
    running,
    start_bare,
    start_nginx,
    start_tagproxy,
    table,
    verdict,
    wrk,
)
from script_bench import Report, start_sink

IDLE_CONNECTIONS = 1000


def reference_block(port: int, sink: Server) -> str:
    return f"""
    upstream vendor {{
        server {LOOPBACK}:{sink.port};
        keepalive 64;
    }}
    server {{
        listen {LOOPBACK}:{port} reuseport backlog=4096;
        location {fixtures.MOUNT}/ {{
            proxy_pass http://vendor/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {fixtures.HOST};
            proxy_set_header Cookie "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffering off;
        }}
    }}
"""


def start_relays(scratch: Path, sink: Server, rules: int = 5) -> list[Server]:
    port = free_port()
    nginx = start_nginx("nginx proxy_pass", scratch, reference_block(port, sink), port)
    bare = start_bare("bare aiohttp relay", scratch, "relay", sink.url)
    rule_dir = fixtures.write_rules(scratch / f"rules-{rules}", rules)
    proxy = start_tagproxy(
        "tagproxy", scratch, [rule_dir], fixtures.overrides(sink.url, rules)
    )
    return [nginx, bare, proxy]


@contextlib.contextmanager
def idle_connections(server: Server, count: int) -> Iterator[None]:
    """`count` keep-alive connections, each after one beacon, left idle."""
    request = (
        f"GET {fixtures.beacon_get().path} HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{server.port}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in fixtures.BROWSER_HEADERS)
        + "\r\n"
    ).encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((LOOPBACK, server.port), timeout=10)
            sockets.append(sock)
            sock.sendall(request)
            _read_response(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def _read_response(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the response ended")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:80]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)


def idle_rss(scratch: Path, sink: Server) -> tuple[float, float]:
    """RSS of a fresh tagproxy, at rest and with 1,000 idle connections."""
    rule_dir = fixtures.write_rules(scratch / "rules-idle", 5)
    proxy = start_tagproxy(
        "tagproxy idle", scratch, [rule_dir], fixtures.overrides(sink.url, 5)
    )
    with running(proxy):
        time.sleep(0.5)
        at_rest = rss_mb(proxy.pids())
        with idle_connections(proxy, IDLE_CONNECTIONS):
            time.sleep(1.0)
            held = rss_mb(proxy.pids())
    return at_rest, held


def cold_run(server: Server, opts: Options, scratch: Path) -> Series:
    """The first run against a fresh server: 200 new connections at once."""
    load = fixtures.beacon_get()
    return Series(
        f"{server.name} (cold)",
        [wrk(server, load, 200, opts.duration, scratch, opts.threads)],
    )


def bench(opts: Options, scratch: Path) -> list[Report]:
    sink = start_sink(scratch)
    with running(sink):
        relays = start_relays(scratch, sink)
        with running(*relays):
            _, bare, proxy = relays
            cold = [cold_run(bare, opts, scratch), cold_run(proxy, opts, scratch)]
            get = fixtures.beacon_get()
            post = fixtures.beacon_post()
            by_get = rounds([(s, get) for s in relays], 50, opts, scratch)
            by_post = rounds([(s, post) for s in relays], 50, opts, scratch)
            at_200 = rounds([(s, get) for s in relays], 200, opts, scratch)
            after_load = {s.name: rss_mb(s.pids()) for s in relays}
        at_rest, held = idle_rss(scratch, sink)
    return [
        _throughput("GET beacon, 1 KB query", by_get),
        _throughput("POST beacon, 2 KB body", by_post),
        _latency(by_get, at_200, cold),
        _memory(after_load, at_rest, held),
    ]


def _throughput(title: str, series: list[Series]) -> Report:
    nginx, bare, proxy = series
    vs_bare = ratio(proxy, bare)
    vs_nginx = ratio(proxy, nginx)
    by_cpu = cpu_ratio(proxy, bare)
    return Report(
        f"relay, {title}, 50 connections",
        table(series),
        [
            verdict(
                f"relay {title[:4]}: tagproxy / bare aiohttp relay",
                vs_bare,
                ">= 1.00",
                vs_bare >= 1.0,
            ),
            verdict(
                "  same, by CPU per request (bare cpu / tagproxy cpu)",
                by_cpu,
                ">= 1.00",
                by_cpu >= 1.0,
            ),
            verdict(
                f"relay {title[:4]}: tagproxy / nginx proxy_pass",
                vs_nginx,
                ">= 0.15 stretch",
                vs_nginx >= 0.15,
            ),
        ],
    )


def _latency(at_50: list[Series], at_200: list[Series], cold: list[Series]) -> Report:
    _, bare, proxy = at_50
    gap = proxy.median("p99_ms") - bare.median("p99_ms")
    warm_200 = [Series(f"{s.name} @200", s.runs) for s in at_200]
    return Report(
        "relay latency, GET beacon: 50 and 200 connections warm; 200 cold",
        table([*at_50, *warm_200, *cold]),
        [
            verdict(
                "relay p99 @50: tagproxy - bare relay (ms)", gap, "<= 2.0", gap <= 2.0
            ),
            f"  {'relay p99 @200, tagproxy: warm / cold (ms)':<58}"
            f"{at_200[2].median('p99_ms'):>7.2f} / {cold[1].median('p99_ms'):.2f}",
        ],
    )


def _memory(after_load: dict[str, float], at_rest: float, held: float) -> Report:
    rows = [
        f"  {'RSS after load':<34}"
        + "".join(f"{name}: {mb:.0f} MiB  " for name, mb in after_load.items())
    ]
    rows.append(f"  {'tagproxy RSS at rest':<34}{at_rest:.0f} MiB")
    rows.append(f"  {'tagproxy RSS, 1,000 idle conns':<34}{held:.0f} MiB")
    return Report(
        "memory",
        "\n".join(rows),
        [verdict("RSS with 1,000 idle connections (MiB)", held, "< 80", held < 80)],
    )


def main() -> None:
    run_reports(__doc__, bench)


if __name__ == "__main__":
    main()
