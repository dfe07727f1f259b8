"""Durable delivery: beacons answered once spooled, then sent in the background.

A relay route with a `[relays.durable]` table does not wait for its vendor.
The request is built for upstream exactly as the live relay would build it
(headers by allowlist, the visitor's address, query edits, the body byte for
byte), committed to the spool, and only then answered with the status and
body the rule gives. A worker sends spooled beacons with retries,
exponential backoff and jitter until the vendor takes them or they are older
than the route's `max_age`.

Delivery is at least once. A beacon leaves the spool only after the vendor
answered it; if tagproxy dies between the vendor's answer and that delete,
the beacon is sent again after the restart. Such duplicates are bounded by
the attempts in flight at the moment of the crash (`--delivery-concurrency`,
32 by default), and a restart sends only those again, not the whole spool.

When the spool is full (or cannot be written), a durable route falls back to
the live relay for that request: the visitor gets the vendor's own answer or
a 502/504, never an acceptance that nothing backs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from . import headers as h
from . import metrics
from .background import TaskSet
from .errors import ConfigError, UpstreamError
from .http1 import ClientError, Response
from .routing import Target
from .rules import RelayRoute, RuleSet
from .rules.model import Timeouts
from .spool import Beacon, Spool, SpoolError, SpoolFull, Stored
from .upstream import Upstream

log = logging.getLogger(__name__)

CONCURRENCY: Final = 32  # attempts in flight by default: also the duplicate bound
_CLAIM_BUDGET: Final = 32 * 1024 * 1024  # bodies held in memory at once
_MAINTAIN_EVERY: Final = 5.0  # seconds between expiry sweeps and gauge updates
_IDLE_WAKE: Final = 1.0  # longest sleep, so clock steps cannot stall delivery
_READ_LIMIT: Final = 1024 * 1024  # vendor answer bytes read before closing
# Answers that mean "not now": the same beacon may succeed later.
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


class Result(enum.StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # the vendor refused it for good (4xx): not retried
    RETRY = "retry"


@dataclass(slots=True)
class DeliveryStats:
    """What happened to durable beacons since start (also in metrics)."""

    accepted: int = 0
    delivered: int = 0
    rejected: int = 0
    retried: int = 0
    expired: int = 0
    unknown_host: int = 0
    full: int = 0  # answered by the live relay: the spool was full
    write_errors: int = 0  # answered by the live relay: the spool failed


@dataclass(slots=True)
class _Cooling:
    """A vendor host that failed lately (a circuit breaker, per host).

    None of its beacons are claimed while it cools; after `until`, one
    beacon goes as a probe, and its result opens the host again or cools it
    for longer. A vendor that is down for an hour thus costs a probe per
    backoff step, not a failed attempt per spooled beacon.
    """

    until: float
    failures: int
    set_at: float
    probe: int | None = None  # the spool id of the probe in flight


def backoff(attempt: int, initial: float, most: float, rng: random.Random) -> float:
    """Seconds before attempt `attempt + 1`: exponential, capped, half jittered.

    Half the delay is fixed so retries really do slow down; the other half
    is random so beacons that failed together do not return together.
    """
    ceiling = min(most, initial * 2.0 ** min(attempt, 40))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after(response: Response) -> float | None:
    """A Retry-After in seconds (the HTTP-date form is not used by beacon
    endpoints we know, and is ignored)."""
    value = response.headers.get(h.RETRY_AFTER, "").strip()
    return float(value) if value.isdigit() else None


def classify(status: int) -> Result:
    if status < 400:
        return Result.DELIVERED
    if status >= 500 or status in _RETRY_STATUSES:
        return Result.RETRY
    return Result.REJECTED


def durable_routes(rules: RuleSet) -> list[str]:
    return [
        f"{rule.source}: relays[{index}]"
        for rule in rules.rules
        for index, route in enumerate(rule.relays)
        if route.durable is not None
    ]


def require_spool(rules: RuleSet, spool: object | None) -> None:
    """Durable routes promise that accepted beacons survive; without a spool
    file nothing could keep that promise, so refuse to start."""
    routes = durable_routes(rules)
    if routes and spool is None:
        raise ConfigError(
            f"{routes[0]} is durable but no spool is set: give --spool PATH "
            "(or TAGPROXY_SPOOL), or remove its [relays.durable] table"
        )


class Delivery:
    """Accepts durable beacons into the spool and delivers them."""

    def __init__(
        self,
        spool: Spool,
        upstream: Upstream,
        rules: Callable[[], RuleSet],
        *,
        concurrency: int = CONCURRENCY,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.upstream = upstream
        self.rules = rules
        self.concurrency = concurrency
        self.stats = DeliveryStats()
        self._rng = rng or random.Random()
        self._cooling: dict[str, _Cooling] = {}
        self._sending: dict[int, Stored] = {}
        self._wake = asyncio.Event()
        self._worker = TaskSet("delivery worker")
        self._attempts = TaskSet("delivery")
        self._next_maintenance = 0.0

    def start(self) -> None:
        if self.spool.recovered:
            log.warning(
                "spool %s: %d beacons were in flight when tagproxy last stopped; "
                "sending them again (the vendor may already have some)",
                self.spool.path,
                self.spool.recovered,
            )
        log.info(
            "spool %s: %d beacons waiting (%d bytes of %d)",
            self.spool.path,
            self.spool.depth,
            self.spool.bytes,
            self.spool.max_bytes,
        )
        self._worker.spawn(self._run(), name="delivery-worker")

    async def stop(self, seconds: float) -> None:
        """Stop claiming; give attempts in flight `seconds` to finish; put the
        rest back in the spool, due at once; close the spool."""
        await self._worker.cancel()
        if not await self._attempts.wait(seconds):
            await self._attempts.cancel()
        await self.spool.close()
        log.info(
            "spool %s closed with %d beacons waiting; since start: %s",
            self.spool.path,
            self.spool.depth,
            self.stats,
        )

    # --- accepting -----------------------------------------------------------

    async def accept(
        self,
        target: Target,
        method: str,
        path_query: str,
        headers: CIMultiDict[str],
        body: bytes,
    ) -> bool:
        """Spool a beacon; False if it must go the live way instead."""
        route = target.route
        assert isinstance(route, RelayRoute)
        assert route.durable is not None
        vendor = target.rule.vendor
        now = time.time()
        beacon = Beacon(
            vendor=vendor,
            route=metrics.route_id(route),
            method=method,
            scheme=target.host.scheme,
            host=target.upstream_host,
            target=path_query,
            headers=tuple(headers.items()),
            body=body,
            accepted=now,
            expires=now + route.durable.max_age,
            connect_timeout=route.timeouts.connect,
            total_timeout=route.timeouts.total,
            retry_initial=route.durable.retry_initial,
            retry_max=route.durable.retry_max,
        )
        try:
            await self.spool.put(beacon)
        except SpoolFull:
            self._count(vendor, "full")
            return False
        except SpoolError as exc:
            log.error("spool %s: cannot write a beacon: %s", self.spool.path, exc)
            self._count(vendor, "write_errors")
            return False
        self._count(vendor, "accepted")
        self._wake.set()
        return True

    def _count(self, vendor: str, event: str) -> None:
        setattr(self.stats, event, getattr(self.stats, event) + 1)
        metrics.spool_event(vendor, event)

    # --- the worker ----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                # A disk error or a bug must not end delivery for good: the
                # spool keeps the beacons, and the next step tries again.
                log.exception("delivery worker: step failed; retrying in 1s")
                await asyncio.sleep(_IDLE_WAKE)

    async def _step(self) -> None:
        """Claim what is due and start sending it, then sleep until more is."""
        self._wake.clear()
        now = time.time()
        if now >= self._next_maintenance:
            await self._maintain(now)
        sleep = self._next_maintenance - now
        free = self.concurrency - len(self._sending)
        if free > 0:
            free -= await self._probe(now, free)
        if free > 0:
            batch, following = await self.spool.claim(
                now, free, _CLAIM_BUDGET, tuple(self._cooling)
            )
            for stored in batch:
                self._send(stored)
            if following is not None and len(batch) < free:
                sleep = min(sleep, following - now)
        for cooling in self._cooling.values():
            if cooling.probe is None:
                sleep = min(sleep, cooling.until - now)
        await self._sleep(min(max(sleep, 0.0), _IDLE_WAKE))

    async def _probe(self, now: float, free: int) -> int:
        """Send one beacon to each cooled host whose pause is over."""
        sent = 0
        for host, cooling in list(self._cooling.items()):
            if cooling.until > now or cooling.probe is not None or sent >= free:
                continue
            batch, _ = await self.spool.claim(now, 1, _CLAIM_BUDGET, only_host=host)
            if not batch:
                del self._cooling[host]  # nothing due for it: no probe needed
                continue
            cooling.probe = batch[0].id
            self._send(batch[0])
            sent += 1
        return sent

    def _send(self, stored: Stored) -> None:
        self._sending[stored.id] = stored
        self._attempts.spawn(self._deliver(stored), name=f"deliver-{stored.id}")

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _maintain(self, now: float) -> None:
        self._next_maintenance = now + _MAINTAIN_EVERY
        if await self.spool.adopt():
            self._wake.set()
        for expired in await self.spool.purge_expired(now):
            log.warning(
                "spool: %d %s beacons older than their max_age dropped",
                expired.count,
                expired.vendor,
            )
            for _ in range(expired.count):
                self._drop(expired.vendor, "expired")
        oldest = await self.spool.oldest()
        metrics.spool_state(self.spool.depth, 0.0 if oldest is None else now - oldest)

    def _drop(self, vendor: str, reason: str) -> None:
        self._count(vendor, reason)
        metrics.beacon_dropped(vendor, reason)

    # --- one attempt ---------------------------------------------------------

    async def _deliver(self, stored: Stored) -> None:
        settled = False
        try:
            settled = await self._settle(stored, time.time())
        finally:
            if not settled:
                # Cancelled (shutting down) or failed unexpectedly: back to
                # the spool, due at once, so the next run sends it.
                await self._release(stored)
            cooling = self._cooling.get(stored.beacon.host)
            if cooling is not None and cooling.probe == stored.id:
                cooling.probe = None
            del self._sending[stored.id]
            self._wake.set()

    async def _release(self, stored: Stored) -> None:
        try:
            await asyncio.shield(self.spool.release(stored))
        except (SpoolError, asyncio.CancelledError) as exc:
            # Still marked in flight in the file: the next start sends it.
            log.error("spool: cannot put beacon %d back: %r", stored.id, exc)

    async def _settle(self, stored: Stored, started: float) -> bool:
        beacon = stored.beacon
        if started >= beacon.expires:
            await self.spool.delivered(stored)
            self._drop(beacon.vendor, "expired")
            return True
        if not self._owned(beacon):
            # The rule that named this host is no longer loaded; sending to
            # a host no rule names would break the one-way-out promise.
            await self.spool.delivered(stored)
            self._drop(beacon.vendor, "unknown_host")
            return True

        result, wait = await self._attempt(beacon)
        if wait is not None:
            wait = min(wait, beacon.retry_max)  # the vendor's wish, within ours
        if result is Result.RETRY:
            self._host_failed(beacon, started, wait)
            due = time.time() + max(
                wait or 0.0,
                backoff(
                    stored.attempts, beacon.retry_initial, beacon.retry_max, self._rng
                ),
            )
            if due >= beacon.expires:
                await self.spool.delivered(stored)
                self._drop(beacon.vendor, "expired")
                return True
            await self.spool.retry(stored, due)
            self._count(beacon.vendor, "retried")
            return True

        self._cooling.pop(beacon.host, None)
        await self.spool.delivered(stored)
        if result is Result.REJECTED:
            self._count(beacon.vendor, "rejected")
        else:
            self._count(beacon.vendor, "delivered")
        return True

    def _owned(self, beacon: Beacon) -> bool:
        owner = self.rules().owner_of(beacon.host)
        return owner is not None and owner[1].scheme == beacon.scheme

    async def _attempt(self, beacon: Beacon) -> tuple[Result, float | None]:
        """Send once; the result and any wait the vendor asked for."""
        prepared = self.upstream.prepare(beacon.scheme, beacon.host, beacon.target)
        body = (
            beacon.body if beacon.body or beacon.method not in ("GET", "HEAD") else None
        )
        timeouts = Timeouts(beacon.connect_timeout, beacon.total_timeout)
        try:
            response = await self.upstream.request(
                beacon.method, prepared, CIMultiDict(beacon.headers), body, timeouts
            )
        except UpstreamError as exc:
            metrics.upstream_error(beacon.vendor, exc.kind)
            log.debug("delivery to %s failed: %s", beacon.host, exc.reason)
            return Result.RETRY, None
        async with response:
            # The status line arrived, so the vendor has answered; the body
            # is read only so the connection can be used again.
            with contextlib.suppress(ClientError, OSError, TimeoutError):
                await response.read_chunk(_READ_LIMIT)
        result = classify(response.status)
        if result is Result.REJECTED:
            log.warning(
                "%s refused a spooled beacon with %d; dropped (not retried)",
                beacon.host,
                response.status,
            )
        elif result is Result.RETRY:
            metrics.upstream_error(beacon.vendor, "bad_status")
        return result, retry_after(response)

    def _host_failed(self, beacon: Beacon, started: float, wait: float | None) -> None:
        """Slow down on a failing host: while it cools, the worker claims none
        of its beacons, then one probe's result decides."""
        cooling = self._cooling.get(beacon.host)
        if cooling is not None and started < cooling.set_at:
            return  # sent before the host was known bad: not a new failure
        failures = 1 if cooling is None else cooling.failures + 1
        pause = backoff(failures - 1, beacon.retry_initial, beacon.retry_max, self._rng)
        now = time.time()
        until = now + max(pause, wait or 0.0)
        self._cooling[beacon.host] = _Cooling(until, failures, now)


def durable_answer(route: RelayRoute) -> web.Response:
    """What the client gets for a spooled beacon, as the rule says."""
    assert route.durable is not None
    headers = {h.CACHE_CONTROL: "no-store"}
    if route.durable.content_type:
        headers[h.CONTENT_TYPE] = route.durable.content_type
    return web.Response(
        status=route.durable.status, body=route.durable.body or None, headers=headers
    )
