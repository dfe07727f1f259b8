"""Error-reporting envelope tunnels: forward an envelope only where its DSN may go.

An envelope's first line is a JSON header whose `dsn` names the host and
project it is for, e.g. `https://<public key>@o0.ingest.sentry.io/1`. A
tunnel that posted wherever the DSN pointed would be an open relay with a
client-chosen destination, so the DSN must name the route's own host (scheme
and port included) and a project the rule lists; anything else is refused
with 403 before any upstream contact. The body itself is never changed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from typing import Final

from yarl import URL

from .errors import BadRequest, Forbidden, UnsupportedMediaType
from .routing import Target
from .rules.model import EnvelopeTunnel

MAX_HEADER_LINE: Final = 64 * 1024
_PUBLIC_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROJECT_PATH: Final = re.compile(r"/([0-9]{1,20})")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def envelope_target(
    target: Target, tunnel: EnvelopeTunnel, body: bytes, encoding: str
) -> Target:
    """Where this envelope goes: the route's host, its project's endpoint."""
    dsn = envelope_dsn(body, encoding)
    project = allowed_project(dsn, target, tunnel)
    return dataclasses.replace(target, path=f"/api/{project}/envelope/", query="")


def envelope_dsn(body: bytes, encoding: str) -> URL:
    line = _first_line(body, encoding)
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("envelope header line is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("dsn"), str):
        raise BadRequest("envelope header names no DSN")
    try:
        return URL(header["dsn"])
    except ValueError as exc:
        raise BadRequest("envelope DSN is not a URL") from exc


def allowed_project(dsn: URL, target: Target, tunnel: EnvelopeTunnel) -> str:
    """The DSN's project if the DSN names this route's host and a listed project."""
    host = target.host
    if (
        dsn.scheme != host.scheme
        or (dsn.raw_host or "").lower() != host.host
        or dsn.port != _DEFAULT_PORTS[host.scheme]
    ):
        raise Forbidden("envelope DSN names a host this tunnel does not serve")
    match = _PROJECT_PATH.fullmatch(dsn.raw_path)
    if match is None or match[1] not in tunnel.projects:
        raise Forbidden("envelope DSN names a project this tunnel does not serve")
    if _PUBLIC_KEY.fullmatch(dsn.raw_user or "") is None:
        raise BadRequest("envelope DSN has no public key")
    return match[1]


def _first_line(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = zlib.MAX_WBITS if encoding == "deflate" else 16 + zlib.MAX_WBITS
        try:
            body = zlib.decompressobj(wbits).decompress(body, MAX_HEADER_LINE + 1)
        except zlib.error as exc:
            raise BadRequest(f"envelope is not valid {encoding}") from exc
    elif encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"cannot read a {encoding} envelope's header")
    line = body.partition(b"\n")[0]
    if len(line) > MAX_HEADER_LINE:
        raise BadRequest("envelope header line is too long")
    return line
