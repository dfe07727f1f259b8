"""Header names and the fixed lists that decide what may cross the proxy.

Requests are forwarded by allowlist: a header reaches a vendor only when it is
in the default list below or a rule adds it, and never when it is listed as
never forwarded, whatever a rule says.
"""

from __future__ import annotations

from typing import Final

ACCEPT_ENCODING: Final = "Accept-Encoding"
ALLOW: Final = "Allow"
CACHE_CONTROL: Final = "Cache-Control"
CONTENT_ENCODING: Final = "Content-Encoding"
CONTENT_LENGTH: Final = "Content-Length"
CONTENT_TYPE: Final = "Content-Type"
RETRY_AFTER: Final = "Retry-After"
COOKIE: Final = "Cookie"
ETAG: Final = "ETag"
HOST: Final = "Host"
IF_NONE_MATCH: Final = "If-None-Match"
LOCATION: Final = "Location"
ORIGIN: Final = "Origin"
SEC_WEBSOCKET_PROTOCOL: Final = "Sec-WebSocket-Protocol"
SEC_WEBSOCKET_PREFIX: Final = "sec-websocket-"
SET_COOKIE: Final = "Set-Cookie"
UPGRADE: Final = "Upgrade"
USER_AGENT: Final = "User-Agent"
VARY: Final = "Vary"
X_FORWARDED_FOR: Final = "X-Forwarded-For"
X_FORWARDED_HOST: Final = "X-Forwarded-Host"
X_FORWARDED_PROTO: Final = "X-Forwarded-Proto"
X_FORWARDED_PREFIX: Final = "X-Forwarded-Prefix"
ACAO: Final = "Access-Control-Allow-Origin"
ACAC: Final = "Access-Control-Allow-Credentials"
ACAM: Final = "Access-Control-Allow-Methods"
ACAH: Final = "Access-Control-Allow-Headers"
ACMA: Final = "Access-Control-Max-Age"
ACRM: Final = "Access-Control-Request-Method"
ACRH: Final = "Access-Control-Request-Headers"

RELAY_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})

# What a beacon needs and nothing that identifies the site's own session.
DEFAULT_REQUEST_HEADERS: Final = (
    "accept",
    "accept-language",
    "content-type",
    "content-encoding",
    "user-agent",
    "referer",
    "origin",
    "dnt",
    "sec-gpc",
    "sec-ch-ua*",
    "sec-fetch-*",
)

# RFC 9110 section 7.6.1: meaningful for one connection only.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never forwarded whatever a rule says: credentials for the site, addressing
# the proxy sets itself, and what CDNs and load balancers add for their own use
# (a vendor has no business seeing the site's edge configuration).
_NEVER_EXACT: Final = HOP_BY_HOP | frozenset(
    {
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "cookie",
        "host",
        "content-length",
        "forwarded",
        "via",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "x-envoy-external-address",
        "cdn-loop",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-tagproxy-trace",
    }
)
_NEVER_PREFIXES: Final = ("cf-", "x-amz-", "fastly-", "akamai-", "x-azure-", "proxy-")

# Response headers that describe the vendor's connection, not the content,
# and headers that act on the site itself: served first-party, a vendor's
# Clear-Site-Data would clear the site's cookies (for its whole registrable
# domain), Service-Worker-Allowed would let a worker claim the site's pages,
# and reporting headers would send the site's own reports to the vendor.
RESPONSE_DROPPED: Final = HOP_BY_HOP | frozenset(
    {
        "alt-svc",
        "strict-transport-security",
        "content-length",
        "server-timing",
        "report-to",
        "reporting-endpoints",
        "nel",
        "clear-site-data",
        "service-worker-allowed",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
    }
)


def never_forwarded(lower_name: str) -> str | None:
    """Why a request header may never reach a vendor, or None if it may."""
    if lower_name in _NEVER_EXACT:
        if lower_name == "cookie":
            return "cookies pass only by name, under [request] cookies"
        if lower_name in HOP_BY_HOP:
            return "hop-by-hop header, meaningful for one connection only"
        return "never forwarded: tagproxy sets it or it carries site credentials"
    if lower_name.startswith(_NEVER_PREFIXES):
        return "never forwarded: CDN or proxy internal header"
    return None
