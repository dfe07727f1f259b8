"""The visitor's address in the form a rule lets it leave.

One pure function, applied to the visitor's address before any way of
passing it (header, query parameter, JSON body) uses it, so every way sends
the same form and none can leak the full address past a truncation.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from .model import IpHandling

_V4_MASK: Final = (1 << 32) - (1 << 8)  # /24
_V6_MASK: Final = (1 << 128) - (1 << 80)  # /48
_OCTET: Final = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED: Final = re.compile(rf"({_OCTET}\.{_OCTET}\.{_OCTET})\.{_OCTET}")


def visitor_address(address: str, handling: IpHandling) -> str | None:
    """The address as it may leave, or None when it must not leave at all."""
    if handling is IpHandling.FORWARD:
        return address
    if handling is IpHandling.WITHHOLD:
        return None
    return truncate(address)


def truncate(address: str) -> str | None:
    """IPv4 to its /24 network address, IPv6 to its /48.

    Something that is not an address cannot be truncated, so it does not
    leave at all rather than leaving whole.
    """
    plain = _DOTTED.fullmatch(address)
    if plain is not None:
        return f"{plain[1]}.0"  # the common case, without parsing
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(ip) & _V4_MASK))
    if ip.ipv4_mapped is not None:
        return str(ipaddress.IPv4Address(int(ip.ipv4_mapped) & _V4_MASK))
    return str(ipaddress.IPv6Address(int(ip) & _V6_MASK))
