"""Debug traces: the operator's secret unlocks a trace header; nothing else does."""

from __future__ import annotations

import json

import pytest

from .conftest import Running, StartProxy
from .fakes import FakeVendor, Reply

PUBLIC = "https://www.example.com"
SECRET = "s3cret-for-tests-0123456789"
PATH = "/mt/matomo.php?idsite=1&rec=1&token_auth=x"
COOKIES = "PHPSESSID=site-secret; _pk_id.1.1fff=abc.123"


async def beacon(proxy: Running, trace: str | None) -> tuple[int, dict[str, str]]:
    headers = {"Cookie": COOKIES, "User-Agent": "UA/1"}
    if trace is not None:
        headers["X-Tagproxy-Trace"] = trace
    async with proxy.client.post(
        f"{proxy.url}{PATH}", data=b"a=1", headers=headers
    ) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_secret_unlocks_a_compact_trace(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    set_cookie = [("Set-Cookie", "_pk_ses.1.1fff=1; Domain=matomo.example.net")]
    vendor.reply("matomo.example.net", "/matomo.php", Reply(200, b"", set_cookie))
    proxy = await start_proxy(
        public_url=PUBLIC, cookie_domain="example.com", trace_secret=SECRET
    )

    status, headers = await beacon(proxy, SECRET)

    assert status == 200
    trace = json.loads(headers["X-Tagproxy-Trace"])
    assert len(headers["X-Tagproxy-Trace"]) <= 4096
    assert trace["vendor"] == "matomo"
    assert trace["route"] == "relay:matomo.example.net/matomo.php"
    assert trace["host"] == "matomo.example.net"
    assert trace["cookies"] == {"passed": ["_pk_id.1.1fff"], "dropped": ["PHPSESSID"]}
    assert "x-tagproxy-trace" in trace["headers"]["dropped"]
    assert trace["headers"]["added"]["x-forwarded-for"] == "127.0.0.1"
    assert trace["body"] == {"in": 3, "out": 3, "same": True}
    assert trace["query"]["same"] is True
    changed = trace["response_headers"]["changed"]["set-cookie"]
    assert changed["to"] == "_pk_ses.1.1fff=...; Domain=example.com"
    # Cookie values never appear, even to the operator.
    assert "site-secret" not in headers["X-Tagproxy-Trace"]
    assert "abc.123" not in headers["X-Tagproxy-Trace"]
    # The trace header itself never reaches the vendor.
    assert vendor.received[0].header("X-Tagproxy-Trace") is None


# Without the right secret the answer is exactly what anyone gets.
@pytest.mark.parametrize("given", [None, "", "wrong", SECRET[:-1], SECRET + "x"])
async def test_no_trace_without_the_secret(
    vendor: FakeVendor, start_proxy: StartProxy, given: str | None
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trace_secret=SECRET)
    status, headers = await beacon(proxy, given)
    assert status == 204
    assert "X-Tagproxy-Trace" not in headers
    assert vendor.received[0].header("X-Tagproxy-Trace") is None


async def test_no_trace_when_no_secret_is_configured(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    status, headers = await beacon(proxy, SECRET)
    assert status == 204
    assert "X-Tagproxy-Trace" not in headers


async def test_trace_of_a_rejection_and_a_script(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    js = b'var u="https://plausible.io/api/event";'
    vendor.reply("plausible.io", "/js/script.js", Reply(200, js))
    proxy = await start_proxy(public_url=PUBLIC, trace_secret=SECRET)
    trace_header = {"X-Tagproxy-Trace": SECRET}

    async with proxy.client.get(f"{proxy.url}/nope", headers=trace_header) as r:
        assert r.status == 404
        assert json.loads(r.headers["X-Tagproxy-Trace"])["error"]
    for cache in ("miss", "hit"):
        async with proxy.client.get(
            f"{proxy.url}/pa/js/script.js", headers=trace_header
        ) as r:
            trace = json.loads(r.headers["X-Tagproxy-Trace"])
            assert trace["cache"] == cache
            assert trace["upstream"] == "https://plausible.io/js/script.js"


async def test_large_bodies_keep_the_header_bounded(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trace_secret=SECRET)
    query = "&".join(f"p{i}={'v' * 50}" for i in range(120))
    async with proxy.client.get(
        f"{proxy.url}/mt/matomo.php?{query}",
        headers={"X-Tagproxy-Trace": SECRET, "X-Long": "y" * 5000},
    ) as r:
        assert r.status == 204
        assert len(r.headers["X-Tagproxy-Trace"]) <= 4096
        assert json.loads(r.headers["X-Tagproxy-Trace"])["vendor"] == "matomo"
