"""Metrics: what a request, a rejection and an upstream failure count.

Metrics live in one process-wide registry, so each test reads a value before
and after and asserts on the difference.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from .conftest import StartProxy
from .fakes import FakeVendor, Reply

PUBLIC = "https://www.example.com"
EVENT_ROUTE = "relay:plausible.io/api/event"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_relay_counts_request_and_upstream_latency(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202, b"ok"))
    proxy = await start_proxy(public_url=PUBLIC)
    labels = {"vendor": "plausible", "route": EVENT_ROUTE, "status": "202"}
    before = sample("tagproxy_requests_total", **labels)
    latency = {"vendor": "plausible", "kind": "relay"}
    observed = sample("tagproxy_upstream_duration_seconds_count", **latency)

    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as resp:
        assert resp.status == 202

    assert len(vendor.received) == 1
    assert sample("tagproxy_requests_total", **labels) == before + 1
    assert sample("tagproxy_upstream_duration_seconds_count", **latency) == (
        observed + 1
    )


async def test_unknown_path_counts_without_vendor(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    labels = {"vendor": "none", "route": "none", "status": "404"}
    before = sample("tagproxy_requests_total", **labels)

    async with proxy.client.get(f"{proxy.url}/nothing/here") as resp:
        assert resp.status == 404

    assert vendor.received == []
    assert sample("tagproxy_requests_total", **labels) == before + 1


async def test_oversized_body_counted(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    labels = {"vendor": "plausible", "route": EVENT_ROUTE}
    before = sample("tagproxy_bodies_rejected_total", **labels)

    big = b"x" * (64 * 1024 + 1)
    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=big) as resp:
        assert resp.status == 413

    assert vendor.received == []
    assert sample("tagproxy_bodies_rejected_total", **labels) == before + 1


async def test_upstream_errors_counted_by_kind(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    # Nothing listens on port 9 of loopback: the connection is refused.
    overrides = ["https://plausible.io=http://127.0.0.1:9"]
    proxy = await start_proxy(public_url=PUBLIC, overrides=overrides)
    connect = {"vendor": "plausible", "kind": "connect"}
    before = sample("tagproxy_upstream_errors_total", **connect)

    async with proxy.client.post(f"{proxy.url}/pa/api/event", data=b"{}") as resp:
        assert resp.status == 502
    assert sample("tagproxy_upstream_errors_total", **connect) == before + 1


async def test_script_cache_hits_and_misses(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    js = b'var u="https://plausible.io/api/event";'
    headers = [("Content-Type", "application/javascript")]
    vendor.reply("plausible.io", "/js/script.js", Reply(200, js, headers))
    proxy = await start_proxy(public_url=PUBLIC)
    miss = sample("tagproxy_script_cache_total", vendor="plausible", result="miss")
    hit = sample("tagproxy_script_cache_total", vendor="plausible", result="hit")

    for _ in range(3):
        async with proxy.client.get(f"{proxy.url}/pa/js/script.js") as resp:
            assert resp.status == 200

    assert len(vendor.received) == 1
    after_miss = sample(
        "tagproxy_script_cache_total", vendor="plausible", result="miss"
    )
    after_hit = sample("tagproxy_script_cache_total", vendor="plausible", result="hit")
    assert (after_miss - miss, after_hit - hit) == (1, 2)
