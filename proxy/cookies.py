"""Cookies in both directions: only named cookies reach a vendor, and the
vendor's Set-Cookie is scoped to the site before the browser sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def filter_cookie_header(values: Iterable[str], allowed: Callable[[str], bool]) -> str:
    """The `name=value` pairs whose names the rule allows, in their original form.

    The site's own cookies (sessions, logins, carts) ride along on every
    first-party request; they must stop here unless a rule names them.
    """
    kept = []
    for value in values:
        for pair in value.split(";"):
            pair = pair.strip()
            name = pair.partition("=")[0].strip()
            if name and allowed(name):
                kept.append(pair)
    return "; ".join(kept)


def cookie_name(set_cookie: str) -> str:
    return set_cookie.partition("=")[0].strip()


def rewrite_set_cookie(set_cookie: str, cookie_domain: str | None) -> str:
    """Point the cookie at the site: Domain becomes the site's, or goes.

    A vendor names its own domain (or an internal one); the browser would
    reject that on our host, or worse, scope it wrongly. Everything else
    (Path, Expires, Max-Age, Secure, HttpOnly, SameSite) is left as sent.
    """
    parts = set_cookie.split(";")
    out = [parts[0]]
    for attribute in parts[1:]:
        key = attribute.partition("=")[0].strip().lower()
        if key == "domain":
            if cookie_domain:
                out.append(f" Domain={cookie_domain}")
            continue
        out.append(attribute)
    return ";".join(out)
