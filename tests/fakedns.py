"""A tiny authoritative DNS server on 127.0.0.1 for resolver tests.

It answers A queries for the names it is given, with the address and TTL the
test chose, and changes its answers when the test says so. Every other name
and type gets an empty NOERROR answer (AAAA) or NXDOMAIN. UDP only: our
answers are far too small to be truncated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Final

_TYPE_A: Final = 1
_CLASS_IN: Final = 1
_FLAGS_ANSWER: Final = 0x8400  # response, authoritative
_RCODE_NXDOMAIN: Final = 3


@dataclass(slots=True)
class Record:
    addresses: list[str]
    ttl: int


@dataclass(slots=True)
class FakeDns(asyncio.DatagramProtocol):
    """Answers A records from `records`; counts the queries per name."""

    records: dict[str, Record] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _transport: asyncio.DatagramTransport | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, name: str, address: str | list[str], ttl: int) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        self.records[name.lower().rstrip(".")] = Record(addresses, ttl)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        reply = self._reply(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def _reply(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        (ident,) = struct.unpack("!H", query[:2])
        name, end = _read_name(query, 12)
        if end + 4 > len(query):
            return None
        qtype, _ = struct.unpack("!HH", query[end : end + 4])
        question = query[12 : end + 4]
        self.queries[name] = self.queries.get(name, 0) + 1

        record = self.records.get(name)
        if record is None:
            head = struct.pack(
                "!HHHHHH", ident, _FLAGS_ANSWER | _RCODE_NXDOMAIN, 1, 0, 0, 0
            )
            return head + question
        if qtype != _TYPE_A:
            return struct.pack("!HHHHHH", ident, _FLAGS_ANSWER, 1, 0, 0, 0) + question
        answers = b""
        for address in record.addresses:
            rdata = ipaddress.IPv4Address(address).packed
            answers += b"\xc0\x0c" + struct.pack(
                "!HHIH", _TYPE_A, _CLASS_IN, record.ttl, len(rdata)
            )
            answers += rdata
        count = len(record.addresses)
        head = struct.pack("!HHHHHH", ident, _FLAGS_ANSWER, 1, count, 0, 0)
        return head + question + answers


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while offset < len(packet):
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels).lower(), offset
