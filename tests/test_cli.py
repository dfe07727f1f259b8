"""The command line as users call it, in-process (serve runs as a subprocess
in test_end_to_end.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main

from .conftest import BUNDLED_RULES

SCRIPTS = Path(__file__).parent / "vendor_scripts"
RULES = ["--rules", str(BUNDLED_RULES)]


def test_rewrite_prints_body_and_summary(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    code = main(
        [
            "rewrite",
            str(SCRIPTS / "gtag_like.js"),
            "--from",
            "https://www.googletagmanager.com/gtag/js?id=G-1",
            "--public-url",
            "https://m.shop.example",
            *RULES,
        ]
    )
    out, err = capsysbinary.readouterr()
    assert code == 0
    assert b'"https://m.shop.example/gt/ga/www/g/collect"' in out
    assert b'"https://m.shop.example/gt/gtag/js"' in out
    assert b"rewrote 1 x www.googletagmanager.com" in err
    assert b"replacements" in err


def test_routes_lists_every_vendor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", *RULES]) == 0
    out = capsys.readouterr().out
    for vendor, path in [
        ("google", "/gt/ga/<label>/g/collect"),
        ("meta", "/fb/w/tr"),
        ("plausible", "/pa/api/event"),
    ]:
        assert any(vendor in line and path in line for line in out.splitlines())


# `url` knows what it cannot serve.
@pytest.mark.parametrize(
    ("vendor_url", "code", "expected"),
    [
        ("https://plausible.io/js/script.js", 0, "https://m.example/pa/js/script.js"),
        (
            "https://www.googletagmanager.com/gtm.js?id=GTM-1&l=dl",
            0,
            "https://m.example/gt/gtm.js?id=GTM-1&l=dl",
        ),
        ("https://unknown.example/x.js", 1, ""),
        ("ftp://plausible.io/js/script.js", 1, ""),
    ],
)
def test_url(
    capsys: pytest.CaptureFixture[str], vendor_url: str, code: int, expected: str
) -> None:
    assert (
        main(["url", vendor_url, "--public-url", "https://m.example", *RULES]) == code
    )
    assert capsys.readouterr().out.strip() == expected


def test_url_warns_for_uncovered_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["url", "https://plausible.io/admin", *RULES]) == 0
    assert "no route covers this path" in capsys.readouterr().err


# Bad settings stop with the flag named, before anything listens.
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--listen", "8080", "--listen '8080'"),
        ("--public-url", "metrics.shop.example", "--public-url"),
        ("--trusted-proxy", "10.0.0.0/33", "--trusted-proxy"),
        ("--upstream-override", "plausible.io", "--upstream-override"),
        ("--allowed-origin", "shop.example", "--allowed-origin"),
    ],
)
def test_serve_refuses_bad_settings(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    assert main(["serve", *RULES, flag, value]) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_bad_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.toml").write_text('vendor = "x"\nmount = "nope"\n')
    assert main(["serve", "--rules", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "x.toml: mount = 'nope'" in err


def test_environment_sets_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAGPROXY_PUBLIC_URL", "https://from-env.example")
    monkeypatch.setenv("TAGPROXY_RULES", str(BUNDLED_RULES))
    assert main(["url", "https://plausible.io/js/script.js"]) == 0
    assert capsys.readouterr().out.strip() == "https://from-env.example/pa/js/script.js"
