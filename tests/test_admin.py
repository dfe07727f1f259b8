"""The admin listener: health, readiness, metrics, and reloads that never break
serving (a broken rule file keeps the old rules; a good one adds a route)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from proxy.admin import build_admin_app
from proxy.reload import Reloader
from proxy.runtime import ProcessControl

from .conftest import BUNDLED_RULES, Running, StartProxy
from .fakes import FakeVendor, Received, Reply

PUBLIC = "https://www.example.com"


@dataclass
class Admin:
    url: str
    control: ProcessControl
    client: aiohttp.ClientSession

    async def reload(self) -> tuple[int, dict[str, object]]:
        async with self.client.post(f"{self.url}/reload") as response:
            return response.status, await response.json()


StartAdmin = Callable[[Running], Awaitable[Admin]]


@pytest.fixture
async def start_admin() -> AsyncIterator[StartAdmin]:
    runners: list[web.AppRunner] = []
    clients: list[aiohttp.ClientSession] = []

    async def start(proxy: Running) -> Admin:
        control = ProcessControl(proxy.proxy, Reloader(proxy.proxy))
        runner = web.AppRunner(build_admin_app(control), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        client = aiohttp.ClientSession()
        clients.append(client)
        port = runner.addresses[0][1]
        return Admin(f"http://127.0.0.1:{port}", control, client)

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A rules directory holding only Plausible, for tests that change it."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(BUNDLED_RULES / "plausible.toml", rules)
    return rules


def overrides_to(vendor: FakeVendor, *hosts: str) -> list[str]:
    return [f"https://{host}={vendor.url}" for host in hosts]


async def post(proxy: Running, path: str, body: bytes = b"{}") -> int:
    async with proxy.client.post(f"{proxy.url}{path}", data=body) as response:
        return response.status


# --- health and metrics ------------------------------------------------------


async def test_health_readiness_and_metrics(
    vendor: FakeVendor, start_proxy: StartProxy, start_admin: StartAdmin
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202))
    proxy = await start_proxy(public_url=PUBLIC)
    admin = await start_admin(proxy)
    assert await post(proxy, "/pa/api/event") == 202

    async with admin.client.get(f"{admin.url}/healthz") as response:
        assert response.status == 200
    async with admin.client.get(f"{admin.url}/readyz") as response:
        ready = await response.json()
        assert response.status == 200
    assert ready["ready"] is True
    assert ready["rules"] == len(proxy.proxy.generation.rules.rules)
    assert ready["upstream_pool"] == "open"

    async with admin.client.get(f"{admin.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert "tagproxy_requests_total{" in text
    assert 'route="relay:plausible.io/api/event",status="202",vendor="plausible"' in (
        text
    )
    assert "tagproxy_upstream_duration_seconds_bucket{" in text


async def test_metrics_are_not_on_the_public_port(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    for path in ("/metrics", "/healthz", "/readyz", "/reload"):
        async with proxy.client.get(f"{proxy.url}{path}") as response:
            assert response.status == 404
    assert vendor.received == []


async def test_not_ready_while_stopping(
    vendor: FakeVendor, start_proxy: StartProxy, start_admin: StartAdmin
) -> None:
    admin = await start_admin(await start_proxy(public_url=PUBLIC))
    admin.control.stopping = True
    async with admin.client.get(f"{admin.url}/readyz") as response:
        assert response.status == 503
        assert (await response.json())["stopping"] is True
    async with admin.client.get(f"{admin.url}/healthz") as response:
        assert response.status == 200


# --- reload ------------------------------------------------------------------


async def test_broken_rule_file_keeps_old_rules_serving(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    start_admin: StartAdmin,
    rules_dir: Path,
) -> None:
    vendor.reply("plausible.io", "/api/event", Reply(202))
    proxy = await start_proxy(
        rules=[rules_dir],
        rule_vars=[],
        public_url=PUBLIC,
        overrides=overrides_to(vendor, "plausible.io", "cloud.umami.is"),
    )
    admin = await start_admin(proxy)
    errors = REGISTRY.get_sample_value(
        "tagproxy_config_reloads_total", {"result": "error"}
    )
    before = proxy.proxy.generation

    broken = (BUNDLED_RULES / "umami.toml").read_text() + "\nnonsense = 1\n"
    (rules_dir / "umami.toml").write_text(broken)
    status, report = await admin.reload()

    assert status == 422
    assert report["result"] == "error"
    error = str(report["error"])
    assert "umami.toml" in error
    assert "nonsense" in error
    assert "unknown key" in error
    assert proxy.proxy.generation is before
    assert await post(proxy, "/pa/api/event") == 202
    assert await post(proxy, "/um/api/send") == 404
    assert [r.host for r in vendor.received] == ["plausible.io"]
    assert (
        REGISTRY.get_sample_value("tagproxy_config_reloads_total", {"result": "error"})
        == (errors or 0) + 1
    )
    assert REGISTRY.get_sample_value("tagproxy_config_last_reload_successful") == 0.0


async def test_good_reload_adds_a_route(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    start_admin: StartAdmin,
    rules_dir: Path,
) -> None:
    proxy = await start_proxy(
        rules=[rules_dir],
        rule_vars=[],
        public_url=PUBLIC,
        overrides=overrides_to(vendor, "plausible.io", "cloud.umami.is"),
    )
    admin = await start_admin(proxy)
    assert await post(proxy, "/um/api/send") == 404

    shutil.copy(BUNDLED_RULES / "umami.toml", rules_dir)
    status, report = await admin.reload()

    assert status == 200
    assert report["result"] == "ok"
    assert report["rules_added"] == ["umami"]
    assert report["rules_removed"] == report["rules_changed"] == []
    assert await post(proxy, "/um/api/send") == 204
    assert vendor.received[-1].host == "cloud.umami.is"
    assert vendor.received[-1].path == "/api/send"

    status, report = await admin.reload()
    assert (status, report["result"]) == (200, "unchanged")

    async with admin.client.get(f"{admin.url}/config") as response:
        serving = await response.json()
    assert [r["vendor"] for r in serving["rules"]] == ["plausible", "umami"]
    assert serving["rules"][1]["mount"] == "/um"
    assert serving["rules"][1]["file"] == str(rules_dir / "umami.toml")


async def test_changed_and_removed_rules_are_reported(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    start_admin: StartAdmin,
    rules_dir: Path,
) -> None:
    shutil.copy(BUNDLED_RULES / "umami.toml", rules_dir)
    proxy = await start_proxy(rules=[rules_dir], public_url=PUBLIC, rule_vars=[])
    admin = await start_admin(proxy)

    (rules_dir / "umami.toml").unlink()
    plausible = rules_dir / "plausible.toml"
    plausible.write_text(plausible.read_text().replace('"64KiB"', '"128KiB"'))
    status, report = await admin.reload()

    assert status == 200
    assert report["rules_removed"] == ["umami"]
    assert report["rules_changed"] == ["plausible"]
    assert await post(proxy, "/pa/api/event", b"x" * 100_000) == 204


async def test_request_in_flight_finishes_on_its_rules(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    start_admin: StartAdmin,
    rules_dir: Path,
) -> None:
    shutil.copy(BUNDLED_RULES / "umami.toml", rules_dir)
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request, received: Received) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=202)

    vendor.reply("plausible.io", "/api/event", slow)
    proxy = await start_proxy(rules=[rules_dir], public_url=PUBLIC, rule_vars=[])
    admin = await start_admin(proxy)

    running = asyncio.create_task(post(proxy, "/pa/api/event"))
    await arrived.wait()
    (rules_dir / "plausible.toml").unlink()
    _status, report = await admin.reload()
    assert report["rules_removed"] == ["plausible"]
    release.set()

    assert await running == 202
    assert await post(proxy, "/pa/api/event") == 404
