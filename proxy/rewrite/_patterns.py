"""Compile host targets into one regex and resolve its matches to edits.

Every target is folded into a single alternation, so a body is scanned once
no matter how many rules are loaded. The regex finds candidates only; whether
a candidate sits inside a string literal is decided by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ._model import HostTarget

_LABEL_SLOT: Final = "{label}"
_DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_SYNTAX: Final = re.compile(rf"(?:\*\.)?(?:{_DNS_LABEL}\.)*{_DNS_LABEL}")
# Only bytes that need no escaping in a JS string, a JSON string or an HTML
# attribute: a quote, backslash, "<" or "${" in a base URL would let a rule
# break out of the literal it is written into.
_BASE_URL_SYNTAX: Final = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?)"
    r"(?P<path>(?:/[A-Za-z0-9._~%!&*+,;=:@-]+)*)"
)
_SAMPLE_LABEL: Final = "x"

# The same slash twice: plain, or behind a run of backslashes: JSON "\/",
# that JSON inside a JS string "\\/", escaped again for JSON "\\\/", and so
# on. The run is read whole (greedy); _URL_START refuses a match starting
# inside such a run.
_SLASHES: Final = rb"(?P<sl>\\{1,7}/|/)(?P=sl)"
# A protocol-relative URL must not follow a scheme ("wss://", "ftp://") or a
# word ("a//b"): only http, https and "//" are ours to rewrite.
_URL_START: Final = rb"(?:(?P<scheme>https?:)|(?<![A-Za-z0-9:\\/]))"
# The default ports are dropped; any other port names a different service.
_PORT: Final = rb"(?::(?:443|80))?"
_HOST_END: Final = rb"(?![A-Za-z0-9.\-]|:[0-9])"
# The opening quote is part of the match, so that every match starts with
# one of _FIRST_BYTES; the edit itself starts after it.
_BARE_START: Final = rb"[\"'`]"
_BARE_END: Final = rb"(?=[\"'`/?#]|:(?![0-9]))"
_ANY_LABEL: Final = rb"[a-z0-9-]{1,63}"
_NEVER: Final = rb"(?!)"
# Every match starts with one of these bytes; testing it first lets the
# regex engine skip most positions of a large body cheaply.
_FIRST_BYTES: Final = rb"(?=[hH\\/\"'`])"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one target's references go, split for fast assembly."""

    scheme: bytes
    before_label: bytes
    after_label: bytes
    label_re: re.Pattern[bytes] | None

    def accepts(self, label: bytes) -> bool:
        return self.label_re is None or self.label_re.fullmatch(label) is not None

    def location(self, label: bytes) -> bytes:
        """The base URL without its scheme and "//", label filled in."""
        return self.before_label + label + self.after_label


@dataclass(frozen=True, slots=True)
class HostEdit:
    """A resolved candidate: the concrete host and what replaces [start, end)."""

    start: int
    end: int
    host: str
    replacement: bytes
    bare: bool


@dataclass(frozen=True, slots=True)
class _Table:
    """Exact hosts and pattern suffixes of one regex branch."""

    exact: dict[bytes, Destination]
    suffixes: dict[bytes, tuple[Destination, ...]]

    def alternation(self, host: str, label: str, suffix: str) -> bytes:
        branches = []
        if self.exact:
            branches.append(rb"(?P<%s>%s)" % (host.encode(), _alt(self.exact)))
        if self.suffixes:
            branches.append(
                rb"(?P<%s>%s)\.(?P<%s>%s)"
                % (label.encode(), _ANY_LABEL, suffix.encode(), _alt(self.suffixes))
            )
        return b"(?:" + b"|".join(branches) + b")" if branches else _NEVER

    def resolve(
        self, match: re.Match[bytes], prefix: str
    ) -> tuple[bytes, Destination, bytes] | None:
        """Return (concrete host, destination, label), None for a refused label."""
        exact = match.group(prefix + "host")
        if exact is not None:
            host = exact.lower()
            return host, self.exact[host], b""

        label = match.group(prefix + "label").lower()
        suffix = match.group(prefix + "suffix").lower()
        for destination in self.suffixes[suffix]:
            if destination.accepts(label):
                return label + b"." + suffix, destination, label
        return None


class HostPatterns:
    """All host targets, compiled into one case-insensitive regex."""

    __slots__ = ("_bare", "_urls", "regex")

    def __init__(self, targets: Sequence[HostTarget]) -> None:
        _refuse_duplicates(targets)
        destinations = {t.host: _destination(t) for t in targets}
        _refuse_loops(targets, destinations)
        self._urls = _table(targets, destinations)
        self._bare = _table([t for t in targets if t.bare], destinations)

        url = (
            _URL_START
            + _SLASHES
            + self._urls.alternation("host", "label", "suffix")
            + _PORT
            + _HOST_END
        )
        bare = (
            _BARE_START
            + b"(?P<bare>"
            + self._bare.alternation("bhost", "blabel", "bsuffix")
            + b")"
            + _PORT
            + _BARE_END
        )
        combined = b"%s(?:(?:%s)|(?:%s))" % (_FIRST_BYTES, url, bare)
        self.regex: Final = re.compile(combined, re.IGNORECASE)

    def resolve(self, match: re.Match[bytes]) -> HostEdit | None:
        """Turn a regex match into an edit, or None if its label is refused."""
        slash = match.group("sl")
        table, prefix = (self._bare, "b") if slash is None else (self._urls, "")
        found = table.resolve(match, prefix)
        if found is None:
            return None

        host, destination, label = found
        location = destination.location(label)
        if slash is None:
            start = match.start("bare")
            return HostEdit(start, match.end(), host.decode(), location, bare=True)
        # The base URL's scheme always wins: a "//host" reference becomes
        # absolute, because vendors store these URLs (Clarity keeps its
        # upload host in a cookie) and a relative one would break there.
        url = destination.scheme + slash + slash + location.replace(b"/", slash)
        start, end = match.span()
        return HostEdit(start, end, host.decode(), url, bare=False)


def _refuse_duplicates(targets: Sequence[HostTarget]) -> None:
    seen: set[str] = set()
    for target in targets:
        if target.host in seen:
            raise ValueError(f"host {target.host!r} is listed twice")
        seen.add(target.host)


def _destination(target: HostTarget) -> Destination:
    host, base_url = target.host, target.base_url
    if _HOST_SYNTAX.fullmatch(host) is None:
        raise ValueError(f"host {host!r} is not a lower-case DNS name or '*.'-pattern")

    is_pattern = host.startswith("*.")
    slots = base_url.count(_LABEL_SLOT)
    if slots != (1 if is_pattern else 0):
        need = "exactly one" if is_pattern else "no"
        raise ValueError(
            f"base_url {base_url!r} of host {host!r} must contain {need} "
            f"{_LABEL_SLOT!r}"
        )
    parsed = _BASE_URL_SYNTAX.fullmatch(base_url.replace(_LABEL_SLOT, _SAMPLE_LABEL))
    if parsed is None:
        raise ValueError(
            f"base_url {base_url!r} of host {host!r} is not an absolute http(s) "
            "URL without trailing slash, quotes, backslashes or spaces"
        )

    before, _, after = base_url.partition("://")[2].partition(_LABEL_SLOT)
    return Destination(
        scheme=parsed["scheme"].encode() + b":",
        before_label=before.encode(),
        after_label=after.encode(),
        label_re=_label_re(target, is_pattern),
    )


def _label_re(target: HostTarget, is_pattern: bool) -> re.Pattern[bytes] | None:
    if target.label is None:
        return None
    if not is_pattern:
        raise ValueError(
            f"label {target.label!r} given for host {target.host!r}, "
            "which is not a '*.'-pattern"
        )
    try:
        return re.compile(target.label.encode(), re.IGNORECASE)
    except (re.error, UnicodeEncodeError) as exc:
        raise ValueError(
            f"label {target.label!r} of host {target.host!r} is not a valid "
            f"regex: {exc}"
        ) from exc


def _refuse_loops(
    targets: Sequence[HostTarget], destinations: dict[str, Destination]
) -> None:
    # A first-party host that is itself a target would be rewritten again on
    # the next fill: rewriting must be idempotent.
    for target in targets:
        location = destinations[target.host].location(_SAMPLE_LABEL.encode())
        own_host = location.partition(b"/")[0].partition(b":")[0].decode()
        for other in targets:
            if _host_matches(other, destinations[other.host], own_host):
                raise ValueError(
                    f"base_url {target.base_url!r} points at {own_host!r}, "
                    f"which host {other.host!r} would rewrite again"
                )


def _host_matches(target: HostTarget, destination: Destination, host: str) -> bool:
    if not target.host.startswith("*."):
        return host == target.host
    label, _, suffix = host.partition(".")
    return suffix == target.host[2:] and destination.accepts(label.encode())


def _table(
    targets: Sequence[HostTarget], destinations: dict[str, Destination]
) -> _Table:
    exact: dict[bytes, Destination] = {}
    by_suffix: dict[bytes, list[Destination]] = {}
    for target in targets:
        destination = destinations[target.host]
        if target.host.startswith("*."):
            by_suffix.setdefault(target.host[2:].encode(), []).append(destination)
        else:
            exact[target.host.encode()] = destination

    # Among patterns sharing a suffix, a restricted label is more specific
    # than "any label", so it is tried first; sort() is stable.
    suffixes = {
        suffix: tuple(sorted(group, key=lambda d: d.label_re is None))
        for suffix, group in by_suffix.items()
    }
    return _Table(exact, suffixes)


def _alt(hosts: Iterable[bytes]) -> bytes:
    # Longest first, so the most specific host is tried first.
    ordered = sorted(hosts, key=len, reverse=True)
    return b"|".join(re.escape(host) for host in ordered)
