"""The delivery spool: accepted beacons kept in SQLite (WAL) until delivered.

A durable route answers the browser only once its beacon is committed here,
and removes it only once the vendor has taken it (or it aged out), so a beacon
survives a vendor outage, a crash and `kill -9` of tagproxy.

All database work runs on one thread of its own, so the event loop never
waits on disk. Writes that arrive while a transaction is being committed are
committed together in the next one (group commit): under load one commit
carries many beacons, so the spool costs little more per beacon than the
insert itself.

A spool file belongs to one running process at a time (a lock next to it says
which), which lets a restart know that beacons left marked in flight were in
flight when the last process died, and send them again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from .background import TaskSet
from .errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
SYNC_MODES: Final = ("normal", "full")
_LOCK_PATIENCE: Final = 2.0  # seconds opening waits for a spool's lock
_ROW_OVERHEAD: Final = 128  # bytes counted per beacon beyond its own fields

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS beacons (
    id INTEGER PRIMARY KEY,
    vendor TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    scheme TEXT NOT NULL,
    host TEXT NOT NULL,
    target TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    accepted REAL NOT NULL,
    expires REAL NOT NULL,
    connect_timeout REAL NOT NULL,
    total_timeout REAL NOT NULL,
    retry_initial REAL NOT NULL,
    retry_max REAL NOT NULL,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS beacons_due ON beacons (claimed, due);
"""
_COLUMNS: Final = (
    "vendor, route, method, scheme, host, target, headers, body, size, accepted, "
    "expires, connect_timeout, total_timeout, retry_initial, retry_max, due"
)


class SpoolFull(Exception):
    """The spool holds its maximum size; the beacon was not written."""


class SpoolLocked(ConfigError):
    """Another running process holds this spool file."""


class SpoolError(Exception):
    """The database refused a write (disk full, I/O error, corruption)."""


@dataclass(frozen=True, slots=True)
class Beacon:
    """A beacon as built for its vendor when it was accepted.

    `host` is the vendor host from the rule, never an override's address:
    overrides and the resolver's guard apply when it is sent, under the
    configuration running then.
    """

    vendor: str
    route: str
    method: str
    scheme: str
    host: str
    target: str  # path and query, exactly as sent upstream
    headers: tuple[tuple[str, str], ...]
    body: bytes
    accepted: float  # Unix time: it must mean the same after a restart
    expires: float
    connect_timeout: float
    total_timeout: float
    retry_initial: float
    retry_max: float

    @property
    def size(self) -> int:
        fields = sum(len(n) + len(v) for n, v in self.headers) + len(self.target)
        return len(self.body) + fields + _ROW_OVERHEAD


@dataclass(frozen=True, slots=True)
class Stored:
    """A beacon read back from the spool, claimed for one delivery attempt."""

    id: int
    attempts: int
    size: int
    beacon: Beacon


@dataclass(frozen=True, slots=True)
class Expired:
    vendor: str
    count: int
    size: int


_Run = Callable[[sqlite3.Connection], Any]


class _Op:
    __slots__ = ("future", "run")

    def __init__(self, run: _Run, future: asyncio.Future[Any]) -> None:
        self.run = run
        self.future = future


class Spool:
    """An open spool file. Create with `await Spool.open(...)`."""

    def __init__(
        self, path: Path, max_bytes: int, conn: sqlite3.Connection, lock: IO[str]
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.depth = 0
        self.bytes = 0
        self.recovered = 0  # in flight when the previous process stopped
        self._conn = conn
        self._lock = lock
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tagproxy-spool")
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = TaskSet("spool")
        self._flusher = self._tasks.spawn(self._flush_loop(), name="spool-writer")

    # --- opening and closing -------------------------------------------------

    @classmethod
    async def open(cls, path: Path, max_bytes: int, sync: str = "normal") -> Spool:
        """Open (or create) the spool, refusing one another process holds."""
        if sync not in SYNC_MODES:
            raise ConfigError(f"--spool-sync {sync!r}: expected normal or full")
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as opener:
            conn, lock, depth, size, recovered = await loop.run_in_executor(
                opener, _open_file, path, sync
            )
        spool = cls(path, max_bytes, conn, lock)
        spool.depth, spool.bytes, spool.recovered = depth, size, recovered
        return spool

    async def close(self) -> None:
        """Commit what is queued, then close the file and release the lock."""
        self._closing = True
        self._wake.set()
        await self._flusher
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, _close_file, self._conn)
        self._thread.shutdown(wait=True)
        self._lock.close()

    # --- what the delivery worker and the relay call ---------------------------

    async def put(self, beacon: Beacon) -> int:
        """Commit one beacon; its id once it is on disk."""
        size = beacon.size
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(f"spool {self.path} holds {self.bytes} of its bytes")
        self.bytes += size  # reserved now, so concurrent puts see it
        try:
            row_id: int = await self._submit(lambda c: _insert(c, beacon, size))
        except BaseException:
            self.bytes -= size
            raise
        self.depth += 1
        return row_id

    async def claim(
        self,
        now: float,
        limit: int,
        budget: int,
        skip_hosts: Sequence[str] = (),
        only_host: str | None = None,
    ) -> tuple[list[Stored], float | None]:
        """Up to `limit` due beacons (at most `budget` bytes, at least one),
        marked in flight, and when the next one not taken falls due."""
        hosts = tuple(skip_hosts)
        claimed: tuple[list[Stored], float | None] = await self._submit(
            lambda c: _claim(c, now, limit, budget, hosts, only_host)
        )
        return claimed

    async def delivered(self, stored: Stored) -> None:
        """The vendor took it (or refused it for good): forget it."""
        await self._submit(lambda c: c.execute(_DELETE, (stored.id,)))
        self._forget(stored.size)

    async def retry(self, stored: Stored, due: float) -> None:
        """Another attempt at `due` (Unix time)."""
        await self._submit(
            lambda c: c.execute(
                "UPDATE beacons SET claimed = 0, due = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (due, stored.id),
            )
        )

    async def release(self, stored: Stored) -> None:
        """Not attempted after all (shutting down): due again at once."""
        await self._submit(
            lambda c: c.execute(
                "UPDATE beacons SET claimed = 0 WHERE id = ?", (stored.id,)
            )
        )

    async def purge_expired(self, now: float) -> list[Expired]:
        """Remove beacons not in flight whose age limit has passed."""
        expired: list[Expired] = await self._submit(lambda c: _purge(c, now))
        for item in expired:
            self._forget(item.size, item.count)
        return expired

    async def adopt(self) -> int:
        """Take over the beacons of sibling spool files no process holds; how
        many. Siblings are the operator's spool file and the workers' files
        made from it (`beacons.db`, `beacons.0.db`, `beacons.1.db`, ...): a
        run with fewer workers, or none, would otherwise leave some behind."""
        loop = asyncio.get_running_loop()
        moved = 0
        for sibling in siblings(self.path):
            if sibling == self.path:
                continue
            count, size = await loop.run_in_executor(
                self._thread, _adopt, self._conn, sibling
            )
            if count:
                log.warning(
                    "spool %s: took over %d beacons from %s, which no process holds",
                    self.path,
                    count,
                    sibling,
                )
            self.depth += count
            self.bytes += size
            moved += count
        return moved

    async def oldest(self) -> float | None:
        """When the oldest beacon still waiting was accepted (Unix time)."""
        row = await self._submit(
            lambda c: c.execute("SELECT min(accepted) FROM beacons").fetchone()
        )
        return None if row[0] is None else float(row[0])

    def _forget(self, size: int, count: int = 1) -> None:
        self.bytes = max(self.bytes - size, 0)
        self.depth = max(self.depth - count, 0)

    # --- group commit --------------------------------------------------------

    def _submit(self, run: _Run) -> asyncio.Future[Any]:
        if self._closing and self._flusher.done():
            raise SpoolError(f"spool {self.path} is closed")
        future = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(run, future))
        self._wake.set()
        return future

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                ops, self._ops = self._ops, []
                results = await loop.run_in_executor(
                    self._thread, _apply, self._conn, [op.run for op in ops]
                )
                for op, (ok, value) in zip(ops, results, strict=True):
                    if op.future.done():
                        continue
                    if ok:
                        op.future.set_result(value)
                    else:
                        op.future.set_exception(value)
            if self._closing:
                return


# --- the database thread -------------------------------------------------------

_DELETE: Final = "DELETE FROM beacons WHERE id = ?"


_WORKER_FILE: Final = re.compile(r"(?P<stem>.+)\.\d+(?P<suffix>\.[^.]*)?")


def siblings(path: Path) -> list[Path]:
    """The spool files of one family that exist now (`path` among them)."""
    match = _WORKER_FILE.fullmatch(path.name)
    stem, suffix = path.stem, path.suffix
    if match is not None:
        stem, suffix = match["stem"], match["suffix"] or ""
    found = []
    for candidate in path.parent.glob(f"{stem}*{suffix}"):
        middle = candidate.name[len(stem) : len(candidate.name) - len(suffix)]
        if middle == "" or (middle.startswith(".") and middle[1:].isdigit()):
            found.append(candidate)
    return sorted(found)


def _adopt(conn: sqlite3.Connection, sibling: Path) -> tuple[int, int]:
    lock = _try_lock(sibling)
    if lock is None:
        return 0, 0  # a live process owns it
    try:
        conn.execute("ATTACH DATABASE ? AS orphan", (str(sibling),))
        try:
            return _move_rows(conn)
        finally:
            conn.execute("DETACH DATABASE orphan")
    except sqlite3.Error as exc:
        log.error("spool: cannot take over %s: %s", sibling, exc)
        return 0, 0
    finally:
        lock.close()


def _move_rows(conn: sqlite3.Connection) -> tuple[int, int]:
    version = conn.execute("PRAGMA orphan.user_version").fetchone()[0]
    tables = conn.execute(
        "SELECT count(*) FROM orphan.sqlite_master WHERE name = 'beacons'"
    ).fetchone()[0]
    if version != SCHEMA_VERSION or not tables:
        return 0, 0
    # Atomic per file, not across the two (WAL): a crash between the insert
    # and the delete leaves a beacon in both, to be sent twice, never lost.
    conn.execute("BEGIN IMMEDIATE")
    try:
        count, size = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM orphan.beacons"
        ).fetchone()
        conn.execute(
            f"INSERT INTO main.beacons ({_COLUMNS}, attempts) "
            f"SELECT {_COLUMNS}, attempts FROM orphan.beacons"
        )
        conn.execute("DELETE FROM orphan.beacons")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(count), int(size)


def _open_file(
    path: Path, sync: str
) -> tuple[sqlite3.Connection, IO[str], int, int, int]:
    lock = _lock_patiently(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ConfigError(
                f"--spool {path}: written by another tagproxy version "
                f"(schema {version}, this one reads {SCHEMA_VERSION}); deliver or "
                "move it with that version, or start with a new file"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # The lock is ours, so anything marked in flight was in flight when
        # the last process died: the vendor may or may not have it. Send it
        # again now (at least once) rather than never.
        recovered = conn.execute("UPDATE beacons SET claimed = 0 WHERE claimed = 1")
        depth, size = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM beacons"
        ).fetchone()
    except sqlite3.Error as exc:
        lock.close()
        raise ConfigError(f"--spool {path}: cannot use it as a spool: {exc}") from exc
    except BaseException:
        lock.close()
        raise
    return conn, lock, int(depth), int(size), recovered.rowcount


def _lock(path: Path) -> IO[str]:
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path.open("a+")
    except OSError as exc:
        raise ConfigError(f"--spool {path}: cannot create it: {exc}") from exc
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise SpoolLocked(
            f"--spool {path}: in use by another tagproxy process (pid {owner}); "
            "give each process its own spool file"
        ) from exc
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _lock_patiently(path: Path) -> IO[str]:
    """The lock, waiting a moment for it: a sibling process may be holding it
    for the few milliseconds it takes to check the file for orphans."""
    deadline = time.monotonic() + _LOCK_PATIENCE
    while True:
        try:
            return _lock(path)
        except SpoolLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _try_lock(path: Path) -> IO[str] | None:
    try:
        return _lock(path)
    except SpoolLocked:
        return None


def _close_file(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _apply(conn: sqlite3.Connection, runs: list[_Run]) -> list[tuple[bool, Any]]:
    """Run the operations in one transaction; if it fails, one by one, so a
    bad operation fails alone."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [(True, run(conn)) for run in runs]
        conn.execute("COMMIT")
        return results
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if len(runs) == 1:
            return [(False, SpoolError(f"spool write failed: {exc}"))]
    return [_apply(conn, [run])[0] for run in runs]


def _insert(conn: sqlite3.Connection, b: Beacon, size: int) -> int:
    cursor = conn.execute(
        f"INSERT INTO beacons ({_COLUMNS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            b.vendor,
            b.route,
            b.method,
            b.scheme,
            b.host,
            b.target,
            json.dumps(b.headers),
            b.body,
            size,
            b.accepted,
            b.expires,
            b.connect_timeout,
            b.total_timeout,
            b.retry_initial,
            b.retry_max,
            b.accepted,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _claim(
    conn: sqlite3.Connection,
    now: float,
    limit: int,
    budget: int,
    skip_hosts: tuple[str, ...],
    only_host: str | None,
) -> tuple[list[Stored], float | None]:
    params: tuple[str, ...] = skip_hosts
    skip = f" AND host NOT IN ({', '.join('?' * len(params))})" if params else ""
    if only_host is not None:
        skip, params = " AND host = ?", (only_host,)
    candidates = conn.execute(
        f"SELECT id, size FROM beacons WHERE claimed = 0 AND due <= ?{skip}"
        " ORDER BY due LIMIT ?",
        (now, *params, limit),
    ).fetchall()
    chosen: list[int] = []
    spent = 0
    for row_id, size in candidates:
        if chosen and spent + size > budget:
            break
        chosen.append(row_id)
        spent += size

    stored: list[Stored] = []
    if chosen:
        marks = ", ".join("?" * len(chosen))
        conn.execute(f"UPDATE beacons SET claimed = 1 WHERE id IN ({marks})", chosen)
        rows = conn.execute(
            f"SELECT id, attempts, {_COLUMNS} FROM beacons WHERE id IN ({marks})"
            " ORDER BY due",
            chosen,
        ).fetchall()
        stored = [_stored(row) for row in rows]
    following = conn.execute(
        f"SELECT due FROM beacons WHERE claimed = 0{skip} ORDER BY due LIMIT 1",
        params,
    ).fetchone()
    return stored, None if following is None else float(following[0])


def _stored(row: Sequence[Any]) -> Stored:
    (row_id, attempts, vendor, route, method, scheme, host, target, headers) = row[:9]
    (body, size, accepted, expires, connect, total, initial, most, _due) = row[9:]
    beacon = Beacon(
        vendor=vendor,
        route=route,
        method=method,
        scheme=scheme,
        host=host,
        target=target,
        headers=tuple((str(n), str(v)) for n, v in json.loads(headers)),
        body=bytes(body),
        accepted=accepted,
        expires=expires,
        connect_timeout=connect,
        total_timeout=total,
        retry_initial=initial,
        retry_max=most,
    )
    return Stored(row_id, attempts, size, beacon)


def _purge(conn: sqlite3.Connection, now: float) -> list[Expired]:
    where = "claimed = 0 AND expires < ?"
    rows = conn.execute(
        f"SELECT vendor, count(*), sum(size) FROM beacons WHERE {where}"
        " GROUP BY vendor",
        (now,),
    ).fetchall()
    if rows:
        conn.execute(f"DELETE FROM beacons WHERE {where}", (now,))
    return [Expired(vendor, int(count), int(size)) for vendor, count, size in rows]
