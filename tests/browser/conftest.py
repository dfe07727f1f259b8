"""Fixtures for the real-browser suite: see tests/browser/README.md.

``browser_run`` starts the site, tagproxy (bundled rules, every vendor host
overridden to the ``vendor`` fake) and a fresh headless Chromium, and hands
back a :class:`~tests.browser.harness.BrowserRun`. The suite is skipped, with
the reason, only when Debian's ``chromium`` is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from ..conftest import BUNDLED_RULES
from ..fakes import FakeVendor
from .harness import CHROMIUM, BrowserRun, SiteServer, TagproxyServer, launch

StartBrowser = Callable[..., Awaitable[BrowserRun]]


@pytest.fixture
async def browser_run(
    vendor: FakeVendor, tmp_path: Path
) -> AsyncIterator[StartBrowser]:
    """Start site + tagproxy + Chromium; call as ``await browser_run(rules=...)``.

    ``rules`` defaults to the bundled rules directory. Everything is stopped
    after the test, browser first.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(rules: list[Path] | None = None) -> BrowserRun:
        site = SiteServer()
        await site.start()
        cleanups.append(site.stop)
        tagproxy = TagproxyServer(rules or [BUNDLED_RULES], vendor)
        await tagproxy.start()
        cleanups.append(tagproxy.stop)

        playwright = await async_playwright().start()
        cleanups.append(playwright.stop)
        context = await launch(playwright, tmp_path / f"profile-{len(cleanups)}")
        cleanups.append(context.close)
        page = context.pages[0] if context.pages else await context.new_page()
        return BrowserRun(context, page, vendor, site, tagproxy)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()
