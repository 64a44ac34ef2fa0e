"""The embedded default: one SQLite file, so state survives a restart without a server.

Every action call reads its session and, in the steady state, writes nothing; so reads
and writes run where each is cheapest, on two connections to the file:

- ``get`` and ``health`` run inline on the event loop, on a read connection of their
  own (``PRAGMA query_only``). A worker-thread hop costs far more than the read
  itself, which finds one row by primary key in pages that are almost always in
  SQLite's cache. WAL mode lets this reader see every committed write, from this
  process or another, at its next statement, and never wait for a writer. A WAL reader
  very rarely meets SQLITE_BUSY (another connection recovering the WAL after a crash,
  or holding the file in exclusive locking mode); its busy timeout bounds how long it
  then blocks the loop to 100 ms, after which it raises ``sqlite3.OperationalError``
  (the pipeline answers 503). One reader under a lock makes it safe from several
  threads (apps run by test clients each have their own loop in their own thread), and
  lets close() close it; within one event loop nothing contends for the lock, and a
  read queued behind another thread's waits only for that read.
- ``set``, ``compare_and_set`` and ``delete`` run in a worker thread on the write
  connection, under a lock of their own that the loop never takes: a commit may
  checkpoint the WAL and fsync. Opening the connections (directory, file, schema) and
  closing them (the last close checkpoints the WAL) run there too.

Expired rows are ignored on read and purged at most once a minute on write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import anyio.to_thread

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bastion_kv (
    key     TEXT PRIMARY KEY,
    value   BLOB NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID
"""

# One fixed text for every read: the sqlite3 module caches prepared statements by their
# text, so the reader compiles it once and each get only binds and steps it.
_GET = "SELECT value FROM bastion_kv WHERE key = ? AND expires > ?"

_READ_BUSY_TIMEOUT = 0.1
"""Seconds a read on the event loop may wait for a lock before it fails."""


_OPEN_ATTEMPTS = 50
"""Tries at preparing a new write connection while another one prepares the same file."""


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode and the schema on a new write connection.

    Two processes (or two stores) opening one new file at once both switch it to WAL and
    create the table; SQLite may refuse one of them with SQLITE_BUSY at once, without
    waiting on the busy timeout (it does so where waiting could deadlock). Both steps
    are idempotent, so the loser tries again shortly, a bounded number of times."""
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as error:
            busy = (error.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.01)


class SQLiteStore:
    """State in ``{directory}/bastion.sqlite3``; the directory is created when first used."""

    def __init__(self, directory: str | os.PathLike[str] = "data") -> None:
        self.path = Path(directory) / "bastion.sqlite3"
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._next_purge = 0.0

    def _connect(self) -> sqlite3.Connection:
        """The write connection, opening whichever connection is closed (both are opened
        and closed together). Called in a worker thread, under the write lock."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The file holds sessions: readable by this user only, even in a directory
            # that already existed with wider permissions (SQLite gives its -wal and -shm
            # files the database file's mode). An existing file keeps its mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                _prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        if self._reader is None:
            # Opened after the writer: the file, WAL mode and the schema exist by now.
            reader = sqlite3.connect(
                self.path,
                timeout=_READ_BUSY_TIMEOUT,
                check_same_thread=False,
                isolation_level=None,
            )
            try:
                reader.execute("PRAGMA query_only=ON")
            except BaseException:
                reader.close()
                raise
            with self._read_lock:
                self._reader = reader
        return self._db

    def _open(self) -> None:
        with self._write_lock:
            self._connect()

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        with self._write_lock:
            db = self._connect()
            db.execute(
                "INSERT INTO bastion_kv (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, expires = excluded.expires",
                (key, value, now + ttl),
            )
            if now >= self._next_purge:
                db.execute("DELETE FROM bastion_kv WHERE expires <= ?", (now,))
                self._next_purge = now + 60

    def _compare_and_set(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        now = time.time()
        with self._write_lock:
            db = self._connect()
            if expected is None:
                # Inserted, or replacing a row that has expired; a live row stays.
                cursor = db.execute(
                    "INSERT INTO bastion_kv (key, value, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, expires = excluded.expires "
                    "WHERE bastion_kv.expires <= ?",
                    (key, value, now + ttl, now),
                )
            else:
                cursor = db.execute(
                    "UPDATE bastion_kv SET value = ?, expires = ? "
                    "WHERE key = ? AND value = ? AND expires > ?",
                    (value, now + ttl, key, expected, now),
                )
            # One statement: atomic for every connection to the file, other processes'
            # included (SQLite takes the write lock for it).
            return cursor.rowcount == 1

    def _delete(self, key: str) -> None:
        with self._write_lock:
            self._connect().execute("DELETE FROM bastion_kv WHERE key = ?", (key,))

    def _close(self) -> None:
        with self._write_lock:
            with self._read_lock:
                reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()
            if self._db is not None:
                self._db.close()
                self._db = None

    async def get(self, key: str) -> bytes | None:
        while True:
            with self._read_lock:
                reader = self._reader
                if reader is not None:
                    # fetchone() steps past the only row a primary key can match, which
                    # resets the statement: no read transaction stays open between calls
                    # to hold back WAL checkpoints.
                    row = reader.execute(_GET, (key, time.time())).fetchone()
                    return None if row is None else bytes(row[0])
            # First use, or first since close(): opening creates the directory, the file
            # and the schema (a write), so not on the loop. Loops only if close() runs
            # again in between.
            await anyio.to_thread.run_sync(self._open)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await anyio.to_thread.run_sync(self._set, key, value, ttl)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        return await anyio.to_thread.run_sync(self._compare_and_set, key, expected, value, ttl)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._delete, key)

    async def health(self) -> None:
        # A real read of the table (not SELECT 1, which touches no file): the file and its
        # schema answer, as the next session load needs them to.
        await self.get("")

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
