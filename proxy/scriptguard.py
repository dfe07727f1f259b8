"""Does the vendor's script still fit its rule? The checks a rule declares.

A rule is written against the vendor's script as it was: the hosts it
rewrites, the literals its quirks replace. Vendors change their scripts
without notice; a rewrite that silently stops matching sends beacons to the
wrong place, and one that breaks the syntax stops the tag. Each fetched
script is checked here; a failure makes the cache keep the last script that
passed (see scripts.ScriptCache), and is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from . import metrics
from .rules import Rule
from .rules.model import ScriptGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardFailure:
    kind: str  # a metric label: syntax, min_size, contains, min_rewrites, rewrites
    detail: str  # for the log: what the script no longer does


def check_script(
    guard: ScriptGuard | None,
    upstream_body: bytes,
    replacements: Mapping[str, int],
    broken: str | None,
    vendor: str,
) -> GuardFailure | None:
    """The first way the fetched script fails its rule, or None if it fits.

    `broken` is why rewriting would have broken the script, if it would.
    """
    if broken is not None:
        return GuardFailure("syntax", f"rewriting it would break it ({broken})")
    if not upstream_body.strip():
        # Whatever a rule says: no vendor ships an empty tag; a 200 with no
        # body is an outage or a cut connection.
        return GuardFailure("min_size", "it is empty")
    if guard is None:
        return None
    if len(upstream_body) < guard.min_size:
        return GuardFailure(
            "min_size",
            f"it is {len(upstream_body)} bytes, under the rule's {guard.min_size}",
        )
    for text in guard.contains:
        if text not in upstream_body:
            return GuardFailure("contains", f"it no longer contains {text!r}")
    made = sum(replacements.values())
    if made < guard.min_rewrites:
        return GuardFailure(
            "min_rewrites",
            f"{made} replacements made, the rule expects {guard.min_rewrites}",
        )
    for name in guard.rewrites:
        if not replacements.get(f"{vendor}:{name}"):
            return GuardFailure("rewrites", f"rewrite {name!r} no longer matches")
    return None


def report(failure: GuardFailure, rule: Rule, where: str, kept_last_good: bool) -> None:
    """Warn and count: someone must update the rule (or the vendor broke)."""
    action = (
        "serving the last good version"
        if kept_last_good
        else "no good version cached yet, serving it as fetched"
    )
    log.warning(
        "rule %s (%s) no longer fits %s: %s; %s",
        rule.vendor,
        rule.source,
        where,
        failure.detail,
        action,
    )
    metrics.rewrite_guard_tripped(rule.vendor, failure.kind)
