"""Counts that suites report at the end of a run (cases tried, inputs fuzzed).

Tests add to a named count; conftest prints every count in pytest's terminal
summary, so CI logs show what the security and fuzz suites covered.
"""

from __future__ import annotations

_counts: dict[str, int] = {}


def add(name: str, amount: int = 1) -> None:
    _counts[name] = _counts.get(name, 0) + amount


def ensure(name: str) -> None:
    """Show `name` in the summary even when nothing was added (a zero)."""
    _counts.setdefault(name, 0)


def counts() -> dict[str, int]:
    return dict(_counts)
