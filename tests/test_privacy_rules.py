"""Privacy settings at load: defaults, refusals by name, consent files, and the
pure pieces (address truncation, consent-mode parsing, redaction, cookies).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.privacy import Privacy
from proxy.privacy.address import truncate, visitor_address
from proxy.privacy.consent import State, cookie_pairs, google_consent, load_consent
from proxy.privacy.model import Action, CookiePolicy, IpHandling, Purpose
from proxy.privacy.scrub import looks_like_phone, redact_url
from proxy.privacy.setcookie import apply_policy
from proxy.rules import RuleError, load_rule, load_rules

from .conftest import BUNDLED_RULES

RULE = """
vendor = "acme"
mount = "/ac"

[[hosts]]
host = "collect.acme.example"
path = ""

[[hosts]]
host = "ads.acme.example"
path = "/ads"

[[relays]]
host = "collect.acme.example"
paths = ["/hit"]

[request]
cookies = ["acme_*"]
"""


def rule_with(tmp_path: Path, privacy: str) -> Path:
    path = tmp_path / "acme.toml"
    path.write_text(RULE + privacy)
    return path


def test_rule_without_privacy_gets_the_strictest_defaults(tmp_path: Path) -> None:
    policy = load_rule(rule_with(tmp_path, "")).privacy
    assert policy is not None
    assert not policy.declared
    gate = policy.gate
    assert (gate.purpose, gate.without_consent, gate.gpc, gate.dnt) == (
        Purpose.ADS,
        Action.DROP,
        Action.DROP,
        Action.PASS,
    )
    assert policy.ip is IpHandling.FORWARD
    assert policy.identifiers.cookies.patterns == ("acme_*",)  # all it passes
    assert policy.identifiers.ip is IpHandling.TRUNCATE
    assert not policy.query.active
    assert policy.body is None
    assert not policy.cookies.declared
    assert policy.visitor_id is None


# A purpose brings its own defaults; a rule may override any of them.
@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ('purpose = "analytics"', ("drop", "strip", "pass")),
        ('purpose = "ads"', ("drop", "drop", "pass")),
        ('purpose = "functional"', ("strip", "pass", "pass")),
        ('purpose = "none"', ("pass", "pass", "pass")),
        (
            'purpose = "analytics"\ngpc = "pass"\ndnt = "strip"',
            ("drop", "pass", "strip"),
        ),
    ],
)
def test_purpose_defaults(
    tmp_path: Path, privacy: str, expected: tuple[str, str, str]
) -> None:
    policy = load_rule(rule_with(tmp_path, f"[privacy]\n{privacy}\n")).privacy
    assert policy is not None
    gate = policy.gate
    assert (gate.without_consent, gate.gpc, gate.dnt) == tuple(map(Action, expected))


def test_host_groups(tmp_path: Path) -> None:
    text = '[privacy]\npurpose = "analytics"\n\n[[privacy.hosts]]\n'
    text += 'hosts = ["ads.acme.example"]\npurpose = "ads"\n'
    policy = load_rule(rule_with(tmp_path, text)).privacy
    assert policy is not None
    assert policy.gate_for("collect.acme.example").purpose is Purpose.ANALYTICS
    assert policy.gate_for("ads.acme.example").purpose is Purpose.ADS


# Every refusal names the key, the value and the reason.
@pytest.mark.parametrize(
    ("privacy", "key", "reason"),
    [
        ('[privacy]\npurpose = "marketing"', "privacy.purpose", "must be one of"),
        ("[privacy]\nbogus = 1", "privacy.bogus", "unknown key"),
        ('[privacy]\ngpc = "block"', "privacy.gpc", "pass, strip, drop"),
        ('[privacy]\nip = "mask"', "privacy.ip", "forward, truncate, withhold"),
        (
            '[privacy]\npurpose = "none"\nwithout_consent = "drop"',
            "privacy.without_consent",
            "needs no consent",
        ),
        ('[privacy.strip]\nip = "forward"', "privacy.strip.ip", "full address"),
        ('[privacy.strip]\nbody = ["uid"]', "privacy.strip.body", "[privacy.body]"),
        ('[privacy.strip]\ncookies = ["a b"]', "privacy.strip.cookies", "valid name"),
        (
            '[[privacy.hosts]]\nhosts = ["nope.example"]\npurpose = "ads"',
            "privacy.hosts[0].hosts",
            "not one of this rule's hosts",
        ),
        (
            '[[privacy.hosts]]\nhosts = ["ads.acme.example"]',
            "privacy.hosts[0].purpose",
            "is required",
        ),
        ('[privacy.query]\nreplace = { "a*" = "x" }', "privacy.query.replace.a*", ""),
        ('[privacy.query]\nurls = ["d*"]', "privacy.query.urls", "named exactly"),
        ('[privacy.body]\nformat = "xml"', "privacy.body.format", "must be one of"),
        ("[privacy.body]\ndrop = ['x']", "privacy.body.format", "is required"),
        (
            '[privacy.body]\nformat = "json"\nurls = ["a..b"]',
            "privacy.body.urls",
            "dotted JSON path",
        ),
        (
            '[privacy.body]\nformat = "form"\ncontent_types = ["json"]',
            "privacy.body.content_types",
            "media type",
        ),
        (
            '[privacy.body]\nformat = "form"\nreplace = { a = 1 }',
            "privacy.body.replace.a",
            "must be a string",
        ),
        ('[privacy.cookies]\nmax_age = "401d"', "privacy.cookies.max_age", "400 days"),
        ("[privacy.cookies]\nmax_age = 0", "privacy.cookies.max_age", "more than zero"),
        (
            '[privacy.cookies]\nreissue_max_age = "2y"',
            "privacy.cookies.reissue_max_age",
            "duration",
        ),
        ('[privacy.cookies]\nsame_site = "loose"', "privacy.cookies.same_site", "lax"),
        (
            '[privacy.cookies]\nsame_site = "none"\nsecure = false',
            "privacy.cookies.same_site",
            "SameSite=None",
        ),
        ('[privacy.cookies]\npath = "x"', "privacy.cookies.path", 'start with "/"'),
        ('[privacy.cookies]\nreissue = ["_ga;"]', "privacy.cookies.reissue", "name"),
        (
            '[privacy]\npurpose = "none"\n[privacy.cookies]\nreissue = ["_ga"]',
            "privacy.cookies",
            "consent",
        ),
        (
            '[privacy.visitor_id]\ncookie = "a b"',
            "privacy.visitor_id.cookie",
            "not a cookie name",
        ),
        (
            '[privacy.cookies]\nreissue = ["acme_*"]\n'
            '[privacy.visitor_id]\ncookie = "acme_id"',
            "privacy.visitor_id.cookie",
            "re-issued",
        ),
        ("[privacy.answer]\nstatus = 403", "privacy.answer.status", "2xx"),
        (
            '[privacy.answer]\nstatus = 204\nbody = "x"',
            "privacy.answer.body",
            "no body",
        ),
    ],
)
def test_bad_privacy_refused_by_name(
    tmp_path: Path, privacy: str, key: str, reason: str
) -> None:
    path = rule_with(tmp_path, privacy + "\n")
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert caught.value.source == path
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_every_bundled_rule_loads_with_its_privacy() -> None:
    rules = load_rules([BUNDLED_RULES], variables=None)
    for rule in rules.rules:
        assert rule.privacy is not None


# --- consent settings ------------------------------------------------------------


def test_consent_file_extends_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(
        'preset = "onetrust"\nmissing = "granted"\n\n'
        '[purposes.analytics]\ncookie = "site_consent"\ngranted = "stats=yes"\n'
    )
    config = load_consent(str(path))
    assert config.missing is State.GRANTED
    assert config.state(Purpose.ANALYTICS, {"site_consent": "ads=no,stats=yes"}) is (
        State.GRANTED
    )
    assert config.state(Purpose.ANALYTICS, {"site_consent": "stats=no"}) is (
        State.DENIED
    )
    assert config.state(Purpose.ADS, {}) is State.UNKNOWN
    assert config.cookie_names == {"site_consent", "OptanonConsent"}


# A bad consent file names the file, the key, the value and the reason.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1", "bogus = 1: unknown key"),
        ('preset = "acme"', "preset = 'acme': known presets: complianz"),
        ('missing = "maybe"', 'must be "denied" or "granted"'),
        ("[purposes.marketing]\ncookie = 'a'\ngranted = 'x'", "purposes are:"),
        ("[purposes.ads]\ncookie = 'a'\ngranted = '('", "not a valid regular"),
        ("[purposes.ads]\ncookie = 'a b'\ngranted = 'x'", "must be a cookie name"),
        ("[purposes.ads]\ncookie = 'a'\ngrant = 'x'", "purposes.ads.grant"),
        ("", "name a preset or at least one purpose"),
        ("[purposes", "cannot be read"),
    ],
)
def test_bad_consent_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_consent(str(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_consent_neither_preset_nor_file() -> None:
    with pytest.raises(ConfigError, match="neither a preset"):
        load_consent("usercentrics")


# --- pure pieces -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.7", "203.0.113.0"),
        ("203.0.113.255", "203.0.113.0"),
        ("2001:db8:abcd:12::7", "2001:db8:abcd::"),
        ("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("not-an-address", None),
        ("", None),
    ],
)
def test_truncate(address: str, expected: str | None) -> None:
    assert truncate(address) == expected


def test_visitor_address_forms() -> None:
    assert visitor_address("203.0.113.7", IpHandling.FORWARD) == "203.0.113.7"
    assert visitor_address("203.0.113.7", IpHandling.TRUNCATE) == "203.0.113.0"
    assert visitor_address("203.0.113.7", IpHandling.WITHHOLD) is None


@pytest.mark.parametrize(
    ("query", "analytics", "ads"),
    [
        ("v=2&gcs=G111", "granted", "granted"),
        ("gcs=G101", "granted", "denied"),
        ("gcs=G110", "denied", "granted"),
        ("gcs=G1--", "unknown", "unknown"),
        ("gcd=11t1t1t1t5", "granted", "granted"),
        ("gcd=13q3v3l3l1", "granted", "denied"),
        ("gcd=13v3v3m3v5", "granted", "denied"),  # ad_user_data denied
        ("gcd=13l3l3l3l1", "unknown", "unknown"),
        ("gcs=G111&gcd=13p3p3p2p5", "denied", "denied"),
        ("tid=G-1", "unknown", "unknown"),
    ],
)
def test_google_consent(query: str, analytics: str, ads: str) -> None:
    states = google_consent(query)
    assert states[Purpose.ANALYTICS] is State(analytics)
    assert states[Purpose.ADS] is State(ads)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x.example/", "https://x.example/"),
        ("https://x.example/?e=jane@example.com", "https://x.example/?e=(redacted)"),
        (
            "https://x.example/?e=jane%40example.com&a=1",
            "https://x.example/?e=(redacted)&a=1",
        ),
        (
            "https://x.example/?e=jane%2540example.com",
            "https://x.example/?e=(redacted)",
        ),
        (
            "https://x.example/u/j.doe+x@mail.example.co.uk/",
            "https://x.example/u/(redacted)/",
        ),
        ("/thanks?tel=0446681800", "/thanks?tel=(redacted)"),
        ("/thanks?to=%2B41%2044%20668%2018%2000", "/thanks?to=(redacted)"),
        ("/thanks?n=044-668-1800#x", "/thanks?n=(redacted)#x"),
        ("/a#phone=+41446681800", "/a#phone=(redacted)"),
        (
            "/order?id=12345678901&ts=1700000000000",
            "/order?id=12345678901&ts=1700000000000",
        ),
        ("/news?date=2024-01-15", "/news?date=2024-01-15"),
        ("/user@home", "/user@home"),  # no domain: not an address
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("name", "value", "phone"),
    [
        ("q", "+41 44 668 18 00", True),
        ("q", "(044) 668-1800", True),
        ("mobile", "0446681800", True),
        ("q", "0446681800", False),
        ("q", "2024-01-15", False),
        ("q", "+1234", False),
        ("hotel", "12345678", False),
    ],
)
def test_looks_like_phone(name: str, value: str, phone: bool) -> None:
    assert looks_like_phone(name, value) is phone


def test_set_cookie_policy_keeps_what_it_does_not_name() -> None:
    sent = (
        "a=1; Domain=vendor.example; Path=/p; Max-Age=60; SameSite=Lax; Priority=High"
    )
    assert apply_policy(sent, CookiePolicy(declared=True), "example.com") == (
        "a=1; Max-Age=60; Priority=High; Domain=example.com; Path=/p; SameSite=Lax"
    )


# Cookie headers as browsers (and odd clients) send them.
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;;c=", {"a": "1", "b": "2", "c": ""}),
        ('q="quoted value"; a=1; a=2', {"q": "quoted value", "a": "1"}),
        ("flag; x=y=z", {"x": "y=z"}),
        ("  sp = 1 ", {"sp": "1"}),
    ],
)
def test_cookie_pairs(header: str, expected: dict[str, str]) -> None:
    assert cookie_pairs([header]) == expected


@pytest.mark.parametrize("address", ["01.2.3.4", "256.1.1.1", "1.2.3", "203.0.113.07"])
def test_truncate_refuses_what_is_not_an_address(address: str) -> None:
    assert truncate(address) is None


def test_undefined_purpose_warned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    consent = tmp_path / "consent.toml"
    consent.write_text('[purposes.analytics]\ncookie = "c"\ngranted = "yes"\n')
    rules = load_rules([rule_with(tmp_path, "")])  # gated as ads by default
    Privacy(rules, load_consent(str(consent)))
    assert "define no ads purpose: acme beacons" in caplog.text
