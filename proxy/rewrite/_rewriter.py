"""The rewriter: host references first, then extras, then a syntax check."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, assert_never

from ._js import JsLiterals
from ._literals import Edit, HtmlLiterals, JsonLiterals, Literals
from ._model import BodyKind, ExtraRewrite, HostTarget, RewriteResult
from ._patterns import HostPatterns

# What may follow a bare host inside its literal, besides the literal's end.
_BARE_HOST_FOLLOWERS: Final = b"/?:#"


class Rewriter:
    """Rewrites references to vendor hosts into first-party URLs.

    Everything is compiled here, once per rule set; ``rewrite`` is then a
    pure function of the body, safe to call from several threads.
    """

    __slots__ = ("_extras", "_hosts", "_patterns")

    def __init__(
        self, targets: Sequence[HostTarget], extras: Sequence[ExtraRewrite] = ()
    ) -> None:
        self._patterns = HostPatterns(targets)
        self._extras = _checked_extras(extras)
        self._hosts = tuple(target.host for target in targets)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host of every target, patterns included, in the given order."""
        return self._hosts

    def rewrite(self, body: bytes, kind: BodyKind) -> RewriteResult:
        """Rewrite ``body``, or return it unchanged if the result would break."""
        counts: Counter[str] = Counter()
        original: Literals | None = None
        literals: Literals | None = None
        text = body

        # Step 1: host references. A body without any candidate is not
        # parsed at all.
        candidates = list(self._patterns.regex.finditer(body))
        if candidates:
            original = literals = _literals_for(kind, body)
            edits = self._host_edits(body, candidates, original)
            text, literals = _apply(text, literals, edits, counts)

        # Step 2: extras see the host-rewritten text, so a rule can match
        # what step 1 produced.
        found = self._extra_matches(text)
        if found:
            if literals is None:
                original = literals = _literals_for(kind, body)
            edits = self._extra_edits(found, literals)
            text, literals = _apply(text, literals, edits, counts)

        # Step 3: serve nothing that parses worse than what the vendor sent.
        if original is None or literals is None or not counts:
            return RewriteResult(body, {})
        reason = original.breakage(literals)
        if reason is not None:
            return RewriteResult(body, {}, kept_original=True, reason=reason)
        return RewriteResult(text, dict(counts))

    def _host_edits(
        self, body: bytes, candidates: Iterable[re.Match[bytes]], literals: Literals
    ) -> list[Edit]:
        edits = []
        for match in candidates:
            edit = self._patterns.resolve(match)
            if edit is None:
                continue
            start, end = edit.start, edit.end
            if edit.bare:
                allowed = _starts_literal(body, start, end, literals)
            else:
                allowed = literals.url_allowed(start, end)
            if allowed:
                edits.append(Edit(start, end, edit.replacement, edit.host))
        return edits

    def _extra_matches(self, body: bytes) -> list[tuple[int, int, int]]:
        """(start, extra index, end) of every non-empty match, in body order."""
        return sorted(
            (match.start(), index, match.end())
            for index, extra in enumerate(self._extras)
            for match in extra.find.finditer(body)
            if match.end() > match.start()
        )

    def _extra_edits(
        self, found: Iterable[tuple[int, int, int]], literals: Literals
    ) -> list[Edit]:
        edits: list[Edit] = []
        # Earlier matches win over overlapping later ones; at the same
        # offset, the extra listed first wins.
        for start, index, end in found:
            if edits and start < edits[-1].end:
                continue
            if literals.literal_span(start, end) is not None:
                extra = self._extras[index]
                edits.append(Edit(start, end, extra.replace, extra.name))
        return edits


def _checked_extras(extras: Sequence[ExtraRewrite]) -> tuple[ExtraRewrite, ...]:
    names: set[str] = set()
    for extra in extras:
        if not extra.name or extra.name in names:
            raise ValueError(f"extra rewrite name {extra.name!r} is empty or repeated")
        if not isinstance(extra.find.pattern, bytes):
            raise ValueError(f"extra rewrite {extra.name!r} needs a bytes pattern")
        names.add(extra.name)
    return tuple(extras)


def _literals_for(kind: BodyKind, body: bytes) -> Literals:
    match kind:
        case BodyKind.JS:
            return JsLiterals(body)
        case BodyKind.JSON:
            return JsonLiterals(body)
        case BodyKind.HTML:
            return HtmlLiterals(body)
        case _:
            assert_never(kind)


def _starts_literal(body: bytes, start: int, end: int, literals: Literals) -> bool:
    # A bare host counts only as the whole start of a literal ("api.host/v1"):
    # in the middle of one it is data, like "x@host" or a suffix list entry.
    span = literals.literal_span(start, end)
    if span is None or span[0] != start:
        return False
    return end == span[1] or body[end] in _BARE_HOST_FOLLOWERS


def _apply(
    body: bytes, literals: Literals, edits: Sequence[Edit], counts: Counter[str]
) -> tuple[bytes, Literals]:
    """Make the edits; collect pieces and join once, never concatenate."""
    if not edits:
        return body, literals
    pieces = []
    position = 0
    for edit in edits:
        pieces.append(body[position : edit.start])
        pieces.append(edit.replacement)
        position = edit.end
        counts[edit.key] += 1
    pieces.append(body[position:])

    rewritten = b"".join(pieces)
    return rewritten, literals.rewritten(rewritten, edits)
