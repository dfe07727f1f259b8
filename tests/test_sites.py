"""Several sites on one tagproxy, chosen by Host, from a sites file."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.reload import describe
from proxy.rules import load_rules
from proxy.rules.loader import RuleError
from proxy.sites import load_sites

from .conftest import BUNDLED_RULES, Running, StartProxy
from .fakes import FakeVendor, Reply

SITES = """
default = "shop"

[[sites]]
name = "shop"
hosts = ["metrics.shop.example", "www.shop.example"]
public_url = "https://metrics.shop.example"
cookie_domain = "shop.example"
allowed_origins = ["https://www.shop.example"]

[sites.tag_ids]
google = ["G-SHOP1"]

[[sites]]
name = "blog"
hosts = ["stats.blog.example:8443"]
public_url = "https://stats.blog.example/t"
cookie_domain = "blog.example"
vendors = ["plausible"]

[sites.tag_ids]
plausible = ["blog.example"]
"""

SCRIPT = b'var u="https://plausible.io/api/event";'
JS = [("Content-Type", "application/javascript")]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(text)
    return path


async def get(proxy: Running, path: str, host: str) -> tuple[int, bytes]:
    async with proxy.client.get(f"{proxy.url}{path}", headers={"Host": host}) as r:
        return r.status, await r.read()


async def test_host_picks_public_url_cookie_domain_and_vendors(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply("plausible.io", "/js/script.js", Reply(200, SCRIPT, JS))
    cookie = [("Set-Cookie", "_pk_id.1.1=a; Domain=matomo.example.net; Path=/")]
    vendor.reply("matomo.example.net", "/matomo.php", Reply(200, b"", cookie))
    proxy = await start_proxy(sites=str(write(tmp_path, SITES)))

    status, shop = await get(proxy, "/pa/js/script.js", "www.shop.example")
    assert status == 200
    assert b'"https://metrics.shop.example/pa/api/event"' in shop
    status, blog = await get(proxy, "/pa/js/script.js", "stats.blog.example:8443")
    assert status == 200
    assert b'"https://stats.blog.example/t/pa/api/event"' in blog
    # Each site's script is its own cache entry: two upstream fetches.
    assert len(vendor.to("plausible.io")) == 2

    for host, domain in [
        ("metrics.shop.example", "shop.example"),
        ("stats.blog.example:8443", None),
    ]:
        async with proxy.client.get(
            f"{proxy.url}/mt/matomo.php?idsite=1", headers={"Host": host}
        ) as response:
            if domain is None:  # Matomo is not among the blog's vendors
                assert response.status == 404
                continue
            assert response.status == 200
            assert response.headers.getall("Set-Cookie") == [
                f"_pk_id.1.1=a; Domain={domain}; Path=/"
            ]
    assert len(vendor.to("matomo.example.net")) == 1

    # PostHog is not among the blog's vendors either: nothing sent upstream.
    sent = len(vendor.received)
    status, _ = await get(proxy, "/ph/static/array.js", "stats.blog.example:8443")
    assert status == 404
    assert len(vendor.received) == sent


async def test_cors_origins_are_per_site(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = await start_proxy(sites=str(write(tmp_path, SITES)))
    preflight = {
        "Origin": "https://www.shop.example",
        "Access-Control-Request-Method": "POST",
    }
    for host, allowed in [
        ("metrics.shop.example", True),
        ("stats.blog.example:8443", False),
    ]:
        async with proxy.client.options(
            f"{proxy.url}/pa/api/event", headers={**preflight, "Host": host}
        ) as response:
            assert response.status == 204
            origin = response.headers.get("Access-Control-Allow-Origin")
            assert (origin == "https://www.shop.example") is allowed
    assert vendor.received == []


async def test_unknown_host_gets_404_without_upstream_contact(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    no_default = SITES.replace('default = "shop"', "")
    proxy = await start_proxy(sites=str(write(tmp_path, no_default)))
    status, body = await get(proxy, "/pa/js/script.js", "evil.example")
    assert status == 404
    assert b"no site" in body
    assert vendor.received == []


async def test_unknown_host_served_by_default_site(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    vendor.reply("plausible.io", "/js/script.js", Reply(200, SCRIPT, JS))
    proxy = await start_proxy(sites=str(write(tmp_path, SITES)))
    status, body = await get(proxy, "/pa/js/script.js", "other.example")
    assert status == 200
    assert b'"https://metrics.shop.example/pa/api/event"' in body


async def test_without_sites_file_one_site_from_flags(
    vendor: FakeVendor, start_proxy: StartProxy
) -> None:
    vendor.reply("plausible.io", "/js/script.js", Reply(200, SCRIPT, JS))
    proxy = await start_proxy(public_url="https://m.flags.example")
    status, body = await get(proxy, "/pa/js/script.js", "anything.example")
    assert status == 200
    assert b'"https://m.flags.example/pa/api/event"' in body


async def test_each_site_serves_only_its_tag_ids(
    vendor: FakeVendor, start_proxy: StartProxy, tmp_path: Path
) -> None:
    gtag = [("Content-Type", "application/javascript")]
    vendor.reply("www.googletagmanager.com", "/gtag/js", Reply(200, b"var a;", gtag))
    proxy = await start_proxy(sites=str(write(tmp_path, SITES)))

    status, _ = await get(proxy, "/gt/gtag/js?id=G-OTHER", "www.shop.example")
    assert status == 403
    assert vendor.received == []
    status, _ = await get(proxy, "/gt/gtag/js?id=G-SHOP1", "www.shop.example")
    assert status == 200
    assert vendor.received[0].query == "id=G-SHOP1"


def test_tag_ids_reach_the_site_config(tmp_path: Path) -> None:
    sites = load_sites(write(tmp_path, SITES), load_rules([BUNDLED_RULES]))
    blog = sites.for_host("STATS.blog.example:8443")
    assert blog is not None
    assert blog.name == "blog"
    assert blog.tag_ids == {"plausible": frozenset({"blog.example"})}
    assert blog.enables("plausible")
    assert not blog.enables("google")
    shop = sites.for_host("www.shop.example:443")
    assert shop is not None
    assert shop.name == "shop"
    assert shop.vendors is None


# Each bad sites file names the key, the value and the reason.
@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[[sites]]\nhosts = []\n", "sites[0].hosts", "list the Host names"),
        ('[[sites]]\nhosts = ["a b"]\n', "sites[0].hosts", "must be a host name"),
        (
            '[[sites]]\nhosts = ["a.example"]\nvendors = ["nope"]\n',
            "sites[0].vendors",
            "no loaded rule has it",
        ),
        (
            '[[sites]]\nhosts = ["a.example"]\npublic_url = "ftp://x"\n',
            "sites[0].public_url",
            "http(s) URL",
        ),
        (
            '[[sites]]\nhosts = ["a.example"]\nallowed_origins = ["x"]\n',
            "sites[0].allowed_origins",
            "expected an origin",
        ),
        (
            '[[sites]]\nhosts = ["a.example"]\nvendors = ["google"]\n'
            '[sites.tag_ids]\nplausible = ["x"]\n',
            "sites[0].tag_ids.plausible",
            "not in this site's vendors",
        ),
        (
            '[[sites]]\nhosts = ["a.example"]\n[sites.tag_ids]\ngoogle = ["G 1"]\n',
            "sites[0].tag_ids.google",
            "not a tag ID",
        ),
        (
            '[[sites]]\nhosts = ["a.example"]\n[[sites]]\nhosts = ["a.example"]\n',
            "sites[1].hosts",
            "also listed by site",
        ),
        ('default = "x"\n[[sites]]\nhosts = ["a.example"]\n', "default", "no site"),
        (
            '[[sites]]\nhosts = ["a.example"]\n[sites.tag_ids]\nmixpanel = ["x"]\n',
            "sites[0].tag_ids.mixpanel",
            "says nowhere where tag IDs appear",
        ),
        ('[[sites]]\nhosts = ["a.example"]\nhost = "b"\n', "sites[0].host", "unknown"),
        ("", "sites", "at least one"),
    ],
)
def test_bad_sites_file_names_key_value_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RuleError) as caught:
        load_sites(path, load_rules([BUNDLED_RULES]))
    assert caught.value.source == path
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_check_command_validates_a_sites_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, SITES)
    assert main(["check", str(BUNDLED_RULES), "--sites", str(good)]) == 0
    assert f"ok: {good} (2 sites)" in capsys.readouterr().out

    good.write_text(SITES.replace('vendors = ["plausible"]', 'vendors = ["nope"]'))
    assert main(["check", str(BUNDLED_RULES), "--sites", str(good)]) == 1
    err = capsys.readouterr().err
    assert "sites[1].vendors = 'nope': no loaded rule has it" in err


def test_admin_config_describes_the_sites(tmp_path: Path) -> None:
    rules = load_rules([BUNDLED_RULES])
    serving = describe(rules, load_sites(write(tmp_path, SITES), rules))
    assert serving["default_site"] == "shop"
    sites = serving["sites"]
    assert isinstance(sites, list)
    assert sites[1] == {
        "name": "blog",
        "hosts": ["stats.blog.example:8443"],
        "public_url": "https://stats.blog.example/t",
        "cookie_domain": "blog.example",
        "vendors": ["plausible"],
        "tag_ids": {"plausible": ["blog.example"]},
    }
