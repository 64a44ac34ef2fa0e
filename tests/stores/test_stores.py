"""Stores: one conformance suite, run against every backend that runs here.

``MemoryStore``, ``SQLiteStore`` and ``RedisStore`` (on one Redis and on a Redis Cluster)
are used for real; each test states the contract of ``bastion.stores.Store`` that it
checks. The two tests on expiry sleep a little longer than a tiny time to live: they check
that values expire, not how fast.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from conftest import SECRET
from services import delete_matching

from bastion import Bastion
from bastion.stores import MemoryStore, RedisStore, SQLiteStore, Store

pytestmark = pytest.mark.anyio

TTL = 3600.0
TINY_TTL = 0.05
PAST_TINY_TTL = 0.15


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each backend, fresh for the test and closed after it. Redis: the tests' Redis
    (REDIS_URL, else a throwaway server, else skipped) and the tests' three-master Redis
    Cluster (REDIS_CLUSTER_URL, else a throwaway one), under a prefix of the test's own
    whose keys (on every master) are deleted afterwards."""
    url = prefix = None
    if request.param == "memory":
        made: Store = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "data")
    else:
        url = request.getfixturevalue(
            "redis_url" if request.param == "redis" else "redis_cluster_url"
        )
        prefix = f"bastion-test-{secrets.token_hex(8)}:"
        made = RedisStore(url, prefix=prefix)
    yield made
    await made.close()
    if url is not None and prefix is not None:
        delete_matching(url, prefix + "*")


def sqlite_keys(path: Path) -> list[str]:
    """Every key in an SQLite store's file, expired or not, read around the store."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT key FROM bastion_kv ORDER BY key")]


# --- the protocol ---------------------------------------------------------------------


@pytest.mark.parametrize("factory", [MemoryStore, lambda: SQLiteStore("unused")])
def test_backends_implement_the_store_protocol(factory: Callable[[], object]) -> None:
    """Both backends are Stores (the runtime-checkable protocol): get, set, delete, close."""
    assert isinstance(factory(), Store)


async def test_absent_key_is_none(store: Store) -> None:
    """get() of a key never set answers None, not an error."""
    assert await store.get("session:absent") is None


async def test_set_then_get(store: Store) -> None:
    """A value set is the value got back."""
    await store.set("session:a", b"one", TTL)
    assert await store.get("session:a") == b"one"


async def test_set_overwrites(store: Store) -> None:
    """A second set() of the same key replaces the value."""
    await store.set("session:a", b"one", TTL)
    await store.set("session:a", b"two", TTL)
    assert await store.get("session:a") == b"two"


async def test_keys_are_independent(store: Store) -> None:
    """Setting or deleting one key leaves the others as they were."""
    await store.set("session:a", b"one", TTL)
    await store.set("session:b", b"two", TTL)
    await store.delete("session:a")
    assert await store.get("session:a") is None
    assert await store.get("session:b") == b"two"


async def test_delete_removes_the_key(store: Store) -> None:
    """After delete(), get() answers None."""
    await store.set("session:a", b"one", TTL)
    await store.delete("session:a")
    assert await store.get("session:a") is None


async def test_delete_of_absent_key_is_not_an_error(store: Store) -> None:
    """delete() of a key that does not exist returns quietly."""
    await store.delete("session:never")
    assert await store.get("session:never") is None


async def test_bytes_round_trip_exactly(store: Store) -> None:
    """Every byte value (NUL, high bytes, invalid UTF-8) comes back unchanged, as bytes."""
    value = bytes(range(256)) * 4 + b"\x00\xff\xfe"
    await store.set("blob", value, TTL)
    got = await store.get("blob")
    assert type(got) is bytes
    assert got == value


async def test_empty_value_is_not_absent(store: Store) -> None:
    """b"" is a value: get() answers b"", not None."""
    await store.set("empty", b"", TTL)
    assert await store.get("empty") == b""


async def test_keys_are_exact_strings(store: Store) -> None:
    """Keys are compared exactly: case, non-ASCII, SQL-looking text, spaces and glob
    characters included."""
    await store.set("Key", b"upper", TTL)
    await store.set("key", b"lower", TTL)
    await store.set("clé-ü", b"unicode", TTL)
    await store.set("x' OR '1'='1", b"quoted", TTL)
    await store.set("k*[a] ?", b"glob", TTL)
    assert await store.get("Key") == b"upper"
    assert await store.get("key") == b"lower"
    assert await store.get("clé-ü") == b"unicode"
    assert await store.get("x' OR '1'='1") == b"quoted"
    assert await store.get("k*[a] ?") == b"glob"
    assert await store.get("x") is None
    assert await store.get("k") is None


async def test_value_expires_after_its_ttl(store: Store) -> None:
    """A value set with a tiny ttl is there at once, and absent once the ttl has passed."""
    await store.set("short", b"gone soon", TINY_TTL)
    await store.set("long", b"stays", TTL)
    assert await store.get("short") == b"gone soon"
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.get("short") is None
    assert await store.get("long") == b"stays"


async def test_set_renews_the_ttl(store: Store) -> None:
    """Overwriting an expiring key with a long ttl keeps it past the first ttl."""
    await store.set("renewed", b"v1", TINY_TTL)
    await store.set("renewed", b"v2", TTL)
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.get("renewed") == b"v2"


async def test_expired_key_can_be_set_again(store: Store) -> None:
    """A key that expired is a fresh key: set() stores it again."""
    await store.set("again", b"old", TINY_TTL)
    await anyio.sleep(PAST_TINY_TTL)
    await store.set("again", b"new", TTL)
    assert await store.get("again") == b"new"


async def test_concurrent_writers_all_land(store: Store) -> None:
    """Fifty concurrent set() calls (SQLite: worker threads, one lock; Redis: several
    pooled connections) all succeed."""
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(store.set, f"k{i}", str(i).encode(), TTL)
    assert [await store.get(f"k{i}") for i in range(50)] == [str(i).encode() for i in range(50)]


async def test_health_returns_while_the_store_answers(store: Store) -> None:
    """health() returns (nothing) while the store can answer; the health route asks it."""
    assert await store.health() is None


async def test_close_twice_is_no_error(store: Store) -> None:
    """close() may be called again (a lifespan that ends twice, a test's clean-up)."""
    await store.set("k", b"v", TTL)
    await store.close()
    await store.close()


# --- compare and set: what keeps a session from being resurrected ------------------------


async def test_compare_and_set_replaces_exactly_the_expected_value(store: Store) -> None:
    """The value is replaced when the key holds what the writer read; the result says so."""
    await store.set("cas", b"v1", TTL)
    assert await store.compare_and_set("cas", b"v1", b"v2", TTL) is True
    assert await store.get("cas") == b"v2"


async def test_compare_and_set_refuses_a_value_changed_meanwhile(store: Store) -> None:
    """Another writer changed the key since it was read: nothing is written."""
    await store.set("cas", b"v1", TTL)
    await store.set("cas", b"changed", TTL)
    assert await store.compare_and_set("cas", b"v1", b"stale", TTL) is False
    assert await store.get("cas") == b"changed"


async def test_compare_and_set_never_recreates_a_deleted_key(store: Store) -> None:
    """The log-out race: the key was read, then deleted; writing back what was read
    must not bring it back."""
    await store.set("cas", b"v1", TTL)
    await store.delete("cas")
    assert await store.compare_and_set("cas", b"v1", b"resurrected", TTL) is False
    assert await store.get("cas") is None


async def test_compare_and_set_never_revives_an_expired_key(store: Store) -> None:
    """A key that expired since it was read counts as deleted."""
    await store.set("cas", b"v1", TINY_TTL)
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.compare_and_set("cas", b"v1", b"revived", TTL) is False
    assert await store.get("cas") is None


async def test_compare_and_set_with_none_only_creates(store: Store) -> None:
    """``expected=None`` writes only a key that does not exist (or has expired)."""
    assert await store.compare_and_set("new", None, b"first", TTL) is True
    assert await store.compare_and_set("new", None, b"second", TTL) is False
    assert await store.get("new") == b"first"
    await store.set("old", b"x", TINY_TTL)
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.compare_and_set("old", None, b"fresh", TTL) is True
    assert await store.get("old") == b"fresh"


async def test_compare_and_set_sets_the_ttl(store: Store) -> None:
    """The replaced value lives for the new time to live, not the old one."""
    await store.set("cas", b"v1", TTL)
    assert await store.compare_and_set("cas", b"v1", b"short", TINY_TTL) is True
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.get("cas") is None


async def test_compare_and_set_has_one_winner_among_concurrent_writers(store: Store) -> None:
    """Twenty writers that all read v1 race to replace it: exactly one wins."""
    await store.set("race", b"v1", TTL)
    results: list[bool] = []

    async def write(i: int) -> None:
        results.append(await store.compare_and_set("race", b"v1", f"w{i}".encode(), TTL))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(write, i)
    assert results.count(True) == 1
    assert (await store.get("race") or b"").startswith(b"w")


# --- MemoryStore ----------------------------------------------------------------------


async def test_memory_store_drops_an_expired_key_when_read() -> None:
    """An expired key read once is removed from memory, not only hidden."""
    store = MemoryStore()
    await store.set("short", b"x", TINY_TTL)
    assert len(store) == 1
    await anyio.sleep(PAST_TINY_TTL)
    assert await store.get("short") is None
    assert len(store) == 0


async def test_memory_store_keeps_its_keys_through_close() -> None:
    """close() releases nothing a dict holds: an app whose lifespan ends and starts again
    in one process (a test suite) keeps its sessions, as SQLite and Redis keep them."""
    store = MemoryStore()
    await store.set("a", b"1", TTL)
    await store.close()
    assert await store.get("a") == b"1"


async def test_memory_store_repr_shows_no_keys_or_values() -> None:
    """repr() counts keys; it never shows them (they derive from session IDs)."""
    store = MemoryStore()
    await store.set("session:abc", b"secret", TTL)
    assert repr(store) == "MemoryStore(keys=1)"


# --- SQLiteStore ----------------------------------------------------------------------


async def test_sqlite_file_is_created_lazily_in_a_private_directory(tmp_path: Path) -> None:
    """Building the store touches nothing; the first call creates the directory (0700)
    and bastion.sqlite3 inside it."""
    directory = tmp_path / "state" / "bastion"
    store = SQLiteStore(directory)
    assert store.path == directory / "bastion.sqlite3"
    assert not directory.exists()
    assert await store.get("nothing") is None
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert store.path.is_file()
    await store.close()


async def test_sqlite_files_are_private_even_in_a_shared_directory(tmp_path: Path) -> None:
    """In a directory that already exists with 0755, the database and its WAL files are
    still created 0600: other local users cannot read sessions."""
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    store = SQLiteStore(directory)
    await store.set("session:a", b"private", TTL)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes == {
        "bastion.sqlite3": 0o600,
        "bastion.sqlite3-wal": 0o600,
        "bastion.sqlite3-shm": 0o600,
    }
    await store.close()


def test_an_empty_memory_store_is_the_store_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty MemoryStore is still a store: Bastion(store=MemoryStore()) keeps it
    instead of falling back to the default SQLite store."""
    store = MemoryStore()
    assert bool(store) is True
    bastion = Bastion(secret_key=SECRET, store=store)
    assert bastion.store is store


async def test_sqlite_data_persists_across_instances(tmp_path: Path) -> None:
    """What one SQLiteStore wrote, a second one on the same directory reads (a restart)."""
    first = SQLiteStore(tmp_path / "data")
    await first.set("session:a", b"kept", TTL)
    await first.close()
    second = SQLiteStore(tmp_path / "data")
    assert await second.get("session:a") == b"kept"
    await second.close()


async def test_sqlite_two_live_instances_share_the_file(tmp_path: Path) -> None:
    """Two stores open on one directory (two workers) see each other's writes and deletes."""
    first, second = SQLiteStore(tmp_path / "data"), SQLiteStore(tmp_path / "data")
    await first.set("shared", b"v1", TTL)
    assert await second.get("shared") == b"v1"
    await second.delete("shared")
    assert await first.get("shared") is None
    await first.close()
    await second.close()


async def test_sqlite_expiry_holds_across_instances(tmp_path: Path) -> None:
    """A row that expired is not served by a new instance either (expiry is stored)."""
    first = SQLiteStore(tmp_path / "data")
    await first.set("short", b"x", TINY_TTL)
    await first.close()
    await anyio.sleep(PAST_TINY_TTL)
    second = SQLiteStore(tmp_path / "data")
    assert await second.get("short") is None
    await second.close()


async def test_sqlite_expired_rows_are_purged_on_write(tmp_path: Path) -> None:
    """Expired rows nobody reads again are deleted from the file by a later write."""
    first = SQLiteStore(tmp_path / "data")
    await first.set("expired", b"x", TINY_TTL)
    await first.set("kept", b"y", TTL)
    await first.close()
    assert sqlite_keys(first.path) == ["expired", "kept"]
    await anyio.sleep(PAST_TINY_TTL)
    # A fresh instance purges on its first write (then at most once a minute).
    second = SQLiteStore(tmp_path / "data")
    await second.set("new", b"z", TTL)
    await second.close()
    assert sqlite_keys(first.path) == ["kept", "new"]


async def test_sqlite_reopens_after_close(tmp_path: Path) -> None:
    """close() releases the file; the same instance reconnects on its next call."""
    store = SQLiteStore(tmp_path / "data")
    await store.set("a", b"1", TTL)
    await store.close()
    assert await store.get("a") == b"1"
    await store.close()


def test_sqlite_repr_names_the_file_only(tmp_path: Path) -> None:
    """repr() shows where the file is, nothing else."""
    store = SQLiteStore(tmp_path / "data")
    assert repr(store) == f"SQLiteStore({str(tmp_path / 'data' / 'bastion.sqlite3')!r})"
