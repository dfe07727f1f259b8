"""What tagproxy counts, for Prometheus: one small function per event.

Features call the functions below (`metrics.stale_served("google")`) rather
than touching prometheus-client objects, so metric and label names live in
this one file and stay stable for dashboards. Label values must come from a
small fixed set (vendor ids from loaded rules, route ids, reason words);
never put visitor data, URLs or tag IDs in a label.

The metrics are served only on the admin listener (`--admin-listen`), never
on the public port. With `--workers N` every worker writes its values to a
shared directory (prometheus-client's multiprocess mode) and the supervisor
serves their sum; gauges say how workers combine (`livesum`, `livemax`).
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from . import __version__
from .rules import Route

NO_VENDOR: Final = "none"  # requests no rule matched
NO_ROUTE: Final = "none"

# Latencies of a proxy on the same network as its upstreams and clients:
# most answers take milliseconds, timeouts are seconds.
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REQUESTS: Final = Counter(
    "tagproxy_requests",
    "Requests answered, by vendor, route and HTTP status.",
    ["vendor", "route", "status"],
)
REQUEST_SECONDS: Final = Histogram(
    "tagproxy_request_duration_seconds",
    "Time from request to handler end, by vendor and route kind.",
    ["vendor", "kind"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT: Final = Gauge(
    "tagproxy_requests_in_flight",
    "Requests being handled now.",
    multiprocess_mode="livesum",
)
UPSTREAM_SECONDS: Final = Histogram(
    "tagproxy_upstream_duration_seconds",
    "Time until the vendor's response headers arrived, by vendor and route kind.",
    ["vendor", "kind"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS: Final = Counter(
    "tagproxy_upstream_errors",
    "Upstream failures, by vendor and kind (timeout, connect, protocol, "
    "bad_status, redirect, bad_body).",
    ["vendor", "kind"],
)
SCRIPT_CACHE: Final = Counter(
    "tagproxy_script_cache",
    "Script requests by how the cache answered (hit, miss, wait, bypass).",
    ["vendor", "result"],
)
STALE_SERVED: Final = Counter(
    "tagproxy_script_stale_served",
    "Scripts served past their freshness, by vendor and reason "
    "(revalidating, upstream_error, guard).",
    ["vendor", "reason"],
)
REWRITE_GUARD: Final = Counter(
    "tagproxy_rewrite_guard_trips",
    "Rewrites refused because the vendor's script no longer matched what the "
    "rule expects, by vendor and reason.",
    ["vendor", "reason"],
)
BODIES_REJECTED: Final = Counter(
    "tagproxy_bodies_rejected",
    "Request bodies refused for size (413), by vendor and route.",
    ["vendor", "route"],
)
BEACONS_DROPPED: Final = Counter(
    "tagproxy_beacons_dropped",
    "Beacons answered without reaching the vendor because a policy said so, "
    "by vendor and reason (consent, rate_limit, tag_id, ...).",
    ["vendor", "reason"],
)
SPOOL_BEACONS: Final = Counter(
    "tagproxy_spool_beacons",
    "Beacons of durable routes by what happened to them: accepted (spooled "
    "and answered), delivered, retried, rejected (4xx from the vendor, not "
    "retried), expired, unknown_host, full and write_errors (answered by the "
    "live relay instead).",
    ["vendor", "event"],
)
WEBSOCKETS: Final = Counter(
    "tagproxy_websockets",
    "Relayed WebSocket connections closed, by vendor and who ended them "
    "(visitor, vendor, idle, shutdown, visitor_too_big, vendor_too_big).",
    ["vendor", "closed_by"],
)
WEBSOCKET_SECONDS: Final = Histogram(
    "tagproxy_websocket_duration_seconds",
    "How long relayed WebSocket connections stayed open, by vendor.",
    ["vendor"],
    buckets=(1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0),
)
WEBSOCKET_MESSAGES: Final = Counter(
    "tagproxy_websocket_messages",
    "Messages relayed over WebSockets, by vendor and direction (in: to the "
    "vendor, out: to the visitor).",
    ["vendor", "direction"],
)
WEBSOCKET_BYTES: Final = Counter(
    "tagproxy_websocket_bytes",
    "Message payload bytes relayed over WebSockets, by vendor and direction.",
    ["vendor", "direction"],
)
SPOOL_DEPTH: Final = Gauge(
    "tagproxy_spool_depth",
    "Beacons waiting in the delivery spool.",
    multiprocess_mode="livesum",
)
SPOOL_OLDEST_AGE: Final = Gauge(
    "tagproxy_spool_oldest_age_seconds",
    "Age of the oldest beacon waiting in the delivery spool (0 when empty).",
    multiprocess_mode="livemax",
)
RELOADS: Final = Counter(
    "tagproxy_config_reloads",
    "Rule and site reloads, by result (ok, unchanged, error).",
    ["result"],
)
RELOAD_SUCCESS: Final = Gauge(
    "tagproxy_config_last_reload_successful",
    "1 if the last reload succeeded (or none was tried), 0 if it failed.",
    multiprocess_mode="livemin",
)
RELOAD_TIME: Final = Gauge(
    "tagproxy_config_last_reload_success_timestamp_seconds",
    "When the rules now serving were loaded (Unix time).",
    multiprocess_mode="livemin",
)
RULES_LOADED: Final = Gauge(
    "tagproxy_rules_loaded",
    "Vendor rules in the set now serving.",
    multiprocess_mode="livemax",
)
SITES_LOADED: Final = Gauge(
    "tagproxy_sites_loaded",
    "Sites in the set now serving (1 without a sites file).",
    multiprocess_mode="livemax",
)
TRACES: Final = Counter(
    "tagproxy_debug_traces",
    "Requests that carried the operator's trace secret.",
)
BUILD: Final = Gauge(
    "tagproxy_build_info",
    "Always 1; the label says which tagproxy version runs.",
    ["version"],
    multiprocess_mode="livemax",
)
BUILD.labels(__version__).set(1)


def route_id(route: Route) -> str:
    """A short, stable label for a route: its kind, host and first path."""
    return f"{route.kind}:{route.host.host}{route.paths.patterns[0]}"


# The labelled children of the per-request metrics, by label values: one
# dict look-up per request instead of prometheus-client's validating
# `labels()` call (about a microsecond each, three times a request).
_request_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
_upstream_children: dict[tuple[str, str], Histogram] = {}
_script_cache_children: dict[tuple[str, str], Counter] = {}


def request_done(
    vendor: str, route: str, kind: str, status: int, seconds: float
) -> None:
    key = (vendor, route, kind, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(vendor, route, str(status)),
            REQUEST_SECONDS.labels(vendor, kind),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def upstream_answered(vendor: str, kind: str, seconds: float) -> None:
    child = _upstream_children.get((vendor, kind))
    if child is None:
        child = _upstream_children[(vendor, kind)] = UPSTREAM_SECONDS.labels(
            vendor, kind
        )
    child.observe(seconds)


def upstream_error(vendor: str, kind: str) -> None:
    """An upstream failure. The HTTP front counts those that reach it as a
    502/504; code that absorbs one (stale-if-error, spool retries) calls this
    itself."""
    UPSTREAM_ERRORS.labels(vendor, kind).inc()


def script_cache(vendor: str, result: str) -> None:
    child = _script_cache_children.get((vendor, result))
    if child is None:
        child = SCRIPT_CACHE.labels(vendor, result)
        _script_cache_children[(vendor, result)] = child
    child.inc()


def stale_served(vendor: str, reason: str = "upstream_error") -> None:
    STALE_SERVED.labels(vendor, reason).inc()


def rewrite_guard_tripped(vendor: str, reason: str) -> None:
    REWRITE_GUARD.labels(vendor, reason).inc()


def body_rejected(vendor: str, route: str) -> None:
    BODIES_REJECTED.labels(vendor, route).inc()


def beacon_dropped(vendor: str, reason: str) -> None:
    BEACONS_DROPPED.labels(vendor, reason).inc()


def spool_event(vendor: str, event: str) -> None:
    SPOOL_BEACONS.labels(vendor, event).inc()


def websocket_closed(
    vendor: str,
    closed_by: str,
    seconds: float,
    inward: tuple[int, int],
    outward: tuple[int, int],
) -> None:
    """A relayed WebSocket ended; `inward`/`outward` are (messages, bytes)."""
    WEBSOCKETS.labels(vendor, closed_by).inc()
    WEBSOCKET_SECONDS.labels(vendor).observe(seconds)
    for direction, (messages, size) in (("in", inward), ("out", outward)):
        WEBSOCKET_MESSAGES.labels(vendor, direction).inc(messages)
        WEBSOCKET_BYTES.labels(vendor, direction).inc(size)


def spool_state(depth: int, oldest_age_seconds: float) -> None:
    """The spool's size now; call after every change (and periodically, so
    the age keeps growing while nothing drains)."""
    SPOOL_DEPTH.set(depth)
    SPOOL_OLDEST_AGE.set(oldest_age_seconds)


def rules_serving(rules: int, sites: int) -> None:
    """A rule set (and its sites) started serving."""
    RULES_LOADED.set(rules)
    SITES_LOADED.set(sites)
    RELOAD_SUCCESS.set(1)
    RELOAD_TIME.set(time.time())


def reload_result(result: str) -> None:
    """ok, unchanged or error; an error leaves the old set serving."""
    RELOADS.labels(result).inc()
    if result == "error":
        RELOAD_SUCCESS.set(0)
    else:
        RELOAD_SUCCESS.set(1)


def debug_traced() -> None:
    TRACES.inc()


__all__ = [
    "NO_ROUTE",
    "NO_VENDOR",
    "beacon_dropped",
    "body_rejected",
    "debug_traced",
    "reload_result",
    "request_done",
    "rewrite_guard_tripped",
    "route_id",
    "rules_serving",
    "script_cache",
    "spool_event",
    "spool_state",
    "stale_served",
    "upstream_answered",
    "upstream_error",
    "websocket_closed",
]
