"""Script routes: fetch once, rewrite, cache per key, serve per encoding."""

from __future__ import annotations

import asyncio
import gzip

import brotli
from aiohttp import web

from .conftest import BUNDLED_RULES, StartProxy
from .fakes import FakeVendor, Received, Reply

PUBLIC = "https://m.shop.example"
JS = [("Content-Type", "application/javascript")]
TAG = b'var endpoint = "https://www.google-analytics.com/g/collect"; ' + b"x();" * 200


async def test_one_fetch_per_key_at_a_time(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request, received: Received) -> web.Response:
        await gate.wait()
        return web.Response(body=TAG, content_type="application/javascript")

    vendor.reply("www.googletagmanager.com", "/gtag/js", slow)
    proxy = await start_proxy(public_url=PUBLIC)

    async def fetch() -> bytes:
        async with proxy.client.get(f"{proxy.url}/gt/gtag/js?id=G-1") as response:
            assert response.status == 200
            return await response.read()

    waiting = [asyncio.create_task(fetch()) for _ in range(20)]
    await asyncio.sleep(0.2)
    gate.set()
    bodies = await asyncio.gather(*waiting)
    assert len(set(bodies)) == 1
    assert len(vendor.to("www.googletagmanager.com")) == 1


async def test_cache_key_keeps_only_rule_parameters(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, TAG, JS))
    proxy = await start_proxy(public_url=PUBLIC)
    for query in ("id=G-1&utm_source=x", "id=G-1&cachebust=2", "id=G-2"):
        async with proxy.client.get(f"{proxy.url}/gt/gtag/js?{query}") as response:
            assert response.status == 200
    fetched = [r.raw_path for r in vendor.to("www.googletagmanager.com")]
    assert fetched == ["/gtag/js?id=G-1", "/gtag/js?id=G-2"]


async def test_public_url_is_part_of_the_key(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, TAG, JS))
    proxy = await start_proxy()  # public URL from each request's Host
    bodies = []
    for host in ("a.shop.example", "b.shop.example"):
        headers = {"Host": host, "Accept-Encoding": "identity"}
        async with proxy.client.get(
            f"{proxy.url}/gt/gtag/js?id=G-1", headers=headers
        ) as r:
            bodies.append(await r.read())
    assert b"http://a.shop.example/gt/ga/www/g/collect" in bodies[0]
    assert b"http://b.shop.example/gt/ga/www/g/collect" in bodies[1]


async def test_encodings_and_etags(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, TAG, JS))
    proxy = await start_proxy(public_url=PUBLIC)
    url = f"{proxy.url}/gt/gtag/js?id=G-1"
    seen = {}
    for accept in ("br, gzip", "gzip", "identity", "gzip;q=0, br;q=0"):
        async with proxy.client.get(url, headers={"Accept-Encoding": accept}) as r:
            encoding = r.headers.get("Content-Encoding", "identity")
            body = await r.read()
            assert r.headers["Vary"] == "Accept-Encoding"
            assert r.headers["Cache-Control"] == "private, max-age=900"
            seen[accept] = (encoding, r.headers["ETag"], body)
    assert seen["br, gzip"][0] == "br"
    assert seen["gzip"][0] == "gzip"
    assert seen["identity"][0] == "identity"
    assert seen["gzip;q=0, br;q=0"][0] == "identity"
    identity = seen["identity"][2]
    assert brotli.decompress(seen["br, gzip"][2]) == identity
    assert gzip.decompress(seen["gzip"][2]) == identity
    assert len({seen[a][1] for a in ("br, gzip", "gzip", "identity")}) == 3

    # Any of the entry's tags revalidates.
    for tag in (seen["gzip"][1], f"W/{seen['gzip'][1]}", "*"):
        headers = {"If-None-Match": tag, "Accept-Encoding": "gzip"}
        async with proxy.client.get(url, headers=headers) as r:
            assert r.status == 304
    async with proxy.client.get(url, headers={"If-None-Match": '"other"'}) as r:
        assert r.status == 200
    assert len(vendor.received) == 1


async def test_geo_and_visitor_address(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    """Per-geo scripts are keyed by the trusted geo header; shared ones get no IP."""
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, TAG, JS))
    vendor.reply(
        "www.googletagmanager.com",
        "/static/service_worker/1/sw.js",
        Reply(200, TAG, JS),
    )
    proxy = await start_proxy(
        public_url=PUBLIC, trusted_proxies=["127.0.0.1/32"], geo_header="X-Geo"
    )
    for geo, visitor in [
        ("DE-BE", "203.0.113.7"),
        ("DE-BE", "203.0.113.8"),
        ("FR-75", "198.51.100.1"),
    ]:
        headers = {"X-Geo": geo, "X-Forwarded-For": visitor}
        async with proxy.client.get(f"{proxy.url}/gt/gtag/js?id=G-1", headers=headers):
            pass
    fetched = vendor.to("www.googletagmanager.com")
    assert [r.all("X-Forwarded-For") for r in fetched] == [
        ["203.0.113.7"],
        ["198.51.100.1"],
    ]

    headers = {"X-Forwarded-For": "203.0.113.7"}
    async with proxy.client.get(
        f"{proxy.url}/gt/static/service_worker/1/sw.js", headers=headers
    ):
        pass
    assert vendor.received[-1].all("X-Forwarded-For") == []


async def test_upstream_errors_are_not_cached(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("plausible.io", "/js/script.js", Reply(404, b"not found"))
    vendor.reply("plausible.io", "/js/script.tagged-events.js", Reply(503, b"down"))
    proxy = await start_proxy(rules=[BUNDLED_RULES], public_url=PUBLIC)
    for _ in range(2):
        async with proxy.client.get(f"{proxy.url}/pa/js/script.js") as r:
            assert r.status == 404
            assert r.headers["Cache-Control"] == "no-store"
    async with proxy.client.get(f"{proxy.url}/pa/js/script.tagged-events.js") as r:
        assert r.status == 502
    assert len(vendor.to("plausible.io")) == 3
