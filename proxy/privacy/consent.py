"""Consent signals: the site's consent cookie, Google consent mode, GPC and DNT.

The operator describes the site's consent manager once (`--consent`): for each
purpose, the cookie it writes and a pattern its value matches when the
visitor agreed. Presets cover the cookies common consent managers write.
Google tags also carry their own consent state on every hit (`gcs`, `gcd`),
which a rule may ask tagproxy to read.

A purpose's state is GRANTED, DENIED or UNKNOWN (no signal at all). A denial
from any signal wins over a grant from another.
"""

from __future__ import annotations

import enum
import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from ..errors import ConfigError
from .model import COOKIE_NAME, Purpose


class State(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    UNKNOWN = "unknown"


def combine(a: State, b: State) -> State:
    """Two signals about one purpose: a denial wins, then a grant."""
    if State.DENIED in (a, b):
        return State.DENIED
    if State.GRANTED in (a, b):
        return State.GRANTED
    return State.UNKNOWN


@dataclass(frozen=True, slots=True)
class CookieSignal:
    """Consent to one purpose as a consent manager records it in a cookie."""

    cookie: str
    granted: re.Pattern[str]  # searched in the cookie's percent-decoded value

    def state(self, value: str | None) -> State:
        if value is None:
            return State.UNKNOWN
        if _matches(self.granted, value):
            return State.GRANTED
        return State.DENIED  # the visitor chose, and not this purpose


@functools.lru_cache(maxsize=1024)
def _matches(pattern: re.Pattern[str], value: str) -> bool:
    # A visitor sends the same consent cookie with every beacon: decoding and
    # matching it once per distinct value keeps it off the hot path.
    return pattern.search(unquote(value)) is not None


@dataclass(frozen=True, slots=True)
class ConsentConfig:
    """How this site records consent, and what no record at all means."""

    source: str  # preset name or file, for messages and the audit
    purposes: Mapping[Purpose, CookieSignal]
    missing: State  # DENIED (opt-in, the default) or GRANTED (opt-out regimes)

    @property
    def cookie_names(self) -> frozenset[str]:
        return frozenset(s.cookie for s in self.purposes.values())

    def state(self, purpose: Purpose, cookies: Mapping[str, str]) -> State:
        signal = self.purposes.get(purpose)
        if signal is None:
            return State.UNKNOWN
        return signal.state(cookies.get(signal.cookie))


# --- presets -------------------------------------------------------------------
# Facts about the cookies these consent managers write, matched against the
# percent-decoded cookie value:
# - Cookiebot: `CookieConsent` = {stamp:'..',necessary:true,preferences:false,
#   statistics:true,marketing:false,...}; "-1" where no consent is required.
# - OneTrust: `OptanonConsent` = ...&groups=C0001:1,C0002:0,C0003:1,C0004:0&...
#   with the standard categories C0002 performance, C0003 functional and
#   C0004 targeting.
# - CookieYes: `cookieyes-consent` = consentid:..,consent:yes,...,
#   functional:yes,analytics:no,performance:no,advertisement:no,...
# - Complianz: one cookie per category, `cmplz_statistics` = allow or deny,
#   `cmplz_marketing`, `cmplz_preferences`.

_PRESETS: Final[dict[str, dict[Purpose, tuple[str, str]]]] = {
    "cookiebot": {
        Purpose.ANALYTICS: ("CookieConsent", r"statistics:true|^-1$"),
        Purpose.ADS: ("CookieConsent", r"marketing:true|^-1$"),
        Purpose.FUNCTIONAL: ("CookieConsent", r"preferences:true|^-1$"),
    },
    "onetrust": {
        Purpose.ANALYTICS: ("OptanonConsent", r"[=,]C0002:1(?:[,&]|$)"),
        Purpose.ADS: ("OptanonConsent", r"[=,]C0004:1(?:[,&]|$)"),
        Purpose.FUNCTIONAL: ("OptanonConsent", r"[=,]C0003:1(?:[,&]|$)"),
    },
    "cookieyes": {
        Purpose.ANALYTICS: ("cookieyes-consent", r"(?:^|,)analytics:yes(?:,|$)"),
        Purpose.ADS: ("cookieyes-consent", r"(?:^|,)advertisement:yes(?:,|$)"),
        Purpose.FUNCTIONAL: ("cookieyes-consent", r"(?:^|,)functional:yes(?:,|$)"),
    },
    "complianz": {
        Purpose.ANALYTICS: ("cmplz_statistics", r"^allow$"),
        Purpose.ADS: ("cmplz_marketing", r"^allow$"),
        Purpose.FUNCTIONAL: ("cmplz_preferences", r"^allow$"),
    },
}
PRESETS: Final = tuple(sorted(_PRESETS))
_CONSENT_PURPOSES: Final = tuple(p for p in Purpose if p is not Purpose.NONE)


def preset(name: str) -> ConsentConfig:
    signals = {
        purpose: CookieSignal(cookie, re.compile(pattern))
        for purpose, (cookie, pattern) in _PRESETS[name].items()
    }
    return ConsentConfig(name, signals, State.DENIED)


def load_consent(spec: str) -> ConsentConfig:
    """`--consent`: a preset name, or a TOML file that may start from one."""
    if spec in _PRESETS:
        return preset(spec)
    path = Path(spec)
    if not path.is_file():
        presets = ", ".join(PRESETS)
        raise ConfigError(
            f"--consent {spec!r}: neither a preset ({presets}) nor a readable file"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--consent {spec}: cannot be read: {exc}") from exc
    return _from_file(path, data)


def _fail(path: Path, key: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{path}: {key} = {value!r}: {reason}")


def _from_file(path: Path, data: Mapping[str, Any]) -> ConsentConfig:
    unknown = sorted(set(data) - {"preset", "missing", "purposes"})
    if unknown:
        raise _fail(path, unknown[0], data[unknown[0]], "unknown key (misspelt?)")

    base = data.get("preset")
    signals: dict[Purpose, CookieSignal] = {}
    if base is not None:
        if base not in _PRESETS:
            raise _fail(path, "preset", base, f"known presets: {', '.join(PRESETS)}")
        signals.update(preset(base).purposes)

    missing = data.get("missing", "denied")
    if missing not in ("denied", "granted"):
        raise _fail(path, "missing", missing, 'must be "denied" or "granted"')

    purposes = data.get("purposes", {})
    if not isinstance(purposes, dict):
        raise _fail(path, "purposes", purposes, "must be a table of purposes")
    for name, table in purposes.items():
        purpose = _purpose(path, name)
        signals[purpose] = _signal(path, f"purposes.{name}", table)
    if not signals:
        raise _fail(path, "purposes", {}, "name a preset or at least one purpose")
    return ConsentConfig(str(path), signals, State(missing))


def _purpose(path: Path, name: str) -> Purpose:
    try:
        purpose = Purpose(name)
    except ValueError:
        purpose = Purpose.NONE
    if purpose is Purpose.NONE:
        allowed = ", ".join(p.value for p in _CONSENT_PURPOSES)
        raise _fail(path, f"purposes.{name}", name, f"purposes are: {allowed}")
    return purpose


def _signal(path: Path, key: str, table: object) -> CookieSignal:
    if not isinstance(table, dict):
        raise _fail(path, key, table, 'must be a table like { cookie = "..." }')
    unknown = sorted(set(table) - {"cookie", "granted"})
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", table[unknown[0]], "unknown key")
    cookie, pattern = table.get("cookie"), table.get("granted")
    if not isinstance(cookie, str) or COOKIE_NAME.fullmatch(cookie) is None:
        raise _fail(path, f"{key}.cookie", cookie, "must be a cookie name")
    if not isinstance(pattern, str) or not pattern:
        raise _fail(path, f"{key}.granted", pattern, "must be a regular expression")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise _fail(
            path, f"{key}.granted", pattern, f"not a valid regular expression: {exc}"
        ) from exc
    return CookieSignal(cookie, compiled)


# --- Google consent mode -------------------------------------------------------
# Google tags put the page's consent state on each hit. `gcs` is "G1" then
# one character each for ad_storage and analytics_storage ("1" granted, "0"
# denied, "-" not set). The newer `gcd` carries, between digits, one letter
# each for ad_storage, analytics_storage, ad_user_data and ad_personalization:
# "l" not set; "t", "r", "n", "v" granted in the end; "p", "q", "m", "u"
# denied in the end.

_GCD_GRANTED: Final = frozenset("trnv")
_GCD_DENIED: Final = frozenset("pqmu")
_GCS: Final = re.compile(r"G1([01-])([01-])")


def _gcs_state(char: str) -> State:
    return {"1": State.GRANTED, "0": State.DENIED}.get(char, State.UNKNOWN)


def _gcd_state(letter: str) -> State:
    if letter in _GCD_GRANTED:
        return State.GRANTED
    if letter in _GCD_DENIED:
        return State.DENIED
    return State.UNKNOWN


def google_consent(raw_query: str) -> dict[Purpose, State]:
    """The consent state a Google hit carries in its query, by purpose."""
    ad = analytics = user_data = State.UNKNOWN
    for piece in raw_query.split("&"):
        name, _, value = piece.partition("=")
        if name == "gcs":
            match = _GCS.fullmatch(value)
            if match is not None:
                ad = combine(ad, _gcs_state(match[1]))
                analytics = combine(analytics, _gcs_state(match[2]))
        elif name == "gcd":
            letters = [c for c in value if c.isalpha()]
            if len(letters) >= 2:
                ad = combine(ad, _gcd_state(letters[0]))
                analytics = combine(analytics, _gcd_state(letters[1]))
            if len(letters) >= 3:
                user_data = _gcd_state(letters[2])
    return {Purpose.ANALYTICS: analytics, Purpose.ADS: combine(ad, user_data)}


_COOKIE_PAIR: Final = re.compile(r"(?:^|;)\s*([^=;\s]+)\s*=([^;]*)")


def cookie_pairs(values: Iterable[str]) -> dict[str, str]:
    """Cookie header values as a name -> value map; the first of a name wins."""
    out: dict[str, str] = {}
    for value in values:
        for name, item in _COOKIE_PAIR.findall(value):
            if name not in out:
                out[name] = item.strip().strip('"')
    return out
