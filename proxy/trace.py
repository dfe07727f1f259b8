"""Debug traces: what tagproxy did to one request, for the operator only.

A request carrying `X-Tagproxy-Trace: <secret>` (the `--trace-secret`) gets
an `X-Tagproxy-Trace` response header: compact JSON saying which rule and
route took it, what was relayed upstream against what arrived (headers
dropped, added and changed; query and body before and after), and what the
vendor's answer lost or gained on its way back. The full record is also
logged at DEBUG on `tagproxy.trace`, never at INFO: it holds query strings.

Without the secret, or with a wrong one, nothing differs: the header is never
forwarded (headers.py), and the answer carries no trace. Cookie values are
never shown, only which cookie names passed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Final

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from . import headers as h
from . import metrics
from .exchange import TRACE, Record, current
from .upstream import Prepared

log = logging.getLogger("tagproxy.trace")

HEADER: Final = "X-Tagproxy-Trace"
MAX_HEADER: Final = 4096  # what proxies and browsers reliably carry
_EXCERPT: Final = 256
_SHORT: Final = 64
_FRAMING: Final = frozenset({"host", "content-length"})


class Tracer:
    """Tells the operator's trace requests from everyone else's."""

    def __init__(self, secret: str) -> None:
        self._digest = hashlib.sha256(secret.encode()).digest()

    def wants(self, request: web.Request) -> bool:
        given = request.headers.get(HEADER)
        if given is None:
            return False
        # Compare digests in constant time: neither the secret's length nor
        # its prefix leaks through timing.
        digest = hashlib.sha256(given.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(digest, self._digest)


class Trace:
    """The record of one traced request, filled in as it is handled."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.data: dict[str, object] = {}
        self.upstream_headers: CIMultiDictProxy[str] | None = None
        metrics.debug_traced()

    def sent(
        self,
        prepared: Prepared,
        headers: MultiMapping[str],
        query: str,
        body: bytes | None,
        received_body: bytes,
    ) -> None:
        """What went upstream, against what the client sent."""
        incoming = self.request.headers
        self.data["sent_to"] = str(prepared.url.with_query(None))
        self.data["host"] = prepared.host_header
        # Host and Content-Length are set by the client as it sends; Host is
        # shown on its own above.
        before = [(k, v) for k, v in incoming.items() if k.lower() not in _FRAMING]
        self.data["headers"] = _header_diff(before, headers.items())
        self.data["cookies"] = _cookie_names(incoming, headers)
        raw_query = self.request.raw_path.partition("?")[2].partition("#")[0]
        self.data["query"] = _before_after(raw_query, query)
        self.data["body"] = _body(received_body, body or b"")

    def received(self, headers: CIMultiDictProxy[str]) -> None:
        self.upstream_headers = headers

    def finish(self, response: web.StreamResponse) -> str:
        """The compact header value; the full record goes to the DEBUG log."""
        if self.upstream_headers is not None:
            self.data["response_headers"] = _header_diff(
                self.upstream_headers.items(), response.headers.items()
            )
        self.data["status"] = response.status
        log.debug("trace %s %s: %s", self.request.method, self.request.path, self.data)
        return compact(self.data)


def compact(data: dict[str, object]) -> str:
    """JSON within MAX_HEADER characters, shortening the bulky parts first."""
    text = json.dumps(data, separators=(",", ":"))
    if len(text) <= MAX_HEADER:
        return text
    shorter = {k: _shorten(v) for k, v in data.items()}
    text = json.dumps(shorter, separators=(",", ":"))
    if len(text) <= MAX_HEADER:
        return text
    keep = ("vendor", "route", "upstream", "status", "error")
    brief = {k: v for k, v in data.items() if k in keep}
    brief["truncated"] = "full trace at DEBUG on tagproxy.trace"
    return json.dumps(brief, separators=(",", ":"))[:MAX_HEADER]


def _shorten(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= _SHORT else value[:_SHORT] + "..."
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    return value


def _header_diff(
    before: Iterable[tuple[str, str]], after: Iterable[tuple[str, str]]
) -> dict[str, object]:
    """Names dropped, and values added or changed (cookie values hidden)."""
    old: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    for name, value in before:
        old.setdefault(name.lower(), []).append(value)
    for name, value in after:
        new.setdefault(name.lower(), []).append(value)
    out: dict[str, object] = {}
    dropped = sorted(n for n in old if n not in new)
    added = {n: _shown(n, v) for n, v in new.items() if n not in old}
    changed = {
        n: {"from": _shown(n, old[n]), "to": _shown(n, v)}
        for n, v in new.items()
        if n in old and old[n] != v
    }
    if dropped:
        out["dropped"] = dropped
    if added:
        out["added"] = added
    if changed:
        out["changed"] = changed
    return out


def _shown(name: str, values: list[str]) -> str | list[str]:
    if name == "cookie":
        values = [_hide_values(v, every=True) for v in values]
    elif name == "set-cookie":
        values = [_hide_values(v, every=False) for v in values]
    return values[0] if len(values) == 1 else values


def _hide_values(value: str, every: bool) -> str:
    """Cookie values replaced by `...`: all of a Cookie header's, and the
    first pair of a Set-Cookie (its attributes are not secret)."""
    parts = []
    for index, piece in enumerate(value.split(";")):
        name, sep, _rest = piece.strip().partition("=")
        hide = sep and (every or index == 0)
        parts.append(f"{name}=..." if hide else piece.strip())
    return "; ".join(parts)


def _cookie_names(
    incoming: CIMultiDictProxy[str], sent: MultiMapping[str]
) -> dict[str, list[str]]:
    def names(values: Iterable[str]) -> list[str]:
        return [p.strip().partition("=")[0] for v in values for p in v.split(";") if p]

    got = names(incoming.getall(h.COOKIE, []))
    passed = names(sent.getall(h.COOKIE, []))
    return {"passed": passed, "dropped": [n for n in got if n not in passed]}


def _before_after(before: str, after: str) -> dict[str, object]:
    if before == after:
        return {"same": True, "value": before}
    return {"from": before, "to": after}


def _body(before: bytes, after: bytes) -> dict[str, object]:
    out: dict[str, object] = {"in": len(before), "out": len(after)}
    if before == after:
        out["same"] = True
        return out
    out["from"] = before[:_EXCERPT].decode("utf-8", "backslashreplace")
    out["to"] = after[:_EXCERPT].decode("utf-8", "backslashreplace")
    return out


def of(outcome: Record) -> Trace | None:
    """The request's trace, if the operator asked for one."""
    trace = outcome.get(TRACE)
    return trace if isinstance(trace, Trace) else None


def note(outcome: Record, **fields: object) -> None:
    trace = outcome.get(TRACE)
    if isinstance(trace, Trace):
        trace.data.update(fields)


def finish(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Just before a response's headers go out: add the trace to traced answers.

    The handler and the preparing of its response run in one task, so the
    request's record is the current one; the identity check keeps an answer
    aiohttp makes on its own (a malformed next request on the same
    connection) from picking up an earlier request's trace.
    """
    trace = of(current() or {})
    if trace is not None and trace.request is request:
        response.headers[HEADER] = trace.finish(response)
