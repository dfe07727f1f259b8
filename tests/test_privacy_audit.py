"""`tagproxy audit` and the generated part of docs/privacy.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.privacy.auditdocs import committed, generated, splice

from .conftest import BUNDLED_RULES

DOCS = BUNDLED_RULES.parent / "docs" / "privacy.md"

BARE_RULE = """
vendor = "acme"
mount = "/ac"

[[hosts]]
host = "collect.acme.example"
path = ""

[[relays]]
host = "collect.acme.example"
paths = ["/hit"]

[request]
cookies = ["acme_id"]
client_ip = [{ header = "X-Forwarded-For" }, { query = "uip" }]
"""


def test_docs_audit_is_current() -> None:
    """docs/privacy.md shows what the rules say now."""
    fresh = generated(BUNDLED_RULES)
    if committed(DOCS.read_text(encoding="utf-8")) != fresh:
        pytest.fail(
            "the audit section of docs/privacy.md is stale: "
            "run scripts/gen-audit-docs and commit the result"
        )


def test_splice_replaces_only_the_section() -> None:
    doc = "intro\n" + generated(BUNDLED_RULES) + "\noutro\n"
    assert splice(doc, "NEW") == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "NEW")


def audit_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["audit", "--json", *args]) == 0
    reports = json.loads(capsys.readouterr().out)["vendors"]
    return {r["vendor"]: r for r in reports}


def test_audit_json_for_google(capsys: pytest.CaptureFixture[str]) -> None:
    reports = audit_json(
        capsys,
        "--rules",
        str(BUNDLED_RULES),
        "--consent",
        "onetrust",
        "--cookie-domain",
        "shop.example",
    )
    google = reports["google"]
    assert google["privacy_section"] is True
    assert google["ip"]["ways"] == [{"via": "header", "name": "X-Forwarded-For"}]
    assert (google["ip"]["form"], google["ip"]["form_when_stripped"]) == (
        "forward",
        "truncate",
    )
    gates = {g["purpose"]: g for g in google["consent"]["gates"]}
    assert gates["analytics"]["gpc"] == "strip"
    assert "stats.g.doubleclick.net" in gates["ads"]["hosts"]
    assert google["consent"]["google_consent_mode"] is True
    cookies = [c["cookie"] for c in google["consent"]["consent_cookie"]]
    assert cookies == ["OptanonConsent", "OptanonConsent"]
    assert google["request"]["query"]["redacted"] == ["dl", "dr", "ref", "url"]
    reissued = google["cookies_set"]["reissued"]
    assert reissued == {
        "names": ["_ga", "_ga_*"],
        "max_age_days": 400,
        "while_consent_for": ["analytics"],
    }
    policy = google["cookies_set"]["vendor_cookie_policy"]
    assert (policy["domain"], policy["max_age_days"]) == ("shop.example", 400)


def test_audit_of_a_rule_without_privacy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "acme.toml").write_text(BARE_RULE)
    assert main(["audit", "--rules", str(tmp_path)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "has no [privacy] section" in text
    assert "Cookies that leave: acme_id; every other cookie of the site stays." in text
    assert "header X-Forwarded-For and the query parameter uip" in text
    assert "no consent cookie (no --consent given)" in text

    acme = audit_json(capsys, "--rules", str(tmp_path))["acme"]
    assert acme["consent"]["gates"][0] | {"hosts": []} == {
        "hosts": [],
        "purpose": "ads",
        "without_consent": "drop",
        "gpc": "drop",
        "dnt": "pass",
        "defaults": ["dnt", "gpc", "purpose", "without_consent"],
    }
    assert acme["request"]["query"]["dropped"] == ["uip"]
    assert acme["cookies_set"]["reissued"] is None


def test_audit_summary_has_a_row_per_gate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--summary", "--rules", str(BUNDLED_RULES)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| vendor | beacons | purpose |")
    google = [r for r in rows if r.startswith("| google |")]
    assert [r.split(" | ")[2] for r in google] == ["analytics", "ads"]


def test_audit_refuses_a_bad_consent_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["audit", "--consent", "no-such-preset"]) == 2
    assert "neither a preset" in capsys.readouterr().err


SITES = """
[[sites]]
name = "shop"
hosts = ["www.shop.example"]
cookie_domain = "shop.example"
vendors = ["google", "meta"]
consent = "consent.toml"

[[sites]]
name = "blog"
hosts = ["www.blog.example"]
vendors = ["plausible"]
"""

CONSENT = """
preset = "cookiebot"

[purposes.ads]
cookie = "shop_consent"
granted = "ads=1"
"""


def test_audit_of_one_site(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "sites.toml").write_text(SITES)
    (tmp_path / "consent.toml").write_text(CONSENT)
    sites = str(tmp_path / "sites.toml")
    reports = audit_json(capsys, "--sites", sites, "--site", "shop")

    assert sorted(reports) == ["google", "meta"]
    meta = reports["meta"]
    assert meta["consent"]["consent_source"] == str(tmp_path / "consent.toml")
    assert meta["consent"]["consent_cookie"] == [
        {"purpose": "ads", "cookie": "shop_consent", "granted": "ads=1"}
    ]
    reissued = reports["google"]["cookies_set"]
    assert reissued["vendor_cookie_policy"]["domain"] == "shop.example"


# --site needs a sites file naming that site; a bad consent entry names the key.
@pytest.mark.parametrize(
    ("args", "sites", "message"),
    [
        (["--site", "shop"], None, "--site needs the sites file"),
        (["--site", "nope"], SITES, "no such site"),
        (["--site", "shop"], SITES.replace("consent.toml", "acme"), "sites[0].consent"),
    ],
)
def test_audit_site_errors(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    sites: str | None,
    message: str,
) -> None:
    (tmp_path / "consent.toml").write_text(CONSENT)
    if sites is not None:
        (tmp_path / "sites.toml").write_text(sites)
        args = [*args, "--sites", str(tmp_path / "sites.toml")]
    assert main(["audit", *args]) == 2
    assert message in capsys.readouterr().err
