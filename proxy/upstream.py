"""The one way out: a shared client that reaches only vendor hosts of loaded rules.

Every upstream request is built from a rule's host, never from anything the
visitor sent; the resolver refuses vendor names that resolve into loopback,
private, link-local or metadata ranges (DNS rebinding, a hostile zone), unless
the operator named that destination in an override. Redirects are never
followed here: the relay decides what a Location may become.

Requests go through tagproxy's own HTTP/1.1 client (http1.py); WebSockets
through aiohttp. Both connect only to addresses this module resolved.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from . import exchange, http1
from .errors import ConfigError, UpstreamError, UpstreamTimeout
from .headers import HOST, LOCATION
from .rules.model import Timeouts

log = logging.getLogger(__name__)

WebSocket = aiohttp.ClientWebSocketResponse[Literal[False]]

# A floor keeps a zero-TTL zone from costing a look-up per request; one
# second still follows a vendor that moves its addresses.
_MIN_TTL: Final = 1.0
_MAX_TTL: Final = 300.0
_NEGATIVE_TTL: Final = 5.0
_DNS_TIMEOUT: Final = 5.0
_MAX_BASES: Final = 4096
# How long an address that refused a connection is tried after the others.
_FAILED_ADDRESS_TTL: Final = 30.0
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_WS_CLOSE_WAIT: Final = 5.0  # for the vendor's answer to our close frame
_WS_DEFLATE_BITS: Final = 15  # offer permessage-deflate, as browsers do


@dataclass(frozen=True, slots=True)
class Override:
    """Send a vendor origin's traffic to another base URL, keeping its Host."""

    scheme: str
    host_pattern: str  # "www.googletagmanager.com" or "*.google-analytics.com"
    base: URL

    def matches(self, scheme: str, host: str) -> bool:
        if scheme != self.scheme:
            return False
        if self.host_pattern.startswith("*."):
            return fnmatch.fnmatchcase(host, self.host_pattern)
        return host == self.host_pattern


def parse_override(spec: str) -> Override:
    """`ORIGIN=URL`, e.g. `https://*.google-analytics.com=http://127.0.0.1:9000`."""
    origin, sep, target = spec.partition("=")
    if not sep:
        raise ConfigError(f"--upstream-override {spec!r}: expected ORIGIN=URL")
    scheme, sep, host = origin.strip().partition("://")
    if not sep or scheme not in ("http", "https") or not host or "/" in host:
        raise ConfigError(
            f"--upstream-override {spec!r}: ORIGIN must look like "
            "https://host or https://*.suffix"
        )
    base = URL(target.strip())
    if base.scheme not in ("http", "https") or not base.host:
        raise ConfigError(
            f"--upstream-override {spec!r}: URL must be an http(s) base URL"
        )
    if base.raw_query_string or base.fragment:
        raise ConfigError(f"--upstream-override {spec!r}: URL takes no query")
    return Override(scheme, host.lower(), base)


# IPv6 forms that carry an IPv4 address a gateway may deliver to: NAT64
# (RFC 6052 and the local-use RFC 8215 prefix), 6to4, and deprecated
# site-local space that some networks still route internally.
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_SITE_LOCAL: Final = ipaddress.ip_network("fec0::/10")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")


def is_forbidden_address(address: str) -> bool:
    """Loopback, private, link-local, metadata and other non-public ranges.

    IPv6 addresses that embed an IPv4 address are judged by that address:
    `::ffff:169.254.169.254` or `64:ff9b::a9fe:a9fe` reach the metadata
    service just as well as the plain form does.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an address at all: never connect to it
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip in _SITE_LOCAL or ip.teredo is not None:
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return not ip.is_global or ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


Lookup = Callable[[str, int], Awaitable[tuple[list[ResolveResult], float]]]
"""A DNS source: (host, port) to (answers, seconds they may be kept)."""


class GuardedResolver(AbstractResolver):
    """Resolve vendor hosts, honouring each answer's TTL, refusing inner ranges.

    aiohttp's own DNS cache keeps every answer for one fixed time; vendors
    move addresses with short TTLs, so answers live here for their own TTL
    (bounded), and failed look-ups are retried after a few seconds. `lookup`
    replaces the DNS source (tests point it at fixed answers); `nameservers`
    (`IP:PORT`) replace the system's DNS servers. The guard applies to
    whatever either returns.
    """

    def __init__(
        self,
        allowed_names: frozenset[str] = frozenset(),
        lookup: Lookup | None = None,
        nameservers: tuple[str, ...] = (),
    ) -> None:
        self._allowed = allowed_names
        self._nameservers = nameservers
        self._cache: dict[tuple[str, int], tuple[float, list[ResolveResult]]] = {}
        self._dns: Any = None
        self.lookup: Lookup = lookup or self._lookup
        self.refused = 0  # look-ups refused because every answer pointed inward

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]

        answers, ttl = await self.lookup(host, port)
        if not answers:
            raise OSError(f"no addresses for {host}")
        allowed = host in self._allowed
        safe = [a for a in answers if allowed or not is_forbidden_address(a["host"])]
        if not safe:
            # A vendor name that points inward is an attack or a broken zone;
            # either way we must not connect (SSRF through DNS).
            self.refused += 1
            log.warning("refused %s: it resolves only to non-public addresses", host)
            raise OSError(f"{host} resolves only to non-public addresses; refused")
        self._cache[key] = (time.monotonic() + ttl, safe)
        return safe

    async def _lookup(self, host: str, port: int) -> tuple[list[ResolveResult], float]:
        try:
            import aiodns
        except ImportError:  # pragma: no cover - aiodns is a dependency
            return await _system_lookup(host, port), _MIN_TTL
        if self._dns is None:
            self._dns = aiodns.DNSResolver(nameservers=list(self._nameservers) or None)
        results: list[ResolveResult] = []
        ttls: list[float] = []
        for qtype, family in (("A", socket.AF_INET), ("AAAA", socket.AF_INET6)):
            try:
                answer = await asyncio.wait_for(
                    self._dns.query_dns(host, qtype), _DNS_TIMEOUT
                )
            except (aiodns.error.DNSError, TimeoutError):
                continue
            for record in answer.answer:
                address = getattr(record.data, "addr", None)
                if address is None:
                    continue  # the CNAME chain leading to the addresses
                results.append(_result(host, address, port, family))
                ttls.append(float(record.ttl))
        if results:
            return results, min(max(min(ttls), _MIN_TTL), _MAX_TTL)
        if self._nameservers:
            # The operator chose the DNS servers: names they do not know must
            # not leak to the system resolver (and its network) instead.
            return [], _NEGATIVE_TTL
        return await _system_lookup(host, port), _NEGATIVE_TTL

    async def close(self) -> None:
        if self._dns is not None:
            await self._dns.close()
            self._dns = None


async def _system_lookup(host: str, port: int) -> list[ResolveResult]:
    """getaddrinfo, for names only the system knows (hosts file, search domains)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [_result(host, str(info[4][0]), port, info[0]) for info in infos]


def _result(host: str, address: str, port: int, family: int) -> ResolveResult:
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }


@dataclass(frozen=True, slots=True)
class Base:
    """Where one vendor origin's requests go, worked out once per origin."""

    url: str  # "https://www.example.com" or an override's base URL
    scheme: str
    host: str  # a name to resolve, or an address (an override's)
    port: int
    prefix: str  # an override's path, put before every target
    is_ip: bool
    server_name: str | None  # the name TLS verifies (the vendor's); None: http


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to send: where it connects and the Host it names."""

    base: Base
    target: str  # path and query, already encoded, as sent on the request line
    host_header: str

    @property
    def url(self) -> URL:
        """For logs and traces; the request path itself never builds a URL."""
        return URL(self.base.url + self.target, encoded=True)


class Upstream:
    """The shared client session and the overrides that redirect vendor origins."""

    def __init__(
        self,
        overrides: tuple[Override, ...] = (),
        dns_servers: tuple[str, ...] = (),
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` is for tests with a CA of their own; production
        verifies vendors against the system's CA store."""
        self.overrides = overrides
        names = frozenset(o.base.host for o in overrides if o.base.host)
        self.resolver = GuardedResolver(names, nameservers=dns_servers)
        self._failed: dict[str, float] = {}
        # The vendor gets the client's headers, never defaults of ours (no
        # invented User-Agent, Accept or Content-Type), no cookie jar, no
        # decompression, no proxy from the environment, no redirects.
        self.session = http1.Client(ssl_context=ssl_context)

        # aiohttp's ws_connect follows redirects and has no switch for it. This
        # session refuses a redirect before it is followed: a vendor may not
        # send our upgrade anywhere its rule does not name. No total timeout:
        # the socket lives as long as the route's idle timeout allows; the
        # handshake gets the route's timeout.
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,
            limit=0,
            limit_per_host=256,
            enable_cleanup_closed=False,
        )
        refuse = aiohttp.TraceConfig()
        refuse.on_request_redirect.append(_refuse_redirect)
        self.websockets = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            trace_configs=[refuse],
        )

        # Per-request work built once: where each vendor origin connects.
        self._bases: dict[tuple[str, str], Base] = {}

    async def close(self) -> None:
        await self.websockets.close()
        await self.session.close()
        await self.resolver.close()

    def prepare(self, scheme: str, host: str, path_and_query: str) -> Prepared:
        base = self._bases.get((scheme, host))
        if base is None:
            base = self._base(scheme, host)
        return Prepared(base, base.prefix + path_and_query, host)

    def _base(self, scheme: str, host: str) -> Base:
        url = URL(f"{scheme}://{host}")
        vendor_name = url.raw_host
        for override in self.overrides:
            if override.matches(scheme, host):
                url = override.base
                break
        connect = url.raw_host or ""
        base = Base(
            url=str(url.with_path("")).rstrip("/"),
            scheme=url.scheme,
            host=connect,
            port=url.port or _DEFAULT_PORTS[url.scheme],
            prefix=url.raw_path.rstrip("/"),
            is_ip=_is_ip(connect),
            # TLS to an override still verifies the vendor's name.
            server_name=vendor_name if url.scheme == "https" else None,
        )
        # Hosts come from rules, but a pattern host has many concrete names.
        if len(self._bases) >= _MAX_BASES:
            self._bases.clear()
        self._bases[(scheme, host)] = base
        return base

    async def request(
        self,
        method: str,
        prepared: Prepared,
        headers: CIMultiDict[str] | Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> http1.Response:
        """Send one request; errors become UpstreamError (502) or UpstreamTimeout.

        The request carries exactly `headers` (no Host, Content-Length or
        other framing: those are ours), after a Host of the prepared vendor.
        """
        started = time.monotonic()
        try:
            head = http1.encode_request(
                method, prepared.target, prepared.host_header, headers.items(), body
            )
            response = await self._send(method, prepared, head, body, timeouts)
        except http1.ClientError as exc:  # a request that cannot be written
            exchange.upstream_failed(time.monotonic() - started)
            raise translate(exc, prepared.host_header) from exc
        except UpstreamError:
            exchange.upstream_failed(time.monotonic() - started)
            raise
        exchange.upstream_answered(time.monotonic() - started)
        return response

    async def _send(
        self,
        method: str,
        prepared: Prepared,
        head: bytes,
        body: bytes | None,
        timeouts: Timeouts,
    ) -> http1.Response:
        """Connect to an address we resolved (honouring its TTL), not the name.

        Connections are pooled by address: keyed by name, a pool would keep
        using a vendor's old address for as long as traffic keeps its
        connections alive. Keyed by address, a new answer takes effect at
        once and old connections simply idle out.
        """
        base = prepared.base
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        if base.is_ip:  # an override to an address: nothing to resolve
            addresses = [base.host]
        else:
            addresses = await self._addresses(
                base.host, base.port, prepared.host_header
            )

        error: BaseException | None = None
        for address in addresses:
            if loop.time() >= deadline:
                break
            try:
                return await self.session.request(
                    method,
                    (address, base.port, base.server_name),
                    head,
                    body,
                    timeouts.connect,
                    deadline,
                )
            except http1.ConnectError as exc:
                # Nothing was sent on a connection that never opened, so the
                # next address is safe to try, even for a POST.
                if not base.is_ip:
                    self._note_failed(address)
                error = exc
            except (http1.ClientError, OSError, TimeoutError) as exc:
                raise translate(exc, prepared.host_header) from exc
        raise translate(error or TimeoutError(), prepared.host_header) from error

    def _note_failed(self, address: str) -> None:
        now = time.monotonic()
        if len(self._failed) > 1024:
            self._failed = {a: t for a, t in self._failed.items() if t > now}
        self._failed[address] = now + _FAILED_ADDRESS_TTL

    async def _addresses(
        self, host: str, port: int | None, host_header: str
    ) -> list[str]:
        """The addresses to try, in order, those that failed lately last."""
        try:
            answers = await self.resolver.resolve(host, port or 0)
        except OSError as exc:
            raise UpstreamError(
                f"cannot resolve upstream {host_header}", kind="connect"
            ) from exc
        addresses = [a["host"] for a in answers]
        if self._failed:
            now = time.monotonic()
            addresses.sort(key=lambda a: self._failed.get(a, 0.0) > now)
        return addresses

    async def websocket(
        self,
        prepared: Prepared,
        headers: CIMultiDict[str],
        protocols: list[str],
        timeouts: Timeouts,
        max_message: int,
    ) -> WebSocket:
        """Open a WebSocket to a vendor; errors become UpstreamError or timeout.

        Like requests, it connects to an address the guarded resolver gave
        (trying the next one if a connection is refused). Messages arrive
        undecoded (text as bytes), so they pass byte-exact; pings are
        answered here and never relayed.
        """
        headers[HOST] = prepared.host_header
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeouts.total):
                socket = await self._open_websocket(
                    prepared, headers, protocols, max_message
                )
        except aiohttp.WSServerHandshakeError as exc:
            exchange.upstream_failed(time.monotonic() - started)
            exchange.note(exchange.UPSTREAM_STATUS, exc.status)
            raise UpstreamError(
                f"upstream {prepared.host_header} refused the WebSocket upgrade "
                f"({exc.status})",
                kind="bad_status",
            ) from exc
        except RedirectRefused as exc:
            exchange.upstream_failed(time.monotonic() - started)
            raise UpstreamError(str(exc), kind="redirect") from exc
        except UpstreamError:
            exchange.upstream_failed(time.monotonic() - started)
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            exchange.upstream_failed(time.monotonic() - started)
            raise translate(exc, prepared.host_header) from exc
        exchange.upstream_answered(time.monotonic() - started)
        return socket

    async def _open_websocket(
        self,
        prepared: Prepared,
        headers: CIMultiDict[str],
        protocols: list[str],
        max_message: int,
    ) -> WebSocket:
        url = prepared.url
        host = url.raw_host or ""
        addresses = [host]
        if not _is_ip(host):
            addresses = await self._addresses(host, url.port, prepared.host_header)
        error: BaseException | None = None
        for address in addresses:
            try:
                return await self.websockets.ws_connect(
                    url.with_host(address),
                    headers=headers,
                    protocols=protocols,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_WS_CLOSE_WAIT),
                    autoclose=False,
                    autoping=True,
                    compress=_WS_DEFLATE_BITS,
                    max_msg_size=max_message,
                    decode_text=False,
                    server_hostname=headers[HOST] if url.scheme == "https" else None,
                )
            except aiohttp.ClientConnectorError as exc:
                # Nothing was sent on a connection that never opened.
                self._note_failed(address)
                error = exc
        raise translate(error or TimeoutError(), prepared.host_header) from error


class RedirectRefused(aiohttp.ClientError):
    """A vendor answered a WebSocket upgrade with a redirect."""


async def _refuse_redirect(
    session: aiohttp.ClientSession,
    context: Any,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    params.response.close()
    raise RedirectRefused(
        f"upstream {params.url.host} redirected a WebSocket upgrade "
        f"to {params.response.headers.get(LOCATION, '?')!r}; refused"
    )


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def translate(exc: BaseException, host: str) -> UpstreamError:
    """Our one boundary between client errors and 502/504."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"upstream {host} did not answer in time")
    if isinstance(exc, http1.ConnectError | aiohttp.ClientConnectorError):
        return UpstreamError(f"cannot connect to upstream {host}", kind="connect")
    if isinstance(exc, http1.ClientError | aiohttp.ClientError | OSError):
        return UpstreamError(f"upstream {host} failed: {type(exc).__name__}")
    return UpstreamError(f"upstream {host} failed")
