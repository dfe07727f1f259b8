"""The record of one request while it runs, read by the access log and metrics.

The HTTP front opens a record per request (the `outcome` dict it passes to
the relay and script services). Code far below, such as the upstream client,
adds to it through a context variable instead of having it passed down every
call. aiohttp runs each request in its own task, so records never mix.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

from . import metrics

Record = dict[str, object]

VENDOR: Final = "vendor"
ROUTE: Final = "route"
KIND: Final = "kind"
UPSTREAM_STATUS: Final = "upstream_status"
UPSTREAM_SECONDS: Final = "upstream_s"
CACHE: Final = "cache"
BYTES_IN: Final = "bytes_in"
ERROR: Final = "error"
PRIVACY: Final = "privacy"  # what a privacy policy did: "drop:consent", ...
TRACE: Final = "trace"  # a trace.Trace when the operator asked for one
WEBSOCKET: Final = "websocket"  # a relayed WebSocket's counts, for its log line

_current: ContextVar[Record | None] = ContextVar("tagproxy_exchange", default=None)


def begin(record: Record) -> None:
    _current.set(record)


def current() -> Record | None:
    return _current.get()


def note(key: str, value: object) -> None:
    """Add one field to the running request's record, if there is one."""
    record = _current.get()
    if record is not None:
        record[key] = value


def upstream_answered(seconds: float) -> None:
    """The vendor's response headers arrived `seconds` after we sent."""
    record = _current.get()
    if record is None:
        return
    spent = record.get(UPSTREAM_SECONDS, 0.0)
    assert isinstance(spent, float)
    record[UPSTREAM_SECONDS] = spent + seconds
    metrics.upstream_answered(
        str(record.get(VENDOR, metrics.NO_VENDOR)),
        str(record.get(KIND, metrics.NO_ROUTE)),
        seconds,
    )


def upstream_failed(seconds: float) -> None:
    """Time spent on an attempt that failed still counts as upstream time."""
    record = _current.get()
    if record is None:
        return
    spent = record.get(UPSTREAM_SECONDS, 0.0)
    assert isinstance(spent, float)
    record[UPSTREAM_SECONDS] = spent + seconds
