"""Shared fixtures: a fake vendor and tagproxy itself, both on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import build_settings, rule_variables
from proxy.limits import LimitedSite
from proxy.reload import load_config
from proxy.rules import RuleSet, load_rules
from proxy.server import Proxy, ProxyRunner
from proxy.upstream import GuardedResolver

from . import netguard, tally
from .fakes import FakeVendor

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_RULES = ROOT / "rules"
TEST_RULES = Path(__file__).resolve().parent / "rules"
# The self-hosted Matomo of the field cases (../shared/cases/FIELD.md).
TEST_RULE_VARS = ("matomo.host=matomo.example.net",)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy settings or TAGPROXY_* values from the developer's shell."""
    for name in list(os.environ):
        if name.upper().endswith("_PROXY") or name.startswith("TAGPROXY_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def net(monkeypatch: pytest.MonkeyPatch) -> netguard.NetGuard:
    """Every connection this process makes, recorded; only loopback allowed."""
    guard = netguard.NetGuard()
    netguard.install(guard, monkeypatch)
    monkeypatch.setattr(GuardedResolver, "_lookup", staticmethod(netguard.no_dns))
    return guard


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts = tally.counts()
    if counts:
        terminalreporter.section("tagproxy suite counts")
        for name, value in counts.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendor]:
    fake = FakeVendor()
    await fake.start()
    yield fake
    await fake.stop()


def overrides_for(rules: RuleSet, target: str) -> list[str]:
    """Send every host of every rule to one local fake vendor."""
    return [f"{h.scheme}://{h.host}={target}" for r in rules.rules for h in r.hosts]


@dataclass
class Running:
    url: str
    port: int
    proxy: Proxy
    client: aiohttp.ClientSession


StartProxy = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_proxy(vendor: FakeVendor) -> AsyncIterator[StartProxy]:
    """Start tagproxy in-process; every vendor host overridden to `vendor`."""
    runners: list[web.BaseRunner] = []
    clients: list[aiohttp.ClientSession] = []

    async def start(
        rules: list[Path] | None = None, public_url: str | None = None, **kw: Any
    ) -> Running:
        rule_paths = rules or [BUNDLED_RULES, TEST_RULES]
        rule_vars = kw.pop("rule_vars", TEST_RULE_VARS)
        loaded = load_rules(rule_paths, rule_variables(rule_vars, {}))
        settings = build_settings(
            rules=[str(p) for p in rule_paths],
            listen="127.0.0.1:0",
            public_url=public_url,
            cookie_domain=kw.pop("cookie_domain", None),
            allowed_origins=kw.pop("allowed_origins", []),
            trusted_proxies=kw.pop("trusted_proxies", []),
            client_ip_headers=kw.pop("client_ip_headers", []),
            overrides=kw.pop("overrides", None) or overrides_for(loaded, vendor.url),
            geo_header=kw.pop("geo_header", None),
            consent=kw.pop("consent", None),
            geo_country_header=kw.pop("geo_country_header", None),
            geo_region_header=kw.pop("geo_region_header", None),
            tag_ids=kw.pop("tag_ids", ()),
            limits=kw.pop("limits", None),
            log_format="plain",
            log_level="INFO",
            rule_vars=rule_vars,
            sites=kw.pop("sites", None),
            trace_secret=kw.pop("trace_secret", None),
        )
        assert not kw, f"unknown settings {kw}"
        config = load_config(settings)
        proxy = Proxy(settings, config.rules, config.sites)
        runner = ProxyRunner(proxy, access_log=None)
        await runner.setup()
        limit = settings.limits.max_connections
        site = LimitedSite(runner, "127.0.0.1", 0, max_connections=limit)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        client = aiohttp.ClientSession(auto_decompress=False)
        clients.append(client)
        return Running(f"http://127.0.0.1:{port}", port, proxy, client)

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()
