"""Set one member of a JSON body, leaving every other byte as the client sent it.

Some vendors geolocate from a field of the beacon's JSON body (Umami's
`payload.ip`, for example) rather than from a header. When a rule says so,
tagproxy writes the visitor's address there, replacing whatever the client
put in it. Only the member's value changes: numbers, spacing, key order and
escapes elsewhere stay byte-exact, because a re-serialised body could differ
in ways a vendor notices (`1e5` becoming `100000.0`, reordered keys).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Final

from . import headers as h
from .errors import BadRequest, UnsupportedMediaType
from .rules import IpVia
from .rules.model import RequestPolicy

_WHITESPACE: Final = " \t\n\r"
_SCANNER: Final = json.JSONDecoder()

Edit = tuple[int, int, str]  # start, end, replacement (character offsets)


def client_ip_in_body(
    body: bytes,
    policy: RequestPolicy,
    visitor: str | None,
    headers: Mapping[str, str],
    limit: int,
) -> bytes:
    """The body with the visitor's address at every JSON member the rule names.

    A withheld address (None) is written as null, so a value the client put
    there never stands in for it.
    """
    paths = [way.name for way in policy.client_ip if way.via is IpVia.JSON_BODY]
    if not paths or not body:
        return body
    encoding = headers.get(h.CONTENT_ENCODING, "")
    for path in paths:
        body = set_member(body, path.split("."), visitor, encoding, limit)
    return body


def set_member(
    body: bytes,
    path: Sequence[str],
    value: str | None,
    encoding: str = "",
    limit: int = 0,
) -> bytes:
    """`body` with the member at `path` set to the string `value`.

    Every occurrence is replaced, duplicates included: JSON parsers keep the
    last of duplicate keys, so leaving one would let the client's value win.
    A missing member (and missing objects on its path) is added. A top-level
    array is treated as a batch: each object in it is edited.
    """
    text = _decode(body, encoding, limit)
    try:
        top = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("body must be JSON for this route") from exc
    if not isinstance(top, dict | list):
        raise BadRequest("body must be a JSON object or array for this route")

    edits: list[Edit] = []
    start = _skip(text, 0)
    if isinstance(top, dict):
        _object(text, start, tuple(path), json.dumps(value), edits)
    else:
        _array(text, start, tuple(path), json.dumps(value), edits)
    for begin, end, replacement in sorted(edits, reverse=True):
        text = text[:begin] + replacement + text[end:]
    return _encode(text, encoding)


def _object(
    text: str, start: int, path: tuple[str, ...], value: str, edits: list[Edit]
) -> int:
    """Edit the object opening at `start`; return the offset after its `}`."""
    name, rest = path[0], path[1:]
    found = False
    i = _skip(text, start + 1)
    members = 0
    while text[i] != "}":
        key, i = scanstring(text, i + 1)
        i = _skip(text, _skip(text, i) + 1)  # past the colon
        if key == name:
            found = True
            if not rest:
                end = _value_end(text, i)
                edits.append((i, end, value))
            elif text[i] == "{":
                end = _object(text, i, rest, value, edits)
            else:
                end = _value_end(text, i)  # not an object: nothing to set in it
        else:
            end = _value_end(text, i)
        members += 1
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)
    if not found:
        member = f"{json.dumps(name)}:{_nested(rest, value)}"
        edits.append((i, i, ("," if members else "") + member))
    return i + 1


def _array(
    text: str, start: int, path: tuple[str, ...], value: str, edits: list[Edit]
) -> int:
    i = _skip(text, start + 1)
    while text[i] != "]":
        if text[i] == "{":
            end = _object(text, i, path, value, edits)
        else:
            end = _value_end(text, i)
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return i + 1


def _nested(path: tuple[str, ...], value: str) -> str:
    for name in reversed(path):
        value = f"{{{json.dumps(name)}:{value}}}"
    return value


def _value_end(text: str, start: int) -> int:
    _, end = _SCANNER.raw_decode(text, start)
    return int(end)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


# --- content encodings ---------------------------------------------------------


def _decode(body: bytes, encoding: str, limit: int) -> str:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        body = _inflate(body, encoding, limit or len(body) * 100)
    elif encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"cannot place the visitor's address in a {encoding} body"
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body must be UTF-8 JSON for this route") from exc


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}") from exc
    if len(out) > limit or not inflater.eof:
        raise BadRequest(f"{encoding} body is truncated or inflates past the limit")
    return out


def _encode(text: str, encoding: str) -> bytes:
    raw = text.encode("utf-8")
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(raw, mtime=0)
    if encoding == "deflate":
        return zlib.compress(raw)
    return raw
