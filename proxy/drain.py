"""Graceful shutdown: stop accepting without failing a request already sent.

On SIGTERM the runtime calls `drain` before the HTTP runner's own cleanup:

1. Every answer from now on says `Connection: close`, so keep-alive clients
   open their next request elsewhere (behind a load balancer: on another
   instance) instead of racing our close of their idle connection.
2. The listening socket stops accepting. Connections the kernel had already
   completed but we had not yet accepted are taken first and served: closing
   a listener resets what waits in its queue, and those clients may have
   sent their request already. From then on a new connection is refused at
   once, which any client may safely retry.
3. For a short linger, open connections go on being served (each answer
   closes its connection), so a client that was about to reuse one gets an
   answer rather than a reset.

Then the runner closes idle connections and waits for requests in flight up
to `--shutdown-grace`; the proxy's own cleanup hands the delivery worker's
beacons back to the spool and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Final

from aiohttp import hdrs, web

log = logging.getLogger(__name__)

LINGER: Final = 1.0  # seconds open connections are served after SIGTERM


def listen(
    host: str, port: int, *, backlog: int, reuse_port: bool = False
) -> socket.socket:
    """A listening socket we own, so shutdown can take what waits in its queue."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def close_when_sent(response: web.StreamResponse) -> None:
    """While draining: this answer closes its connection and says so."""
    if response.status == 101:
        # A WebSocket handshake must say `Connection: Upgrade`, or the
        # visitor refuses it; the socket is closed with 1001 at shutdown.
        return
    # The hook runs after aiohttp chose the Connection header, so the header
    # is set here as well as the close itself.
    response.force_close()
    response.headers[hdrs.CONNECTION] = "close"


async def drain(
    runner: web.BaseRunner,
    listeners: list[socket.socket],
    factory: Callable[[], asyncio.BaseProtocol] | None,
    draining: asyncio.Event,
    linger: float = LINGER,
) -> None:
    """Steps 1 to 3 above; the runner's cleanup does the rest."""
    draining.set()
    # Our duplicates keep the listening sockets open (and queueing) while the
    # sites stop their accept loops; then we empty the queues and close.
    held = [sock.dup() for sock in listeners]
    for site in list(runner.sites):
        await site.stop()
    taken = _take_waiting(held)
    for sock in held:
        sock.close()
    # They go where the listener's own connections went (the connection
    # limiter, then the HTTP server), or are closed if nothing serves them.
    factory = factory or runner.server
    loop = asyncio.get_running_loop()
    for conn in taken:
        if factory is None:
            conn.close()
            continue
        with contextlib.suppress(OSError):
            await loop.connect_accepted_socket(factory, conn)
    log.info(
        "stopped accepting (%d queued connections taken); serving open "
        "connections for %.1fs more",
        len(taken),
        linger,
    )
    await asyncio.sleep(linger)


def _take_waiting(listeners: list[socket.socket]) -> list[socket.socket]:
    """Accept, without waiting, every connection the kernel has queued."""
    taken = []
    for listener in listeners:
        listener.setblocking(False)
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # the listener failed; nothing more to take from it
            conn.setblocking(False)
            taken.append(conn)
    return taken
