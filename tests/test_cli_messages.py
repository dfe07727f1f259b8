"""What the command says when a new user gets something wrong: what is wrong
and what to do, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proxy.cli import main

from .conftest import BUNDLED_RULES

RULES = ["--rules", str(BUNDLED_RULES)]


def test_missing_rule_directory_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["routes"]) == 2
    err = capsys.readouterr().err
    assert "rules: no such rule file or directory" in err
    assert str(tmp_path / "rules") in err
    assert "None" not in err


# `tagproxy url` takes a script src as it appears in a page.
@pytest.mark.parametrize(
    ("vendor_url", "printed"),
    [
        ("//plausible.io/js/script.js", "https://m.shop.example/pa/js/script.js"),
        ("https://plausible.io/js/script.js", "https://m.shop.example/pa/js/script.js"),
    ],
)
def test_url_accepts_script_srcs(
    capsys: pytest.CaptureFixture[str], vendor_url: str, printed: str
) -> None:
    code = main(["url", vendor_url, "--public-url", "https://m.shop.example", *RULES])
    assert code == 0
    assert capsys.readouterr().out.strip() == printed


@pytest.mark.parametrize(
    ("vendor_url", "message"),
    [
        ("plausible.io/js/script.js", "must be an absolute URL"),
        ("https://plausible.io:8443/js/script.js", "no loaded rule serves"),
        ("ftp://plausible.io/js/script.js", "must be an absolute URL"),
    ],
)
def test_url_refusals_say_why(
    capsys: pytest.CaptureFixture[str], vendor_url: str, message: str
) -> None:
    assert main(["url", vendor_url, *RULES]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert "None" not in err


def test_rewrite_of_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (tmp_path / "nope.js", tmp_path):
        args = ["rewrite", str(path), "--from", "https://plausible.io/js/script.js"]
        assert main([*args, *RULES]) == 1
        assert f"cannot read {path}" in capsys.readouterr().err


def test_rewrite_from_needs_an_absolute_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "s.js"
    script.write_text("var u='https://plausible.io/api/event';")
    assert main(["rewrite", str(script), "--from", "plausible.io", *RULES]) == 1
    err = capsys.readouterr().err
    assert "must be an absolute URL" in err
    assert "None" not in err


def test_serve_on_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", *RULES, "--listen", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"--listen 127.0.0.1:{port}: cannot listen there" in err
    assert "Traceback" not in err


# The cookie domain is a bare domain; anything else makes browsers drop the
# vendor's cookies without a word.
@pytest.mark.parametrize(
    "value",
    ["https://shop.example", "shop.example:443", "shop.example/", "shop example"],
)
def test_a_cookie_domain_that_is_not_a_domain_is_refused(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main(["serve", *RULES, "--cookie-domain", value]) == 2
    assert "--cookie-domain" in capsys.readouterr().err
    assert main(["audit", *RULES, "--cookie-domain", value]) == 2
    assert "--cookie-domain" in capsys.readouterr().err
