"""Rule variables: operator settings such as the host of a self-hosted Matomo."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import rule_variables
from proxy.errors import ConfigError
from proxy.rules import RuleError, load_rule, load_rules

from .conftest import BUNDLED_RULES, StartProxy
from .fakes import FakeVendor

MATOMO = BUNDLED_RULES / "matomo.toml"

RULE_HEAD = """
vendor = "selfhosted"
mount = "/sh"

[variables.host]
kind = "host"
default = "tracker.invalid"
"""
RULE_TAIL = """
[[hosts]]
host = "${host}"

[[relays]]
host = "${host}"
paths = ["/collect"]
"""


def write_rule(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "selfhosted.toml"
    path.write_text(text)
    return path


def hosts_of(
    path: Path, specs: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> list[str]:
    rule = load_rule(path, rule_variables(specs, env or {}))
    return [h.host for h in rule.hosts]


# Where a value comes from: the flag wins over the environment, which wins
# over the rule's default.
@pytest.mark.parametrize(
    ("specs", "env", "host", "origin"),
    [
        ((), {}, "matomo.invalid", "default"),
        (
            (),
            {"TAGPROXY_MATOMO_HOST": "m.shop.example"},
            "m.shop.example",
            "TAGPROXY_MATOMO_HOST",
        ),
        (("matomo.host=f.shop.example",), {}, "f.shop.example", "--rule-var"),
        (
            ("matomo.host=f.shop.example",),
            {"TAGPROXY_MATOMO_HOST": "m.shop.example"},
            "f.shop.example",
            "--rule-var",
        ),
    ],
)
def test_value_sources(
    specs: tuple[str, ...], env: dict[str, str], host: str, origin: str
) -> None:
    rule = load_rule(MATOMO, rule_variables(specs, env))
    assert rule.hosts[0].host == host
    (variable,) = [v for v in rule.variables if v.name == "host"]
    assert (variable.value, variable.origin) == (host, origin)
    assert variable.env_name == "TAGPROXY_MATOMO_HOST"


def test_path_variable_moves_routes(tmp_path: Path) -> None:
    rule = load_rule(MATOMO, rule_variables(["matomo.path=/analytics"], {}))
    relay_paths = [p for r in rule.relays for p in r.paths.patterns]
    assert "/analytics/matomo.php" in relay_paths
    assert "/matomo.php" not in relay_paths


# A bad value fails at load, naming the file, the variable and who set it.
@pytest.mark.parametrize(
    ("specs", "env", "words"),
    [
        (("matomo.host=m.shop.example:8080",), {}, ["variables.host", "--rule-var"]),
        (
            (),
            {"TAGPROXY_MATOMO_HOST": "http://m.shop.example"},
            ["TAGPROXY_MATOMO_HOST"],
        ),
        (("matomo.path=analytics/",), {}, ["variables.path", "no trailing"]),
        (("matomo.host=",), {}, ["DNS name"]),
    ],
)
def test_bad_values_fail_at_load(
    specs: tuple[str, ...], env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(RuleError) as failure:
        load_rule(MATOMO, rule_variables(specs, env))
    message = str(failure.value)
    assert str(MATOMO) in message
    for word in words:
        assert word in message


# Mistakes in the rule file itself.
@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            RULE_HEAD + RULE_TAIL.replace("${host}", "${hots}", 1),
            ["hosts[0].host", "${hots}"],
        ),
        (RULE_HEAD.replace('kind = "host"', 'kind = "number"') + RULE_TAIL, ["kind"]),
        (RULE_HEAD.replace('default = "tracker.invalid"', "") + RULE_TAIL, ["default"]),
        (RULE_HEAD.replace("tracker.invalid", "not a host") + RULE_TAIL, ["default"]),
        (RULE_HEAD + 'helpp = "x"\n' + RULE_TAIL, ["helpp", "unknown key"]),
        (
            RULE_HEAD.replace("[variables.host]", "[variables.Host]") + RULE_TAIL,
            ["Host"],
        ),
    ],
)
def test_bad_declarations(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(RuleError) as failure:
        load_rule(write_rule(tmp_path, text))
    for word in words:
        assert word in str(failure.value)


def test_declared_variable_fills_every_string(tmp_path: Path) -> None:
    path = write_rule(tmp_path, RULE_HEAD + RULE_TAIL)
    assert hosts_of(path) == ["tracker.invalid"]
    assert hosts_of(path, ("selfhosted.host=t.shop.example",)) == ["t.shop.example"]


def test_unknown_rule_var_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"matomo\.hots"):
        load_rules([BUNDLED_RULES], rule_variables(["matomo.hots=x.example"], {}))


@pytest.mark.parametrize("spec", ["matomo.host", "host=x.example", "matomo.=x", "=x"])
def test_malformed_rule_var(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"VENDOR\.NAME=VALUE"):
        rule_variables([spec], {})


def test_check_and_routes_work_with_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", str(BUNDLED_RULES)]) == 0
    assert main(["routes", "--rules", str(BUNDLED_RULES)]) == 0
    out = capsys.readouterr().out
    assert "https://matomo.invalid/matomo.php" in out
    assert "matomo.host = 'matomo.invalid' (default; set TAGPROXY_MATOMO_HOST" in out


def test_check_names_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAGPROXY_MATOMO_HOST", "bad_host")
    assert main(["check", str(BUNDLED_RULES)]) == 1
    err = capsys.readouterr().err
    assert "matomo.toml" in err
    assert "TAGPROXY_MATOMO_HOST" in err


def test_routes_show_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "routes",
        "--rules",
        str(BUNDLED_RULES),
        "--rule-var",
        "matomo.host=m.shop.example",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "https://m.shop.example/matomo.php" in out
    assert "matomo.host = 'm.shop.example' (from --rule-var)" in out


async def test_relay_reaches_the_configured_host(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        rule_vars=["matomo.host=stats.shop.example", "matomo.path=/analytics"]
    )
    async with proxy.client.get(
        f"{proxy.url}/mt/analytics/matomo.php?idsite=1&rec=1"
    ) as response:
        assert response.status == 204
    (received,) = vendor.received
    assert received.host == "stats.shop.example"
    assert received.raw_path == "/analytics/matomo.php?idsite=1&rec=1"
