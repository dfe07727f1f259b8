"""Rule variables: operator settings a rule file declares and uses as `${name}`.

Some vendors have no fixed host: a self-hosted Matomo or Umami lives wherever
the operator installed it. Such a rule declares a variable with a default,

    [variables.host]
    kind = "host"
    default = "matomo.invalid"
    help = "host name of your Matomo server"

and writes `host = "${host}"` where the value goes. The operator sets it with
`--rule-var matomo.host=analytics.shop.example` or the environment variable
`TAGPROXY_MATOMO_HOST`; the flag wins, then the environment, then the default,
so `tagproxy check` and `tagproxy routes` work before anything is set.

Values are checked against the variable's kind before they are substituted,
and the rule is then validated as usual, so a bad setting fails at load with
the rule file, the variable and where its value came from.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigError

NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,30}")
REFERENCE: Final = re.compile(r"\$\{([^}]*)\}")
_DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST: Final = re.compile(rf"(?:{_DNS_LABEL}\.)+[a-z][a-z0-9-]*[a-z0-9]")
_PATH: Final = re.compile(r"(?:/[A-Za-z0-9][A-Za-z0-9_.~-]*)*")
_PRINTABLE: Final = re.compile(r"[^\x00-\x1f\x7f]*")
_DECLARATION_KEYS: Final = frozenset({"kind", "default", "help"})


class VariableKind(enum.StrEnum):
    """What a variable's value must look like."""

    HOST = "host"  # a DNS name: "matomo.shop.example"
    PATH = "path"  # "" or "/one/or/more/segments", no trailing slash
    STRING = "string"  # any printable text

    def problem(self, value: str) -> str | None:
        """Why `value` is not of this kind, or None if it is."""
        if self is VariableKind.HOST:
            if _HOST.fullmatch(value) is None or len(value) > 253:
                return "must be a DNS name such as analytics.shop.example (no port)"
        elif self is VariableKind.PATH:
            if _PATH.fullmatch(value) is None:
                return 'must be "" or a path such as /analytics (no trailing /)'
        elif _PRINTABLE.fullmatch(value) is None:
            return "must not hold control characters"
        return None


@dataclass(frozen=True, slots=True)
class Variable:
    """One declared variable and the value in effect, with where it came from."""

    vendor: str
    name: str
    kind: VariableKind
    default: str
    help: str
    value: str
    origin: str  # "default", "--rule-var" or the environment variable's name

    @property
    def key(self) -> str:
        return f"{self.vendor}.{self.name}"

    @property
    def env_name(self) -> str:
        return env_name(self.vendor, self.name)

    @property
    def is_default(self) -> bool:
        return self.origin == "default"


def env_name(vendor: str, name: str) -> str:
    """`TAGPROXY_MATOMO_HOST` for variable `host` of vendor `matomo`."""
    return f"TAGPROXY_{vendor}_{name}".upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class RuleVariables:
    """Where variable values come from: flags first, then the environment."""

    given: Mapping[str, str] = field(default_factory=dict)  # "vendor.name" -> value
    environ: Mapping[str, str] = field(default_factory=dict)

    def lookup(self, vendor: str, name: str) -> tuple[str, str] | None:
        """(value, origin) set by the operator, or None to use the default."""
        key = f"{vendor}.{name}"
        if key in self.given:
            return self.given[key], "--rule-var"
        variable = env_name(vendor, name)
        if variable in self.environ:
            return self.environ[variable], variable
        return None

    def check_all_declared(self, declared: Iterable[Variable]) -> None:
        """Refuse a --rule-var no loaded rule declares: it would silently do nothing."""
        known = {v.key for v in declared}
        for key in self.given:
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(
                    f"--rule-var {key}: no loaded rule declares this variable "
                    f"(declared: {names})"
                )


def parse_rule_vars(specs: Iterable[str]) -> dict[str, str]:
    """`vendor.name=value` flags into a mapping, naming the bad one on error."""
    given: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        vendor, dot, name = key.strip().partition(".")
        if not sep or not dot or not vendor or NAME.fullmatch(name) is None:
            raise ConfigError(
                f"--rule-var {spec!r}: expected VENDOR.NAME=VALUE, "
                "e.g. matomo.host=analytics.shop.example"
            )
        given[f"{vendor}.{name}"] = value.strip()
    return given


# --- applying variables to one rule file --------------------------------------


class VariableError(ConfigError):
    """A declaration, value or reference that cannot work, with where and why."""

    def __init__(self, source: Path, key: str, value: object, reason: str) -> None:
        self.source, self.key, self.value, self.reason = source, key, value, reason
        super().__init__(f"{source}: {key} = {value!r}: {reason}")


def substitute(
    source: Path, data: dict[str, Any], variables: RuleVariables
) -> tuple[dict[str, Any], tuple[Variable, ...]]:
    """The rule data with `${name}` filled in, and the variables in effect.

    The `[variables]` table is consumed here; the rest of the rule never sees
    it, so the loader's unknown-key check stays as strict as before.
    """
    data = dict(data)
    declared = _declarations(source, data.pop("variables", {}), data, variables)
    values = {v.name: v.value for v in declared}
    return _fill(source, "", data, values), declared


def _declarations(
    source: Path, table: object, data: Mapping[str, Any], variables: RuleVariables
) -> tuple[Variable, ...]:
    if not isinstance(table, dict):
        raise VariableError(source, "variables", table, "must be a table")
    vendor = str(data.get("vendor", ""))
    out = []
    for name, spec in table.items():
        key = f"variables.{name}"
        if NAME.fullmatch(name) is None:
            raise VariableError(source, key, name, "name must be like host or site_id")
        out.append(_declaration(source, key, vendor, name, spec, variables))
    return tuple(out)


def _declaration(
    source: Path,
    key: str,
    vendor: str,
    name: str,
    spec: object,
    variables: RuleVariables,
) -> Variable:
    if not isinstance(spec, dict):
        raise VariableError(source, key, spec, "must be a table with default = ...")
    unknown = sorted(set(spec) - _DECLARATION_KEYS)
    if unknown:
        raise VariableError(
            source, f"{key}.{unknown[0]}", spec[unknown[0]], "unknown key (misspelt?)"
        )
    raw_kind, default, help_text = (
        spec.get("kind", "string"),
        spec.get("default"),
        spec.get("help", ""),
    )
    try:
        kind = VariableKind(raw_kind)
    except ValueError:
        allowed = ", ".join(k.value for k in VariableKind)
        raise VariableError(
            source, f"{key}.kind", raw_kind, f"must be one of {allowed}"
        ) from None
    if not isinstance(default, str):
        raise VariableError(source, f"{key}.default", default, "must be a string")
    if not isinstance(help_text, str):
        raise VariableError(source, f"{key}.help", help_text, "must be a string")
    why = kind.problem(default)
    if why:
        raise VariableError(source, f"{key}.default", default, why)

    value, origin = variables.lookup(vendor, name) or (default, "default")
    why = kind.problem(value)
    if why:
        where = "--rule-var " + f"{vendor}.{name}" if origin == "--rule-var" else origin
        raise VariableError(source, key, value, f"{why} (set by {where})")
    return Variable(vendor, name, kind, default, help_text, value, origin)


def _fill(source: Path, path: str, node: Any, values: Mapping[str, str]) -> Any:
    """Replace every `${name}` in the strings of `node`, recursively."""
    if isinstance(node, str):
        return _fill_string(source, path, node, values)
    if isinstance(node, dict):
        return {
            k: _fill(source, f"{path}.{k}" if path else k, v, values)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_fill(source, f"{path}[{i}]", v, values) for i, v in enumerate(node)]
    return node


def _fill_string(source: Path, path: str, text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            declared = ", ".join(sorted(values)) or "none"
            raise VariableError(
                source,
                path,
                text,
                f"${{{name}}} is not a declared variable (declared: {declared})",
            )
        return values[name]

    return REFERENCE.sub(replace, text) if "${" in text else text
