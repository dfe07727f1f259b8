"""Rule-file mistakes found by trying them: refused at load, naming key and value,
never a request that fails (or leaks) later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.rules import RuleError, load_rule

from .conftest import StartProxy
from .fakes import FakeVendor, raw_request

RULE = """
vendor = "acme"
mount = "/ac"

[[hosts]]
host = "cdn.acme.example"

[[relays]]
host = "cdn.acme.example"
paths = ["/hit"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acme.toml"
    path.write_bytes(text.encode())
    return path


# A wildcard in the header allowlist never lets through what no rule may
# forward: the visitor's own forwarding headers, CDN internals, our trace.
async def test_header_wildcards_keep_never_forwarded_headers_out(
    tmp_path: Path, vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    rules = write(tmp_path, RULE + '[request]\nheaders = ["x-*"]\n')
    proxy = await start_proxy(
        rules=[rules],
        public_url="https://www.example.com",
        overrides=[f"https://cdn.acme.example={vendor.url}"],
        rule_vars=(),
    )
    response = await raw_request(
        proxy.port,
        "GET /ac/hit HTTP/1.1\nHost: www.example.com\nConnection: close\n"
        "X-Real-IP: 192.0.2.66\nX-Forwarded-Host: evil.example\n"
        "X-Forwarded-Proto: http\nX-Amz-Cf-Id: edge\nX-Tagproxy-Trace: 1\n"
        "X-Custom: kept\n",
    )
    assert response.status == 204
    received = vendor.received[0]
    names = {name.lower() for name, _ in received.headers}
    assert "x-custom" in names
    for name in (
        "x-real-ip",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-amz-cf-id",
        "x-tagproxy-trace",
    ):
        assert name not in names
    assert received.all("X-Forwarded-For") == ["127.0.0.1"]


# Values that would fail (or split) every request that uses them.
@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        (
            '[request]\nset_headers = { X-A = "a\\r\\nX-B: b" }',
            "request.set_headers.X-A",
            "control character",
        ),
        (
            '[response]\nset_headers = { X-A = "a\\nSet-Cookie: s=1" }',
            "response.set_headers.X-A",
            "control character",
        ),
        (
            '[request]\nset_headers = { "bad name" = "1" }',
            "request.set_headers.bad name",
            "not a valid header name",
        ),
        (
            '[response]\nset_headers = { "x:y" = "1" }',
            "response.set_headers.x:y",
            "not a valid header name",
        ),
        (
            '[request]\nclient_ip = [{ header = "Cookie" }]',
            "request.client_ip",
            "cannot carry",
        ),
        (
            '[request]\nclient_ip = [{ header = "Host" }]',
            "request.client_ip",
            "cannot carry",
        ),
        (
            '[request]\nclient_ip = [{ header = "Content-Length" }]',
            "request.client_ip",
            "cannot carry",
        ),
        (
            '[request]\nclient_ip = [{ header = "X-A\\r\\nX-B" }]',
            "request.client_ip",
            "not a valid header name",
        ),
        ('[request]\ncookies = ["*"]', "request.cookies", "every cookie"),
        ('[request]\ncookies = ["**"]', "request.cookies", "every cookie"),
        ('[response]\ncookies = ["*"]', "response.cookies", "every cookie"),
    ],
)
def test_policy_mistakes_are_refused(
    tmp_path: Path, section: str, key: str, reason: str
) -> None:
    path = write(tmp_path, RULE + section + "\n")
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


# TOML has nan and inf; neither is a time.
@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("timeout = nan", "relays[0].timeout"),
        ("timeout = inf", "relays[0].timeout"),
        ("connect_timeout = inf", "relays[0].connect_timeout"),
        ("methods = []", "relays[0].methods"),
    ],
)
def test_route_mistakes_are_refused(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path, RULE + line + "\n")
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert caught.value.key == key


def test_script_ttl_must_be_finite(tmp_path: Path) -> None:
    rule = RULE + '[[scripts]]\nhost = "cdn.acme.example"\npaths = ["/a.js"]\n'
    path = write(tmp_path, rule + "ttl = nan\n")
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert caught.value.key == "scripts[0].ttl"
    assert "finite" in caught.value.reason


# Editors on Windows save UTF-8 with a byte-order mark; TOML does not care.
def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff" + RULE)
    assert load_rule(path).vendor == "acme"


# A problem with the file itself reads as one, without a key or value.
def test_file_level_errors_read_plainly(tmp_path: Path) -> None:
    path = write(tmp_path, "vendor = \n")
    with pytest.raises(RuleError) as caught:
        load_rule(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML: ")
    missing = tmp_path / "nope"
    with pytest.raises(RuleError) as caught:
        load_rule(missing)
    assert str(caught.value).startswith(f"{missing}: cannot be read")
