"""Property-based fuzzing of everything a client or a rule author can send.

For request paths, headers, queries and bodies, and for what a vendor sends
back: tagproxy never crashes, never answers 500, answers bad input with a
4xx and upstream trouble with 502 or 504, and never connects anywhere but
the fake vendor. For rule files: loading either succeeds or fails with a
RuleError naming file and key, never with any other exception.

Examples are derandomized so CI is stable; set TAGPROXY_FUZZ_EXPLORE=1 to let
hypothesis search afresh, and TAGPROXY_FUZZ_EXAMPLES=N for N examples per
property (150 by default). The number of inputs fuzzed is printed at the end.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.routing import Router
from proxy.rules import load_rule
from proxy.rules.loader import RuleError, build_rule_set
from proxy.scripts import build_rewriter
from proxy.site import parse_public_url

from . import tally
from .conftest import BUNDLED_RULES, TEST_RULES, Running, StartProxy
from .fakes import FakeVendor, RawResponse, Received, Reply, raw_request
from .netguard import NetGuard

EXAMPLES: Final = int(os.environ.get("TAGPROXY_FUZZ_EXAMPLES", "150"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("TAGPROXY_FUZZ_EXPLORE"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PUBLIC = "https://www.example.com"

# A rule with every request edit, so fuzzed queries and bodies meet them.
FUZZ_RULE = """
vendor = "fuzz"
mount = "/fz"

[[hosts]]
host = "collect.fuzz-test.example"
path = ""

[[scripts]]
host = "collect.fuzz-test.example"
paths = ["/tag.js"]
query = ["id"]

[[relays]]
host = "collect.fuzz-test.example"
paths = ["/e", "/e/**"]
methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
max_body = "64KiB"

[request]
drop_query = ["secret"]
set_query = { v = "2" }
rename_query = { old = "new" }
client_ip = [
    { header = "X-Forwarded-For" },
    { query = "uip" },
    { json_body = "ctx.ip" },
]
"""
EDITED: Final = frozenset({"secret", "v", "old", "new", "uip"})


@pytest.fixture
async def fuzzed(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> Running:
    (tmp_path / "fuzz.toml").write_text(FUZZ_RULE)
    return await start_proxy(
        rules=[BUNDLED_RULES, TEST_RULES, tmp_path / "fuzz.toml"],
        public_url=None,  # from Host: fuzzed Hosts reach that code too
        allowed_origins=["https://app.example.org"],
    )


def acceptable(response: RawResponse, vendor: FakeVendor) -> None:
    """4xx for bad input, 502/504 for upstream trouble, else what the vendor said."""
    status = response.status
    assert status != 500, response.body[:300]
    if status >= 500:
        assert status in (502, 504) or vendor.received, status


def contained(proxy: Running, vendor: FakeVendor, net: NetGuard, mark: int) -> None:
    assert net.foreign([proxy.port, vendor.port], mark) == []


async def send(port: int, head: str, body: bytes = b"") -> RawResponse:
    try:
        return await raw_request(port, head, body)
    except (ConnectionError, IndexError, ValueError) as exc:
        # Only a connection the server cut without a word is allowed (the
        # parser may close on garbage); a 500 would have been a response.
        return RawResponse(0, [("x-error", type(exc).__name__)], b"")


# --- requests -------------------------------------------------------------------

MOUNTS: Final = ["/gt", "/fb", "/pa", "/ph", "/mp", "/um", "/sg", "/mt", "/se", "/fz"]
URL_CHARS: Final = string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%"
METHODS: Final = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "FOO"]

url_text = st.text(alphabet=URL_CHARS, max_size=60)
percent = st.binary(max_size=8).map(lambda b: "".join(f"%{c:02X}" for c in b))
path_tail = st.lists(st.one_of(url_text, percent, st.sampled_from(["..", ".", "//"])))


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    mount=st.sampled_from([*MOUNTS, "", "/x"]),
    tail=path_tail,
)
async def test_fuzz_paths(
    fuzzed: Running,
    vendor: FakeVendor,
    net: NetGuard,
    method: str,
    mount: str,
    tail: list[str],
) -> None:
    path = (mount + "/" + "/".join(tail)).replace(" ", "%20")
    mark = net.mark()
    response = await send(
        fuzzed.port,
        f"{method} {path} HTTP/1.1\nHost: www.example.com\nContent-Length: 0\n"
        "Connection: close\n",
    )
    tally.add("inputs fuzzed")
    acceptable(response, vendor)
    contained(fuzzed, vendor, net, mark)


TOKEN: Final = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
INTERESTING: Final = [
    "Host",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Prefix",
    "Forwarded",
    "Origin",
    "Cookie",
    "Content-Type",
    "Content-Encoding",
    "Transfer-Encoding",
    "Connection",
    "Expect",
    "Upgrade",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Accept-Encoding",
    "If-None-Match",
    "CF-Connecting-IP",
    "CF-IPCountry",
    "User-Agent",
    "Range",
]
header_value = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"
    ),
    max_size=80,
)
headers = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(INTERESTING),
            st.text(alphabet=TOKEN, min_size=1, max_size=20),
        ),
        header_value,
    ),
    max_size=8,
)
TARGETS: Final = [
    ("POST", "/pa/api/event"),
    ("POST", "/ph/e/"),
    ("POST", "/um/api/send"),
    ("POST", "/se/tunnel"),
    ("GET", "/gt/gtag/js?id=G-TEST"),
    ("GET", "/mt/matomo.php?idsite=1"),
    ("OPTIONS", "/ph/e/"),
    ("POST", "/fz/e?x=1"),
]


@FUZZ
@given(target=st.sampled_from(TARGETS), extra=headers)
async def test_fuzz_headers(
    fuzzed: Running,
    vendor: FakeVendor,
    net: NetGuard,
    target: tuple[str, str],
    extra: list[tuple[str, str]],
) -> None:
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, b"var g=1;", JS))
    method, path = target
    lines = "".join(f"{name}: {value.strip()}\n" for name, value in extra)
    if not any(n.lower() == "host" for n, _ in extra):
        lines = "Host: www.example.com\n" + lines
    mark = net.mark()
    response = await send(
        fuzzed.port,
        f"{method} {path} HTTP/1.1\n{lines}Content-Length: 2\nConnection: close\n",
        b"{}",
    )
    tally.add("inputs fuzzed")
    acceptable(response, vendor)
    contained(fuzzed, vendor, net, mark)


query_piece = st.tuples(
    st.one_of(st.sampled_from(sorted(EDITED | {"id", "tid", "a"})), url_text),
    st.one_of(url_text, percent),
    st.booleans(),
).map(lambda t: f"{t[0]}={t[1]}" if t[2] else t[0])
queries = st.lists(query_piece, max_size=8).map(
    lambda pieces: "&".join(p.replace("&", "%26").replace("#", "%23") for p in pieces)
)


@FUZZ
@given(query=queries)
async def test_fuzz_queries(
    fuzzed: Running, vendor: FakeVendor, net: NetGuard, query: str
) -> None:
    mark = net.mark()
    before = len(vendor.received)
    response = await send(
        fuzzed.port,
        f"GET /fz/e?{query} HTTP/1.1\nHost: www.example.com\nConnection: close\n",
    )
    tally.add("inputs fuzzed")
    acceptable(response, vendor)
    contained(fuzzed, vendor, net, mark)
    if response.status == 204:
        sent = vendor.received[before]
        # Pieces no rule edit names reach the vendor byte-exact and in order.
        assert untouched(sent.query) == untouched(query)
        assert "uip=127.0.0.1" in sent.query.split("&")


def untouched(query: str) -> list[str]:
    pieces = query.split("&") if query else []
    return [p for p in pieces if unquote_plus(p.partition("=")[0]) not in EDITED]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["ctx", "payload", "dsn", "d", "n"]), json_values, max_size=3
    ).map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda dsn, rest: json.dumps({"dsn": dsn}).encode() + b"\n" + rest,
        st.one_of(url_text, st.just("https://k@o0.ingest.sentry.io/1")),
        st.binary(max_size=100),
    ),
)
BODY_TARGETS: Final = ["/fz/e", "/um/api/send", "/se/tunnel", "/pa/api/event", "/ph/e/"]


@FUZZ
@given(
    path=st.sampled_from(BODY_TARGETS),
    body=bodies,
    content_type=st.sampled_from(
        ["", "text/plain", "application/json", "application/octet-stream"]
    ),
    encoding=st.sampled_from(["", "gzip", "br", "deflate", "x-bogus"]),
    chunked=st.booleans(),
)
async def test_fuzz_bodies(
    fuzzed: Running,
    vendor: FakeVendor,
    net: NetGuard,
    path: str,
    body: bytes,
    content_type: str,
    encoding: str,
    chunked: bool,
) -> None:
    lines = f"Content-Type: {content_type}\n" if content_type else ""
    lines += f"Content-Encoding: {encoding}\n" if encoding else ""
    if chunked:
        lines += "Transfer-Encoding: chunked\n"
        data = (
            f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
        ) + b"0\r\n\r\n"
    else:
        lines += f"Content-Length: {len(body)}\n"
        data = body
    mark = net.mark()
    before = len(vendor.received)
    response = await send(
        fuzzed.port,
        f"POST {path} HTTP/1.1\nHost: www.example.com\n{lines}Connection: close\n",
        data,
    )
    tally.add("inputs fuzzed")
    acceptable(response, vendor)
    contained(fuzzed, vendor, net, mark)
    if len(vendor.received) > before:
        check_body_kept(path, body, encoding, vendor.received[before])


def check_body_kept(path: str, body: bytes, encoding: str, sent: Received) -> None:
    """Bodies pass byte-exact, except where a rule places the visitor's address."""
    if path in ("/fz/e", "/um/api/send") and body:
        member = ("ctx", "ip") if path == "/fz/e" else ("payload", "ip")
        if encoding in ("", "identity"):
            data = json.loads(sent.body)
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict) and isinstance(item.get(member[0]), dict):
                    assert item[member[0]][member[1]] == "127.0.0.1"
        return
    assert sent.body == body


# --- what vendors send back -------------------------------------------------------

JS: Final = [("Content-Type", "application/javascript")]
STATUSES: Final = [200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401]
reply_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Location",
                "Set-Cookie",
                "Content-Type",
                "Content-Encoding",
                "Vary",
                "Access-Control-Allow-Origin",
                "Cache-Control",
                "ETag",
                "Connection",
                "X-Vendor",
            ]
        ),
        st.text(alphabet=URL_CHARS + " ", max_size=60),
    ),
    max_size=5,
)


@FUZZ
@given(
    # A vendor's own 500 is passed on like its other statuses; leaving it out
    # keeps any 500 seen here one of ours.
    status=st.one_of(st.sampled_from(STATUSES), st.integers(200, 599)).filter(
        lambda s: s != 500
    ),
    extra=reply_headers,
    body=st.binary(max_size=300),
    path=st.sampled_from(["/ph/e/", "/mt/matomo.js", "/fz/tag.js", "/fz/e"]),
)
async def test_fuzz_vendor_answers(
    fuzzed: Running,
    vendor: FakeVendor,
    net: NetGuard,
    status: int,
    extra: list[tuple[str, str]],
    body: bytes,
    path: str,
) -> None:
    reply = Reply(status, body, [(n, v.strip()) for n, v in extra])
    for host, upstream in [
        ("us.i.posthog.com", "/e/"),
        ("matomo.example.net", "/matomo.js"),
        ("collect.fuzz-test.example", "/tag.js"),
        ("collect.fuzz-test.example", "/e"),
    ]:
        vendor.reply(host, upstream, reply)
    fuzzed.proxy.services.scripts.cache.clear()
    mark = net.mark()
    response = await send(
        fuzzed.port,
        f"GET {path} HTTP/1.1\nHost: www.example.com\nOrigin: https://app.example.org\n"
        "Accept-Encoding: gzip, br\nConnection: close\n",
    )
    tally.add("inputs fuzzed")
    assert response.status != 500, response.body[:300]
    assert response.status in (status, 502, 504)
    assert len(response.all("Access-Control-Allow-Origin")) <= 1
    contained(fuzzed, vendor, net, mark)


# --- rule files ---------------------------------------------------------------------

BARE_KEY: Final = string.ascii_letters + string.digits + "_-"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return (
        "{"
        + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        + "}"
    )


def toml_key(key: str) -> str:
    return key if key and all(c in BARE_KEY for c in key) else json.dumps(key)


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


RULE_KEYS: Final = [
    "vendor", "name", "mount", "hosts", "scripts", "relays", "rewrites", "request",
    "response", "shim", "keep_literals", "host", "path", "label", "bare", "scheme",
    "paths", "cache", "ttl", "query", "cache_control", "methods", "max_body",
    "timeout", "connect_timeout", "tag_id", "segment", "json", "envelope", "projects",
    "guard", "contains", "min_size", "min_rewrites", "stale_while_revalidate",
    "stale_if_error", "headers", "drop_headers", "set_headers", "cookies",
    "drop_query", "set_query", "rename_query", "client_ip", "header", "json_body",
    "geo_headers", "find", "pattern", "replace",
]  # fmt: skip
scalars = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["/x", "*.a.example", "a.example", "10s", "5MiB", "[", "(?P<", "**"]
    ),
    st.integers(-5, 10**7),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
rule_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(RULE_KEYS), inner, max_size=5)
    ),
    max_leaves=15,
)
BUNDLED: Final = sorted(BUNDLED_RULES.glob("*.toml"))


def mutate(data: Any, path: list[int], value: Any) -> Any:
    """Replace (or delete, for None) one node of a parsed rule, chosen by `path`."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = keys[path[0] % len(keys)]
    copy: Any = dict(data) if isinstance(data, dict) else list(data)
    replaced = mutate(copy[key], path[1:], value)
    if replaced is None:
        del copy[key]
    else:
        copy[key] = replaced
    return copy


@FUZZ
@given(
    source=st.sampled_from(BUNDLED),
    path=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    value=st.one_of(st.none(), rule_values),
)
def test_fuzz_mutated_rules(
    tmp_path: Path, source: Path, path: list[int], value: Any
) -> None:
    import tomllib

    data = mutate(tomllib.loads(source.read_text()), path, value)
    if not isinstance(data, dict):
        return
    load_or_reject(tmp_path / source.name, toml_document(data))


@FUZZ
@given(data=st.dictionaries(st.sampled_from(RULE_KEYS), rule_values, max_size=8))
def test_fuzz_generated_rules(tmp_path: Path, data: dict[str, Any]) -> None:
    load_or_reject(tmp_path / "generated.toml", toml_document(data))


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzz_rule_text(tmp_path: Path, text: str) -> None:
    load_or_reject(tmp_path / "text.toml", text)


def load_or_reject(path: Path, text: str) -> None:
    """Loading works all the way to a router and rewriter, or is a RuleError."""
    path.write_text(text, encoding="utf-8")
    tally.add("inputs fuzzed")
    rejected: RuleError | None = None
    try:
        rule = load_rule(path)
    except RuleError as exc:
        rejected = exc
    if rejected is not None:
        assert rejected.source == path
        assert rejected.key
        return
    rules = build_rule_set([rule])
    Router(rules)
    build_rewriter(rules, parse_public_url(PUBLIC), rule)
