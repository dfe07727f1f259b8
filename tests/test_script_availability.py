"""Scripts stay available: stale-while-revalidate, stale-if-error, rewrite guard.

The rule under test has a TTL of a few tens of milliseconds, so tests wait
for a copy to go stale; they measure no speed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from proxy.rules.loader import RuleError, load_rule
from proxy.rules.model import ScriptGuard
from proxy.scriptguard import check_script

from .conftest import Running, StartProxy
from .fakes import FakeVendor, Reply

PUBLIC = "https://www.example.com"
CDN = "cdn.avail-test.example"
JS = [("Content-Type", "application/javascript")]
TTL = 0.05


def rule_text(swr: str = "0s", sie: str = "1h") -> str:
    return f"""
vendor = "avail"
mount = "/av"

[[hosts]]
host = "{CDN}"
path = ""

[[hosts]]
host = "collect.avail-test.example"
path = "/c"

[[scripts]]
host = "{CDN}"
paths = ["/tag.js"]
ttl = "{int(TTL * 1000)}ms"
stale_while_revalidate = "{swr}"
stale_if_error = "{sie}"

[scripts.guard]
contains = ["collect.avail-test.example"]
min_size = 40
rewrites = ["endpoint"]

[[relays]]
host = "collect.avail-test.example"
paths = ["/v1/event"]

[[rewrites]]
name = "endpoint"
find = "/v1/event"
replace = "{{mount_path}}/c/v1/event"
"""


def script(version: int) -> bytes:
    return (
        f'/* v{version} */ var h="collect.avail-test.example";'
        'var p="/v1/event"; send("https://"+h+p);'
    ).encode()


async def start(
    start_proxy: StartProxy, tmp_path: Path, swr: str = "0s", sie: str = "1h"
) -> Running:
    path = tmp_path / "avail.toml"
    path.write_text(rule_text(swr, sie))
    return await start_proxy(rules=[path], rule_vars=[], public_url=PUBLIC)


async def get(proxy: Running) -> tuple[int, bytes]:
    async with proxy.client.get(f"{proxy.url}/av/tag.js") as response:
        return response.status, await response.read()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], guard: float = 10.0) -> None:
    """Wait for `condition`; failing after `guard` seconds means a hang."""
    for _ in range(int(guard / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_stale_while_revalidate(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply(CDN, "/tag.js", Reply(200, script(1), JS))
    proxy = await start(start_proxy, tmp_path, swr="1h")
    assert (await get(proxy))[1].startswith(b"/* v1")

    vendor.reply(CDN, "/tag.js", Reply(200, script(2), JS))
    await asyncio.sleep(TTL * 2)
    # Past its TTL: every request is answered from the stale copy at once,
    # and exactly one background fetch refreshes it.
    answers = await asyncio.gather(*(get(proxy) for _ in range(10)))
    assert all(body.startswith(b"/* v1") for _, body in answers)
    await until(lambda: len(vendor.to(CDN)) == 2)
    await asyncio.sleep(TTL / 5)
    status, body = await get(proxy)
    assert status == 200
    assert body.startswith(b"/* v2")
    assert len(vendor.to(CDN)) == 2


@pytest.mark.parametrize(("sie", "status"), [("1h", 200), ("0s", 502)])
async def test_stale_if_error(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path, sie: str, status: int
) -> None:
    vendor.reply(CDN, "/tag.js", Reply(200, script(1), JS))
    proxy = await start(start_proxy, tmp_path, sie=sie)
    await get(proxy)

    vendor.reply(CDN, "/tag.js", Reply(503, b"down"))
    await asyncio.sleep(TTL * 2)
    before = sample(
        "tagproxy_script_stale_served_total", vendor="avail", reason="upstream_error"
    )
    answer = await get(proxy)
    assert answer[0] == status
    if status == 200:
        assert answer[1].startswith(b"/* v1")
        after = sample(
            "tagproxy_script_stale_served_total",
            vendor="avail",
            reason="upstream_error",
        )
        assert after == before + 1
    assert len(vendor.to(CDN)) == 2


async def test_stale_if_error_when_vendor_unreachable(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply(CDN, "/tag.js", Reply(200, script(1), JS))
    proxy = await start(start_proxy, tmp_path)
    await get(proxy)
    await vendor.stop()  # connection refused from now on
    await asyncio.sleep(TTL * 2)
    status, body = await get(proxy)
    assert status == 200
    assert body.startswith(b"/* v1")


# The vendor changes its script in ways the rule no longer fits.
@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        (
            script(2).replace(
                b"collect.avail-test.example", b"collect.new-host.example"
            ),
            "contains",
        ),
        (script(2).replace(b"/v1/event", b"/v2/ev"), "rewrites"),
        (b"<html>oops</html>", "min_size"),
    ],
)
async def test_guard_keeps_last_good(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    changed: bytes,
    reason: str,
) -> None:
    vendor.reply(CDN, "/tag.js", Reply(200, script(1), JS))
    proxy = await start(start_proxy, tmp_path)
    status, good = await get(proxy)
    assert status == 200
    assert b"/av/c/v1/event" in good

    vendor.reply(CDN, "/tag.js", Reply(200, changed, JS))
    await asyncio.sleep(TTL * 2)
    trips = sample("tagproxy_rewrite_guard_trips_total", vendor="avail", reason=reason)
    with caplog.at_level(logging.WARNING, logger="proxy.scriptguard"):
        status, body = await get(proxy)
    assert status == 200
    assert body == good
    assert "no longer fits" in caplog.text
    assert "serving the last good version" in caplog.text
    after = sample("tagproxy_rewrite_guard_trips_total", vendor="avail", reason=reason)
    assert after == trips + 1

    # Fixed upstream (or rule): the next fetch after the TTL is served.
    vendor.reply(CDN, "/tag.js", Reply(200, script(3), JS))
    await asyncio.sleep(TTL * 2)
    status, body = await get(proxy)
    assert body.startswith(b"/* v3")


async def test_guard_without_last_good_serves_and_retries_later(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vendor.reply(CDN, "/tag.js", Reply(200, b"<html>oops</html>", JS))
    proxy = await start(start_proxy, tmp_path)
    with caplog.at_level(logging.WARNING, logger="proxy.scriptguard"):
        status, body = await get(proxy)
    assert status == 200
    assert body == b"<html>oops</html>"
    assert "no good version cached yet" in caplog.text

    # A good version replaces it on the next fetch.
    vendor.reply(CDN, "/tag.js", Reply(200, script(1), JS))
    await asyncio.sleep(TTL * 2)
    status, body = await get(proxy)
    assert body.startswith(b"/* v1")


def test_guard_checks() -> None:
    guard = ScriptGuard(contains=(b"host.example",), min_size=10, min_rewrites=2)
    body = b"var h='host.example';"
    assert check_script(guard, body, {"host.example": 2}, None, "v") is None
    failure = check_script(guard, body, {"host.example": 1}, None, "v")
    assert failure is not None
    assert failure.kind == "min_rewrites"
    broken = check_script(None, body, {}, "unbalanced brace", "v")
    assert broken is not None
    assert broken.kind == "syntax"
    assert "unbalanced brace" in broken.detail


# Guard settings that cannot work fail at load, naming the key.
@pytest.mark.parametrize(
    ("guard", "key"),
    [
        ('{ rewrites = ["nosuch"] }', "scripts[0].guard.rewrites"),
        ('{ contains = [""] }', "scripts[0].guard.contains"),
        ("{ min_rewrites = -1 }", "scripts[0].guard.min_rewrites"),
        ('{ min_size = "big" }', "scripts[0].guard.min_size"),
        ('{ contain = ["x"] }', "scripts[0].guard.contain"),
    ],
)
def test_bad_guards_fail_at_load(tmp_path: Path, guard: str, key: str) -> None:
    text = rule_text().replace(
        '[scripts.guard]\ncontains = ["collect.avail-test.example"]\n'
        'min_size = 40\nrewrites = ["endpoint"]\n',
        f"guard = {guard}\n",
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert caught.value.key == key
