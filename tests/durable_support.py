"""tagproxy with a spool, started and stopped in-process, and waiting helpers.

The durable, shutdown and chaos tests stop and restart tagproxy on the same
spool file, which the shared `start_proxy` fixture does not do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web

from proxy.config import build_durability, build_settings
from proxy.delivery import DeliveryStats
from proxy.rules import RelayRoute, load_rules
from proxy.rules.loader import build_rule_set
from proxy.server import Proxy, ProxyRunner

DURABLE_RULES = Path(__file__).resolve().parent / "rules_durable"
HOST = "collect.beacon.test"


async def eventually(
    check: Callable[[], bool], seconds: float = 10.0, what: str = "condition"
) -> None:
    """Wait until `check()` holds; fail after `seconds` (a bound, not a timing)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        await asyncio.sleep(0.02)


@dataclass
class DurableProxy:
    """tagproxy on a free port with the durable test rules and a spool."""

    vendor_url: str
    spool: Path | None
    spool_max: str = "64MiB"
    trusted: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()
    url: str = ""
    proxy: Proxy | None = None
    _runner: web.BaseRunner | None = field(default=None, repr=False)

    async def start(self) -> DurableProxy:
        rules = load_rules([DURABLE_RULES])
        if self.spool is None:  # the live routes only
            rules = build_rule_set(
                [replace(r, relays=_live(r.relays)) for r in rules.rules]
            )
        settings = build_settings(
            rules=[str(DURABLE_RULES)],
            listen="127.0.0.1:0",
            public_url=None,
            cookie_domain=None,
            allowed_origins=[],
            trusted_proxies=list(self.trusted),
            client_ip_headers=[],
            overrides=[f"https://{HOST}={self.vendor_url}"],
            geo_header=None,
            log_format="plain",
            log_level="INFO",
            durability=build_durability(
                spool=str(self.spool) if self.spool else None,
                spool_max_size=self.spool_max,
                dns_servers=self.dns_servers,
            ),
        )
        self.proxy = Proxy(settings, rules)
        self._runner = ProxyRunner(self.proxy, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        """A graceful stop, as on SIGTERM: the spool is closed cleanly."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def stats(self) -> DeliveryStats:
        assert self.proxy is not None
        assert self.proxy.delivery is not None
        return self.proxy.delivery.stats

    @property
    def depth(self) -> int:
        assert self.proxy is not None
        assert self.proxy.delivery is not None
        return self.proxy.delivery.spool.depth


def _live(relays: tuple[RelayRoute, ...]) -> tuple[RelayRoute, ...]:
    return tuple(r for r in relays if r.durable is None)
