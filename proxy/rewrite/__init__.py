"""Rewrite vendor hosts in scripts, JSON and HTML into first-party URLs.

A :class:`Rewriter` is built once per rule set from :class:`HostTarget`
entries and optional :class:`ExtraRewrite` edits; ``rewrite`` then turns a
fetched body into the body to serve. Only string-literal contents change, and
a result that would parse worse than the original is never served.
"""

from ._model import (
    BodyKind,
    ExtraRewrite,
    HostTarget,
    RewriteResult,
    kind_for_content_type,
)
from ._rewriter import Rewriter

__all__ = [
    "BodyKind",
    "ExtraRewrite",
    "HostTarget",
    "RewriteResult",
    "Rewriter",
    "kind_for_content_type",
]
