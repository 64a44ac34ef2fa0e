"""SQLiteStore's two connections: reads inline on the event loop, writes in a worker thread.

What the conformance suite (test_stores.py) cannot see: that a read needs no worker
thread and waits for no writer, that it still sees every committed write at once, that
the reader is safe from several threads and holds nothing open between reads, and that
close() releases both connections. Real files in tmp_path throughout; a second plain
sqlite3 connection stands for another process on the same file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from bastion.stores import SQLiteStore

pytestmark = pytest.mark.anyio

TTL = 3600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "data")
    yield made
    await made.close()


def other_connection(store: SQLiteStore) -> contextlib.closing[sqlite3.Connection]:
    """A connection of its own to the store's file, as another worker process has."""
    return contextlib.closing(sqlite3.connect(store.path, isolation_level=None))


async def test_every_write_is_seen_by_the_next_get(store: SQLiteStore) -> None:
    """What set, compare_and_set and delete commit on the write connection, the read
    connection returns on the very next get, round after round."""
    await store.set("k", b"v0", TTL)
    for i in range(1, 101):
        await store.set("k", f"v{i}".encode(), TTL)
        assert await store.get("k") == f"v{i}".encode()
    assert await store.compare_and_set("k", b"v100", b"swapped", TTL) is True
    assert await store.get("k") == b"swapped"
    await store.delete("k")
    assert await store.get("k") is None
    assert await store.compare_and_set("k", None, b"created", TTL) is True
    assert await store.get("k") == b"created"


async def test_another_process_write_is_seen_by_the_next_get(store: SQLiteStore) -> None:
    """A row another connection commits (another worker) is read at once by a reader that
    has been reading all along: WAL gives each read the latest commit."""
    await store.set("shared", b"ours", TTL)
    assert await store.get("shared") == b"ours"
    with other_connection(store) as other:
        other.execute(
            "UPDATE bastion_kv SET value = ? WHERE key = ?",
            (b"theirs", "shared"),
        )
        assert await store.get("shared") == b"theirs"
        other.execute("DELETE FROM bastion_kv WHERE key = ?", ("shared",))
        assert await store.get("shared") is None


async def test_get_and_health_need_no_worker_thread(store: SQLiteStore) -> None:
    """With every worker thread taken, get and health still answer (they run on the loop),
    while a write waits for a thread."""
    await store.set("k", b"v", TTL)
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens, limiter.total_tokens = limiter.total_tokens, 1
    release = threading.Event()

    async def take_the_only_thread() -> None:
        await anyio.to_thread.run_sync(release.wait)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_the_only_thread)
            # Released on failure too: the task group waits for the thread to return.
            try:
                while limiter.borrowed_tokens < 1:
                    await anyio.sleep(0.01)
                with anyio.move_on_after(0.2) as waited:
                    await store.set("k", b"blocked", TTL)
                assert waited.cancelled_caught  # the pool is really taken
                with anyio.fail_after(2):
                    assert await store.get("k") == b"v"
                    await store.health()
            finally:
                release.set()
    finally:
        limiter.total_tokens = tokens


async def test_a_write_waiting_for_the_file_does_not_hold_up_reads(store: SQLiteStore) -> None:
    """Another process holds the write lock: our set waits in its worker thread (holding
    the store's write lock), and meanwhile every get answers at once with the last commit.
    Once the lock is released the write lands and the next get sees it."""
    await store.set("k", b"before", TTL)
    with other_connection(store) as other:
        other.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.set, "k", b"after", TTL)
            await anyio.sleep(0.2)  # the set is now waiting for the file's write lock
            started = time.perf_counter()
            for _ in range(100):
                assert await store.get("k") == b"before"
            assert time.perf_counter() - started < 0.5
            other.execute("ROLLBACK")
    assert await store.get("k") == b"after"


async def test_reads_from_several_threads_at_once(store: SQLiteStore) -> None:
    """Four threads, each with its own event loop (as test clients run apps), read through
    the one reader while this loop writes: every read answers a value that was written."""
    await store.set("k", b"0", TTL)
    written = {b"0"}
    errors: list[BaseException] = []
    seen: list[bytes | None] = []
    stop = threading.Event()

    async def read_until_stopped() -> None:
        while not stop.is_set():
            seen.append(await store.get("k"))

    def run_loop() -> None:
        try:
            anyio.run(read_until_stopped)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(1, 201):
            written.add(str(i).encode())
            await store.set("k", str(i).encode(), TTL)
    finally:
        stop.set()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
    assert errors == []
    assert len(seen) > 200
    assert set(seen) <= written
    assert await store.get("k") == b"200"


async def test_the_reader_holds_no_snapshot_between_reads(store: SQLiteStore) -> None:
    """After gets that found a row and gets that found none, another connection can
    checkpoint the whole WAL and truncate it: no read transaction is left open, which
    would keep the WAL growing for as long as the process runs."""
    await store.set("k", b"v", TTL)
    assert await store.get("k") == b"v"
    assert await store.get("absent") is None
    await store.health()
    with other_connection(store) as other:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    assert store.path.with_name("bastion.sqlite3-wal").stat().st_size == 0


async def test_the_read_connection_only_reads_and_waits_briefly(store: SQLiteStore) -> None:
    """The loop's connection refuses writes (query_only) and waits at most 100 ms for a
    lock, the bound on how long a read can block the loop."""
    assert await store.get("k") is None
    reader = store._reader
    assert reader is not None
    assert reader.execute("PRAGMA query_only").fetchone() == (1,)
    assert reader.execute("PRAGMA busy_timeout").fetchone() == (100,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM bastion_kv")


async def test_a_failing_read_raises_the_sqlite_error(store: SQLiteStore) -> None:
    """A read that SQLite refuses raises its own exception from get (the pipeline answers
    503), here a table another process dropped."""
    await store.set("k", b"v", TTL)
    with other_connection(store) as other:
        other.execute("DROP TABLE bastion_kv")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.get("k")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.health()


async def test_a_first_get_creates_private_files(tmp_path: Path) -> None:
    """Opened by a read, the files are 0600 in a 0700 directory as when opened by a write."""
    store = SQLiteStore(tmp_path / "data")
    assert await store.get("nothing") is None
    directory = store.path.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes == {
        "bastion.sqlite3": 0o600,
        "bastion.sqlite3-wal": 0o600,
        "bastion.sqlite3-shm": 0o600,
    }
    await store.close()


async def test_close_releases_both_connections_and_reads_reopen(tmp_path: Path) -> None:
    """After close() no connection is left on the file (SQLite removes the WAL files when
    the last one closes); get and health then reopen both."""
    store = SQLiteStore(tmp_path / "data")
    await store.set("k", b"v", TTL)
    assert await store.get("k") == b"v"
    await store.close()
    assert [p.name for p in store.path.parent.iterdir()] == ["bastion.sqlite3"]
    await store.health()
    assert await store.get("k") == b"v"
    await store.set("k", b"w", TTL)
    assert await store.get("k") == b"w"
    await store.close()
    assert [p.name for p in store.path.parent.iterdir()] == ["bastion.sqlite3"]


def test_stores_opening_one_new_file_at_once_all_open(tmp_path: Path) -> None:
    """Several workers started together on one new data directory: each opens the file,
    switches it to WAL and creates the table at the same moment. SQLite refuses some of
    them with "database is locked" at once, without waiting; every store still opens and
    writes (no worker fails its first call)."""
    rounds, workers = 100, 8
    failures: list[BaseException] = []
    for n in range(rounds):
        stores = [SQLiteStore(tmp_path / f"data{n}") for _ in range(workers)]
        start = threading.Barrier(workers)

        def open_and_write(store: SQLiteStore, who: int, start: threading.Barrier) -> None:
            start.wait()
            try:
                store._set(f"k{who}", b"v", TTL)
            except BaseException as error:  # collected, and asserted below
                failures.append(error)

        threads = [
            threading.Thread(target=open_and_write, args=(store, who, start))
            for who, store in enumerate(stores)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for store in stores:
            anyio.run(store.close)
    assert failures == []
    check = SQLiteStore(tmp_path / f"data{rounds - 1}")
    assert [anyio.run(check.get, f"k{who}") for who in range(workers)] == [b"v"] * workers
    anyio.run(check.close)
