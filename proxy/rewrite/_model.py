"""Value types of the rewriting engine: what to rewrite, and what came out."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


class BodyKind(enum.Enum):
    """The syntax a body is parsed as; it decides where a literal may live."""

    JS = "js"
    JSON = "json"
    HTML = "html"


# Checked in order: "application/json" must not fall through to HTML, and
# every JavaScript media type ("text/javascript", "application/x-javascript",
# "text/ecmascript") names one of the two words.
_KIND_WORDS: Final = (
    ("javascript", BodyKind.JS),
    ("ecmascript", BodyKind.JS),
    ("json", BodyKind.JSON),
    ("html", BodyKind.HTML),
)


def kind_for_content_type(content_type: str) -> BodyKind | None:
    """Map a Content-Type header value to the body kind, or None to pass as is."""
    media_type = content_type.partition(";")[0].strip().lower()
    for word, kind in _KIND_WORDS:
        if word in media_type:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class HostTarget:
    """A vendor host and the first-party base URL that replaces it.

    ``host`` is lower case. A pattern host starts with ``*.``, where ``*`` is
    exactly one DNS label; ``base_url`` then contains ``{label}``, filled with
    the matched label, and ``label`` optionally restricts which labels match.
    ``bare`` also rewrites string literals that start with the bare host.
    ``paths`` are the upstream path globs tagproxy routes for this host
    (``*`` within a segment, ``**`` across); the runtime shim maps only URLs
    on them, so a URL tagproxy could not serve is left as it is. Empty: any.
    """

    host: str
    base_url: str
    label: str | None = None
    bare: bool = False
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExtraRewrite:
    """A rule-specific literal edit, applied inside string literals only."""

    name: str
    find: re.Pattern[bytes]
    replace: bytes


@dataclass(frozen=True, slots=True)
class RewriteResult:
    """The body to serve and what was changed in it.

    ``replacements`` counts edits present in ``body``: by concrete host for
    host rewrites, by ``ExtraRewrite.name`` for extras. When ``kept_original``
    is true the body is the unchanged original and ``reason`` says why.
    """

    body: bytes
    replacements: Mapping[str, int]
    kept_original: bool = False
    reason: str | None = None
