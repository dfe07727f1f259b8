"""Who the visitor is: the client address, believed only from trusted proxies.

`X-Forwarded-For` is walked from the right, starting at the TCP peer; each
address is believed to have come from the one before it only while the hop
that said so is a proxy the operator trusts. The first untrusted address is
the visitor. Anything further left was written by the visitor (or anyone) and
is never passed on: a spoofed chain must not move a visitor's location or
borrow someone else's identity at the vendor.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"--trusted-proxy {spec!r}: not an address or CIDR"
            ) from exc
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Trust:
    """The operator's trusted proxies and the client-IP headers they set."""

    proxies: tuple[Network, ...] = ()
    # Single-value headers such as CF-Connecting-IP, believed from trusted peers.
    ip_headers: tuple[str, ...] = ()

    def trusts(self, address: Address | None) -> bool:
        if address is None or not self.proxies:
            return False
        return any(address in network for network in self.proxies)

    def visitor(
        self, peer: str | None, forwarded_for: Sequence[str], headers: Mapping[str, str]
    ) -> str:
        """The visitor's address, given the TCP peer and the request's headers."""
        peer_ip = _parse(peer)
        if peer_ip is None:
            return peer or ""
        if not self.trusts(peer_ip):
            return _text(peer_ip)

        for name in self.ip_headers:
            value = _parse(headers.get(name, "").strip())
            if value is not None:
                return _text(value)

        current = peer_ip
        for hop in reversed(_hops(forwarded_for)):
            address = _parse(hop)
            if address is None:
                break  # garbage in the chain: stop believing it here
            current = address
            if not self.trusts(address):
                break
        return _text(current)

    def is_trusted_peer(self, peer: str | None) -> bool:
        return self.trusts(_parse(peer))


def _hops(values: Sequence[str]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


# Peers and forwarding chains repeat (keep-alive connections, a load balancer's
# few addresses); parsing one is the costliest step of finding the visitor.
@functools.lru_cache(maxsize=4096)
def _parse(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]  # [v6]:port
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # v4:port
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _text(address: Address) -> str:
    """An address's text form, which ipaddress rebuilds on every str()."""
    return str(address)
