"""SSRF and open-relay suite: the client never chooses where tagproxy connects.

Every case checks what actually left the process: the autouse net guard
records every outgoing connection attempt, and a counting sentinel listener
on loopback stands where a leak would land. Passing means the fake vendor
was the only destination, in every case.
"""

from __future__ import annotations

import pytest

from proxy.upstream import GuardedResolver, is_forbidden_address

from . import tally
from .netguard import fixed_dns

# --- the resolver guard, unit level -------------------------------------------

# Addresses a vendor name must never resolve to, in every spelling that
# reaches the same place.
INWARD = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.0.0.9",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "198.18.0.1",  # benchmarking
    "192.0.0.170",
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fd00::1",
    "fec0::1",  # deprecated site-local
    "ff02::1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::7f00:1",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fd00:ec2::254",  # AWS metadata over IPv6
    "not-an-address",
]
PUBLIC = ["8.8.8.8", "142.250.185.78", "2606:4700::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", INWARD)
def test_inward_addresses_are_forbidden(address: str) -> None:
    tally.add("ssrf cases tried")
    assert is_forbidden_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(address)


@pytest.mark.parametrize("address", INWARD[:-1])
async def test_resolver_refuses_vendor_names_pointing_inward(address: str) -> None:
    tally.add("ssrf cases tried")
    resolver = GuardedResolver(lookup=fixed_dns({"vendor.example": [address]}))
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("vendor.example", 443)
    assert resolver.refused == 1


async def test_resolver_keeps_only_public_answers() -> None:
    answers = {"vendor.example": ["10.0.0.1", "8.8.8.8", "169.254.169.254"]}
    resolver = GuardedResolver(lookup=fixed_dns(answers))
    results = await resolver.resolve("vendor.example", 443)
    assert [r["host"] for r in results] == ["8.8.8.8"]


async def test_resolver_allows_names_an_override_names() -> None:
    answers = {"staging.internal": ["10.0.0.5"]}
    resolver = GuardedResolver(frozenset({"staging.internal"}), fixed_dns(answers))
    results = await resolver.resolve("staging.internal", 80)
    assert [r["host"] for r in results] == ["10.0.0.5"]
