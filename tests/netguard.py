"""A process-wide listener for outgoing connections, and a safety net.

Every test runs with `socket.socket.connect` watched: each attempt is
recorded, and any destination other than 127.0.0.1 or ::1 is refused before
a packet leaves. Real DNS is refused too: tests give names fixed answers
through `GuardedResolver.lookup`. Security tests read the record to prove
that no request reached anything but the fake vendor.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp.abc import ResolveResult

LOOPBACK: Final = frozenset({"127.0.0.1", "::1"})


@dataclass
class NetGuard:
    """Outgoing connection attempts made by this process, in order."""

    attempts: list[tuple[str, int]] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)

    def mark(self) -> int:
        return len(self.attempts)

    def since(self, mark: int) -> list[tuple[str, int]]:
        return self.attempts[mark:]

    def foreign(self, allowed_ports: Iterable[int], mark: int = 0) -> list[Any]:
        """Attempts since `mark` to anything but loopback on the allowed ports."""
        ports = set(allowed_ports)
        return [
            (host, port)
            for host, port in self.since(mark)
            if host not in LOOPBACK or port not in ports
        ]

    def check(self, address: Any) -> None:
        if not isinstance(address, tuple):
            return  # AF_UNIX paths never leave the machine
        host, port = str(address[0]), int(address[1])
        self.attempts.append((host, port))
        if host not in LOOPBACK:
            self.refused.append((host, port))
            raise ConnectionRefusedError(f"test net guard: {host} is not loopback")


def install(guard: NetGuard, monkeypatch: Any) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        guard.check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard.check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


async def no_dns(host: str, port: int) -> tuple[list[ResolveResult], float]:
    """The DNS source every test starts with: localhost only, no queries."""
    if host == "localhost":
        return await fixed_dns({"localhost": ["127.0.0.1", "::1"]})(host, port)
    raise OSError(f"test net guard: no real DNS in tests (asked for {host})")


Lookup = Callable[[str, int], Awaitable[tuple[list[ResolveResult], float]]]


def fixed_dns(answers: dict[str, list[str]], port: int | None = None) -> Lookup:
    """A DNS source with fixed answers; `port` redirects to a local listener.

    aiohttp connects to the port in each answer, so a test can point a
    vendor name at a counting listener on loopback without privileges.
    """

    async def lookup(host: str, asked_port: int) -> tuple[list[ResolveResult], float]:
        if host not in answers:
            raise OSError(f"fixed DNS: no answer for {host}")
        results: list[ResolveResult] = [
            {
                "hostname": host,
                "host": address,
                "port": asked_port if port is None else port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in answers[host]
        ]
        return results, 60.0

    return lookup
