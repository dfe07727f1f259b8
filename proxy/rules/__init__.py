"""Vendor rules: the TOML format, its validation and the frozen model."""

from .loader import RuleError, load_rule, load_rules, parse_duration, parse_size
from .model import (
    CacheMode,
    Durable,
    IpVia,
    RelayRoute,
    Route,
    Rule,
    RuleSet,
    ScriptRoute,
    UpstreamHost,
)

__all__ = [
    "CacheMode",
    "Durable",
    "IpVia",
    "RelayRoute",
    "Route",
    "Rule",
    "RuleError",
    "RuleSet",
    "ScriptRoute",
    "UpstreamHost",
    "load_rule",
    "load_rules",
    "parse_duration",
    "parse_size",
]
