"""Where literals live in JSON and HTML bodies, and when a rewrite broke one.

JSON has no comments or regex literals, so a regex over its string tokens is
exact. HTML is read only as far as quoted attribute values.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, Self

_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)

# Attributes must be separated by white space: with an optional separator the
# regex could split one name many ways and backtrack exponentially.
_HTML_TAG: Final = re.compile(
    rb"<[A-Za-z][^\s/>]*"
    rb"""(?:\s+(?:[^\s"'>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?|/))*"""
    rb"\s*/?>"
)
_HTML_QUOTED_VALUE: Final = re.compile(rb"""=\s*(?:"([^"]*)"|'([^']*)')""")


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace body[start:end]; ``key`` is what the edit is counted under."""

    start: int
    end: int
    replacement: bytes
    key: str


class Literals(Protocol):
    """The literals of one body, as the rewriter needs to see them."""

    def url_allowed(self, start: int, end: int) -> bool:
        """Whether a URL reference at [start, end) may be rewritten."""
        ...

    def literal_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The content span of the literal holding [start, end), if any."""
        ...

    def rewritten(self, body: bytes, edits: Sequence[Edit]) -> Self:
        """The literals of ``body``, which is this body with ``edits`` made."""
        ...

    def breakage(self, rewritten: Self) -> str | None:
        """Why the rewritten body must not be served, or None if it may."""
        ...


class _SpanIndex:
    """Sorted, disjoint content spans, searched by bisection."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in spans:
            self._starts.append(start)
            self._ends.append(end)

    def find(self, start: int, end: int) -> tuple[int, int] | None:
        index = bisect_right(self._starts, start) - 1
        if index < 0 or end > self._ends[index]:
            return None
        return self._starts[index], self._ends[index]


class JsonLiterals:
    """String-token contents of one JSON body."""

    __slots__ = ("_body", "_index")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._index: _SpanIndex | None = None

    def url_allowed(self, start: int, end: int) -> bool:
        return self.literal_span(start, end) is not None

    def literal_span(self, start: int, end: int) -> tuple[int, int] | None:
        if self._index is None:
            tokens = _JSON_STRING.finditer(self._body)
            self._index = _SpanIndex((m.start() + 1, m.end() - 1) for m in tokens)
        return self._index.find(start, end)

    def rewritten(self, body: bytes, edits: Sequence[Edit]) -> JsonLiterals:
        return JsonLiterals(body)

    def breakage(self, rewritten: JsonLiterals) -> str | None:
        if _loads(rewritten._body) or not _loads(self._body):
            return None
        return "the rewritten JSON no longer parses"


class HtmlLiterals:
    """Quoted attribute values of one HTML document.

    URL references are rewritten anywhere in a document, inline scripts
    included; only bare hosts and extras are confined to attribute values.
    Inline scripts are not parsed, so their string literals get URL rewrites
    but neither bare-host rewrites nor extras.
    """

    __slots__ = ("_body", "_index")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._index: _SpanIndex | None = None

    def url_allowed(self, start: int, end: int) -> bool:
        return True

    def literal_span(self, start: int, end: int) -> tuple[int, int] | None:
        if self._index is None:
            self._index = _SpanIndex(_attribute_values(self._body))
        return self._index.find(start, end)

    def rewritten(self, body: bytes, edits: Sequence[Edit]) -> HtmlLiterals:
        return HtmlLiterals(body)

    def breakage(self, rewritten: HtmlLiterals) -> str | None:
        if _is_utf8(rewritten._body) or not _is_utf8(self._body):
            return None
        return "the rewritten HTML is no longer valid UTF-8"


def _attribute_values(body: bytes) -> Iterable[tuple[int, int]]:
    for tag in _HTML_TAG.finditer(body):
        values = _HTML_QUOTED_VALUE.finditer(body, tag.start(), tag.end())
        for value in values:
            group = 1 if value.start(1) >= 0 else 2
            yield value.start(group), value.end(group)


def _loads(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
