"""`tagproxy audit`: per vendor, what leaves for which hosts and in what form.

Built only from the loaded rules and the site's settings, never from
traffic: it says what tagproxy will let through, which is what a privacy
team files with its records. The same facts come out as plain sentences and
as JSON.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from typing import Any, Final

from ..rules.model import IpVia, Rule, RuleSet
from .consent import ConsentConfig
from .model import (
    PIXEL_GIF,
    Action,
    CookieDomain,
    Gate,
    IpHandling,
    PrivacyPolicy,
    Purpose,
)
from .plan import policy_of

Report = dict[str, Any]

_DAY: Final = 86400
_IP_WORDS: Final = {
    IpHandling.FORWARD: "the full address",
    IpHandling.TRUNCATE: "truncated (IPv4 to /24, IPv6 to /48)",
    IpHandling.WITHHOLD: "not at all (the vendor sees only tagproxy's address)",
}
_VIA_WORDS: Final = {
    IpVia.HEADER: "header",
    IpVia.QUERY: "query parameter",
    IpVia.JSON_BODY: "JSON body member",
}
_ACTION_WORDS: Final = {
    Action.PASS: "passes",
    Action.STRIP: "is stripped",
    Action.DROP: "is dropped",
}


def audit(
    rules: RuleSet,
    consent: ConsentConfig | None,
    cookie_domain: str | None,
    vendors: Iterable[str] | None = None,
) -> list[Report]:
    """One report per vendor, in rule order."""
    wanted = None if vendors is None else frozenset(vendors)
    return [
        vendor_report(rule, consent, cookie_domain)
        for rule in rules.rules
        if wanted is None or rule.vendor in wanted
    ]


def vendor_report(
    rule: Rule, consent: ConsentConfig | None, cookie_domain: str | None
) -> Report:
    policy = policy_of(rule)
    return {
        "vendor": rule.vendor,
        "name": rule.name,
        "rule": rule.source.name,
        "privacy_section": policy.declared,
        "beacon_hosts": _beacon_hosts(rule, policy),
        "script_hosts": sorted({r.host.host for r in rule.scripts}),
        "request": _request(rule, policy),
        "ip": _ip(rule, policy),
        "consent": _consent(rule, policy, consent),
        "cookies_set": _cookies_set(rule, policy, consent, cookie_domain),
    }


# --- facts -----------------------------------------------------------------------


def _beacon_hosts(rule: Rule, policy: PrivacyPolicy) -> list[Report]:
    hosts: dict[str, list[str]] = {}
    for route in rule.relays:
        hosts.setdefault(route.host.host, []).extend(route.paths.patterns)
    return [
        {"host": host, "paths": paths, "purpose": policy.gate_for(host).purpose.value}
        for host, paths in hosts.items()
    ]


def _request(rule: Rule, policy: PrivacyPolicy) -> Report:
    request = rule.request
    allowed = sorted(request.headers) + [f"{p}*" for p in request.header_prefixes]
    ip_headers = [w.name for w in request.client_ip if w.via is IpVia.HEADER]
    body = policy.body
    return {
        "headers": sorted(allowed),
        "headers_set": dict(request.set_headers),
        "ip_headers": ip_headers,
        "cookies": list(request.cookies.patterns),
        "query": {
            "dropped": sorted(
                {*request.drop_query, *policy.query.drop.patterns}
                | {w.name for w in request.client_ip if w.via is IpVia.QUERY}
            ),
            "set": dict(request.set_query),
            "renamed": dict(request.rename_query),
            "replaced": dict(policy.query.replace),
            "redacted": sorted(policy.query.urls),
        },
        "body": None
        if body is None
        else {
            "format": body.format.value,
            "content_types": sorted(body.content_types),
            "dropped": list(body.drop),
            "replaced": dict(body.replace),
            "redacted": list(body.urls),
        },
        "json_body_ip": [w.name for w in request.client_ip if w.via is IpVia.JSON_BODY],
    }


def _ip(rule: Rule, policy: PrivacyPolicy) -> Report:
    strip_ip = max(policy.ip, policy.identifiers.ip, key=lambda i: i.severity)
    return {
        "ways": [
            {"via": way.via.value, "name": way.name} for way in rule.request.client_ip
        ],
        "form": policy.ip.value,
        "form_when_stripped": strip_ip.value,
        "scripts": _script_ip(rule, policy),
    }


def _script_ip(rule: Rule, policy: PrivacyPolicy) -> str | None:
    """How a script fetch passes the address: only for per-visitor caches."""
    per_visitor = [r for r in rule.scripts if r.cache.value in ("none", "geo")]
    if not per_visitor or policy.ip is IpHandling.WITHHOLD:
        return None
    return policy.ip.value


def _consent(
    rule: Rule, policy: PrivacyPolicy, consent: ConsentConfig | None
) -> Report:
    signals = []
    needs = {g.purpose for g in policy.gates if g.purpose is not Purpose.NONE}
    if consent is not None:
        for purpose in sorted(needs):
            signal = consent.purposes.get(purpose)
            if signal is not None:
                signals.append(
                    {
                        "purpose": purpose.value,
                        "cookie": signal.cookie,
                        "granted": signal.granted.pattern,
                    }
                )
    strip = policy.identifiers
    return {
        "gates": [_gate(rule, policy, gate) for gate in policy.gates],
        "consent_cookie": signals,
        "consent_source": consent.source if consent is not None else None,
        "missing_means": None if consent is None else consent.missing.value,
        "google_consent_mode": policy.consent_mode,
        "strip_removes": {
            "cookies": list(strip.cookies.patterns),
            "query": list(strip.query.patterns),
            "body": list(strip.body),
            "ip": max(policy.ip, strip.ip, key=lambda i: i.severity).value,
            "vendor_set_cookie": True,
        },
        "drop_answer": _answer(policy),
    }


def _gate(rule: Rule, policy: PrivacyPolicy, gate: Gate) -> Report:
    hosts = [h.host for h in rule.hosts if policy.gate_for(h.host) is gate]
    relayed = {r.host.host for r in rule.relays}
    return {
        "hosts": [h for h in hosts if h in relayed],
        "purpose": gate.purpose.value,
        "without_consent": gate.without_consent.value,
        "gpc": gate.gpc.value,
        "dnt": gate.dnt.value,
        "defaults": sorted(
            {"purpose", "without_consent", "gpc", "dnt"} - gate.declared
        ),
    }


def _answer(policy: PrivacyPolicy) -> Report:
    answer = policy.answer
    if answer is None:
        return {
            "GET": {
                "status": 200,
                "content_type": "image/gif",
                "bytes": len(PIXEL_GIF),
            },
            "other": {"status": 204, "content_type": None, "bytes": 0},
        }
    same = {
        "status": answer.status,
        "content_type": answer.content_type,
        "bytes": len(answer.body),
    }
    return {"GET": same, "other": same}


def _cookies_set(
    rule: Rule,
    policy: PrivacyPolicy,
    consent: ConsentConfig | None,
    cookie_domain: str | None,
) -> Report:
    cookies = policy.cookies
    domain = None
    if cookies.domain is CookieDomain.SITE:
        domain = cookie_domain or "(site cookie domain, when configured)"
    purposes = [(cookies.purpose or policy.gate.purpose).value]
    attributes = {
        "domain": domain,
        "path": cookies.path,
        "secure": cookies.secure,
        "same_site": cookies.same_site,
        "http_only": cookies.http_only,
        "max_age_days": _days(cookies.max_age),
    }
    visitor_id = policy.visitor_id
    return {
        "vendor_cookies": list(rule.response.cookies.patterns),
        "vendor_cookie_policy": attributes if cookies.declared else None,
        "reissued": None
        if cookies.reissue is None
        else {
            "names": list(cookies.reissue.patterns),
            "max_age_days": _days(cookies.reissue_max_age),
            "while_consent_for": purposes,
        },
        "visitor_id": None
        if visitor_id is None
        else {
            "cookie": visitor_id.cookie,
            "max_age_days": _days(visitor_id.max_age),
            "http_only": True,
            "sent_to_vendor": visitor_id.forwarded,
            "while_consent_for": purposes,
        },
        "needs_consent_signal": consent is None,
    }


def _days(seconds: int | None) -> float | None:
    if seconds is None:
        return None
    days = seconds / _DAY
    return int(days) if days == int(days) else round(days, 2)


# --- rendering ------------------------------------------------------------------


def render_json(reports: list[Report]) -> str:
    return json.dumps({"vendors": reports}, indent=2, sort_keys=False) + "\n"


def render_text(reports: list[Report]) -> str:
    return "\n".join(_vendor_text(r) for r in reports)


def _list(items: Iterable[str], empty: str = "none") -> str:
    items = list(items)
    return ", ".join(items) if items else empty


def _wrap(line: str) -> str:
    return textwrap.fill(
        line, width=88, subsequent_indent="    ", break_on_hyphens=False
    )


def _vendor_text(r: Report) -> str:
    lines = [f"{r['vendor']}: {r['name']} ({r['rule']})"]
    if not r["privacy_section"]:
        lines.append(
            "  ! This rule has no [privacy] section: the defaults below apply "
            "(gated as advertising, the strictest)."
        )
    add = lines.append
    hosts = [f"{b['host']} ({b['purpose']})" for b in r["beacon_hosts"]]
    add(f"  Beacons go to: {_list(hosts)}.")
    if r["script_hosts"]:
        add(
            f"  Scripts are fetched from {_list(r['script_hosts'])} with the "
            "visitor's User-Agent and Accept-Language and no cookies"
            + _script_ip_text(r["ip"]["scripts"])
            + "."
        )
    add(_headers_text(r["request"]))
    add(_cookies_text(r["request"]["cookies"]))
    add(_query_text(r["request"]["query"]))
    add(_body_text(r["request"]["body"], r["request"]["json_body_ip"]))
    add(_ip_text(r["ip"]))
    lines.extend(_consent_text(r["consent"]))
    lines.extend(_set_cookie_text(r["cookies_set"]))
    return "\n".join(_wrap(line) for line in lines) + "\n"


def _script_ip_text(form: str | None) -> str:
    if form is None:
        return ""
    words = "the full address" if form == "forward" else "the truncated address"
    return f"; for per-visitor or per-geo copies also {words} in X-Forwarded-For"


def _headers_text(request: Report) -> str:
    headers = _list(request["headers"])
    text = f"  Request headers that leave (if the browser sent them): {headers}"
    if request["headers_set"]:
        pairs = [f"{k}: {v}" for k, v in request["headers_set"].items()]
        text += f"; set by tagproxy: {_list(pairs)}"
    return text + ". No other header leaves."


def _cookies_text(cookies: list[str]) -> str:
    if not cookies:
        return "  Cookies that leave: none (no Cookie header is sent)."
    return (
        f"  Cookies that leave: {_list(cookies)}; every other cookie of the site stays."
    )


def _query_text(query: Report) -> str:
    parts = []
    if query["dropped"]:
        parts.append(f"removed: {_list(query['dropped'])}")
    if query["set"]:
        parts.append(
            "set by tagproxy: " + _list(f"{k}={v}" for k, v in query["set"].items())
        )
    if query["renamed"]:
        parts.append(
            "renamed: " + _list(f"{k} to {v}" for k, v in query["renamed"].items())
        )
    if query["replaced"]:
        parts.append(
            "replaced: "
            + _list(f"{k} with {v!r}" for k, v in query["replaced"].items())
        )
    if query["redacted"]:
        parts.append(
            "e-mail addresses and phone numbers redacted in " + _list(query["redacted"])
        )
    if not parts:
        return "  Query parameters: all leave as sent."
    return "  Query parameters: all leave as sent except " + "; ".join(parts) + "."


def _body_text(body: Report | None, ip_members: list[str]) -> str:
    ip = ""
    if ip_members:
        ip = f" (except the address member{'s' if len(ip_members) > 1 else ''} " + (
            f"{_list(ip_members)}, see below)"
        )
    if body is None:
        return f"  Request bodies: leave byte-exact{ip}."
    parts = []
    if body["dropped"]:
        parts.append(f"removed: {_list(body['dropped'])}")
    if body["replaced"]:
        parts.append(
            "replaced: " + _list(f"{k} with {v!r}" for k, v in body["replaced"].items())
        )
    if body["redacted"]:
        parts.append(
            f"e-mail addresses and phone numbers redacted in {_list(body['redacted'])}"
        )
    edits = "; ".join(parts) if parts else "nothing edited unless stripped"
    return (
        f"  Request bodies: {body['format']} bodies ({_list(body['content_types'])}) "
        f"are read: {edits}; other and compressed bodies leave byte-exact{ip}."
    )


def _ip_text(ip: Report) -> str:
    ways = _ways_text(ip["ways"])
    if not ways:
        return (
            "  Visitor IP: not passed by the rule (the vendor sees tagproxy's address)."
        )
    form = _IP_WORDS[IpHandling(ip["form"])]
    text = f"  Visitor IP: leaves as {form}, in the {ways}"
    if ip["form_when_stripped"] != ip["form"]:
        stripped = _IP_WORDS[IpHandling(ip["form_when_stripped"])]
        text += f"; when a beacon is stripped, as {stripped}"
    return text + "."


def _ways_text(ways: list[Report]) -> str:
    groups: dict[str, list[str]] = {}
    for way in ways:
        groups.setdefault(way["via"], []).append(way["name"])
    parts = []
    for via, names in groups.items():
        word = _VIA_WORDS[IpVia(via)] + ("s" if len(names) > 1 else "")
        parts.append(f"{word} {' and '.join(names)}")
    return " and the ".join(parts)


def _consent_text(consent: Report) -> list[str]:
    lines = []
    for gate in consent["gates"]:
        hosts = _list(gate["hosts"], "its beacons")
        if gate["purpose"] == "none":
            lines.append(
                f"  Consent: beacons to {hosts} need none (purpose none); "
                f"on GPC a beacon {_ACTION_WORDS[Action(gate['gpc'])]}, "
                f"on DNT it {_ACTION_WORDS[Action(gate['dnt'])]}."
            )
            continue
        lines.append(
            f"  Consent: beacons to {hosts} are {gate['purpose']}; without "
            f"consent a beacon {_ACTION_WORDS[Action(gate['without_consent'])]}, "
            f"on GPC it {_ACTION_WORDS[Action(gate['gpc'])]}, "
            f"on DNT it {_ACTION_WORDS[Action(gate['dnt'])]}"
            + (f" (defaults: {_list(gate['defaults'])})" if gate["defaults"] else "")
            + "."
        )
    actions = {
        Action(g[key])
        for g in consent["gates"]
        for key in ("without_consent", "gpc", "dnt")
    }
    if actions == {Action.PASS}:
        return lines
    lines.append("  Consent signals read: " + _signals_text(consent) + ".")
    strip = consent["strip_removes"]
    if Action.STRIP in actions:
        lines.append(_strip_text(strip))
    if Action.DROP in actions:
        lines.append(_drop_text(consent["drop_answer"]))
    return lines


def _strip_text(strip: Report) -> str:
    return (
        "  Strip removes: cookies "
        + _list(strip["cookies"])
        + "; query parameters "
        + _list(strip["query"])
        + "; body fields "
        + _list(strip["body"])
        + "; the vendor's Set-Cookie; and sends the address "
        + ("truncated" if strip["ip"] == "truncate" else "not at all")
        + (". A body strip cannot read is not sent" if strip["body"] else "")
        + "."
    )


def _drop_text(answer: Report) -> str:
    get, other = answer["GET"], answer["other"]
    if get == other:
        body = (
            f"{get['content_type']}, {get['bytes']} bytes"
            if get["bytes"]
            else "no body"
        )
        status = get["status"]
        return f"  A dropped beacon is not sent; the browser gets {status} ({body})."
    return (
        "  A dropped beacon is not sent; the browser gets "
        f"{get['status']} ({get['content_type']}, {get['bytes']} bytes) to GET "
        f"and {other['status']} to other methods."
    )


def _signals_text(consent: Report) -> str:
    parts = []
    for signal in consent["consent_cookie"]:
        parts.append(
            f"cookie {signal['cookie']} for {signal['purpose']} "
            f"(granted when it matches {signal['granted']!r})"
        )
    if consent["consent_source"] is None:
        parts.append("no consent cookie (no --consent given)")
    if consent["google_consent_mode"]:
        parts.append("Google consent mode (gcs, gcd) on the hit")
    parts += ["Sec-GPC", "DNT"]
    text = _list(parts)
    if consent["missing_means"] is not None:
        text += f"; no signal at all counts as {consent['missing_means']}"
    else:
        text += "; without a denial the beacon counts as consented"
    return text


def _set_cookie_text(cookies: Report) -> list[str]:
    lines = []
    names = cookies["vendor_cookies"]
    policy = cookies["vendor_cookie_policy"]
    if not names:
        lines.append("  Cookies the vendor sets: none pass to the browser.")
    elif policy is None:
        lines.append(
            f"  Cookies the vendor sets: {_list(names)} pass, Domain set to the "
            "site's cookie domain (host-only without one), other attributes as sent."
        )
    else:
        attributes = [f"Domain={policy['domain'] or 'host-only'}"]
        for key, word in (("path", "Path"), ("same_site", "SameSite")):
            if policy[key]:
                attributes.append(f"{word}={policy[key]}")
        for key, word in (("secure", "Secure"), ("http_only", "HttpOnly")):
            if policy[key] is not None:
                attributes.append(word if policy[key] else f"no {word}")
        if policy["max_age_days"] is not None:
            attributes.append(f"lifetime at most {policy['max_age_days']} days")
        lines.append(
            f"  Cookies the vendor sets: {_list(names)} pass with {_list(attributes)}."
        )

    reissued = cookies["reissued"]
    visitor_id = cookies["visitor_id"]
    if reissued is None and visitor_id is None:
        lines.append("  Cookies tagproxy sets: none.")
        return lines
    when = (
        "while consent for "
        + _list((reissued or visitor_id)["while_consent_for"])
        + " holds"
    )
    if cookies["needs_consent_signal"]:
        when += " (a positive signal: a consent cookie or Google consent mode)"
    if reissued is not None:
        lines.append(
            f"  Cookies tagproxy sets: re-issues {_list(reissued['names'])} "
            f"from the browser's own value for {reissued['max_age_days']} days, "
            f"{when}; never other cookies."
        )
    if visitor_id is not None:
        sent = (
            "sent to the vendor"
            if visitor_id["sent_to_vendor"]
            else "not sent to the vendor"
        )
        lines.append(
            f"  Cookies tagproxy sets: an HttpOnly visitor ID {visitor_id['cookie']} "
            f"for {visitor_id['max_age_days']} days, {sent}, {when}; removed when "
            "consent is refused."
        )
    return lines


def render_summary(reports: list[Report]) -> str:
    """One Markdown table row per vendor and purpose: the posture at a glance."""
    rows = [
        "| vendor | beacons | purpose | without consent | GPC | DNT | IP leaves as "
        "| strip removes | cookies tagproxy sets | own `[privacy]` |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        for gate in r["consent"]["gates"]:
            rows.append(_summary_row(r, gate))
    return "\n".join(rows) + "\n"


def _summary_row(r: Report, gate: Report) -> str:
    without = "n/a" if gate["purpose"] == "none" else gate["without_consent"]
    cells = [
        r["vendor"],
        _list(gate["hosts"]),
        gate["purpose"],
        without,
        gate["gpc"],
        gate["dnt"],
        r["ip"]["form"],
        _strip_cell(r["consent"]["strip_removes"], gate),
        _cookies_cell(r["cookies_set"]),
        "yes" if r["privacy_section"] else "no: defaults",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _strip_cell(strip: Report, gate: Report) -> str:
    if "strip" not in (gate["without_consent"], gate["gpc"], gate["dnt"]):
        return "n/a (never stripped)"
    parts = [
        f"{what} {_list(strip[key])}"
        for key, what in (("cookies", "cookies"), ("query", "query"), ("body", "body"))
        if strip[key]
    ]
    parts.append(f"IP {'truncated' if strip['ip'] == 'truncate' else 'withheld'}")
    return "; ".join(parts)


def _cookies_cell(cookies: Report) -> str:
    parts = []
    if cookies["reissued"] is not None:
        reissued = cookies["reissued"]
        purposes = _list(reissued["while_consent_for"])
        parts.append(
            f"re-issues {_list(reissued['names'])} "
            f"({reissued['max_age_days']} d, with {purposes} consent)"
        )
    if cookies["visitor_id"] is not None:
        visitor_id = cookies["visitor_id"]
        purposes = _list(visitor_id["while_consent_for"])
        parts.append(
            f"visitor ID {visitor_id['cookie']} "
            f"({visitor_id['max_age_days']} d, with {purposes} consent)"
        )
    return "; ".join(parts) or "none"
