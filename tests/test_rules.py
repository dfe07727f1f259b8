"""Rule files: what loads, and every way a bad one is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.rules import CacheMode, RuleError, load_rule, load_rules
from proxy.rules.loader import parse_duration, parse_size

from .conftest import BUNDLED_RULES

MINIMAL = """
vendor = "acme"
mount = "/ac"

[[hosts]]
host = "cdn.acme.example"
path = ""

[[hosts]]
host = "*.collect.acme.example"
path = "/c"
label = "eu|us[0-9]"

[[scripts]]
host = "cdn.acme.example"
paths = ["/tag.js"]

[[relays]]
host = "*.collect.acme.example"
paths = ["/hit"]
"""


def write(tmp_path: Path, text: str, name: str = "acme.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_rule_defaults(tmp_path: Path) -> None:
    rule = load_rule(write(tmp_path, MINIMAL))
    assert rule.vendor == "acme"
    assert rule.scripts[0].cache is CacheMode.SHARED
    assert rule.scripts[0].ttl == 3600
    assert rule.relays[0].methods == {"GET", "HEAD", "POST", "OPTIONS"}
    assert rule.relays[0].max_body == 64 * 1024
    assert rule.request.passes_header("user-agent")
    assert rule.request.passes_header("sec-ch-ua-platform")
    assert not rule.request.passes_header("authorization")
    assert not rule.request.cookies("anything")


def test_bundled_rules_load() -> None:
    rules = load_rules([BUNDLED_RULES])
    assert {"google", "meta", "plausible"} <= set(rules.by_vendor)


# Each bad value is refused naming the key, the value and the reason.
@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        # top level
        (('vendor = "acme"', 'vendor = "Acme Corp"'), "vendor", "lower-case"),
        (('mount = "/ac"', 'mount = "ac"'), "mount", "one path segment"),
        (('mount = "/ac"', 'mount = "/a/b"'), "mount", "one path segment"),
        (('mount = "/ac"', "mount = 7"), "mount", "must be a string"),
        (('mount = "/ac"', 'mount = "/ac"\ncolour = "red"'), "colour", "unknown key"),
        # hosts
        (('host = "cdn.acme.example"', 'host = "10.0.0.1"'), "hosts[0].host", "DNS"),
        (('host = "cdn.acme.example"', 'host = "localhost"'), "hosts[0].host", "DNS"),
        (('host = "cdn.acme.example"', 'host = "a.*.example"'), "hosts[0].host", "DNS"),
        (('label = "eu|us[0-9]"', 'label = "eu|("'), "hosts[1].label", "regular"),
        (('path = "/c"', 'path = "/c/"'), "hosts[1].path", "trailing"),
        (('path = "/c"', 'path = ""'), "hosts[1].path", "own path"),
        # routes
        (('paths = ["/tag.js"]', 'paths = ["tag.js"]'), "scripts[0].paths", "start"),
        (('paths = ["/tag.js"]', 'paths = ["/t?x=1"]'), "scripts[0].paths", "query"),
        (('paths = ["/tag.js"]', "paths = []"), "scripts[0].paths", "at least one"),
        (
            ('paths = ["/tag.js"]', 'paths = ["/tag.js"]\ncache = "forever"'),
            "scripts[0].cache",
            "one of",
        ),
        (
            ('paths = ["/tag.js"]', 'paths = ["/tag.js"]\nttl = "soon"'),
            "scripts[0].ttl",
            "duration",
        ),
        (
            ('paths = ["/hit"]', 'paths = ["/hit"]\nmethods = ["TRACE"]'),
            "relays[0].methods",
            "allowed methods",
        ),
        (
            ('paths = ["/hit"]', 'paths = ["/hit"]\nmax_body = "lots"'),
            "relays[0].max_body",
            "size",
        ),
        (
            ('host = "*.collect.acme.example"\npaths', 'host = "other.example"\npaths'),
            "relays[0].host",
            "not one of this rule",
        ),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, change: tuple[str, str], key: str, reason: str
) -> None:
    old, new = change
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    error = caught.value
    assert error.source == path
    assert error.key == key
    assert reason in error.reason
    assert str(path) in str(error)


# Policies: headers that must never pass cannot be allowed by a rule.
@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ('[request]\nheaders = ["Authorization"]', "never forwarded"),
        ('[request]\nheaders = ["Cookie"]', "cookies pass only by name"),
        ('[request]\nheaders = ["Connection"]', "hop-by-hop"),
        ('[request]\nheaders = ["cf-connecting-ip"]', "CDN"),
        ('[request]\nheaders = ["X-Forwarded-For"]', "never forwarded"),
        ('[request]\nset_headers = { Host = "x" }', "never forwarded"),
        ('[request]\ncookies = ["bad name"]', "not a cookie name"),
        ('[request]\nclient_ip = [{ carrier = "pigeon" }]', "ways are"),
        ('[request]\nclient_ip = ["X-Forwarded-For"]', "each entry"),
        ("[response]\nset_headers = { X = 1 }", "must be a string"),
        ('[[rewrites]]\nname = "x"\nreplace = "y"', 'exactly one of "find"'),
        ('[[rewrites]]\nname = "x"\npattern = "(("\nreplace = "y"', "regular"),
        ('[[rewrites]]\nname = "x"\nfind = "a"\nreplace = "{nope}"', "placeholders"),
    ],
)
def test_bad_policies_are_named(tmp_path: Path, section: str, reason: str) -> None:
    path = write(tmp_path, MINIMAL + "\n" + section + "\n")
    with pytest.raises(RuleError, match=reason):
        load_rule(path)


# Across files: vendors, mounts and hosts belong to one rule only.
@pytest.mark.parametrize(
    ("second", "key"),
    [
        (MINIMAL.replace('mount = "/ac"', 'mount = "/zz"'), "vendor"),
        (MINIMAL.replace('vendor = "acme"', 'vendor = "other"'), "mount"),
        (
            MINIMAL.replace('vendor = "acme"', 'vendor = "other"').replace(
                'mount = "/ac"', 'mount = "/zz"'
            ),
            "hosts.host",
        ),
    ],
)
def test_clashes_between_files(tmp_path: Path, second: str, key: str) -> None:
    write(tmp_path, MINIMAL, "a.toml")
    write(tmp_path, second, "b.toml")
    with pytest.raises(RuleError) as caught:
        load_rules([tmp_path])
    assert caught.value.key == key
    assert caught.value.source == tmp_path / "b.toml"


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="not valid TOML"):
        load_rule(write(tmp_path, "vendor = \n"))


# Durations and sizes in the forms the docs promise.
@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (10, 10.0),
        (2.5, 2.5),
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw, ValueError) == seconds


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (65536, 65536),
        ("64KiB", 65536),
        ("5MiB", 5 * 1024**2),
        ("1MB", 10**6),
        ("100B", 100),
    ],
)
def test_sizes(raw: object, size: int) -> None:
    assert parse_size(raw, ValueError) == size


def test_check_command_names_file_key_value_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace('ttl = "x"', "").replace(
            'paths = ["/hit"]', 'paths = ["/hit"]\nmax_body = "huge"'
        ),
    )
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "relays[0].max_body" in err
    assert "'huge'" in err
    assert "must be a size" in err


def test_check_command_passes_bundled_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(BUNDLED_RULES)]) == 0
    assert "rule files valid" in capsys.readouterr().out


def test_docs_worked_example_loads_and_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example in docs/rules.md is a working rule, with the URLs it claims."""
    docs = (BUNDLED_RULES.parent / "docs" / "rules.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, example)
    assert load_rule(path).vendor == "acme"

    public = ["--rules", str(tmp_path), "--public-url", "https://metrics.shop.example"]
    assert main(["url", "https://cdn.acme.example/tag.js?id=A-1", *public]) == 0
    assert main(["url", "https://eu.collect.acme.example/hit", *public]) == 0
    assert main(["url", "https://evil.collect.acme.example/hit", *public]) == 1
    assert capsys.readouterr().out.split() == [
        "https://metrics.shop.example/ac/tag.js?id=A-1",
        "https://metrics.shop.example/ac/c/eu/hit",
    ]
