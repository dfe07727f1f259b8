"""The runtime URL shim: a small script prepended to a vendor's served script.

Static rewriting cannot reach URLs a vendor assembles at run time (a region
label glued to a suffix, a host read from settings JSON or a cookie) nor
literals a rule keeps because the vendor checks its own origin against them.
The shim (``shim.js`` beside this module) maps those URLs to first-party at
the moment they are used. This module fills in its host map.

Pattern labels are checked in the browser with the same regex the server
uses; only a subset of Python's regex syntax means exactly the same in
JavaScript, so labels outside it are refused (the rule loader refuses them
at load, naming the label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Final

from ._model import HostTarget

_CONFIG_SLOT: Final = "/*TAGPROXY_SHIM_CONFIG*/"
_LABEL_SLOT: Final = "{label}"

# Tokens that mean the same to Python's re and to JavaScript's RegExp (no u
# flag) when matched, case-insensitively and anchored, against one ASCII DNS
# label: literals, "." and the ASCII escapes \d \w \. \-, simple classes,
# groups, alternation and quantifiers with both bounds spelled in digits.
# Anything else (lookarounds, named groups, inline flags, \b, "{,n}" which
# Python reads as a quantifier and JavaScript as text) is refused.
_CLASS_ITEM: Final = r"(?:[A-Za-z0-9_]-[A-Za-z0-9_]|\\[dw.\-]|[A-Za-z0-9_.])"
_SAFE_TOKEN: Final = re.compile(
    r"\(\?:|[()|.]|[A-Za-z0-9_-]"
    r"|\\[dw.\-]"
    rf"|\[\^?-?{_CLASS_ITEM}+-?\]"
    r"|(?:[?*+]|\{[0-9]{1,3}(?:,[0-9]{0,3})?\})\??"
)
# "(?" opens an extension (flags, lookaround, named group) unless it is the
# plain non-capturing "(?:"; the tokens above would read it as "(" and "?".
_EXTENSION: Final = re.compile(r"\((?=\?(?!:))")


def js_label_pattern(label: str) -> str:
    """The JavaScript RegExp source that full-matches what ``label`` does.

    Raises ValueError naming the first construct outside the shared subset.
    """
    try:
        re.compile(label)
    except re.error as exc:
        raise ValueError(
            f"label pattern {label!r} is not a valid regex: {exc}"
        ) from exc
    position = 0
    while position < len(label):
        token = _SAFE_TOKEN.match(label, position)
        if token is None or _EXTENSION.match(label, position):
            raise ValueError(
                f"label pattern {label!r}: {label[position:]!r} is not in the "
                "subset that means the same in the browser (letters, digits, "
                "-, _, ., \\d, \\w, [classes], (groups), (?:groups), |, ?, *, +, "
                "{m,n}; no flags, lookarounds or named groups)"
            )
        position = token.end()
    return f"^(?:{label})$"


def js_path_pattern(globs: Sequence[str]) -> str | None:
    """One JavaScript RegExp source for route path globs; None means any path."""
    if not globs:
        return None
    parts = []
    for glob in globs:
        escaped = re.sub(r"[\\^$.|?+()\[\]{}/-]", lambda m: "\\" + m[0], glob)
        parts.append(
            escaped.replace("**", "\0").replace("*", "[^/]*").replace("\0", ".*")
        )
    return "^(?:" + "|".join(parts) + ")$"


def shim_config(targets: Sequence[HostTarget]) -> dict[str, object]:
    """The host map the shim needs, as plain JSON-able values."""
    hosts: list[dict[str, str | None]] = []
    patterns: list[dict[str, str | None]] = []
    for target in targets:
        entry = {"base": target.base_url, "paths": js_path_pattern(target.paths)}
        if not target.host.startswith("*."):
            hosts.append({"host": target.host, **entry})
            continue
        if target.base_url.count(_LABEL_SLOT) != 1:
            raise ValueError(f"base_url of {target.host!r} needs one {_LABEL_SLOT}")
        label = None if target.label is None else js_label_pattern(target.label)
        patterns.append({"suffix": target.host[2:], "label": label, **entry})
    return {"hosts": hosts, "patterns": patterns}


def shim_prelude(targets: Sequence[HostTarget]) -> bytes:
    """The shim script with this host map, ready to prepend to a vendor script."""
    config = json.dumps(shim_config(targets), separators=(",", ":"))
    # The prelude may end up inside an HTML page (a tag manager inlining
    # it): "<" escaped keeps "</script>" out of it, and means the same in JS.
    config = config.replace("<", "\\u003c")
    return _template().replace(_CONFIG_SLOT, config).encode()


@cache
def _template() -> str:
    source = resources.files(__package__).joinpath("shim.js").read_text("utf-8")
    if source.count(_CONFIG_SLOT) != 1:
        raise RuntimeError(f"shim.js must hold {_CONFIG_SLOT} exactly once")
    # Full-line comments and blank lines are for readers of shim.js, not for
    # every visitor who downloads it.
    lines = [
        line
        for line in source.splitlines()
        if line.strip() and not line.lstrip().startswith("//")
    ]
    return "\n".join(lines)
