"""The script-rewriting engine: where it rewrites, where it must not, and when
it gives up and serves the vendor's original."""

from __future__ import annotations

import json
import re
from typing import Final

import pytest

from proxy.rewrite import (
    BodyKind,
    ExtraRewrite,
    HostTarget,
    Rewriter,
    kind_for_content_type,
)

PUB: Final = "m.shop.example"
BASE: Final = f"https://{PUB}"

TARGETS: Final = (
    HostTarget("www.googletagmanager.com", f"{BASE}/gt/gtm"),
    HostTarget("www.google-analytics.com", f"{BASE}/gt/ga-www"),
    HostTarget(
        "*.google-analytics.com", f"{BASE}/gt/ga/{{label}}", label="www|region[0-9]+"
    ),
    HostTarget("api.segment.io", f"{BASE}/sg/api", bare=True),
    HostTarget("connect.facebook.net", f"{BASE}/fb/connect"),
)
REWRITER: Final = Rewriter(TARGETS)

GTM: Final = f"{PUB}/gt/gtm"


def rewrite_js(source: str) -> str:
    result = REWRITER.rewrite(source.encode(), BodyKind.JS)
    assert not result.kept_original, result.reason
    return result.body.decode()


# Every literal form of a URL, in a JS string.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'var u = "https://www.googletagmanager.com/gtag/js?id=G-1";',
            f'var u = "https://{GTM}/gtag/js?id=G-1";',
        ),
        (
            "var u = 'http://www.googletagmanager.com/gtm.js';",
            f"var u = 'https://{GTM}/gtm.js';",
        ),
        (
            'var u = "//www.googletagmanager.com/gtm.js";',
            f'var u = "https://{GTM}/gtm.js";',
        ),
        (
            r'var u = "https:\/\/www.googletagmanager.com\/gtm.js";',
            r'var u = "https:\/\/m.shop.example\/gt\/gtm\/gtm.js";',
        ),
        (
            r'var u = "https:\\\/\\\/www.googletagmanager.com\\\/a";',
            r'var u = "https:\\\/\\\/m.shop.example\\\/gt\\\/gtm\\\/a";',
        ),
        (
            r'var u = "\\\\\\\/\\\\\\\/www.googletagmanager.com";',
            r'var u = "https:\\\\\\\/\\\\\\\/m.shop.example\\\\\\\/gt\\\\\\\/gtm";',
        ),
        # JSON inside a JS string: the JSON escape's backslash is escaped too.
        (
            r'var c = "{\"u\":\"https:\\/\\/www.googletagmanager.com\\/td\"}";',
            r'var c = "{\"u\":\"https:\\/\\/m.shop.example\\/gt\\/gtm\\/td\"}";',
        ),
        (
            'var u = "https://www.googletagmanager.com:443/gtm.js";',
            f'var u = "https://{GTM}/gtm.js";',
        ),
        (
            'var u = "http://www.googletagmanager.com:80";',
            f'var u = "https://{GTM}";',
        ),
        (
            'var u = "HTTPS://WWW.GoogleTagManager.COM/x";',
            f'var u = "https://{GTM}/x";',
        ),
        (
            "var u = `//www.googletagmanager.com/td`;",
            f"var u = `https://{GTM}/td`;",
        ),
        (
            'var u = "a=1&r=https://www.googletagmanager.com";',
            f'var u = "a=1&r=https://{GTM}";',
        ),
    ],
)
def test_literal_forms_are_rewritten(source: str, expected: str) -> None:
    assert rewrite_js(source) == expected


# Pattern hosts: the label is checked, kept, and lower-cased; an exact host
# wins over a pattern that also matches it.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '"https://region1.google-analytics.com/g/collect"',
            f'"https://{PUB}/gt/ga/region1/g/collect"',
        ),
        ('"//Region42.google-analytics.com"', f'"https://{PUB}/gt/ga/region42"'),
        ('"https://www.google-analytics.com/j"', f'"https://{PUB}/gt/ga-www/j"'),
        ('"https://evil.google-analytics.com/g"', None),
        ('"https://region.google-analytics.com/g"', None),
        ('"https://a.region1.google-analytics.com/g"', None),
    ],
)
def test_pattern_hosts(source: str, expected: str | None) -> None:
    assert rewrite_js(source) == (expected or source)


# Look-alikes that are not references to a target host.
@pytest.mark.parametrize(
    "source",
    [
        '"https://www.googletagmanager.com.evil.example/x"',
        '"https://www.googletagmanager.community/x"',
        '"https://xwww.googletagmanager.com/x"',
        '"https://www.googletagmanager.com:8080/x"',
        '"wss://www.googletagmanager.com/ws"',
        '"ftp://www.googletagmanager.com/x"',
        '"https://user@www.googletagmanager.com/x"',
        r'"https:\/\\\/www.googletagmanager.com"',
    ],
)
def test_look_alikes_stay(source: str) -> None:
    assert rewrite_js(source) == source


# Regex literals, comments and data strings stay byte-identical.
@pytest.mark.parametrize(
    "source",
    [
        r"var ok = /^https:\/\/www\.google-analytics\.com\//.test(u);",
        r"var ok = /\/\/www.googletagmanager.com\/gtm/.test(u);",
        "// https://www.googletagmanager.com/gtm.js\nvar a = 1;",
        "/* loads //www.googletagmanager.com/gtm.js */ var a = 1;",
        'var mail = ["user@google-analytics.com", "a@api.segment.io"];',
        'var suffixes = ["co.uk", "google-analytics.com", "segment.io"];',
        'var host = "www.googletagmanager.com";',
        'var text = "see api.segment.io/v1 for details";',
        'var ref = {"www.google-analytics.com": "analytics"};',
        "var u = x //www.googletagmanager.com\n;",
    ],
)
def test_code_comments_and_data_stay(source: str) -> None:
    result = REWRITER.rewrite(source.encode(), BodyKind.JS)
    assert result.body == source.encode()
    assert result.replacements == {}


# Template strings: literal text is rewritten, substitution code is not.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "`https://www.googletagmanager.com/td?id=${id}`",
            f"`https://{GTM}/td?id=${{id}}`",
        ),
        (
            "`https://www.googletagmanager.com/${/\\/\\/www.googletagmanager.com/"
            ".test(u)}`",
            f"`https://{GTM}/${{/\\/\\/www.googletagmanager.com/.test(u)}}`",
        ),
        (
            '`${a}://${"//www.googletagmanager.com/x"}`',
            f'`${{a}}://${{"https://{GTM}/x"}}`',
        ),
        (
            "`a ${b //www.googletagmanager.com\n} c`",
            "`a ${b //www.googletagmanager.com\n} c`",
        ),
    ],
)
def test_template_strings(source: str, expected: str) -> None:
    assert rewrite_js(source) == expected


# Bare hosts: only for an opted-in target, only at the start of a literal.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"api.segment.io"', f'"{PUB}/sg/api"'),
        ("'api.segment.io/v1'", f"'{PUB}/sg/api/v1'"),
        ('"api.segment.io?x=1"', f'"{PUB}/sg/api?x=1"'),
        ('"api.segment.io#h"', f'"{PUB}/sg/api#h"'),
        ('"API.Segment.IO:443/v1"', f'"{PUB}/sg/api/v1"'),
        ('"api.segment.io:8443/v1"', None),
        ('"api.segment.io.evil.example"', None),
        ('"api.segment.io\'"', None),
        ('"x.api.segment.io"', None),
        ('"connect.facebook.net/en_US"', None),
        ("/api.segment.io/.test(h)", None),
    ],
)
def test_bare_hosts(source: str, expected: str | None) -> None:
    assert rewrite_js(source) == (expected or source)


def test_bare_host_in_segment_settings_json() -> None:
    settings = (
        b'{"integrations":{"Segment.io":{"apiHost":"api.segment.io/v1"}},'
        b'"metrics":{"host":"api.segment.io/v1"}}'
    )

    result = REWRITER.rewrite(settings, BodyKind.JSON)

    parsed = json.loads(result.body)
    assert parsed["integrations"]["Segment.io"]["apiHost"] == f"{PUB}/sg/api/v1"
    assert parsed["metrics"]["host"] == f"{PUB}/sg/api/v1"
    assert result.replacements == {"api.segment.io": 2}


# JSON: URLs inside string tokens, including escaped HTML and JS inside them.
@pytest.mark.parametrize(
    ("source", "expected_value"),
    [
        (
            r'{"u":"https:\/\/www.googletagmanager.com\/gtm.js"}',
            f"https://{GTM}/gtm.js",
        ),
        (
            r'{"u":"<script src=\"//connect.facebook.net/x.js\"></script>"}',
            f'<script src="https://{PUB}/fb/connect/x.js"></script>',
        ),
        (
            r'{"u":"var s=\"https:\\\/\\\/www.googletagmanager.com\\\/a\";"}',
            r'var s="https:\/\/m.shop.example\/gt\/gtm\/a";',
        ),
        (
            r'{"u":"user@api.segment.io"}',
            "user@api.segment.io",
        ),
    ],
)
def test_json_strings(source: str, expected_value: str) -> None:
    result = REWRITER.rewrite(source.encode(), BodyKind.JSON)

    assert not result.kept_original
    assert json.loads(result.body)["u"] == expected_value


def test_json_escaped_three_times_stays_valid() -> None:
    # JSON holding JS holding JSON, each level escaping its slashes as "\/".
    text = '<img src="https://www.googletagmanager.com/p">'
    for key in ("w", "v", "u"):
        text = json.dumps({key: text}).replace("/", "\\/")
    assert "https:" + "\\" * 7 + "/" in text

    result = REWRITER.rewrite(text.encode(), BodyKind.JSON)

    level1 = json.loads(json.loads(json.loads(result.body)["u"])["v"])
    assert level1["w"] == f'<img src="https://{GTM}/p">'
    assert result.replacements == {"www.googletagmanager.com": 1}


# HTML: URL forms anywhere; bare hosts only in quoted attribute values.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '<script src="https://www.googletagmanager.com/gtm.js?id=GTM-1">',
            f'<script src="https://{GTM}/gtm.js?id=GTM-1">',
        ),
        (
            "<iframe src='//www.googletagmanager.com/ns.html' hidden></iframe>",
            f"<iframe src='https://{GTM}/ns.html' hidden></iframe>",
        ),
        (
            "<script>var u = '//region1.google-analytics.com/g';</script>",
            f"<script>var u = 'https://{PUB}/gt/ga/region1/g';</script>",
        ),
        (
            '<div data-host="api.segment.io/v1" class="x">',
            f'<div data-host="{PUB}/sg/api/v1" class="x">',
        ),
        ("<p>api.segment.io</p>", None),
        ("<p title='mail a@api.segment.io'>", None),
        ("<script>var h = 'api.segment.io';</script>", None),
    ],
)
def test_html(source: str, expected: str | None) -> None:
    result = REWRITER.rewrite(source.encode(), BodyKind.HTML)
    assert result.body.decode() == (expected or source)


# A result that would parse worse than the original is never served.
@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ('var u = "https://www.google-analytics.com/g/collect";', BodyKind.JS),
        ('{"u": "https://www.google-analytics.com/g/collect"}', BodyKind.JSON),
    ],
)
def test_broken_output_keeps_original(source: str, kind: BodyKind) -> None:
    breaking = ExtraRewrite("break", re.compile(rb"collect"), b'col"lect')
    rewriter = Rewriter(TARGETS, [breaking])

    result = rewriter.rewrite(source.encode(), kind)

    assert result.kept_original
    assert result.body == source.encode()
    assert result.replacements == {}
    assert result.reason


def test_already_broken_script_is_still_rewritten() -> None:
    source = 'var a = "https://www.googletagmanager.com/x"; var b = (;'
    assert rewrite_js(source) == f'var a = "https://{GTM}/x"; var b = (;'


# Extras edit string literals only, after hosts, counted under their name.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('fetch(o + "/api/event", b)', 'fetch(o + "/pl/api/event", b)'),
        ("x = a /api/event", "x = a /api/event"),
        ("// post to /api/event\nx = 1", "// post to /api/event\nx = 1"),
        (
            '"https://www.googletagmanager.com/api/event"',
            f'"https://{GTM}/pl/api/event"',
        ),
    ],
)
def test_extras(source: str, expected: str) -> None:
    extra = ExtraRewrite(
        "plausible:api-endpoint", re.compile(rb"/api/event\b"), b"/pl/api/event"
    )
    result = Rewriter(TARGETS, [extra]).rewrite(source.encode(), BodyKind.JS)
    assert result.body.decode() == expected


def test_extras_see_host_rewritten_text() -> None:
    extra = ExtraRewrite("gtm:tag", re.compile(rb"/gt/gtm/gtm\.js"), b"/gt/gtm/t.js")
    rewriter = Rewriter(TARGETS, [extra])

    result = rewriter.rewrite(b'"//www.googletagmanager.com/gtm.js"', BodyKind.JS)

    assert result.body == f'"https://{PUB}/gt/gtm/t.js"'.encode()
    assert result.replacements == {"www.googletagmanager.com": 1, "gtm:tag": 1}


MIXED_JS: Final = r"""
var a = "https://www.googletagmanager.com/gtm.js", b = '//www.google-analytics.com/j';
var c = "https:\/\/region3.google-analytics.com\/g", d = "api.segment.io/v1";
var e = `//region3.google-analytics.com/${p}`, f = "http://www.googletagmanager.com";
"""


def test_replacement_counts() -> None:
    result = REWRITER.rewrite(MIXED_JS.encode(), BodyKind.JS)

    assert result.replacements == {
        "www.googletagmanager.com": 2,
        "www.google-analytics.com": 1,
        "region3.google-analytics.com": 2,
        "api.segment.io": 1,
    }


SEGMENT_JSON: Final = r'{"apiHost":"api.segment.io/v1","u":"\/\/connect.facebook.net"}'
TAG_HTML: Final = '<a href="//www.googletagmanager.com/n" data-h="api.segment.io">'


# Rewriting twice changes nothing: the first-party host is not a target.
@pytest.mark.parametrize(
    ("source", "kind"),
    [
        (MIXED_JS, BodyKind.JS),
        (SEGMENT_JSON, BodyKind.JSON),
        (TAG_HTML, BodyKind.HTML),
    ],
)
def test_idempotent(source: str, kind: BodyKind) -> None:
    once = REWRITER.rewrite(source.encode(), kind)
    twice = REWRITER.rewrite(once.body, kind)

    assert once.replacements
    assert twice.body == once.body
    assert twice.replacements == {}


_LARGE_CHUNK: Final = """\
var c{n} = {{"id": "G-{n}", "u": "{https}{gtm}/gtag/js?id={n}",
  "e": "{https_esc}{ga}\\/g\\/collect", "r": "//{region}/g/{n}"}};
function f{n}(a, b) {{
  // fetched from https://www.googletagmanager.com/gtm.js
  if (/^https:\\/\\/www\\.googletagmanager\\.com\\//.test(a))
    return "a@x.google-analytics.com";
  var t = `{https}{gtm}/td?n={n}&v=${{b / 2}}`;
  return {{host: "{segment}/v1", list: ["segment.io", "co.uk"], k: a / b / {n}}};
}}
"""


def _large_script(first_party: bool) -> bytes:
    if first_party:
        hosts = {
            "https": "https://",
            "https_esc": "https:\\/\\/",
            "gtm": GTM,
            "ga": f"{PUB}\\/gt\\/ga-www",
            "region": "",
            "segment": f"{PUB}/sg/api",
        }
    else:
        hosts = {
            "https": "https://",
            "https_esc": "https:\\/\\/",
            "gtm": "www.googletagmanager.com",
            "ga": "www.google-analytics.com",
            "region": "",
            "segment": "api.segment.io",
        }
    chunks = []
    for n in range(2600):
        region = f"region{n % 9}.google-analytics.com"
        hosts["region"] = f"{PUB}/gt/ga/region{n % 9}" if first_party else region
        chunk = _LARGE_CHUNK.format(n=n, **hosts)
        if first_party:
            chunk = chunk.replace(f'"//{PUB}', f'"https://{PUB}')
        chunks.append(chunk)
    return "".join(chunks).encode()


def test_large_script() -> None:
    source = _large_script(first_party=False)
    assert len(source) > 600_000

    result = REWRITER.rewrite(source, BodyKind.JS)

    assert not result.kept_original, result.reason
    assert result.body == _large_script(first_party=True)
    assert result.replacements["www.googletagmanager.com"] == 2 * 2600
    assert result.replacements["api.segment.io"] == 2600


# Bad targets stop construction with the offending value in the message.
@pytest.mark.parametrize(
    ("target", "named"),
    [
        (HostTarget("*.x.example", f"{BASE}/{{label}}", label="(open"), "(open"),
        (HostTarget("WWW.example.com", f"{BASE}/a"), "WWW.example.com"),
        (HostTarget("*.*.example.com", f"{BASE}/{{label}}"), "*.*.example.com"),
        (HostTarget("a.example.com", f"{BASE}/a/"), f"{BASE}/a/"),
        (HostTarget("a.example.com", "//m.shop.example/a"), "//m.shop.example/a"),
        (HostTarget("a.example.com", f'{BASE}/a"b'), f'{BASE}/a"b'),
        (HostTarget("*.example.com", f"{BASE}/a"), f"{BASE}/a"),
        (HostTarget("a.example.com", f"{BASE}/a", label="www|x"), "www|x"),
        (HostTarget("a.example.com", "https://a.example.com/p"), "a.example.com"),
        (HostTarget("*.shop.example", f"{BASE}/p/{{label}}"), "*.shop.example"),
    ],
)
def test_bad_target_is_refused(target: HostTarget, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        Rewriter([target])


def test_duplicate_host_is_refused() -> None:
    target = HostTarget("a.example.com", f"{BASE}/a")
    with pytest.raises(ValueError, match=r"a\.example\.com"):
        Rewriter([target, target])


def test_hosts_lists_targets_in_order() -> None:
    assert REWRITER.hosts == tuple(target.host for target in TARGETS)


# Content types that are rewritten, and those passed through.
@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/javascript", BodyKind.JS),
        ("text/javascript; charset=utf-8", BodyKind.JS),
        ("application/x-javascript", BodyKind.JS),
        ("text/ecmascript", BodyKind.JS),
        ("application/json", BodyKind.JSON),
        ("Application/JSON; charset=UTF-8", BodyKind.JSON),
        ("text/html; charset=utf-8", BodyKind.HTML),
        ("image/gif", None),
        ("text/plain", None),
        ("", None),
    ],
)
def test_kind_for_content_type(content_type: str, kind: BodyKind | None) -> None:
    assert kind_for_content_type(content_type) is kind
