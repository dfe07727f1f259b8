"""Parameter and body scrubbing: drop or replace what a rule lists, and redact
e-mail addresses and phone numbers inside URL-valued parameters.

Everything here edits only what it must: query pieces and form fields that
no rule names stay byte-exact, a JSON body nothing matched in is sent as it
came, and a body of a format the rule did not declare is never touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus, unquote_plus

from ..rules.model import NameMatcher
from .model import BodyFormat, BodyScrub

REDACTED: Final = "(redacted)"

# An e-mail address in a URL as a browser writes it: "@" itself, or escaped
# once or twice when the address sits in a query value of the URL.
_EMAIL: Final = re.compile(
    r"[A-Za-z0-9._%+-]+(?:@|%40|%2540)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    re.IGNORECASE,
)
_PHONE_CHARS: Final = re.compile(r"\+?[\d\s().\-/]{7,24}")
_PHONE_SEPARATORS: Final = re.compile(r"[\s().\-/]")
_PHONE_NAME: Final = re.compile(
    r"phone|mobile|^tel$|^tel[_.-]|[_.-]tel$|^cell|fax|whatsapp|msisdn|^sms",
    re.IGNORECASE,
)


# --- URL redaction -------------------------------------------------------------


def looks_like_phone(name: str, value: str) -> bool:
    """A whole value that is a phone number.

    Digits alone are too often order numbers or timestamps, so a bare digit
    string counts only under a phone-like name; a leading "+" or the usual
    separators make it a phone number under any name, from 9 digits on, so
    that dates (8 digits) stay.
    """
    value = value.strip()
    if _PHONE_CHARS.fullmatch(value) is None:
        return False
    digits = sum(c.isdigit() for c in value)
    if not 7 <= digits <= 15:
        return False
    if _PHONE_NAME.search(name):
        return True
    if value.startswith("+"):
        return True
    return digits >= 9 and _PHONE_SEPARATORS.search(value) is not None


def redact_url(url: str) -> str:
    """The URL with e-mail addresses and phone-number query values redacted."""
    if "@" in url or "%40" in url or "%2540" in url:  # the pattern is costly
        url = _EMAIL.sub(REDACTED, url)
    if "?" not in url and "#" not in url:
        return url
    base, sep, rest = url.partition("?")
    if not sep:
        base, sep, rest = url.partition("#")
        return base + sep + _redact_params(rest)
    query, hash_sep, fragment = rest.partition("#")
    return base + sep + _redact_params(query) + hash_sep + _redact_params(fragment)


def _redact_params(text: str) -> str:
    if "=" not in text:
        return text
    pieces = text.split("&")
    for index, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        if eq and looks_like_phone(unquote_plus(name), unquote_plus(value)):
            pieces[index] = f"{name}={REDACTED}"
    return "&".join(pieces)


# --- query strings and form bodies ---------------------------------------------


class ParamEditor:
    """Drop, replace and redact parameters of a raw `a=1&b=2` string.

    One precompiled pattern finds the pieces whose names the rule lists, in
    any percent-encoding of those names, so a beacon with none of them is
    scanned once in C and returned as it came; only matching pieces are
    decoded and edited.
    """

    __slots__ = ("drop", "find", "replace", "urls")

    def __init__(
        self,
        drop: tuple[str, ...],
        replace: Mapping[str, str],
        urls: frozenset[str],
    ) -> None:
        self.drop = NameMatcher.of(drop)
        self.replace = {name: quote_plus(value) for name, value in replace.items()}
        self.urls = urls
        names = [*drop, *replace, *urls]
        alternatives = "|".join(_raw_name(name) for name in names) or "(?!)"
        # Matched against "&" + query: the leading literal lets the regex
        # engine jump from "&" to "&" instead of trying every position.
        self.find = re.compile(rf"&({alternatives})(?:(=)([^&]*))?(?=&|$)")

    def edit(self, raw: str) -> str:
        if not raw:
            return raw
        edited = self.find.sub(self._piece, "&" + raw)[1:]
        return raw if edited == raw else edited

    def _piece(self, match: re.Match[str]) -> str:
        name, eq, value = match.group(1, 2, 3)
        decoded = unquote_plus(name)
        if self.drop(decoded):
            return ""
        if decoded in self.replace:
            return f"&{name}={self.replace[decoded]}"
        if eq and decoded in self.urls:
            plain = unquote_plus(value)
            redacted = redact_url(plain)
            if redacted != plain:
                return f"&{name}={quote(redacted, safe='')}"
        return match.group(0)


def _raw_name(name: str) -> str:
    """A pattern for a parameter name as it may appear in a raw query.

    Each character may come as itself or percent-encoded (either hex case),
    a space also as "+"; `*` stands for any run of name characters.
    """
    parts = []
    for char in name:
        if char == "*":
            parts.append("[^&=]*")
            continue
        hexes = "".join(f"%{b:02X}" for b in char.encode())
        alternatives = [re.escape(char), f"(?i:{hexes})"]
        if char == " ":
            alternatives.append(r"\+")
        parts.append(f"(?:{'|'.join(alternatives)})")
    return "".join(parts)


# --- JSON bodies ---------------------------------------------------------------

Path = tuple[str, ...]


def parse_path(spec: str) -> Path:
    """`context.page.url` -> ("context", "page", "url"); `*` is any member."""
    return tuple(spec.split("."))


class JsonEditor:
    """Drop, replace and redact members of a JSON document by dotted path.

    A path walks objects by member name; an array on the way is walked into
    element by element, so `properties.email` also reaches every event of a
    batch sent as an array.
    """

    __slots__ = ("drop", "replace", "urls")

    def __init__(
        self,
        drop: tuple[str, ...],
        replace: Mapping[str, str | int | float | bool],
        urls: tuple[str, ...],
    ) -> None:
        self.drop = tuple(parse_path(p) for p in drop)
        self.replace = tuple((parse_path(p), v) for p, v in replace.items())
        self.urls = tuple(parse_path(p) for p in urls)

    def edit(self, document: Any) -> bool:
        """Edit in place; True if anything changed."""
        changed = False
        for path in self.drop:
            changed |= _visit(document, path, _delete)
        for path, value in self.replace:
            changed |= _visit(document, path, _setter(value))
        for path in self.urls:
            changed |= _visit(document, path, _redact_member)
        return changed


Visitor = Callable[[Any, str | int], bool]


def _visit(node: Any, path: Path, act: Visitor) -> bool:
    if isinstance(node, list):
        return _any(_visit(item, path, act) for item in node)
    if not isinstance(node, dict) or not path:
        return False
    head, rest = path[0], path[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    if not rest:
        return _any(act(node, key) for key in keys)
    return _any(_visit(node[key], rest, act) for key in keys)


def _any(results: Any) -> bool:
    return any([*results])  # every item is visited: each may edit


def _delete(node: Any, key: str | int) -> bool:
    del node[key]
    return True


def _setter(value: object) -> Visitor:
    def put(node: Any, key: str | int) -> bool:
        if node[key] == value:
            return False
        node[key] = value
        return True

    return put


def _redact_member(node: Any, key: str | int) -> bool:
    value = node[key]
    if isinstance(value, list):  # a list of URLs, e.g. Matomo's bulk requests
        return _any(_redact_member(value, i) for i in range(len(value)))
    if not isinstance(value, str):
        return False
    redacted = redact_url(value)
    if redacted == value:
        return False
    node[key] = redacted
    return True


# --- bodies --------------------------------------------------------------------

_DEFAULT_TYPES: Final = {
    BodyFormat.FORM: frozenset({"application/x-www-form-urlencoded", "text/plain"}),
    BodyFormat.JSON: frozenset({"application/json", "text/plain"}),
    BodyFormat.FORM_LINES: frozenset({"text/plain"}),
}


def default_content_types(format: BodyFormat) -> frozenset[str]:
    return _DEFAULT_TYPES[format]


class BodyEditor:
    """Scrub request bodies of one declared format; anything else passes as sent."""

    __slots__ = ("_json", "_params", "content_types", "format")

    def __init__(self, scrub: BodyScrub, drop: tuple[str, ...]) -> None:
        self.format = scrub.format
        self.content_types = scrub.content_types
        self._json = JsonEditor(drop, scrub.replace, scrub.urls)
        replace = {k: str(v) for k, v in scrub.replace.items()}
        self._params = ParamEditor(drop, replace, frozenset(scrub.urls))

    def applies(self, content_type: str | None, content_encoding: str | None) -> bool:
        # A compressed body is opaque here; rewriting it would mean decoding
        # and re-encoding every vendor's compression, so it passes as sent.
        if content_encoding and content_encoding.strip().lower() != "identity":
            return False
        media = (content_type or "").partition(";")[0].strip().lower()
        return media in self.content_types

    def edit(self, body: bytes) -> bytes | None:
        """The scrubbed body, or None when it is not of the declared format."""
        if not body:
            return body
        if self.format is BodyFormat.JSON:
            return self._edit_json(body)
        # latin-1 maps every byte to one character and back, so the pieces
        # nobody edits return byte-exact whatever their encoding.
        text = body.decode("latin-1")
        if self.format is BodyFormat.FORM:
            return self._params.edit(text).encode("latin-1")
        lines = text.split("\n")
        return "\n".join(self._params.edit(line) for line in lines).encode("latin-1")

    def _edit_json(self, body: bytes) -> bytes | None:
        # RecursionError: valid JSON nested deeper than the parser, the
        # walk or the encoder can follow is treated as unreadable, not a 500.
        try:
            document = json.loads(body)
            if not self._json.edit(document):
                return body
            edited = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return edited.encode()
