"""Privacy controls against the fake vendor: what it received, and what not.

Conventions as in the field cases: site https://www.example.com, cookie
domain example.com, visitor 203.0.113.7 (IPv6 2001:db8:abcd:12::7) behind
the trusted proxy 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from .conftest import BUNDLED_RULES, StartProxy
from .durable_support import DurableProxy, eventually
from .fakes import FakeVendor, Received, Reply, raw_request

PUBLIC = "https://www.example.com"
META_RULE = BUNDLED_RULES / "meta.toml"
TRUSTED = ["127.0.0.1/32"]
VISITOR = "203.0.113.7"
VISITOR6 = "2001:db8:abcd:12::7"

# OneTrust writes its groups URL-encoded: C0002 performance, C0004 targeting.
ONETRUST_ALL = (
    "OptanonConsent=isGpcEnabled=0&datestamp=Mon+Jan+01+2024&version=202401.1.0"
    "&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A1%2CC0004%3A1"
)
ONETRUST_NONE = ONETRUST_ALL.replace("%3A1%2CC0002%3A1", "%3A1%2CC0002%3A0").replace(
    "C0004%3A1", "C0004%3A0"
)
ONETRUST_ANALYTICS = ONETRUST_ALL.replace("C0004%3A1", "C0004%3A0")

GA_HIT = (
    "/gt/ga/www/g/collect?v=2&tid=G-TEST&cid=111.222&sid=333&uid=u-1"
    "&en=page_view&dl=https%3A%2F%2Fwww.example.com%2F"
)
GA_COOKIES = "_ga=GA1.1.111.222; _ga_TEST=GS1.1.333.1; _gid=GA1.1.9; PHPSESSID=s1"

ACME = """
vendor = "acme"
mount = "/ac"

[[hosts]]
host = "collect.acme.example"
path = ""

[[scripts]]
host = "collect.acme.example"
paths = ["/tag.js"]
cache = "none"

[[relays]]
host = "collect.acme.example"
paths = ["/hit"]
methods = ["GET", "POST"]

[request]
cookies = ["acme_id", "v", "w"]
"""


def acme(tmp_path: Path, extra: str, request: str = "") -> list[Path]:
    """A one-vendor rule directory: the ACME rule plus the given sections."""
    text = ACME.replace("[request]\n", f"[request]\n{request}\n") + extra
    (tmp_path / "acme.toml").write_text(text)
    return [tmp_path]


def only(vendor: FakeVendor) -> Received:
    assert len(vendor.received) == 1, vendor.received
    return vendor.received[0]


def query_of(received: Received) -> dict[str, str]:
    return dict(parse_qsl(received.query, keep_blank_values=True))


async def get(port: int, target: str, *headers: str) -> tuple[int, list[str], bytes]:
    lines = "".join(f"{line}\n" for line in headers)
    response = await raw_request(
        port,
        f"GET {target} HTTP/1.1\nHost: www.example.com\n{lines}Connection: close\n",
    )
    return response.status, response.all("Set-Cookie"), response.body


async def post(
    port: int, target: str, body: bytes, *headers: str
) -> tuple[int, list[str], bytes]:
    lines = "".join(f"{line}\n" for line in headers)
    response = await raw_request(
        port,
        f"POST {target} HTTP/1.1\nHost: www.example.com\n{lines}"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )
    return response.status, response.all("Set-Cookie"), response.body


# --- consent -------------------------------------------------------------------


async def test_consent_cookie_missing_drops(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, consent="onetrust")
    status, cookies, body = await get(proxy.port, "/fb/w/tr?id=1&ev=PageView")

    assert vendor.received == []  # nothing left for the vendor
    assert (status, cookies) == (200, [])
    assert body.startswith(b"GIF89a")  # answered as an accepted image pixel


# Each consent manager's cookie, granted and refused, for an analytics hit.
@pytest.mark.parametrize(
    ("preset", "granted", "refused"),
    [
        ("onetrust", ONETRUST_ANALYTICS, ONETRUST_NONE),
        (
            "cookiebot",
            "CookieConsent={stamp:%27x%27%2Cnecessary:true%2Cpreferences:false"
            "%2Cstatistics:true%2Cmarketing:false%2Cmethod:%27explicit%27}",
            "CookieConsent={stamp:%27x%27%2Cnecessary:true%2Cpreferences:false"
            "%2Cstatistics:false%2Cmarketing:false%2Cmethod:%27explicit%27}",
        ),
        ("cookiebot", "CookieConsent=-1", "CookieConsent=0"),
        (
            "cookieyes",
            "cookieyes-consent=consentid:abc,consent:yes,action:yes,necessary:yes,"
            "functional:no,analytics:yes,performance:no,advertisement:no",
            "cookieyes-consent=consentid:abc,consent:no,action:yes,necessary:yes,"
            "functional:no,analytics:no,performance:no,advertisement:no",
        ),
        ("complianz", "cmplz_statistics=allow", "cmplz_statistics=deny"),
    ],
)
async def test_consent_presets(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    preset: str,
    granted: str,
    refused: str,
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, consent=preset)
    assert (await get(proxy.port, GA_HIT, f"Cookie: {refused}"))[0] == 200
    assert vendor.received == []

    status, _, _ = await get(proxy.port, GA_HIT, f"Cookie: {granted}")
    assert status == 204
    assert only(vendor).raw_path == GA_HIT.removeprefix("/gt/ga/www")


async def test_consent_is_per_purpose(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    """Analytics granted, advertising refused: GA passes, the pixel does not."""
    proxy = await start_proxy(public_url=PUBLIC, consent="onetrust")
    cookie = f"Cookie: {ONETRUST_ANALYTICS}"
    await get(proxy.port, GA_HIT, cookie)
    await get(proxy.port, "/gt/dc/g/collect?v=2&tid=G-TEST", cookie)
    await get(proxy.port, "/fb/w/tr?id=1&ev=PageView", cookie)
    assert [r.host for r in vendor.received] == ["www.google-analytics.com"]


# Google consent mode on the hit itself, with no consent cookie configured.
@pytest.mark.parametrize(
    ("consent_params", "sent"),
    [
        ("gcs=G111", True),
        ("gcs=G101", True),  # analytics granted, ads denied
        ("gcs=G110", False),
        ("gcs=G100", False),
        ("gcd=13r3r3r2r5l1", True),  # denied by default, granted by update
        ("gcd=13p3p3p2p5l1", False),
        ("gcd=13l3l3l3l1", True),  # not set: nothing refuses
        ("gcs=G111&gcd=13q3q3q2q5l1", False),  # a denial wins
    ],
)
async def test_google_consent_mode(
    vendor: FakeVendor, start_proxy: StartProxy, consent_params: str, sent: bool
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    await get(proxy.port, f"{GA_HIT}&{consent_params}")
    assert len(vendor.received) == (1 if sent else 0)


async def test_consent_mode_denial_beats_cookie_grant(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, consent="onetrust")
    await get(proxy.port, f"{GA_HIT}&gcs=G100", f"Cookie: {ONETRUST_ALL}")
    assert vendor.received == []


async def test_drop_answers_post_and_cors(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, consent="onetrust")
    response = await raw_request(
        proxy.port,
        "POST /sg/api/v1/t HTTP/1.1\nHost: www.example.com\n"
        "Origin: https://www.example.com\nContent-Type: text/plain\n"
        "Content-Length: 2\nConnection: close\n",
        b"{}",
    )
    assert vendor.received == []
    assert (response.status, response.body) == (204, b"")
    assert response.header("Access-Control-Allow-Origin") == "https://www.example.com"
    assert response.header("Vary") == "Origin"


async def test_drop_answer_from_the_rule(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "analytics"\n\n[privacy.answer]\n'
        'status = 202\nbody = "ok"\ncontent_type = "text/plain"\n',
    )
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, consent="complianz"
    )
    status, _, body = await post(proxy.port, "/ac/hit", b"{}")
    assert (status, body, vendor.received) == (202, b"ok", [])


# --- GPC and DNT ---------------------------------------------------------------


async def test_gpc_strips_google_identifiers(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply(
        "www.google-analytics.com",
        "/g/collect",
        Reply(204, headers=[("Set-Cookie", "FPID=x; Path=/; HttpOnly")]),
    )
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    status, cookies, _ = await get(
        proxy.port,
        GA_HIT,
        "Sec-GPC: 1",
        f"Cookie: {GA_COOKIES}",
        f"X-Forwarded-For: {VISITOR}",
    )
    assert (status, cookies) == (204, [])  # no vendor cookie, none re-issued

    received = only(vendor)
    assert received.query == (
        "v=2&tid=G-TEST&en=page_view&dl=https%3A%2F%2Fwww.example.com%2F"
    )
    assert received.all("Cookie") == []
    assert received.all("X-Forwarded-For") == ["203.0.113.0"]
    assert received.all("Sec-GPC") == ["1"]  # the signal itself still passes


async def test_without_gpc_google_hit_passes_whole(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, trusted_proxies=TRUSTED)
    await get(
        proxy.port, GA_HIT, f"Cookie: {GA_COOKIES}", f"X-Forwarded-For: {VISITOR}"
    )

    received = only(vendor)
    assert received.raw_path == GA_HIT.removeprefix("/gt/ga/www")
    assert received.all("Cookie") == ["_ga=GA1.1.111.222; _ga_TEST=GS1.1.333.1"]
    assert received.all("X-Forwarded-For") == [VISITOR]


# GPC by purpose: advertising drops, self-hosted Matomo passes.
@pytest.mark.parametrize(
    ("target", "sent"),
    [("/fb/w/tr?id=1&ev=PageView", False), ("/mt/matomo.php?idsite=1&rec=1", True)],
)
async def test_gpc_by_vendor(
    vendor: FakeVendor, start_proxy: StartProxy, target: str, sent: bool
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    await get(proxy.port, target, "Sec-GPC: 1")
    assert len(vendor.received) == (1 if sent else 0)


async def test_dnt_action(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(tmp_path, '[privacy]\npurpose = "analytics"\ndnt = "drop"\n')
    proxy = await start_proxy(rules, rule_vars=(), public_url=PUBLIC)
    await get(proxy.port, "/ac/hit?e=1", "DNT: 0")
    await get(proxy.port, "/ac/hit?e=2", "DNT: 1")
    assert [r.query for r in vendor.received] == ["e=1"]


# --- visitor IP ----------------------------------------------------------------

IP_WAYS = (
    '{ header = "X-Forwarded-For" }, { query = "uip" }, { json_body = "client.ip" }'
)


# Truncation reaches every way the rule passes the address.
@pytest.mark.parametrize(
    ("visitor", "truncated"),
    [(VISITOR, "203.0.113.0"), (VISITOR6, "2001:db8:abcd::")],
)
async def test_ip_truncated_in_header_parameter_and_body(
    vendor: FakeVendor,
    start_proxy: StartProxy,
    tmp_path: Path,
    visitor: str,
    truncated: str,
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\nip = "truncate"\n',
        request=f"client_ip = [{IP_WAYS}]",
    )
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, trusted_proxies=TRUSTED
    )
    body = b'{"client":{"ip":"192.0.2.66"},"e":"x"}'
    await post(
        proxy.port,
        "/ac/hit?uip=192.0.2.66&a=1",
        body,
        f"X-Forwarded-For: {visitor}",
        "Content-Type: application/json",
    )

    received = only(vendor)
    assert received.all("X-Forwarded-For") == [truncated]
    assert received.query == f"a=1&uip={truncated.replace(':', '%3A')}"
    assert json.loads(received.body) == {"client": {"ip": truncated}, "e": "x"}
    everything = received.raw_path + str(received.headers) + received.body.decode()
    assert visitor not in everything
    assert "192.0.2.66" not in everything


async def test_ip_withheld_everywhere(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\nip = "withhold"\n',
        request=f"client_ip = [{IP_WAYS}]",
    )
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, trusted_proxies=TRUSTED
    )
    await post(
        proxy.port,
        "/ac/hit?uip=192.0.2.66&a=1",
        b'{"client":{"ip":"192.0.2.66"}}',
        f"X-Forwarded-For: {VISITOR}",
        "Content-Type: application/json",
    )

    received = only(vendor)
    assert received.all("X-Forwarded-For") == []
    assert received.query == "a=1"  # the visitor's own uip does not survive
    assert json.loads(received.body) == {"client": {"ip": None}}


async def test_ip_truncated_for_script_fetches(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply(
        "collect.acme.example",
        "/tag.js",
        Reply(200, b"var a=1;", [("Content-Type", "application/javascript")]),
    )
    rules = acme(tmp_path, '[privacy]\npurpose = "none"\nip = "truncate"\n')
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, trusted_proxies=TRUSTED
    )
    await get(proxy.port, "/ac/tag.js", f"X-Forwarded-For: {VISITOR}")
    assert only(vendor).all("X-Forwarded-For") == ["203.0.113.0"]


# --- scrubbing -----------------------------------------------------------------


async def test_email_in_dl_redacted(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    dl = (
        "https%3A%2F%2Fwww.example.com%2Fthanks"
        "%3Femail%3Djane.doe%2540example.com%26plan%3Dpro"
    )
    dr = (
        "https%3A%2F%2Fwww.example.com%2Fu%2Fjane%40example.com%2Fcall"
        "%3Fphone%3D%252B41%252044%2520668%252018%252000"
    )
    await get(proxy.port, f"/gt/ga/www/g/collect?v=2&tid=G-TEST&dl={dl}&dr={dr}&en=x")

    received = only(vendor)
    pieces = received.query.split("&")
    assert pieces[:2] == ["v=2", "tid=G-TEST"]
    assert pieces[-1] == "en=x"
    params = query_of(received)
    assert params["dl"] == "https://www.example.com/thanks?email=(redacted)&plan=pro"
    assert params["dr"] == "https://www.example.com/u/(redacted)/call?phone=(redacted)"
    assert "jane" not in received.query


async def test_urls_without_personal_data_stay_byte_exact(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    query = "v=2&tid=G-TEST&dl=https%3A%2F%2Fwww.example.com%2F%3Forder%3D12345678&en=x"
    await get(proxy.port, f"/gt/ga/www/g/collect?{query}")
    assert only(vendor).query == query


async def test_query_drop_and_replace(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\n\n[privacy.query]\n'
        'drop = ["secret", "ud[*]"]\nreplace = { tier = "hidden value" }\n',
    )
    proxy = await start_proxy(rules, rule_vars=(), public_url=PUBLIC)
    await get(proxy.port, "/ac/hit?a=1&secret=x&ud%5Bem%5D=h&tier=gold&b=%2F&a=2")
    assert only(vendor).query == "a=1&tier=hidden+value&b=%2F&a=2"


async def test_json_body_scrubbed(vendor: FakeVendor, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    event = {
        "n": "pageview",
        "u": "https://www.example.com/thanks?email=jane%40example.com",
        "d": "example.com",
        "r": None,
    }
    await post(
        proxy.port,
        "/pa/api/event",
        json.dumps(event).encode(),
        "Content-Type: text/plain",
    )
    sent = json.loads(only(vendor).body)
    assert sent == event | {"u": "https://www.example.com/thanks?email=(redacted)"}


# Bodies scrubbing cannot or need not read pass as sent.
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (
            b'{"n":"pageview","u":"https://www.example.com/"}',
            ["Content-Type: text/plain"],
        ),
        (b"not json at all", ["Content-Type: text/plain"]),
        (
            gzip.compress(b'{"u":"https://x.example/?e=jane@example.com"}', mtime=0),
            ["Content-Type: text/plain", "Content-Encoding: gzip"],
        ),
        (b'{"u":"https://x.example/?e=jane@example.com"}', ["Content-Type: image/png"]),
    ],
)
async def test_bodies_pass_byte_exact(
    vendor: FakeVendor, start_proxy: StartProxy, body: bytes, headers: list[str]
) -> None:
    proxy = await start_proxy(public_url=PUBLIC)
    await post(proxy.port, "/pa/api/event", body, *headers)
    assert only(vendor).body == body


async def test_json_paths_drop_and_replace_in_batches(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\n\n[privacy.body]\nformat = "json"\n'
        'drop = ["batch.user.email", "batch.traits.*"]\n'
        'replace = { "batch.user.id" = "anonymous" }\n',
    )
    proxy = await start_proxy(rules, rule_vars=(), public_url=PUBLIC)
    batch = {
        "batch": [
            {"user": {"id": "u1", "email": "a@b.example"}, "traits": {"x": 1}, "e": 1},
            {"user": {"id": "u2"}, "e": 2},
        ],
        "sent_at": "now",
    }
    await post(
        proxy.port,
        "/ac/hit",
        json.dumps(batch).encode(),
        "Content-Type: application/json",
    )
    assert json.loads(only(vendor).body) == {
        "batch": [
            {"user": {"id": "anonymous"}, "traits": {}, "e": 1},
            {"user": {"id": "anonymous"}, "e": 2},
        ],
        "sent_at": "now",
    }


async def test_form_lines_body_scrubbed(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\n\n[privacy.body]\nformat = "form-lines"\n'
        'drop = ["uid"]\nurls = ["dl"]\n',
    )
    proxy = await start_proxy(rules, rule_vars=(), public_url=PUBLIC)
    body = (
        b"en=a&uid=42&x=%C3%A9\n"
        b"en=b&dl=https%3A%2F%2Fx.example%2F%3Fm%3Djane%2540example.com\n"
        b"en=c&bin=\xff\xfe"
    )
    await post(proxy.port, "/ac/hit", body, "Content-Type: text/plain")
    assert only(vendor).body == (
        b"en=a&x=%C3%A9\n"
        b"en=b&dl=https%3A%2F%2Fx.example%2F%3Fm%3D%28redacted%29\n"
        b"en=c&bin=\xff\xfe"
    )


# --- strip without consent (Matomo: cookieless tracking) -------------------------

MATOMO_COOKIES = "Cookie: _pk_id.1.1fff=abc.123; _pk_ses.1.1fff=1; mtm_consent=1"


async def test_matomo_stripped_without_consent(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        public_url=PUBLIC, consent="onetrust", trusted_proxies=TRUSTED
    )
    await get(
        proxy.port,
        "/mt/matomo.php?idsite=1&rec=1&_id=abc123&uid=jane&_idvc=4&action_name=Home",
        MATOMO_COOKIES,
        f"X-Forwarded-For: {VISITOR}",
    )
    await post(
        proxy.port,
        "/mt/matomo.php",
        b"idsite=1&rec=1&_id=abc123&url=https%3A%2F%2Fwww.example.com%2F",
        "Content-Type: application/x-www-form-urlencoded",
    )
    # A bulk request is JSON that strip cannot edit field by field: not sent.
    await post(
        proxy.port,
        "/mt/matomo.php",
        b'{"requests":["?idsite=1&rec=1&_id=abc123"]}',
        "Content-Type: application/json",
    )

    first, second = vendor.received
    assert first.query == "idsite=1&rec=1&action_name=Home"
    assert first.all("Cookie") == ["mtm_consent=1"]
    assert first.all("X-Forwarded-For") == ["203.0.113.0"]
    assert second.body == b"idsite=1&rec=1&url=https%3A%2F%2Fwww.example.com%2F"


async def test_matomo_with_consent_keeps_ids(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url=PUBLIC, consent="onetrust")
    target = "/mt/matomo.php?idsite=1&rec=1&_id=abc123"
    await get(proxy.port, target, f"{MATOMO_COOKIES}; {ONETRUST_ANALYTICS}")
    received = only(vendor)
    assert received.query == "idsite=1&rec=1&_id=abc123"
    assert received.all("Cookie") == [
        "_pk_id.1.1fff=abc.123; _pk_ses.1.1fff=1; mtm_consent=1"
    ]


async def test_meta_form_body_stripped(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    strip_on_gpc = 'purpose = "ads"\ngpc = "strip"'
    text = META_RULE.read_text().replace('purpose = "ads"', strip_on_gpc)
    (tmp_path / "meta.toml").write_text(text)
    proxy = await start_proxy([tmp_path], rule_vars=(), public_url=PUBLIC)
    body = (
        b"id=1&ev=Lead&fbp=fb.1.2.3&ud%5Bem%5D=abc&dl=https%3A%2F%2Fwww.example.com%2F"
    )
    await post(
        proxy.port,
        "/fb/w/tr",
        body,
        "Content-Type: application/x-www-form-urlencoded",
        "Sec-GPC: 1",
    )
    assert only(vendor).body == b"id=1&ev=Lead&dl=https%3A%2F%2Fwww.example.com%2F"


# --- cookies -------------------------------------------------------------------


def set_cookie(values: list[str], name: str) -> dict[str, str]:
    """One Set-Cookie by name, as attribute -> value (flags map to "")."""
    [value] = [v for v in values if v.startswith(f"{name}=")]
    first, *attributes = [part.strip() for part in value.split(";")]
    out = {"": first}
    for attribute in attributes:
        key, _, item = attribute.partition("=")
        out[key.lower()] = item
    return out


def expires_in(attributes: dict[str, str]) -> float:
    return parsedate_to_datetime(attributes["expires"]).timestamp() - time.time()


async def test_reissued_ga_with_the_rules_lifetime_only_with_consent(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        public_url=PUBLIC, consent="onetrust", cookie_domain="example.com"
    )
    cookie = f"Cookie: {GA_COOKIES}; {ONETRUST_ANALYTICS}"
    status, cookies, _ = await get(proxy.port, GA_HIT, cookie)
    assert status == 204

    ga = set_cookie(cookies, "_ga")
    assert ga[""] == "_ga=GA1.1.111.222"
    assert ga["max-age"] == str(400 * 86400)
    assert 400 * 86400 - 60 < expires_in(ga) <= 400 * 86400
    assert (ga["domain"], ga["path"], ga["samesite"]) == ("example.com", "/", "Lax")
    assert "secure" in ga
    assert "httponly" not in ga
    assert set_cookie(cookies, "_ga_TEST")[""] == "_ga_TEST=GS1.1.333.1"
    # Never a cookie the rule does not name.
    assert sorted(c.partition("=")[0] for c in cookies) == ["_ga", "_ga_TEST"]

    # Refused (or missing) consent: the hit is dropped and nothing re-issued.
    for refusal in (ONETRUST_NONE, "x=1"):
        status, cookies, _ = await get(
            proxy.port, GA_HIT, f"Cookie: {GA_COOKIES}; {refusal}"
        )
        assert (status, cookies) == (200, [])
    assert len(vendor.received) == 1


async def test_no_reissue_without_a_consent_signal(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    """No consent settings and no consent mode: the hit passes, no cookie is set."""
    proxy = await start_proxy(public_url=PUBLIC)
    _, cookies, _ = await get(proxy.port, GA_HIT, f"Cookie: {GA_COOKIES}")
    assert cookies == []
    assert len(vendor.received) == 1

    # The page's own consent mode grant is a positive signal.
    _, cookies, _ = await get(proxy.port, f"{GA_HIT}&gcs=G111", f"Cookie: {GA_COOKIES}")
    assert sorted(c.partition("=")[0] for c in cookies) == ["_ga", "_ga_TEST"]


async def test_meta_cookies_reissued_for_90_days(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(public_url="http://www.example.com", consent="onetrust")
    cookie = f"Cookie: _fbp=fb.1.1700000000000.123; _gcl_au=1.1.2; {ONETRUST_ALL}"
    _, cookies, _ = await get(proxy.port, "/fb/w/tr?id=1&ev=PageView", cookie)
    fbp = set_cookie(cookies, "_fbp")
    assert fbp["max-age"] == str(90 * 86400)
    assert "secure" not in fbp
    assert "domain" not in fbp
    assert len(cookies) == 1


VISITOR_ID = '\n[privacy.visitor_id]\ncookie = "acme_id"\nmax_age = "30d"\n'


async def test_visitor_id_cookie_issued_forwarded_and_kept(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(tmp_path, '[privacy]\npurpose = "analytics"\n' + VISITOR_ID)
    proxy = await start_proxy(
        rules,
        rule_vars=(),
        public_url=PUBLIC,
        consent="complianz",
        cookie_domain="example.com",
    )
    _, cookies, _ = await get(proxy.port, "/ac/hit", "Cookie: cmplz_statistics=allow")
    issued = set_cookie(cookies, "acme_id")
    visitor_id = issued[""].partition("=")[2]
    assert len(visitor_id) == 24
    assert "httponly" in issued
    assert "secure" in issued
    assert issued["max-age"] == str(30 * 86400)
    assert issued["domain"] == "example.com"
    assert vendor.received[0].all("Cookie") == [f"acme_id={visitor_id}"]

    cookie = f"Cookie: cmplz_statistics=allow; acme_id={visitor_id}"
    _, cookies, _ = await get(proxy.port, "/ac/hit", cookie)
    assert set_cookie(cookies, "acme_id")[""] == f"acme_id={visitor_id}"
    assert vendor.received[1].all("Cookie") == [f"acme_id={visitor_id}"]


async def test_visitor_id_removed_when_consent_is_refused(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(tmp_path, '[privacy]\npurpose = "analytics"\n' + VISITOR_ID)
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, consent="complianz"
    )
    cookie = "Cookie: cmplz_statistics=deny; acme_id=abcdefghijklmnopqrstuvwx"
    status, cookies, _ = await get(proxy.port, "/ac/hit", cookie)
    assert (status, vendor.received) == (200, [])
    expired = set_cookie(cookies, "acme_id")
    assert (expired[""], expired["max-age"]) == ("acme_id=", "0")

    # No consent signal at all: no cookie set, none removed.
    _, cookies, _ = await get(proxy.port, "/ac/hit", "Cookie: other=1")
    assert cookies == []


async def test_set_cookie_policy(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply(
        "collect.acme.example",
        "/hit",
        Reply(
            204,
            headers=[
                (
                    "Set-Cookie",
                    "v=1; Domain=collect.acme.example; Path=/x; Max-Age=99999999; "
                    "SameSite=None; Secure",
                ),
                ("Set-Cookie", "w=2; Expires=Fri, 01 Jan 2100 00:00:00 GMT"),
                ("Set-Cookie", "w=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
        ),
    )
    rules = acme(
        tmp_path,
        '[privacy]\npurpose = "none"\n\n[privacy.cookies]\ndomain = "host"\n'
        'path = "/"\nsame_site = "strict"\nhttp_only = true\nmax_age = "30d"\n',
    )
    proxy = await start_proxy(
        rules, rule_vars=(), public_url=PUBLIC, cookie_domain="example.com"
    )
    _, cookies, _ = await get(proxy.port, "/ac/hit")

    assert (
        cookies[0] == "v=1; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Strict"
    )
    w = set_cookie(cookies[1:2], "w")
    assert 30 * 86400 - 60 < expires_in(w) <= 30 * 86400
    assert (w["path"], w["samesite"], "httponly" in w) == ("/", "Strict", True)
    assert cookies[2].startswith("w=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT")


# --- the hot path ----------------------------------------------------------------


async def test_rule_without_privacy_work_has_no_plan(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    rules = acme(tmp_path, '[privacy]\npurpose = "none"\n')
    proxy = await start_proxy(rules, rule_vars=(), public_url=PUBLIC)
    services = proxy.proxy.services
    rule = services.router.rules.by_vendor["acme"]
    assert services.privacy.plan_for(rule) is None

    await get(proxy.port, "/ac/hit?a=1", "Sec-GPC: 1", "DNT: 1")
    assert only(vendor).query == "a=1"


# --- durable delivery --------------------------------------------------------------


async def test_privacy_decides_before_the_spool(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    """A dropped beacon never enters the spool; the durable test rule has no
    [privacy] section, so the strictest defaults apply (GPC drops)."""
    running = DurableProxy(vendor.url, tmp_path / "spool.db")
    await running.start()
    try:
        for query, gpc in (("x=1", "1"), ("x=2", "0")):
            response = await raw_request(
                int(running.url.rpartition(":")[2]),
                f"GET /bc/e?{query} HTTP/1.1\nHost: www.example.com\n"
                f"Sec-GPC: {gpc}\nConnection: close\n",
            )
            assert response.status == (200 if gpc == "1" else 202)
        await eventually(lambda: running.stats.delivered == 1, what="delivery")
        assert running.stats.accepted == 1
        assert [r.query for r in vendor.received] == ["x=2"]
    finally:
        await running.stop()


# --- several sites ---------------------------------------------------------------

SITES = """
[[sites]]
name = "shop"
hosts = ["www.shop.example"]
public_url = "https://www.shop.example"
consent = "complianz"

[[sites]]
name = "blog"
hosts = ["www.blog.example"]
public_url = "https://www.blog.example"
"""


async def test_consent_settings_are_per_site(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text(SITES)
    proxy = await start_proxy(sites=str(sites))
    for host in ("www.shop.example", "www.blog.example"):
        await raw_request(
            proxy.port, f"GET {GA_HIT} HTTP/1.1\nHost: {host}\nConnection: close\n"
        )
    # The shop reads Complianz and has no grant; the blog reads no cookie.
    assert len(vendor.received) == 1
