"""Locate JavaScript string literals with tree-sitter, and check a rewrite.

Only the nodes around each candidate are looked at; the tree is never walked
in Python, which matters for container scripts of half a megabyte. A
rewritten body is re-parsed incrementally from the edited tree, so the check
costs little more than the edits themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import tree_sitter_javascript
from tree_sitter import Language, Node, Parser, Point, Query, QueryCursor, Tree

from ._literals import Edit

_LANGUAGE: Final = Language(tree_sitter_javascript.language())
_PROBLEMS: Final = Query(_LANGUAGE, "[(ERROR) (MISSING)] @problem")

_LITERALS: Final = frozenset({"string", "template_string"})
# The smallest node around text inside a literal is one of these, or the
# literal itself when the text spans several of them ("https:" + "\/" ...).
_LITERAL_PARTS: Final = frozenset({"string_fragment", "escape_sequence"})


class JsLiterals:
    """String-literal contents of one JavaScript body."""

    __slots__ = ("_body", "_tree")

    def __init__(self, body: bytes, tree: Tree | None = None) -> None:
        self._body = body
        # A parser per parse: parsers keep state, and fills may run in threads.
        self._tree = tree or Parser(_LANGUAGE).parse(body)

    def url_allowed(self, start: int, end: int) -> bool:
        return self.literal_span(start, end) is not None

    def literal_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The content span of the literal holding [start, end) as text.

        None when the range touches code, a regex literal, a comment, a quote
        or a template substitution.
        """
        node: Node | None = self._tree.root_node.descendant_for_byte_range(start, end)
        if node is not None and node.type in _LITERAL_PARTS:
            node = node.parent
        if node is None or node.type not in _LITERALS:
            return None

        content_start, content_end = node.start_byte + 1, node.end_byte - 1
        if start < content_start or end > content_end:
            return None
        if node.type == "template_string" and _crosses_code(node, start, end):
            return None
        return content_start, content_end

    def rewritten(self, body: bytes, edits: Sequence[Edit]) -> JsLiterals:
        if not edits:
            return self
        # Edit a copy: this tree still answers for the original body.
        tree = self._tree.copy()
        starts = _start_points(self._body, edits)
        for edit, start in zip(reversed(edits), reversed(starts), strict=True):
            old_text = self._body[edit.start : edit.end]
            tree.edit(
                start_byte=edit.start,
                old_end_byte=edit.end,
                new_end_byte=edit.start + len(edit.replacement),
                start_point=start,
                old_end_point=_advance(start, old_text),
                new_end_point=_advance(start, edit.replacement),
            )
        return JsLiterals(body, Parser(_LANGUAGE).parse(body, tree))

    def breakage(self, rewritten: JsLiterals) -> str | None:
        before, after = self._tree.root_node, rewritten._tree.root_node
        if not after.has_error:
            return None
        if not before.has_error:
            return "the rewritten JavaScript no longer parses"

        # The original was already broken (tree-sitter is stricter than some
        # engines): refuse only if the rewrite added problems.
        old_count, new_count = _problem_count(before), _problem_count(after)
        if new_count <= old_count:
            return None
        return (
            f"the rewritten JavaScript has {new_count} parse problems, "
            f"the original {old_count}"
        )


def _crosses_code(template: Node, start: int, end: int) -> bool:
    return any(
        child.type == "template_substitution"
        and child.start_byte < end
        and start < child.end_byte
        for child in template.children
    )


def _problem_count(root: Node) -> int:
    captures = QueryCursor(_PROBLEMS).captures(root)
    return sum(len(nodes) for nodes in captures.values())


def _start_points(body: bytes, edits: Sequence[Edit]) -> list[Point]:
    # One pass over the body: recomputing each row from the start would be
    # quadratic in a script with thousands of references.
    points = []
    point, position = Point(0, 0), 0
    for edit in edits:
        point = _advance(point, body[position : edit.start])
        position = edit.start
        points.append(point)
    return points


def _advance(point: Point, text: bytes) -> Point:
    newlines = text.count(b"\n")
    if not newlines:
        return Point(point.row, point.column + len(text))
    return Point(point.row + newlines, len(text) - text.rfind(b"\n") - 1)
