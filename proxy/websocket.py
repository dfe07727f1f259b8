"""WebSocket relay routes: a visitor's socket joined to the vendor's.

A relay route with `websocket = true` takes WebSocket upgrades only. The
upgrade is checked first (well-formed, from an allowed Origin, under the
route's connection cap, passed by the privacy policy); then tagproxy opens
its own socket to the route's host, through the shared upstream client and
its resolver guard, with the request policy of every relay: allowlisted
headers, cookies by name, the visitor's address as the rule says. Only when
the vendor has accepted is the visitor's upgrade accepted, with the
subprotocol the vendor chose; a refusal is a 502 and the visitor's socket
never opens.

Messages then pass both ways unchanged, text and binary, byte-exact (text is
never decoded). Pings are answered on each hop and never relayed. A close
from either side is passed on with its code and reason. A side that drops
without a close frame closes the other with 1001 (visitor gone) or 1014 (bad
gateway: the vendor is gone); a message over `max_message` closes its sender
with 1009 and the other side like a drop; `idle_timeout` without a message
either way closes both with 1001.

The access log gets one line per connection, at close: duration, messages
and bytes each way, who ended it and with which code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from . import exchange, metrics
from . import headers as h
from .errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    ServiceUnavailable,
    UpgradeRequired,
)
from .privacy import Privacy
from .relay import edit_query, request_headers
from .routing import Target
from .rules import RelayRoute
from .rules.model import WebSocketLimits
from .site import Site
from .upstream import Upstream, WebSocket

log = logging.getLogger(__name__)

VisitorSocket = web.WebSocketResponse[Literal[False]]

_CLOSE_WAIT: Final = 5.0  # for the visitor's answer to our close frame
_RETRY_AFTER: Final = "30"
_MAX_REASON: Final = 123  # bytes a close frame's reason may hold
# Codes a close frame may carry (RFC 6455 section 7.4, IANA registry); a
# close without one, or with a code only an endpoint may report (1005, 1006,
# 1015), is passed on as a normal close.
_SENDABLE: Final = frozenset(
    [*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)]
)


@dataclass(slots=True)
class Flow:
    """Messages and bytes one way."""

    messages: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.messages += 1
        self.bytes += size


@dataclass(frozen=True, slots=True)
class Ending:
    """How one direction stopped.

    `code` is the close code the source sent (None: it dropped, failed or
    broke a limit without a clean close); `closed_by` says who, for the log.
    """

    # visitor, vendor, visitor_too_big, vendor_too_big, idle or shutdown
    closed_by: str
    code: int | None = None
    reason: str = ""


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class Joined:
    """One relayed connection: both sockets and what passed."""

    visitor: VisitorSocket
    vendor: WebSocket
    inward: Flow = field(default_factory=Flow)  # visitor -> vendor
    outward: Flow = field(default_factory=Flow)  # vendor -> visitor
    last: float = field(default_factory=time.monotonic)
    ending: Ending | None = None
    shutting_down: bool = False

    def fields(self) -> dict[str, object]:
        ending = self.ending or Ending("error")
        return {
            "bytes_in": self.inward.bytes,
            "bytes_out": self.outward.bytes,
            "messages_in": self.inward.messages,
            "messages_out": self.outward.messages,
            "closed_by": ending.closed_by,
            "close_code": ending.code if ending.code is not None else "-",
        }


class WebSocketRelay:
    """Every relayed WebSocket of one proxy, across rule reloads."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._open: dict[str, int] = {}  # route id -> open connections
        self._joined: set[Joined] = set()

    @property
    def open_connections(self) -> int:
        return len(self._joined)

    async def relay(
        self,
        request: web.Request,
        target: Target,
        site: Site,
        privacy: Privacy,
        public_url: URL,
        visitor: str,
        outcome: exchange.Record,
    ) -> web.StreamResponse:
        route = target.route
        assert isinstance(route, RelayRoute)
        limits = route.websocket
        assert limits is not None
        check_upgrade(request)
        check_origin(request, site, public_url)
        route_id = metrics.route_id(route)
        if self._open.get(route_id, 0) >= limits.max_connections:
            raise ServiceUnavailable(
                "too many open WebSockets on this route; try again later",
                headers={"Retry-After": _RETRY_AFTER},
            )

        vendor = await self._connect(request, target, privacy, visitor, outcome)
        outcome[exchange.UPSTREAM_STATUS] = 101
        try:
            socket = self._accept(request, vendor, limits)
            await socket.prepare(request)
        except BaseException:
            await vendor.close(code=WSCloseCode.GOING_AWAY)
            raise

        joined = Joined(socket, vendor)
        self._open[route_id] = self._open.get(route_id, 0) + 1
        self._joined.add(joined)
        started = time.monotonic()
        try:
            await self._run(joined, limits)
        finally:
            self._open[route_id] -= 1
            self._joined.discard(joined)
            outcome[exchange.WEBSOCKET] = joined.fields()
            metrics.websocket_closed(
                target.rule.vendor,
                (joined.ending or Ending("error")).closed_by,
                time.monotonic() - started,
                (joined.inward.messages, joined.inward.bytes),
                (joined.outward.messages, joined.outward.bytes),
            )
        return socket

    async def close_all(self) -> None:
        """Server shutdown: close every relayed socket with 1001, both sides."""
        for joined in list(self._joined):
            joined.shutting_down = True
        await asyncio.gather(
            *(
                _close_both(j, WSCloseCode.GOING_AWAY, "server shutting down")
                for j in list(self._joined)
            ),
            return_exceptions=True,
        )

    # --- opening -------------------------------------------------------------

    async def _connect(
        self,
        request: web.Request,
        target: Target,
        privacy: Privacy,
        visitor: str,
        outcome: exchange.Record,
    ) -> WebSocket:
        """The vendor's socket, opened under the rule's request policy."""
        policy = target.rule.request
        address: str | None = visitor
        query = target.query
        decision = None
        plan = privacy.plan_for(target.rule)
        if plan is not None:
            decision = plan.decide(
                request.headers, target.host.host, query, visitor, b""
            )
            if decision.reason:
                outcome[exchange.PRIVACY] = decision.label
            if decision.drops:
                metrics.beacon_dropped(target.rule.vendor, decision.reason)
                raise Forbidden(
                    f"refused by this site's privacy policy ({decision.reason})"
                )
            address, query = decision.visitor, decision.query

        headers = upstream_headers(request, target, address)
        if decision is not None:
            decision.edit_headers(headers)
        query = edit_query(query, policy, address)
        # The URL is built from the rule's host alone: the visitor names only
        # the path and query under it, as for any relay.
        prepared = self.upstream.prepare(
            target.host.scheme,
            target.upstream_host,
            target.path + (f"?{query}" if query else ""),
        )
        route = target.route
        assert isinstance(route, RelayRoute)
        limits = route.websocket
        assert limits is not None
        return await self.upstream.websocket(
            prepared,
            headers,
            offered_protocols(request),
            route.timeouts,
            limits.max_message + 1,  # see _pump
        )

    @staticmethod
    def _accept(
        request: web.Request, vendor: WebSocket, limits: WebSocketLimits
    ) -> VisitorSocket:
        chosen = vendor.protocol
        socket: VisitorSocket = web.WebSocketResponse(
            timeout=_CLOSE_WAIT,
            autoclose=False,
            autoping=True,
            protocols=(chosen,) if chosen else (),
            max_msg_size=limits.max_message + 1,  # see _pump
            decode_text=False,
        )
        if not socket.can_prepare(request).ok:
            raise BadRequest("malformed WebSocket upgrade request")
        return socket

    # --- relaying ------------------------------------------------------------

    async def _run(self, joined: Joined, limits: WebSocketLimits) -> None:
        """Pump both ways until one side ends or both fall silent."""
        limit = limits.max_message
        inward = asyncio.create_task(
            _pump(
                joined, joined.visitor, joined.vendor, joined.inward, "visitor", limit
            )
        )
        outward = asyncio.create_task(
            _pump(
                joined, joined.vendor, joined.visitor, joined.outward, "vendor", limit
            )
        )
        pumps = {inward, outward}
        try:
            joined.ending = await _first_ending(joined, pumps, limits.idle_timeout)
            if joined.shutting_down:
                joined.ending = Ending("shutdown", WSCloseCode.GOING_AWAY)
            await _pass_on(joined, joined.ending)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


def check_upgrade(request: web.Request) -> None:
    if request.method != "GET":
        raise MethodNotAllowed("WebSocket upgrades use GET", headers={"Allow": "GET"})
    if request.headers.get(h.UPGRADE, "").strip().lower() != "websocket":
        raise UpgradeRequired(
            "this path takes WebSocket upgrades only",
            headers={h.UPGRADE: "websocket", "Connection": "Upgrade"},
        )


def check_origin(request: web.Request, site: Site, public_url: URL) -> None:
    """Refuse upgrades from pages of other sites.

    A WebSocket is not bound by CORS: any page a visitor opens could
    otherwise open sockets through tagproxy carrying the visitor's address
    and first-party cookies to the vendor (cross-site WebSocket hijacking).
    Browsers always send Origin on an upgrade; without one it is refused.
    """
    origin = request.headers.get(h.ORIGIN)
    if origin is None or not site.origin_allowed(origin, public_url):
        raise Forbidden("WebSocket upgrade from an origin this site does not allow")


def upstream_headers(
    request: web.Request, target: Target, address: str | None
) -> CIMultiDict[str]:
    """The relay's request headers, minus any handshake header of the visitor's.

    The vendor hop makes its own key, version and extension offer; passing
    the visitor's would break the handshake or promise what we do not do.
    """
    out = request_headers(request.headers, target.rule.request, address)
    for name in [n for n in out if n.lower().startswith(h.SEC_WEBSOCKET_PREFIX)]:
        out.popall(name, None)
    return out


def offered_protocols(request: web.Request) -> list[str]:
    values = request.headers.getall(h.SEC_WEBSOCKET_PROTOCOL, [])
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


async def _pump(
    joined: Joined,
    source: VisitorSocket | WebSocket,
    sink: VisitorSocket | WebSocket,
    flow: Flow,
    side: str,
    limit: int,
) -> Ending:
    """Relay messages from `source` to `sink` until `source` stops.

    aiohttp refuses a message of exactly its `max_msg_size` unless it came
    compressed; it gets one byte more and the exact limit is checked here,
    the same way for both.
    """
    while True:
        message = await source.receive()
        kind = message.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data: bytes = message.data
            if len(data) > limit:
                await _close(source, WSCloseCode.MESSAGE_TOO_BIG, "message too big")
                return Ending(f"{side}_too_big")
            try:
                await sink.send_frame(data, kind)
            except (ConnectionError, RuntimeError):
                return Ending("vendor" if side == "visitor" else "visitor")
            flow.add(len(data))
            joined.last = time.monotonic()
            continue
        if kind is WSMsgType.CLOSE:
            return Ending(side, message.data, message.extra or "")
        error = message.data if kind is WSMsgType.ERROR else None
        if (
            isinstance(error, WebSocketError)
            and error.code == WSCloseCode.MESSAGE_TOO_BIG
        ):
            return Ending(f"{side}_too_big")
        return Ending(side)  # dropped or broke the protocol: no clean close


async def _first_ending(
    joined: Joined, pumps: set[asyncio.Task[Ending]], idle: float
) -> Ending:
    while True:
        wait = joined.last + idle - time.monotonic()
        if wait <= 0:
            return Ending("idle", WSCloseCode.GOING_AWAY, "idle timeout")
        done, _ = await asyncio.wait(
            pumps, timeout=wait, return_when=asyncio.FIRST_COMPLETED
        )
        if done:
            return done.pop().result()


async def _pass_on(joined: Joined, ending: Ending) -> None:
    """Close both sides the way `ending` calls for."""
    if ending.code is not None and ending.closed_by in ("visitor", "vendor"):
        code = ending.code if ending.code in _SENDABLE else WSCloseCode.OK
        await _close_both(joined, code, ending.reason, first=ending.closed_by)
        return
    if ending.closed_by in ("idle", "shutdown"):
        await _close_both(joined, WSCloseCode.GOING_AWAY, ending.reason)
        return
    # A drop, a protocol error or a message over the limit on one side; the
    # failed side has been closed already (1009 for a message too big).
    await _close(joined.vendor, WSCloseCode.GOING_AWAY, "visitor gone")
    await _close(joined.visitor, WSCloseCode.BAD_GATEWAY, "vendor gone")


async def _close_both(
    joined: Joined, code: int, reason: str, first: str = "visitor"
) -> None:
    # The side that closed gets its answer last, after the other side has
    # been told: the relay behaves like one endpoint finishing its close.
    if first == "visitor":
        await _close(joined.vendor, code, reason)
        await _close(joined.visitor, code, reason)
    else:
        await _close(joined.visitor, code, reason)
        await _close(joined.vendor, code, reason)


async def _close(socket: VisitorSocket | WebSocket, code: int, reason: str) -> None:
    if socket.closed:
        return
    try:
        await socket.close(code=code, message=reason.encode()[:_MAX_REASON])
    except (ConnectionError, RuntimeError) as exc:
        log.debug("closing a relayed WebSocket failed: %r", exc)
