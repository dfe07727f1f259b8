"""Headless Chromium against tagproxy, a fake vendor and a local site origin.

The browser sees three origins, all on 127.0.0.1 through Chromium's host
resolver rules (every host name maps to loopback, so a leaked request can
never leave the machine):

- the site, ``https://www.shop.test:<port>``, serving the pages a test writes;
- tagproxy, ``https://metrics.shop.test:<port>`` (the CNAME shape), started
  in-process with every vendor host overridden to the fake vendor;
- whatever else a script asks for, which the harness records as off-site.

Every request the page makes (including WebSocket handshakes), every page
error, console error and failed request is recorded on :class:`BrowserRun`,
which also offers the assertions the vendor tests share.

Both origins speak TLS with a certificate from a throw-away test CA, as in
production: vendor scripts build "https://" URLs and set Secure cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import trustme
from aiohttp import web
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    WebSocket,
)

from proxy import cli
from proxy.config import build_settings
from proxy.rules import RuleSet, load_rules
from proxy.server import Proxy, ProxyRunner

from ..fakes import FakeVendor, Received, Reply

CHROMIUM: Final = Path("/usr/bin/chromium")
SITE_HOST: Final = "www.shop.test"
PROXY_HOST: Final = "metrics.shop.test"
COOKIE_DOMAIN: Final = "shop.test"
VENDOR_SCRIPTS: Final = Path(__file__).resolve().parent / "vendors"
# The browser connects from loopback and no proxy is trusted, so the TCP
# peer is the visitor: this is the address every vendor must be told.
VISITOR_IP: Final = "127.0.0.1"
USER_AGENT: Final = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 tagproxy-browser-test/1"
)
# Cookies the visitor carries for the whole site; they must never reach a
# vendor, whatever the vendor's allowlist says.
SITE_COOKIES: Final = {"site_session": "SECRET-SESSION", "wp_logged_in_x": "SECRET"}

CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The test CA is not installed in the fresh profile.
    "--ignore-certificate-errors",
    # Every name resolves to loopback: a request the proxy failed to make
    # first-party is recorded here and refused locally, never sent out.
    "--host-resolver-rules=MAP * 127.0.0.1",
)
WAIT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One request the page made, as the browser saw it."""

    method: str
    url: str
    resource_type: str
    body: bytes | None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query


def vendor_script(name: str) -> bytes:
    """A vendor-like test script from tests/browser/vendors/."""
    return (VENDOR_SCRIPTS / name).read_bytes()


def free_socket() -> socket.socket:
    """A listening loopback socket, so a server's port is known before it starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@functools.cache
def _certificate() -> trustme.LeafCert:
    return trustme.CA().issue_cert(SITE_HOST, PROXY_HOST, "*." + COOKIE_DOMAIN)


def tls_context() -> ssl.SSLContext:
    """A server context for the site and tagproxy names, from a test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _certificate().configure_cert(context)
    return context


def cookie_names(received: Received) -> set[str]:
    names: set[str] = set()
    for value in received.all("Cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(value)
        names |= set(parsed)
    return names


def query_of(received: Received) -> dict[str, str]:
    """The beacon's query as a dict (last value wins), for readable asserts."""
    return dict(parse_qsl(received.query, keep_blank_values=True))


@dataclass
class SiteServer:
    """The site origin: serves pages by path and records what it was asked."""

    pages: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = free_socket()
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock, ssl_context=tls_context()).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        html = self.pages.get(request.path)
        if html is None:
            # favicon.ico and the like: answered, so no console error.
            return web.Response(status=204)
        return web.Response(text=html, content_type="text/html")


@dataclass
class TagproxyServer:
    """tagproxy in-process, on a port known before its settings are built."""

    rules: list[Path]
    vendor: FakeVendor
    runner: web.BaseRunner | None = None
    port: int = 0
    loaded: RuleSet | None = None

    @property
    def public_url(self) -> str:
        return f"https://{PROXY_HOST}:{self.port}"

    async def start(self) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        self.loaded = load_rules(self.rules)
        overrides = [
            f"{h.scheme}://{h.host}={self.vendor.url}"
            for r in self.loaded.rules
            for h in r.hosts
        ]
        settings = build_settings(
            rules=[str(p) for p in self.rules],
            listen=f"127.0.0.1:{self.port}",
            public_url=self.public_url,
            cookie_domain=COOKIE_DOMAIN,
            allowed_origins=[],
            trusted_proxies=[],
            client_ip_headers=[],
            overrides=overrides,
            geo_header=None,
            log_format="plain",
            log_level="INFO",
        )
        self.runner = ProxyRunner(Proxy(settings, self.loaded), access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock, ssl_context=tls_context()).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class BrowserRun:
    """One browser session on the site, with what it did and shared assertions."""

    def __init__(
        self,
        context: BrowserContext,
        page: Page,
        vendor: FakeVendor,
        site: SiteServer,
        tagproxy: TagproxyServer,
    ) -> None:
        self.context, self.page, self.vendor = context, page, vendor
        self.site, self.tagproxy = site, tagproxy
        self.requests: list[PageRequest] = []
        self.errors: list[str] = []
        context.on("request", self._on_request)
        context.on("requestfailed", self._on_failed)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._on_console)
        page.on("websocket", self._on_websocket)

    @property
    def site_url(self) -> str:
        return f"https://{SITE_HOST}:{self.site.port}"

    @property
    def proxy_url(self) -> str:
        return self.tagproxy.public_url

    # --- setting up ----------------------------------------------------------

    def serve_vendor(
        self, vendor_url: str, body: bytes, content_type: str = "text/javascript"
    ) -> None:
        """Have the fake vendor answer GET vendor_url (query ignored) with body."""
        parts = urlsplit(vendor_url)
        headers = [("Content-Type", content_type), ("Cache-Control", "max-age=60")]
        self.vendor.reply(parts.hostname or "", parts.path, Reply(200, body, headers))

    def tag_url(self, vendor_url: str) -> str:
        """The first-party URL, exactly as `tagproxy url` prints it."""
        out = io.StringIO()
        args = ["url", "--public-url", self.proxy_url]
        for path in self.tagproxy.rules:
            args += ["--rules", str(path)]
        with contextlib.redirect_stdout(out):
            status = cli.main([*args, vendor_url])
        assert status == 0, f"tagproxy url {vendor_url} exited {status}"
        return out.getvalue().strip()

    async def open(
        self, body_html: str, cookies: Mapping[str, str] | None = None
    ) -> None:
        """Serve a page holding body_html on the site and load it.

        The visitor carries ``SITE_COOKIES`` plus ``cookies`` for the whole
        site (Domain=shop.test), as if set on earlier visits.
        """
        jar = {**SITE_COOKIES, **(cookies or {})}
        await self.context.add_cookies(
            [
                {
                    "name": k,
                    "value": v,
                    "domain": "." + COOKIE_DOMAIN,
                    "path": "/",
                    "secure": True,
                }
                for k, v in jar.items()
            ]
        )
        self.site.pages["/"] = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>shop</title></head><body>{body_html}</body></html>"
        )
        await self.page.goto(self.site_url + "/", wait_until="load")

    async def proxy_get(
        self, path_query: str, method: str = "GET"
    ) -> tuple[int, bytes]:
        """Ask tagproxy directly (not through the page): status and body."""
        url = f"https://127.0.0.1:{self.tagproxy.port}{path_query}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, ssl=False) as response,
        ):
            return response.status, await response.read()

    # --- waiting -------------------------------------------------------------

    async def beacons(
        self, host: str, path: str, count: int = 1, within: float = WAIT_SECONDS
    ) -> list[Received]:
        """Wait until the fake vendor got `count` requests for host+path."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            got = [r for r in self.vendor.to(host) if r.path == path]
            if len(got) >= count:
                return got
            if loop.time() > deadline:
                raise AssertionError(
                    f"fake vendor got {len(got)} of {count} requests for "
                    f"{host}{path}; it got: {self._vendor_summary()}; "
                    f"page errors: {self.errors}; page requests: {self._summary()}"
                )
            await asyncio.sleep(0.05)

    async def beacon(
        self, host: str, path: str, within: float = WAIT_SECONDS
    ) -> Received:
        return (await self.beacons(host, path, 1, within))[0]

    async def settle(self) -> None:
        """Let in-flight requests land before asserting nothing else happened."""
        await self.page.wait_for_load_state("networkidle")

    # --- assertions ----------------------------------------------------------

    def offsite(self) -> list[PageRequest]:
        allowed = {
            (SITE_HOST, self.site.port),
            (PROXY_HOST, self.tagproxy.port),
        }
        return [
            r
            for r in self.requests
            if r.url.startswith(("http:", "https:", "ws:", "wss:"))
            and (r.host, urlsplit(r.url).port) not in allowed
        ]

    def assert_only_first_party(self) -> None:
        """Zero requests to any host other than the site and tagproxy."""
        leaked = self.offsite()
        assert not leaked, "off-site requests: " + ", ".join(
            f"{r.method} {r.url}" for r in leaked
        )

    def assert_no_errors(self, ignore: Iterable[str] = ()) -> None:
        """No page errors, console errors or failed requests (minus `ignore`)."""
        left = [e for e in self.errors if not any(i in e for i in ignore)]
        assert not left, "\n".join(left)

    def assert_visitor(self, received: Received, cookies: Iterable[str] = ()) -> None:
        """The vendor got the visitor's IP and User-Agent, and only `cookies`.

        ``cookies`` are names (or ``prefix*``) the rule lets through; the
        site's own cookies must be absent whatever the list says.
        """
        assert received.all("X-Forwarded-For") == [VISITOR_IP], received.headers
        assert received.all("User-Agent") == [USER_AGENT], received.headers
        patterns = tuple(cookies)
        names = cookie_names(received)
        for name in names:
            assert any(
                name == p or (p.endswith("*") and name.startswith(p[:-1]))
                for p in patterns
            ), f"cookie {name} reached the vendor: {received.all('Cookie')}"
        assert not names & set(SITE_COOKIES)
        assert all("SECRET" not in v for _, v in received.headers)

    # --- recording -----------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        try:
            body = request.post_data_buffer
        except Exception:  # the body of some transports is not exposed
            body = None
        self.requests.append(
            PageRequest(request.method, request.url, request.resource_type, body)
        )

    def _on_failed(self, request: Request) -> None:
        self.errors.append(f"request failed: {request.url} {request.failure}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def _on_websocket(self, ws: WebSocket) -> None:
        self.requests.append(PageRequest("WEBSOCKET", ws.url, "websocket", None))

    def _summary(self) -> str:
        return ", ".join(f"{r.method} {r.url}" for r in self.requests)

    def _vendor_summary(self) -> str:
        return ", ".join(
            f"{r.method} {r.host}{r.raw_path}" for r in self.vendor.received
        )


async def launch(playwright: Playwright, user_data_dir: Path) -> BrowserContext:
    """Debian's Chromium, headless, fresh profile, every host on loopback."""
    return await playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=list(CHROMIUM_ARGS),
        user_agent=USER_AGENT,
        service_workers="block",
    )
