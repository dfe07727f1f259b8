"""Bare aiohttp references: the least an aiohttp server can do for each job.

    python bench/bare.py script PORT FILE.gz   serve FILE.gz's bytes, gzip-encoded
    python bench/bare.py relay PORT SINK_URL   relay every request to SINK_URL

`script` answers every request with the same precompressed bytes from memory.
`relay` is what one writes without thinking about cost: a ClientSession with
its defaults (cookie jar, automatic decompression, default headers), the body
read in full, the answer read in full and returned. Both run on the event loop
tagproxy runs on (uvloop when installed; BENCH_LOOP=asyncio for plain asyncio).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web


def script_app(path: Path) -> web.Application:
    body = path.read_bytes()
    headers = {
        "Content-Type": "application/javascript; charset=utf-8",
        "Content-Encoding": "gzip",
        "Cache-Control": "public, max-age=3600",
        "Vary": "Accept-Encoding",
        "ETag": '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '-gz"',
    }

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


def relay_app(sink: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {}
        for name in ("Content-Type", "User-Agent"):
            if name in request.headers:
                headers[name] = request.headers[name]
        # "/bn/collect?..." -> "/collect?...": the mount, as tagproxy strips it.
        path = "/" + request.raw_path.split("/", 2)[2]
        async with app[session_key].request(
            request.method,
            sink + path,
            data=body or None,
            headers=headers,
        ) as upstream:
            answer = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=answer,
                content_type=upstream.content_type,
            )

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        app[session_key] = aiohttp.ClientSession()
        yield
        await app[session_key].close()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("BENCH_LOOP") == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    mode, port, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = script_app(Path(arg)) if mode == "script" else relay_app(arg)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        backlog=1024,
        loop=new_loop(),
    )


if __name__ == "__main__":
    main()
