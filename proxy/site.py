"""The site being served: its public URL, cookie domain and allowed origins.

The public URL is where tagproxy is reached from browsers, e.g.
`https://metrics.shop.example` (CNAME shape) or `https://www.shop.example/m`
(same-origin path shape). It is part of every rewritten script. When the
operator does not set it, it is read from the request: Host and scheme, or
`X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-Prefix` when a
trusted proxy sent them.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from yarl import URL

from . import headers as h
from .errors import BadRequest, ConfigError

_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9.-]+|\[(?P<v6>[0-9A-Fa-f:.]+)\])(?::(?P<port>\d{1,5}))?"
)
_PREFIX: Final = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
# Origins come from visitors: the answers kept per site stop growing here.
_MEMO_MAX: Final = 1024
# What a browser sends as Origin for a page on http(s): nothing else is one.
_ORIGIN: Final = re.compile(
    r"https?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?", re.IGNORECASE
)


def parse_public_url(raw: str) -> URL:
    url = URL(raw.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"--public-url {raw!r}: must be an http(s) URL")
    if url.raw_query_string or url.fragment:
        raise ConfigError(f"--public-url {raw!r}: takes no query or fragment")
    if _PREFIX.fullmatch(url.raw_path.rstrip("/")) is None:
        raise ConfigError(f"--public-url {raw!r}: path may hold only plain segments")
    return url.with_path(url.raw_path.rstrip("/"), encoded=True)


def is_origin_pattern(raw: str) -> bool:
    """`https://www.shop.example` or `https://*.shop.example`: no path, no query."""
    url = URL(raw.replace("*.", "wildcard."))
    return (
        url.scheme in ("http", "https")
        and bool(url.host)
        and url.path in ("", "/")
        and not url.raw_query_string
    )


@dataclass(frozen=True, slots=True)
class OriginMatcher:
    """Origins allowed to call relays cross-origin: exact, or `https://*.suffix`."""

    patterns: tuple[str, ...] = ()

    def __call__(self, origin: str) -> bool:
        origin = origin.lower()
        return any(fnmatch.fnmatchcase(origin, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Site:
    public_url: URL | None
    cookie_domain: str | None
    allowed_origins: OriginMatcher

    _allowed: dict[tuple[str, URL], bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    def origin_allowed(self, origin: str, public_url: URL) -> bool:
        """`origin_allows`, remembered for the origins and public URLs seen."""
        key = (origin, public_url)
        known = self._allowed.get(key)
        if known is None:
            known = self.origin_allows(origin, public_url)
            if len(self._allowed) < _MEMO_MAX:
                self._allowed[key] = known
        return known

    def origin_allows(self, origin: str, public_url: URL) -> bool:
        """Explicit origins, else the public URL's own origin and the cookie domain.

        Anything that is not a well-formed origin is refused first, so a
        wildcard such as `https://*.shop.example` cannot match a crafted
        value like `https://evil.test/x.shop.example`.
        """
        if _ORIGIN.fullmatch(origin) is None:
            return False
        if self.allowed_origins.patterns:
            return self.allowed_origins(origin)
        if origin == _origin_of(public_url):
            return True
        scheme, host = _scheme_and_host(origin)
        domain = self.cookie_domain
        if domain is None or scheme != public_url.scheme:
            return False
        return host == domain or host.endswith("." + domain)

    def public_url_for(self, request: web.Request, trusted_peer: bool) -> URL:
        if self.public_url is not None:
            return self.public_url
        return derive_public_url(request, trusted_peer)


def derive_public_url(request: web.Request, trusted_peer: bool) -> URL:
    """The public URL as the browser sees it, from headers we may believe."""
    scheme = "https" if request.secure else "http"
    host = request.headers.get(h.HOST, "")
    prefix = ""
    if trusted_peer:
        scheme = _first(request.headers.get(h.X_FORWARDED_PROTO)) or scheme
        host = _first(request.headers.get(h.X_FORWARDED_HOST)) or host
        prefix = _first(request.headers.get(h.X_FORWARDED_PREFIX)).rstrip("/")
    return _public_url(scheme, host, prefix)


# The same few hosts and origins come on every request: validate and parse
# each once. Failures raise, and lru_cache does not keep those.
@functools.lru_cache(maxsize=1024)
def _public_url(scheme: str, host: str, prefix: str) -> URL:
    if scheme not in ("http", "https") or not _valid_host(host):
        raise BadRequest("missing or malformed Host header")
    if _PREFIX.fullmatch(prefix) is None:
        raise BadRequest("malformed X-Forwarded-Prefix")
    return URL(f"{scheme}://{host.lower()}{prefix}", encoded=True)


def _valid_host(host: str) -> bool:
    """A Host value we can build URLs from: name or [IPv6], port in range."""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    literal = match["v6"]
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
    return True


@functools.lru_cache(maxsize=256)
def _origin_of(public_url: URL) -> str:
    return str(public_url.origin())


@functools.lru_cache(maxsize=1024)
def _scheme_and_host(origin: str) -> tuple[str, str]:
    url = URL(origin)
    return url.scheme, url.host or ""


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()
