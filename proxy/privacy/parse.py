"""Read a rule's `[privacy]` section into a PrivacyPolicy, with the defaults.

Called by the rule loader with the section as a loader Table, so a bad value
fails at load naming the file, the key, the value and the reason, like every
other rule key. A rule without the section gets the documented defaults: it
is gated as advertising (the strictest purpose), passes the visitor's
address as it is, and scrubs nothing.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Final, TypeVar

from ..rules.model import NameMatcher, RequestPolicy, UpstreamHost
from .model import (
    BROWSER_COOKIE_CAP,
    COOKIE_NAME,
    DEFAULT_PURPOSE,
    PURPOSE_DEFAULTS,
    SAME_SITE_VALUES,
    Action,
    Answer,
    BodyFormat,
    BodyScrub,
    CookieDomain,
    CookiePolicy,
    Gate,
    Identifiers,
    IpHandling,
    PrivacyPolicy,
    Purpose,
    QueryScrub,
    VisitorId,
)
from .scrub import default_content_types

if TYPE_CHECKING:
    from ..rules.loader import Table

E = TypeVar("E", bound=enum.StrEnum)

_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~\[\]-]+")
_JSON_PATH: Final = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_GATE_KEYS: Final = ("without_consent", "gpc", "dnt")


def parse_privacy(
    table: Table, hosts: tuple[UpstreamHost, ...], request: RequestPolicy
) -> PrivacyPolicy:
    declared = bool(table.data)
    gate = _gate(table, None)
    host_gates = _host_gates(table, hosts)
    consent_mode = table.get("google_consent_mode", bool, False)
    ip = _choice(table, "ip", IpHandling, IpHandling.FORWARD)

    body = _body(table.table("body"))
    identifiers = _identifiers(table.table("strip"), request, body)
    query = _query(table.table("query"))
    cookies = _cookies(table.table("cookies"))
    visitor_id = _visitor_id(table.table("visitor_id"), request, cookies)
    answer = _answer(table.table("answer"))
    table.done()

    gates = (gate, *dict.fromkeys(host_gates.values()))
    cookie_purpose = cookies.purpose or gate.purpose
    if (cookies.reissue or visitor_id) and cookie_purpose is Purpose.NONE:
        raise table.fail(
            "cookies",
            "reissue / visitor_id",
            'tagproxy sets cookies only while consent holds; purpose "none" '
            "has no consent to hold (name one in [privacy.cookies] purpose)",
        )
    return PrivacyPolicy(
        gate=gate,
        host_gates=host_gates,
        consent_mode=consent_mode,
        ip=ip,
        identifiers=identifiers,
        query=query,
        body=body,
        cookies=cookies,
        visitor_id=visitor_id,
        answer=answer,
        declared=declared,
        gates=gates,
    )


def _choice(table: Table, key: str, kind: type[E], default: E) -> E:
    raw = table.get(key, str, default.value)
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise table.fail(key, raw, f"must be one of {allowed}") from None


def _gate(table: Table, inherited: Purpose | None) -> Gate:
    purpose = _choice(table, "purpose", Purpose, inherited or DEFAULT_PURPOSE)
    defaults = PURPOSE_DEFAULTS[purpose]
    actions = [
        _choice(table, key, Action, default)
        for key, default in zip(_GATE_KEYS, defaults, strict=True)
    ]
    if purpose is Purpose.NONE and actions[0] is not Action.PASS:
        raise table.fail(
            "without_consent", actions[0].value, 'purpose "none" needs no consent'
        )
    declared = frozenset(k for k in ("purpose", *_GATE_KEYS) if k in table.data)
    return Gate(purpose, actions[0], actions[1], actions[2], declared)


def _host_gates(table: Table, hosts: tuple[UpstreamHost, ...]) -> dict[str, Gate]:
    known = {h.host for h in hosts}
    out: dict[str, Gate] = {}
    for entry in table.tables("hosts"):
        names = [n.lower() for n in entry.strings("hosts")]
        if not names:
            raise entry.fail("hosts", [], "name at least one of this rule's hosts")
        gate = _gate(entry, None)
        if "purpose" not in entry.data:
            raise entry.fail("purpose", None, "is required for a host group")
        for name in names:
            if name not in known:
                raise entry.fail(
                    "hosts", name, f"not one of this rule's hosts: {known}"
                )
            if name in out:
                raise entry.fail("hosts", name, "already in another host group")
            out[name] = gate
        entry.done()
    return out


def _names(table: Table, key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    names = table.strings(key)
    for name in names:
        if pattern.fullmatch(name) is None:
            raise table.fail(key, name, "not a valid name (wildcard: *)")
    return names


def _fields(table: Table, key: str, format: BodyFormat | None) -> tuple[str, ...]:
    names = table.strings(key)
    pattern = _JSON_PATH if format is BodyFormat.JSON else _NAME_PATTERN
    for name in names:
        if pattern.fullmatch(name) is None:
            what = "a dotted JSON path" if format is BodyFormat.JSON else "a field name"
            raise table.fail(key, name, f"must be {what}")
    return names


def _identifiers(
    table: Table, request: RequestPolicy, body: BodyScrub | None
) -> Identifiers:
    # By default strip removes every cookie the rule lets reach the vendor.
    cookies = request.cookies.patterns
    if "cookies" in table.data:
        cookies = _names(table, "cookies", COOKIE_NAME)
    query = _names(table, "query", _NAME_PATTERN)
    body_fields = _fields(table, "body", body.format if body else None)
    if body_fields and body is None:
        raise table.fail("body", list(body_fields), "needs a [privacy.body] format")
    ip = _choice(table, "ip", IpHandling, IpHandling.TRUNCATE)
    if ip is IpHandling.FORWARD:
        raise table.fail("ip", ip.value, "strip never sends the full address")
    table.done()
    return Identifiers(NameMatcher.of(cookies), NameMatcher.of(query), body_fields, ip)


def _query(table: Table) -> QueryScrub:
    drop = _names(table, "drop", _NAME_PATTERN)
    replace = table.string_map("replace")
    for name in replace:
        if "*" in name or _NAME_PATTERN.fullmatch(name) is None:
            raise table.fail(f"replace.{name}", replace[name], "not a parameter name")
    urls = _names(table, "urls", _NAME_PATTERN)
    for name in urls:
        if "*" in name:
            raise table.fail("urls", name, "URL-valued parameters are named exactly")
    table.done()
    return QueryScrub(NameMatcher.of(drop), replace, frozenset(urls))


def _body(table: Table) -> BodyScrub | None:
    if not table.data:
        return None
    format = _choice(table, "format", BodyFormat, BodyFormat.JSON)
    if "format" not in table.data:
        raise table.fail("format", None, "is required: form, json or form-lines")
    types = tuple(t.lower() for t in table.strings("content_types"))
    for media in types:
        if _MEDIA_TYPE.fullmatch(media) is None:
            raise table.fail("content_types", media, "not a media type like text/plain")
    replace = _replace_values(table, format)
    result = BodyScrub(
        format=format,
        content_types=frozenset(types) or default_content_types(format),
        drop=_fields(table, "drop", format),
        replace=replace,
        urls=_fields(table, "urls", format),
    )
    table.done()
    return result


def _replace_values(
    table: Table, format: BodyFormat
) -> dict[str, str | int | float | bool]:
    raw = table.get("replace", dict, {})
    out: dict[str, str | int | float | bool] = {}
    pattern = _JSON_PATH if format is BodyFormat.JSON else _NAME_PATTERN
    for name, value in raw.items():
        if "*" in name or pattern.fullmatch(name) is None:
            raise table.fail(f"replace.{name}", value, "not a field name or path")
        scalar = isinstance(value, str | int | float | bool)
        if not scalar or (format is not BodyFormat.JSON and not isinstance(value, str)):
            raise table.fail(f"replace.{name}", value, "must be a string")
        out[name] = value
    return out


def _lifetime(table: Table, key: str, default: float | None) -> int | None:
    if key not in table.data and default is None:
        return None
    seconds = table.duration(key, default or 0)
    if seconds <= 0:
        raise table.fail(key, table.data.get(key), "must be more than zero")
    if seconds > BROWSER_COOKIE_CAP:
        raise table.fail(
            key,
            table.data.get(key),
            "browsers cap cookie lifetime at 400 days; ask for at most 400d",
        )
    return int(seconds)


def _optional_bool(table: Table, key: str) -> bool | None:
    if key not in table.data:
        return None
    return table.get(key, bool)


def _cookies(table: Table) -> CookiePolicy:
    if not table.data:
        return CookiePolicy()
    domain = _choice(table, "domain", CookieDomain, CookieDomain.SITE)
    path = table.get("path", str, "") or None
    if path is not None and not path.startswith("/"):
        raise table.fail("path", path, 'must start with "/"')
    same_site = _same_site(table)
    secure = _optional_bool(table, "secure")
    if same_site == "None" and secure is False:
        raise table.fail(
            "same_site", "none", "browsers refuse SameSite=None without Secure"
        )
    reissue = _names(table, "reissue", COOKIE_NAME)
    purpose = None
    if "purpose" in table.data:
        purpose = _choice(table, "purpose", Purpose, Purpose.NONE)
        if purpose is Purpose.NONE:
            raise table.fail("purpose", "none", "cookies tagproxy sets need consent")
    result = CookiePolicy(
        domain=domain,
        path=path,
        secure=secure,
        same_site=same_site,
        http_only=_optional_bool(table, "http_only"),
        max_age=_lifetime(table, "max_age", BROWSER_COOKIE_CAP),
        reissue=NameMatcher.of(reissue) if reissue else None,
        reissue_max_age=_lifetime(table, "reissue_max_age", BROWSER_COOKIE_CAP)
        or BROWSER_COOKIE_CAP,
        purpose=purpose,
        declared=True,
    )
    table.done()
    return result


def _same_site(table: Table) -> str | None:
    raw = table.get("same_site", str, "")
    if not raw:
        return None
    value = SAME_SITE_VALUES.get(raw.lower())
    if value is None:
        raise table.fail("same_site", raw, "must be strict, lax or none")
    return value


def _visitor_id(
    table: Table, request: RequestPolicy, cookies: CookiePolicy
) -> VisitorId | None:
    if not table.data:
        return None
    name = table.get("cookie", str)
    if COOKIE_NAME.fullmatch(name) is None:
        raise table.fail("cookie", name, "not a cookie name")
    if cookies.reissue is not None and cookies.reissue(name):
        raise table.fail("cookie", name, "also re-issued from the browser's value")
    max_age = _lifetime(table, "max_age", BROWSER_COOKIE_CAP) or BROWSER_COOKIE_CAP
    table.done()
    return VisitorId(name, max_age, forwarded=request.cookies(name))


def _answer(table: Table) -> Answer | None:
    if not table.data:
        return None
    status = table.get("status", int, 204)
    if not 200 <= status <= 299:
        raise table.fail(
            "status", status, "a dropped beacon is answered as accepted (2xx)"
        )
    body = table.get("body", str, "").encode()
    if body and status in (204, 205):
        raise table.fail("body", table.data["body"], f"status {status} has no body")
    content_type = table.get("content_type", str, "") or None
    table.done()
    return Answer(status, content_type, body)
