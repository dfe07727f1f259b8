"""Set-Cookie as the rule's cookie policy says, and the cookies tagproxy sets.

A vendor's Set-Cookie is rewritten attribute by attribute: Domain, Path,
Secure, SameSite, HttpOnly, and a lifetime cap on Max-Age and Expires.
Everything the policy does not name is left as the vendor sent it.
"""

from __future__ import annotations

import functools
import re
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

from .model import CookieDomain, CookiePolicy

# RFC 6265 cookie-octet: what a value may hold without quoting or escaping.
COOKIE_VALUE: Final = re.compile(r'"?[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*"?')
_FLAGS: Final = frozenset({"secure", "httponly"})


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


@functools.lru_cache(maxsize=64)
def _expires_at(second: int, max_age: int) -> str:
    return http_date(second + max_age)


def expires_in(max_age: int) -> str:
    """The Expires date `max_age` seconds from now, formatted once a second."""
    return _expires_at(int(time.time()), max_age)


def _expires_epoch(value: str) -> float | None:
    # Cookie dates come as "Thu, 01 Jan 2026 00:00:00 GMT" and also with
    # dashes ("01-Jan-2026"); anything else is left to the browser.
    try:
        return parsedate_to_datetime(value.replace("-", " ")).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def apply_policy(
    set_cookie: str, policy: CookiePolicy, cookie_domain: str | None
) -> str:
    """One vendor Set-Cookie, rewritten under the rule's cookie policy."""
    parts = set_cookie.split(";")
    out = [parts[0].strip()]
    for attribute in parts[1:]:
        key, eq, value = attribute.strip().partition("=")
        lower = key.strip().lower()
        if lower in ("domain", "path", "samesite") or lower in _FLAGS:
            continue  # set below from the policy, or kept as sent
        if lower == "max-age" and policy.max_age is not None:
            value = _capped_max_age(value, policy.max_age)
        elif lower == "expires" and policy.max_age is not None:
            value = _capped_expires(value, policy.max_age)
        out.append(f"{key.strip()}{eq}{value.strip()}" if eq else key.strip())

    sent = _attributes(parts[1:])
    domain = _domain(policy, cookie_domain)
    if domain:
        out.append(f"Domain={domain}")
    path = policy.path or sent.get("path")
    if path:
        out.append(f"Path={path}")
    if _flag(policy.secure, "secure" in sent):
        out.append("Secure")
    if _flag(policy.http_only, "httponly" in sent):
        out.append("HttpOnly")
    same_site = policy.same_site or sent.get("samesite")
    if same_site:
        out.append(f"SameSite={same_site}")
    return "; ".join(out)


def _attributes(parts: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for attribute in parts:
        key, _, value = attribute.strip().partition("=")
        found.setdefault(key.strip().lower(), value.strip())
    return found


def _flag(forced: bool | None, sent: bool) -> bool:
    return sent if forced is None else forced


def _domain(policy: CookiePolicy, cookie_domain: str | None) -> str | None:
    if policy.domain is CookieDomain.HOST:
        return None
    return cookie_domain


def _capped_max_age(value: str, cap: int) -> str:
    try:
        seconds = int(value.strip())
    except ValueError:
        return value
    return str(min(seconds, cap))


def _capped_expires(value: str, cap: int) -> str:
    epoch = _expires_epoch(value.strip())
    limit = time.time() + cap
    if epoch is None or epoch <= limit:
        return value
    return http_date(limit)


def server_cookie(
    name: str,
    value: str,
    max_age: int,
    policy: CookiePolicy,
    cookie_domain: str | None,
    *,
    secure: bool,
    http_only: bool,
) -> str:
    """A Set-Cookie tagproxy writes itself, for the whole site."""
    parts = [f"{name}={value}"]
    domain = _domain(policy, cookie_domain)
    if domain:
        parts.append(f"Domain={domain}")
    parts.append(f"Path={policy.path or '/'}")
    parts.append(f"Max-Age={max_age}")
    parts.append(f"Expires={expires_in(max_age)}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={policy.same_site or 'Lax'}")
    return "; ".join(parts)


def expired_cookie(name: str, policy: CookiePolicy, cookie_domain: str | None) -> str:
    """A Set-Cookie that removes one of tagproxy's own cookies."""
    parts = [f"{name}="]
    domain = _domain(policy, cookie_domain)
    if domain:
        parts.append(f"Domain={domain}")
    parts += [f"Path={policy.path or '/'}", "Max-Age=0", f"Expires={http_date(0)}"]
    return "; ".join(parts)
