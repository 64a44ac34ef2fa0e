"""The embedded default: one SQLite file, so state survives a restart without a server.

Calls run in a worker thread (SQLite blocks) over one connection guarded by a lock;
WAL mode lets readers proceed while a write commits. Expired rows are ignored on read
and purged at most once a minute on write.
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


class SQLiteStore:
    """State in ``{directory}/bastion.sqlite3``; the directory is created when first used."""

    def __init__(self, directory: str | os.PathLike[str] = "data") -> None:
        self.path = Path(directory) / "bastion.sqlite3"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._next_purge = 0.0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The file holds sessions: readable by this user only, even in a directory
            # that already existed with wider permissions (SQLite gives its -wal and -shm
            # files the database file's mode). An existing file keeps its mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            row = (
                self._connect()
                .execute(
                    "SELECT value FROM bastion_kv WHERE key = ? AND expires > ?",
                    (key, time.time()),
                )
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        with self._lock:
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
        with self._lock:
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
        with self._lock:
            self._connect().execute("DELETE FROM bastion_kv WHERE key = ?", (key,))

    def _health(self) -> None:
        with self._lock:
            self._connect().execute("SELECT 1").fetchone()

    def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def get(self, key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await anyio.to_thread.run_sync(self._set, key, value, ttl)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        return await anyio.to_thread.run_sync(self._compare_and_set, key, expected, value, ttl)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._delete, key)

    async def health(self) -> None:
        await anyio.to_thread.run_sync(self._health)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
