"""Durable delivery: spooled before the answer, delivered with retries, bounded.

Each test drives tagproxy with the durable test rule (tests/rules_durable)
against the fake vendor and checks what the vendor received, and when.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from proxy.config import build_durability, build_settings
from proxy.delivery import backoff, classify
from proxy.errors import ConfigError
from proxy.rules import RuleError, load_rule, load_rules
from proxy.server import Proxy
from proxy.spool import Beacon, Spool, SpoolError

from . import tally
from .chaos_support import ChaosVendor, Load, ServeProcess, free_port, until_delivered
from .durable_support import DURABLE_RULES, HOST, DurableProxy, eventually
from .fakes import FakeVendor, Received, Reply

VISITOR = "203.0.113.7"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def durable(vendor: FakeVendor, tmp_path: Path) -> AsyncIterator[DurableProxy]:
    running = DurableProxy(vendor.url, tmp_path / "spool.db", trusted=("127.0.0.1",))
    await running.start()
    yield running
    await running.stop()


def beacons(vendor: FakeVendor, path: str = "/e") -> list[Received]:
    return [r for r in vendor.to(HOST) if r.path == path]


async def test_answered_from_spool_before_the_vendor_has_it(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    released = asyncio.Event()

    async def held(request: web.Request, received: Received) -> web.Response:
        await released.wait()
        return web.Response(status=204)

    vendor.reply(HOST, "/e", held)
    body = b'{"event":"purchase","value":42}'
    async with client.post(
        URL(f"{durable.url}/bc/e?v=2&tid=G-1&en=page_view+x%2Fy", encoded=True),
        data=body,
        headers={
            "Content-Type": "text/plain",
            "User-Agent": "Mozilla/5.0 test",
            "DNT": "1",
            "Cookie": "session=secret",
            "X-Forwarded-For": VISITOR,
        },
    ) as response:
        assert response.status == 202
        assert await response.read() == b"ok"
        assert response.headers["Cache-Control"] == "no-store"
    # The client has its answer while the vendor is still holding its copy.
    released.set()
    await eventually(lambda: durable.stats.delivered == 1, what="delivery")

    (received,) = beacons(vendor)
    assert received.method == "POST"
    assert received.raw_path == "/e?v=2&tid=G-1&en=page_view+x%2Fy"
    assert received.body == body
    assert received.all("X-Forwarded-For") == [VISITOR]
    assert received.header("User-Agent") == "Mozilla/5.0 test"
    assert received.header("DNT") == "1"
    assert received.header("Cookie") is None
    assert durable.depth == 0


async def test_get_beacon_is_spooled_too(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    url = URL(f"{durable.url}/bc/e?id=7&x=%20", encoded=True)
    async with client.get(url) as response:
        assert response.status == 202
    await eventually(lambda: durable.stats.delivered == 1)
    (received,) = beacons(vendor)
    assert (received.method, received.raw_path, received.body) == (
        "GET",
        "/e?id=7&x=%20",
        b"",
    )


async def test_5xx_and_429_are_retried_until_delivered(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    answers = iter([503, 500, 429, 204])
    vendor.reply(HOST, "/e", lambda r, rec: _status(next(answers)))

    async with client.post(f"{durable.url}/bc/e", data=b"once") as response:
        assert response.status == 202
    await eventually(lambda: durable.stats.delivered == 1, what="delivery")

    assert [r.body for r in beacons(vendor)] == [b"once"] * 4
    assert durable.stats.retried == 3
    assert durable.depth == 0


async def _status(status: int) -> web.Response:
    return web.Response(status=status)


async def test_4xx_is_final_not_retried(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    vendor.reply(HOST, "/e", Reply(400, b"bad"))
    async with client.post(f"{durable.url}/bc/e", data=b"x") as response:
        assert response.status == 202
    await eventually(lambda: durable.stats.rejected == 1)
    await asyncio.sleep(0.3)  # room for a wrong retry to show up
    assert len(beacons(vendor)) == 1
    assert durable.depth == 0


async def test_beacons_past_their_age_limit_are_dropped_and_counted(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    vendor.reply(HOST, "/short", Reply(503))
    for _ in range(3):
        async with client.post(f"{durable.url}/bc/short", data=b"x") as response:
            assert response.status == 204
    await eventually(lambda: durable.stats.expired == 3, what="expiry")

    seen = len(beacons(vendor, "/short"))
    await asyncio.sleep(0.3)
    assert len(beacons(vendor, "/short")) == seen  # nothing after expiry
    assert durable.depth == 0


async def test_full_spool_falls_back_to_the_live_relay(
    vendor: FakeVendor, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    released = asyncio.Event()

    async def held(request: web.Request, received: Received) -> web.Response:
        await released.wait()
        return web.Response(status=200, text="live answer")

    vendor.reply(HOST, "/e", held)
    running = await DurableProxy(vendor.url, tmp_path / "s.db", "2KiB").start()
    try:
        async with client.post(f"{running.url}/bc/e", data=b"a" * 1200) as first:
            assert first.status == 202  # spooled
        # The second does not fit: it waits for the vendor's own answer.
        second = asyncio.create_task(
            client.post(f"{running.url}/bc/e", data=b"b" * 1200)
        )
        await eventually(lambda: len(beacons(vendor)) == 2)
        released.set()
        async with await second as response:
            assert response.status == 200
            assert await response.text() == "live answer"
        await eventually(lambda: running.stats.delivered == 1)
        assert running.stats.full == 1
        assert running.stats.accepted == 1
    finally:
        await running.stop()


async def test_restart_delivers_what_the_last_run_accepted(
    vendor: FakeVendor, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    vendor.reply(HOST, "/e", Reply(503))
    first = await DurableProxy(vendor.url, tmp_path / "s.db").start()
    for n in range(20):
        async with client.post(f"{first.url}/bc/e", data=b"%d" % n) as response:
            assert response.status == 202
    await first.stop()
    vendor.reply(HOST, "/e", Reply(204))

    second = await DurableProxy(vendor.url, tmp_path / "s.db").start()
    try:
        await eventually(lambda: second.stats.delivered == 20, what="delivery")
        delivered = [r.body for r in beacons(vendor) if r.body]
        assert sorted(set(delivered), key=int) == [b"%d" % n for n in range(20)]
        assert second.depth == 0
        tally.add("durable beacons accepted", 20)
        tally.add("durable beacons delivered", len(set(delivered)))
    finally:
        await second.stop()


async def test_in_flight_at_a_crash_are_sent_again_at_once(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    path = tmp_path / "s.db"
    spool = await Spool.open(path, 1 << 20)
    for n in range(3):
        await spool.put(_beacon(n))
    await spool.close()
    # As a crash leaves them: marked in flight by a process that is gone.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE beacons SET claimed = 1")

    running = await DurableProxy(vendor.url, path).start()
    try:
        assert running.proxy is not None
        assert running.proxy.delivery is not None
        assert running.proxy.delivery.spool.recovered == 3
        await eventually(lambda: running.stats.delivered == 3)
        assert sorted(r.body for r in beacons(vendor)) == [b"0", b"1", b"2"]
    finally:
        await running.stop()


def _beacon(n: int) -> Beacon:
    return Beacon(
        vendor="beacon",
        route="relay:collect.beacon.test/e",
        method="POST",
        scheme="https",
        host=HOST,
        target="/e",
        headers=(("Content-Type", "text/plain"),),
        body=b"%d" % n,
        accepted=0.0,
        expires=4e9,
        connect_timeout=1,
        total_timeout=1,
        retry_initial=0.05,
        retry_max=0.4,
    )


async def test_a_failing_vendor_gets_probes_not_a_storm(
    vendor: FakeVendor, durable: DurableProxy, client: aiohttp.ClientSession
) -> None:
    vendor.reply(HOST, "/e", Reply(503))
    for n in range(100):
        async with client.post(f"{durable.url}/bc/e", data=b"%d" % n) as response:
            assert response.status == 202
    await asyncio.sleep(1.0)
    during_outage = len(beacons(vendor))
    vendor.reply(HOST, "/e", Reply(204))
    await eventually(lambda: durable.stats.delivered == 100, what="drain")

    # Without a breaker, each of the 100 would have been tried about five
    # times in that second; with it, the first wave and a few probes.
    assert during_outage < 100 + 40
    delivered = {r.body for r in beacons(vendor)}
    assert delivered == {b"%d" % n for n in range(100)}


async def test_a_spool_belongs_to_one_process(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "s.db", 1 << 20)
    try:
        with pytest.raises(ConfigError, match="in use by another tagproxy"):
            await Spool.open(tmp_path / "s.db", 1 << 20)
    finally:
        await spool.close()


def test_durable_routes_refuse_to_start_without_a_spool() -> None:
    settings = build_settings(
        rules=[str(DURABLE_RULES)],
        listen="127.0.0.1:0",
        public_url=None,
        cookie_domain=None,
        allowed_origins=[],
        trusted_proxies=[],
        client_ip_headers=[],
        overrides=[],
        geo_header=None,
        log_format="plain",
        log_level="INFO",
    )
    with pytest.raises(ConfigError, match=r"durable but no spool is set.*--spool"):
        Proxy(settings, load_rules([DURABLE_RULES]))


# --- backoff and classification ------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (0, 0.5, 1.0),  # initial 1 s: between half and all of it
        (1, 1.0, 2.0),
        (3, 4.0, 8.0),
        (20, 30.0, 60.0),  # capped at retry_max
    ],
)
def test_backoff_grows_is_capped_and_jittered(
    attempt: int, low: float, high: float
) -> None:
    rng = random.Random(7)
    delays = [backoff(attempt, 1.0, 60.0, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 100  # jittered, not one value


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (302, "delivered"),
        (400, "rejected"),
        (404, "rejected"),
        (413, "rejected"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_vendor_answers_classified(status: int, result: str) -> None:
    assert classify(status).value == result


# --- the rule table ------------------------------------------------------------

_RULE = """
vendor = "v"
mount = "/v"
[[hosts]]
host = "collect.v.test"
[[relays]]
host = "collect.v.test"
paths = ["/e"]
[relays.durable]
"""


@pytest.mark.parametrize(
    ("durable", "key", "reason"),
    [
        ("status = 500", "status", "2xx"),
        ('status = 204\nbody = "ok"', "body", "no body"),
        ('max_age = "0s"', "max_age", "more than zero"),
        ('retry_initial = "5s"\nretry_max = "1s"', "retry_max", "retry_initial"),
        ("retries = 3", "retries", "unknown key"),
        ('max_age = "soon"', "max_age", "duration"),
    ],
)
def test_bad_durable_tables_fail_at_load(
    tmp_path: Path, durable: str, key: str, reason: str
) -> None:
    path = tmp_path / "v.toml"
    path.write_text(_RULE + durable + "\n")
    with pytest.raises(RuleError, match=reason) as caught:
        load_rule(path)
    assert caught.value.key == f"relays[0].durable.{key}"


def test_websocket_relays_cannot_be_durable(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text(_RULE.replace('paths = ["/e"]', 'paths = ["/e"]\nwebsocket = true'))
    with pytest.raises(RuleError, match="no beacons to spool"):
        load_rule(path)


def test_spool_flags_are_validated() -> None:
    with pytest.raises(ConfigError, match="--spool-max-size"):
        build_durability(spool_max_size="lots")
    with pytest.raises(ConfigError, match="--shutdown-grace"):
        build_durability(shutdown_grace="-1s")
    with pytest.raises(ConfigError, match="--delivery-concurrency"):
        build_durability(delivery_concurrency="0")
    assert build_durability(delivery_concurrency="100").delivery_concurrency == 100
    with pytest.raises(ConfigError, match="--dns-server"):
        build_durability(dns_servers=["dns.example"])
    durability = build_durability(dns_servers=["127.0.0.1:5353", "::1", "[::1]:53"])
    assert durability.dns_servers == ("127.0.0.1:5353", "[::1]:53", "[::1]:53")


# --- several processes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "left"),
    [
        ("s.db", "s.1.db"),  # a worker slot this run does not start
        ("s.0.db", "s.db"),  # the single process's file, now run with workers
        ("s.1.db", "s.0.db"),  # another worker's, while it is not running
    ],
)
async def test_beacons_left_in_a_file_nobody_holds_are_taken_over(
    vendor: FakeVendor, tmp_path: Path, ours: str, left: str
) -> None:
    gone = await Spool.open(tmp_path / left, 1 << 20)
    for n in range(5):
        await gone.put(_beacon(n))
    await gone.close()

    running = await DurableProxy(vendor.url, tmp_path / ours).start()
    try:
        await eventually(lambda: running.stats.delivered == 5, what="take-over")
        assert sorted(r.body for r in beacons(vendor)) == [b"%d" % n for n in range(5)]
        assert running.depth == 0
    finally:
        await running.stop()


async def test_a_file_another_process_holds_is_left_alone(tmp_path: Path) -> None:
    held = await Spool.open(tmp_path / "s.1.db", 1 << 20)
    await held.put(_beacon(1))
    ours = await Spool.open(tmp_path / "s.db", 1 << 20)
    try:
        assert await ours.adopt() == 0
        assert (ours.depth, held.depth) == (0, 1)
    finally:
        await ours.close()
        await held.close()


async def test_workers_spool_apart_and_a_later_run_sends_all(tmp_path: Path) -> None:
    vendor = ChaosVendor(fail_ratio=1.0)  # nothing leaves while the workers run
    await vendor.up()
    spool, log = tmp_path / "spool.db", tmp_path / "tagproxy.log"
    workers = ServeProcess(free_port(), vendor.url, spool, log, "--workers", "2")
    await workers.start()
    try:
        load = Load(workers.url, clients=8, tag="workers")
        load.start(1.0)
        await asyncio.sleep(1.0)
        report = await load.finish()
        workers.signal(signal.SIGTERM)
        assert await workers.wait(30) == 0, workers.tail()
        files = await asyncio.to_thread(
            lambda: sorted(p.name for p in tmp_path.glob("spool.*.db"))
        )
        assert files == ["spool.0.db", "spool.1.db"]

        # One process now, on the operator's file: it takes both over.
        vendor.healthy()
        single = ServeProcess(free_port(), vendor.url, spool, log)
        await single.start()
        try:
            missing = await until_delivered(vendor, report.accepted, 20)
        finally:
            single.signal(signal.SIGTERM)
            await single.wait(20)
    finally:
        await workers.stop()
        await vendor.down()
    assert report.accepted
    assert report.failed == 0
    assert not missing


async def test_a_failing_spool_step_does_not_end_delivery(
    vendor: FakeVendor,
    durable: DurableProxy,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert durable.proxy is not None
    assert durable.proxy.delivery is not None
    spool = durable.proxy.delivery.spool
    real_claim = spool.claim
    failures = [SpoolError("disk I/O error")]

    async def flaky(*args: Any, **kw: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_claim(*args, **kw)

    monkeypatch.setattr(spool, "claim", flaky)
    async with client.post(f"{durable.url}/bc/e", data=b"survives") as response:
        assert response.status == 202
    await eventually(lambda: durable.stats.delivered == 1, what="delivery")
    assert [r.body for r in beacons(vendor)] == [b"survives"]
    assert "step failed" in caplog.text
