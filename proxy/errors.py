"""Errors that become HTTP responses, and the upstream failures behind them.

Deep code raises; only the HTTP front turns an error into a response, so no
handler builds an error page by hand and every rejection is logged alike.
"""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web


class Rejection(Exception):
    """A request refused with a 4xx or 5xx status and a short plain-text reason."""

    status: ClassVar[int] = 400

    def __init__(self, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            text=self.reason + "\n",
            headers={"Cache-Control": "no-store", **self.headers},
        )


class BadRequest(Rejection):
    status = 400


class Forbidden(Rejection):
    status = 403


class NotFound(Rejection):
    status = 404


class MethodNotAllowed(Rejection):
    status = 405


class RequestTimeout(Rejection):
    status = 408


class PayloadTooLarge(Rejection):
    status = 413


class ExpectationFailed(Rejection):
    status = 417


class UnsupportedMediaType(Rejection):
    status = 415


class UpgradeRequired(Rejection):
    status = 426


class ServiceUnavailable(Rejection):
    status = 503


class UpstreamError(Rejection):
    """The vendor could not be reached or answered in a way we refuse to pass on.

    `kind` says which way, as a metrics label: timeout, connect, protocol,
    bad_status, redirect or bad_body.
    """

    status = 502
    default_kind: ClassVar[str] = "protocol"

    def __init__(
        self,
        reason: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, headers=headers)
        self.kind = kind or self.default_kind


class UpstreamTimeout(UpstreamError):
    status = 504
    default_kind = "timeout"


class ConfigError(ValueError):
    """Operator configuration (flags, environment, rule files) that cannot work."""
