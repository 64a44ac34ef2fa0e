"""RedisStore against a real Redis (``REDIS_URL``, else a throwaway redis-server) and a real
Redis Cluster (``REDIS_CLUSTER_URL``, else three throwaway masters), and the rate-limit
counters there.

Each test writes under a key prefix of its own (``bastion-test-<random>:``) and deletes
every key under it afterwards, so a shared Redis is left as it was and runs in parallel
do not meet. The conformance tests are those of tests/stores/test_stores.py; the rest checks
what only a server brings: the TTL Redis holds, what a second client sees, and that a
Redis that refuses or does not answer fails every call fast (< 1 s) with an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio
from conftest import SECRET
from services import (
    RedisClusterServers,
    delete_matching,
    free_port,
    redis_client,
    redis_cluster,
    redis_server,
    wait_for,
)

from bastion import Bastion
from bastion.errors import ConfigurationError, RateLimited, ServiceUnavailable
from bastion.ratelimit import Counter, parse_rate
from bastion.sessions import Session
from bastion.stores import RedisStore, Store, store_from_url
from bastion.stores.redis import cluster_client

pytestmark = pytest.mark.anyio

TTL = 3600.0
TINY_TTL = 0.05
PAST_TINY_TTL = 0.15
FAST = 1.0
"""Seconds within which a call to an unreachable Redis must have failed."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return f"bastion-test-{secrets.token_hex(8)}:"


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A plain (synchronous) client on the same Redis, to look around the store; every key
    under the test's prefix is deleted when the test ends."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield client
    finally:
        stale = list(client.scan_iter(match=prefix + "*", count=1000))
        if stale:
            client.delete(*stale)
        client.close()


@pytest.fixture
async def store(redis_url: str, prefix: str, raw: redis.Redis) -> AsyncIterator[RedisStore]:
    made = RedisStore(redis_url, prefix=prefix)
    yield made
    await made.close()


def keys_under(raw: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(raw.scan_iter(match=prefix + "*", count=1000))


async def close_counter(counter: Counter) -> None:
    """Close the redis-py client inside the limits storage (limits has no close of its
    own), in the test's event loop rather than at garbage collection."""
    client: redis.asyncio.Redis = counter.storage.bridge.storage  # type: ignore[attr-defined]
    await client.aclose()


# --- the protocol (the shared conformance tests run on Redis in tests/stores/test_stores.py) ---


def test_redis_store_implements_the_store_protocol(redis_url: str) -> None:
    """RedisStore is a Store (get, set, delete, close); building one connects to nothing."""
    assert isinstance(RedisStore(redis_url), Store)


def test_store_from_url_makes_a_redis_store(redis_url: str) -> None:
    """redis:// (what BASTION_STORE says) selects RedisStore, on that host and port."""
    made = store_from_url(redis_url)
    assert isinstance(made, RedisStore)
    assert made.url == redis_url


async def test_delete_removes_the_key_from_redis_itself(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    """After delete(), get() answers None and the key is gone from Redis itself."""
    await store.set("session:a", b"one", TTL)
    await store.delete("session:a")
    assert await store.get("session:a") is None
    assert keys_under(raw, prefix) == []


# --- what Redis holds -----------------------------------------------------------------------


async def test_keys_live_under_the_prefix(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """A key is stored as prefix + key, and the value is the bytes given (nothing added)."""
    await store.set("session:abc", b"value", TTL)
    assert keys_under(raw, prefix) == [(prefix + "session:abc").encode()]
    assert raw.get(prefix + "session:abc") == b"value"


async def test_redis_holds_the_ttl_given(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """Expiry is Redis's own (PTTL), to the millisecond: nothing lives forever."""
    await store.set("hour", b"x", TTL)
    await store.set("fraction", b"x", 2.5)
    assert TTL * 1000 - 2000 < raw.pttl(prefix + "hour") <= TTL * 1000
    assert 2500 - 2000 < raw.pttl(prefix + "fraction") <= 2500


@pytest.mark.parametrize("ttl", [0.0, 0.0004, -5.0])
async def test_a_ttl_under_a_millisecond_still_expires(
    store: RedisStore, raw: redis.Redis, prefix: str, ttl: float
) -> None:
    """A ttl of zero, under a millisecond or negative stores with the shortest expiry
    Redis knows (1 ms), never without one: the key is gone almost at once."""
    await store.set("instant", b"x", ttl)
    await anyio.sleep(0.02)
    assert await store.get("instant") is None
    assert keys_under(raw, prefix) == []


async def test_two_clients_share_the_state(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    """Two stores on one Redis (two processes) see each other's writes and deletes, and a
    store built after the first is closed still reads its keys (a restart)."""
    first, second = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        await first.set("shared", b"v1", TTL)
        assert await second.get("shared") == b"v1"
        await second.set("shared", b"v2", TTL)
        assert await first.get("shared") == b"v2"
        await second.delete("shared")
        assert await first.get("shared") is None
        await first.set("kept", b"across a restart", TTL)
    finally:
        await first.close()
        await second.close()
    third = RedisStore(redis_url, prefix=prefix)
    try:
        assert await third.get("kept") == b"across a restart"
    finally:
        await third.close()


async def test_prefixes_keep_apps_apart(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    """Two apps on one Redis with different prefixes never see each other's keys."""
    one = RedisStore(redis_url, prefix=prefix + "one:")
    two = RedisStore(redis_url, prefix=prefix + "two:")
    try:
        await one.set("session:a", b"app one", TTL)
        assert await two.get("session:a") is None
        await two.delete("session:a")
        assert await one.get("session:a") == b"app one"
    finally:
        await one.close()
        await two.close()


async def test_health_answers_while_redis_does(store: RedisStore) -> None:
    """health() (the health check) returns while Redis answers (PING)."""
    assert await store.health() is None


def test_repr_shows_where_not_the_password() -> None:
    """repr() names host and port only: a password in the URL never shows."""
    made = RedisStore("redis://:hunter2@127.0.0.1:6390/4")
    assert repr(made) == "RedisStore(host='127.0.0.1', port=6390)"
    assert "hunter2" not in repr(made)


# --- a Redis that is not there fails fast ---------------------------------------------------


Call = Callable[[RedisStore], Awaitable[object]]
CALLS: dict[str, Call] = {
    "get": lambda s: s.get("session:x"),
    "set": lambda s: s.set("session:x", b"v", TTL),
    "delete": lambda s: s.delete("session:x"),
    "health": lambda s: s.health(),
}


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers:
    a Redis that hangs. Only a timeout ends a call to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port: int = sock.getsockname()[1]
        yield port


async def assert_fails_fast(
    store: RedisStore, call: Call, error: type[Exception] | tuple[type[Exception], ...]
) -> float:
    """The call raises ``error`` within FAST seconds (twice: a second call does not wait
    for the first one's connection); the slower of the two durations."""
    slowest = 0.0
    for _ in range(2):
        started = time.perf_counter()
        with pytest.raises(error):
            await call(store)
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < FAST, f"{slowest:.3f} s"
    return slowest


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_port_where_nothing_listens_fails_fast(name: str) -> None:
    """Connection refused: every call raises a ConnectionError at once, never hangs."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        await assert_fails_fast(store, CALLS[name], redis.exceptions.ConnectionError)
    finally:
        await store.close()


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_redis_that_never_answers_times_out(name: str, black_hole: int) -> None:
    """A server that accepts and then says nothing: every call raises a TimeoutError after
    the store's timeout (0.5 s by default), well within a second."""
    store = RedisStore(f"redis://127.0.0.1:{black_hole}/0")
    try:
        slowest = await assert_fails_fast(store, CALLS[name], redis.exceptions.TimeoutError)
    finally:
        await store.close()
    assert slowest >= 0.4  # it was the timeout that ended it, not a refusal


async def test_a_shorter_timeout_is_kept(black_hole: int) -> None:
    """RedisStore(timeout=0.1) waits 0.1 s, not the default."""
    store = RedisStore(f"redis://127.0.0.1:{black_hole}/0", timeout=0.1)
    try:
        started = time.perf_counter()
        with pytest.raises(redis.exceptions.TimeoutError):
            await store.get("session:x")
        assert time.perf_counter() - started < 0.4
    finally:
        await store.close()


class SlowProxy:
    """A loopback TCP proxy to a Redis whose replies wait ``delay`` seconds first: a Redis
    that answers late, then on time again."""

    def __init__(self, redis_url: str) -> None:
        target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
        self.target = (target["host"], int(target["port"]))
        self.db = int(target.get("db", 0))
        self.delay = 0.0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/{self.db}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, late: bool
        ) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if late and self.delay:
                        await asyncio.sleep(self.delay)
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


async def test_a_late_reply_is_never_read_as_the_next_commands(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """The deadline ends a command whose reply is late (TimeoutError) and closes its
    connection: when the late reply comes, no later command reads it as its own. Each
    later get answers its own key's value."""
    raw.set(prefix + "a", b"value of a")
    raw.set(prefix + "b", b"value of b")
    proxy = SlowProxy(redis_url)
    async with proxy as url:
        store = RedisStore(url, prefix=prefix, timeout=0.2)
        try:
            assert await store.get("b") == b"value of b"  # a pooled connection
            proxy.delay = 0.5
            started = time.perf_counter()
            with pytest.raises(redis.exceptions.TimeoutError):
                await store.get("a")
            assert 0.15 <= time.perf_counter() - started < 0.45
            proxy.delay = 0.0
            await asyncio.sleep(0.6)  # a's reply has arrived by now, had anyone waited
            for _ in range(5):
                assert await store.get("b") == b"value of b"
        finally:
            await store.close()


async def test_calls_right_after_a_redis_restart_succeed(tmp_path: Path) -> None:
    """Redis restarts (an upgrade, a failover) while the app holds pooled connections to
    it: once Redis is back, the very first calls succeed. A connection Redis dropped is
    replaced at once, not answered 503 once for every connection in the pool."""
    rate = parse_rate("100/minute", "test")
    assert rate is not None
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(server.url)
        counter = Counter(server.url)
        try:
            async with anyio.create_task_group() as tg:  # several connections in each pool
                for i in range(8):
                    tg.start_soon(store.set, f"k{i}", b"v", TTL)
                    tg.start_soon(counter.hit, rate, "action", "limited", f"caller{i}")
            server.stop(signal.SIGKILL)
            server.start()  # the same port, empty
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(store.set, f"k{i}", b"again", TTL)
                    tg.start_soon(counter.hit, rate, "action", "limited", f"caller{i}")
            assert [await store.get(f"k{i}") for i in range(8)] == [b"again"] * 8
            assert await store.health() is None
        finally:
            await store.close()
            await close_counter(counter)


# --- rate-limit counters in Redis ----------------------------------------------------------------


async def test_two_counters_on_one_redis_share_the_limit(redis_url: str, prefix: str) -> None:
    """Two Counters on one Redis (two processes): 5/minute means 5 calls in total, taken
    alternately from both; the 6th, on either, is refused with a Retry-After."""
    rate = parse_rate("5/minute", "test")
    assert rate is not None
    key = ("action", "limited", prefix)
    first, second = Counter(redis_url), Counter(redis_url)
    try:
        for i in range(5):
            await (first if i % 2 == 0 else second).hit(rate, *key)
        with pytest.raises(RateLimited) as refused:
            await second.hit(rate, *key)
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        with pytest.raises(RateLimited):
            await first.hit(rate, *key)
        await first.clear(rate, *key)
        await second.check(rate, *key)  # cleared for both
    finally:
        await first.clear(rate, *key)
        await close_counter(first)
        await close_counter(second)


async def test_counter_on_an_unreachable_redis_fails_closed_fast(
    black_hole: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that does not answer: the call is refused with 503 (ServiceUnavailable)
    within a second, never let through uncounted; the cause goes to the log."""
    caplog.set_level(logging.ERROR, logger="bastion")
    rate = parse_rate("5/minute", "test")
    assert rate is not None
    for uri in (f"redis://127.0.0.1:{black_hole}/0", f"redis://127.0.0.1:{free_port()}/0"):
        counter = Counter(uri)
        try:
            started = time.perf_counter()
            with pytest.raises(ServiceUnavailable):
                await counter.hit(rate, "action", "limited", "127.0.0.1")
            assert time.perf_counter() - started < FAST
        finally:
            await close_counter(counter)
    assert [r.getMessage() for r in caplog.records if r.name == "bastion"] == [
        "bastion: the rate-limit storage failed; refusing the call"
    ] * 2


def test_bastion_store_env_selects_redis_for_state_and_counters(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BASTION_STORE=redis://… makes the store a RedisStore, and the rate-limit counters
    default to the same Redis (so limits hold across processes)."""
    monkeypatch.setenv("BASTION_STORE", redis_url)
    app = Bastion(secret_key=SECRET)
    assert isinstance(app.store, RedisStore)
    assert app.store.url == redis_url
    assert type(app.counter.storage).__name__ == "RedisStorage"
    anyio.run(app.store.close)


# --- Redis Cluster ----------------------------------------------------------------------------
#
# The tests' three-master cluster (redis_cluster_url) for what leaves it as it was; a cluster
# of the test's own for what stops, freezes or fails over one of its nodes.


@pytest.fixture
def cluster_raw(redis_cluster_url: str, prefix: str) -> Iterator[redis.RedisCluster]:
    """A plain client on the tests' cluster, to look around the store; every key under the
    test's prefix, on every master, is deleted when the test ends."""
    client = redis_client(redis_cluster_url)
    assert isinstance(client, redis.RedisCluster)
    try:
        yield client
    finally:
        client.close()
        delete_matching(redis_cluster_url, f"*{prefix}*")


@pytest.fixture
async def cluster_store(
    redis_cluster_url: str, prefix: str, cluster_raw: redis.RedisCluster
) -> AsyncIterator[RedisStore]:
    made = RedisStore(redis_cluster_url, prefix=prefix)
    yield made
    await made.close()


def one_key_per_master(raw: redis.RedisCluster, prefix: str) -> dict[int, str]:
    """Store keys (without the prefix) that the cluster spreads over its masters: one for
    each master, by port."""
    found: dict[int, str] = {}
    masters = {node.port for node in raw.get_primaries()}
    for i in range(1000):
        port = raw.get_node_from_key(f"{prefix}k{i}").port
        found.setdefault(port, f"k{i}")
        if set(found) == masters:
            return found
    raise AssertionError(f"no keys found on every master: {found}")


def test_store_from_url_makes_a_cluster_store(redis_cluster_url: str) -> None:
    """redis+cluster://host:port,… (what BASTION_STORE says) selects RedisStore on a
    cluster, and the counters default to the same cluster, spelled as limits spells it."""
    made = store_from_url(redis_cluster_url)
    assert isinstance(made, RedisStore)
    assert made.url == redis_cluster_url
    assert made.rate_limit_storage == redis_cluster_url
    anyio.run(made.close)


def test_cluster_repr_shows_the_nodes_not_the_password() -> None:
    """repr() of a cluster store names its nodes only; building it connects to nothing."""
    made = RedisStore("redis+cluster://:hunter2@127.0.0.1:7000,127.0.0.1:7001")
    assert repr(made) == "RedisStore(cluster='127.0.0.1:7000,127.0.0.1:7001')"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "a Redis Cluster URL names host:port pairs"),
        ("redis+cluster://127.0.0.1", "a Redis Cluster URL names host:port pairs"),
        ("redis+cluster://127.0.0.1:7000,", "a Redis Cluster URL names host:port pairs"),
        ("redis+cluster://127.0.0.1:port", "a Redis Cluster URL names host:port pairs"),
        ("redis+cluster://127.0.0.1:7000/2", "a Redis Cluster URL has no database or options"),
        (
            "redis+cluster://127.0.0.1:7000?ssl=true",
            "a Redis Cluster URL has no database or options",
        ),
    ],
)
def test_a_cluster_url_without_nodes_is_refused_at_start_up(url: str, message: str) -> None:
    """A cluster URL that names no usable node, a database (a cluster has only 0) or
    options is a ConfigurationError when the store is built, saying what the form is."""
    with pytest.raises(ConfigurationError) as refused:
        RedisStore(url)
    assert str(refused.value) == (
        f"{message}: redis+cluster://[[user]:password@]host:port[,host:port…]"
    )


async def test_cluster_keys_are_prefix_and_key_as_on_one_redis(
    cluster_store: RedisStore, cluster_raw: redis.RedisCluster, prefix: str
) -> None:
    """On a cluster a key is stored as prefix + key, exactly as on one Redis (no hash tag
    added: keys copied from one Redis keep their sessions), on the master serving the slot
    that CLUSTER KEYSLOT gives that name."""
    await cluster_store.set("session:abc", b"value", TTL)
    name = prefix + "session:abc"
    assert sorted(cluster_raw.scan_iter(match=prefix + "*")) == [name.encode()]
    owner = cluster_raw.get_node_from_key(name)
    assert cluster_raw.keyslot(name) == cluster_raw.cluster_keyslot(name)
    with redis.Redis(host=owner.host, port=owner.port, socket_timeout=5) as node:
        assert node.get(name) == b"value"  # that master holds it itself (no MOVED)


async def test_a_signed_in_session_on_the_cluster_is_one_key_commands_only(
    cluster_store: RedisStore, cluster_raw: redis.RedisCluster, prefix: str
) -> None:
    """A signed-in session is its record plus its user's list of sessions: separate keys,
    each in the slot its own name gives (CLUSTER KEYSLOT), and read and written only by
    one-key commands, so no command spans two slots. Two sessions of one user, the list,
    their loading and ending them all work across the masters."""
    app = Bastion(secret_key=SECRET, store=cluster_store, allowed_origins=["http://x.test"])
    manager = app.session_manager
    sids = []
    for _ in range(2):
        session = Session()
        session.login("alice")
        session["note"] = "kept"
        await manager.save(session, "bastion_session", secure=False)
        assert session.id is not None
        sids.append(session.id)
    records = [prefix + manager.store_keys(sid)[0] for sid in sids]
    index = prefix + 'user-sessions:"alice"'
    assert sorted(cluster_raw.scan_iter(match=prefix + "*")) == sorted(
        name.encode() for name in [*records, index]
    )
    for name in [*records, index]:
        assert cluster_raw.exists(name) == 1
        assert cluster_raw.keyslot(name) == cluster_raw.cluster_keyslot(name)
    for sid in sids:
        loaded = await manager.load(sid)
        assert (loaded.user_id, loaded["note"]) == ("alice", "kept")
    assert await manager.end_all("alice") == 2
    assert [(await manager.load(sid)).user_id for sid in sids] == [None, None]
    assert sorted(cluster_raw.scan_iter(match=prefix + "session:*")) == []


async def test_compare_and_set_works_on_every_master(
    cluster_store: RedisStore, cluster_raw: redis.RedisCluster, prefix: str
) -> None:
    """The compare-and-set script runs on whichever master holds its key, including after
    every master forgot it (SCRIPT FLUSH, as a restarted or newly promoted master has):
    the expected value wins, a stale one is refused, nothing spans two masters."""
    keys = one_key_per_master(cluster_raw, prefix)
    assert len(keys) == 3
    for key in keys.values():
        await cluster_store.set(key, b"v1", TTL)
    for node in cluster_raw.get_primaries():
        assert cluster_raw.execute_command("SCRIPT FLUSH", target_nodes=node) is True
    for key in keys.values():
        assert await cluster_store.compare_and_set(key, b"v1", b"v2", TTL) is True
        assert await cluster_store.compare_and_set(key, b"v1", b"stale", TTL) is False
        assert await cluster_store.compare_and_set(key, None, b"new", TTL) is False
        assert await cluster_store.get(key) == b"v2"
    assert {cluster_raw.get_node_from_key(prefix + k).port for k in keys.values()} == set(keys)


async def test_concurrent_first_calls_of_a_fresh_cluster_client_all_succeed(
    redis_cluster_url: str, prefix: str, cluster_raw: redis.RedisCluster
) -> None:
    """An app's first requests arrive together, before the client knows the cluster's
    slots: fifty first set() calls at once on a fresh store, and twenty first hits at
    once on fresh counters, all succeed, five times over (redis-py alone would route them
    to random masters and, on their MOVED replies, drop the connections of the others)."""
    rate = parse_rate("100/minute", "test")
    assert rate is not None
    for run in range(5):
        store = RedisStore(redis_cluster_url, prefix=f"{prefix}{run}:")
        counter = Counter(redis_cluster_url)
        try:
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(store.set, f"k{i}", b"v", TTL)
                for i in range(20):
                    tg.start_soon(counter.hit, rate, "action", "limited", f"{prefix}{run}:{i}")
            assert [await store.get(f"k{i}") for i in range(50)] == [b"v"] * 50
        finally:
            await store.close()
            await close_counter(counter)


@pytest.mark.parametrize("listening", [False, True], ids=["refused", "never-answers"])
@pytest.mark.parametrize("name", list(CALLS))
async def test_a_cluster_that_cannot_be_reached_fails_fast(
    name: str, listening: bool, black_hole: int
) -> None:
    """No node of the URL can be asked for the cluster's slots (nothing listens, or it
    never answers): every call raises redis-py's RedisClusterException within a second."""
    port = black_hole if listening else free_port()
    store = RedisStore(f"redis+cluster://127.0.0.1:{port}")
    try:
        await assert_fails_fast(store, CALLS[name], redis.exceptions.RedisClusterException)
    finally:
        await store.close()


async def test_health_asks_every_master(cluster_store: RedisStore) -> None:
    """health() returns while every master answers PING."""
    assert await cluster_store.health() is None


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """Three masters of the test's own, which it may stop or freeze."""
    with redis_cluster(tmp_path / "cluster") as cluster:
        yield cluster


def spread_over(cluster: RedisClusterServers, prefix: str) -> dict[int, str]:
    with contextlib.closing(redis_client(cluster.url)) as raw:
        assert isinstance(raw, redis.RedisCluster)
        return one_key_per_master(raw, prefix)


async def test_a_stopped_master_is_refused_fast_and_recovers_when_back(
    own_cluster: RedisClusterServers, prefix: str
) -> None:
    """One master of three is killed: calls for its keys, and health(), raise a
    ConnectionError within a second (no hang, no long retry); keys on the other masters
    are still served. Once it is back on its port (its slots, no data), the same store
    serves its keys again: no restart of the app. Killed and back again while the store
    and the counters hold pooled connections to it, their very first calls succeed (the
    dropped connection is replaced at once, not answered 503)."""
    rate = parse_rate("100/minute", "test")
    assert rate is not None
    keys = spread_over(own_cluster, prefix)
    [dead] = [node for node in own_cluster.nodes if node.port == next(iter(keys))]
    dead_key = keys[dead.port]
    with contextlib.closing(redis_client(own_cluster.url)) as raw:
        parts = next(
            ("action", "limited", f"{prefix}{i}")
            for i in range(1000)
            if raw.get_node_from_key(
                f"LIMITS:{{{rate.key_for('action', 'limited', f'{prefix}{i}')}}}"
            ).port
            == dead.port
        )
    store, counter = RedisStore(own_cluster.url, prefix=prefix), Counter(own_cluster.url)
    try:
        for key in keys.values():
            await store.set(key, b"v", TTL)
        dead.stop(signal.SIGKILL)
        for call in (lambda s: s.get(dead_key), lambda s: s.set(dead_key, b"x", TTL)):
            await assert_fails_fast(store, call, redis.exceptions.ConnectionError)
        # redis-py 6 reports a master it cannot reach for the map with its base class.
        unreachable = (redis.exceptions.ConnectionError, redis.exceptions.RedisClusterException)
        await assert_fails_fast(store, CALLS["health"], unreachable)
        for port, key in keys.items():
            if port != dead.port:
                assert await store.get(key) == b"v"

        dead.start()
        assert wait_for(own_cluster.ready, 10.0, interval=0.1)
        assert await store.get(dead_key) is None  # back empty: no persistence
        await store.set(dead_key, b"again", TTL)
        await counter.hit(rate, *parts)
        assert await store.health() is None

        dead.stop(signal.SIGKILL)
        dead.start()
        assert wait_for(own_cluster.ready, 10.0, interval=0.1)
        await store.set(dead_key, b"after a restart", TTL)
        await counter.hit(rate, *parts)
        assert await store.get(dead_key) == b"after a restart"
    finally:
        await store.close()
        await close_counter(counter)


async def test_a_frozen_master_costs_one_timeout_for_sessions_and_counters(
    own_cluster: RedisClusterServers, prefix: str
) -> None:
    """A master that stops answering (SIGSTOP): the first call for one of its keys raises
    a TimeoutError after the store's timeout (0.5 s), once, not retried into a second one,
    and the counters fail closed (503) as fast. Each later call first refreshes the map of
    the cluster, from a node picked at random, so it may ask the frozen one first: one
    timeout or two, never more. Thawed, the master serves both again."""
    rate = parse_rate("5/minute", "test")
    assert rate is not None
    parts = ("action", "limited", prefix)
    frozen = own_cluster.owner(f"LIMITS:{{{rate.key_for(*parts)}}}")
    key = spread_over(own_cluster, prefix)[frozen.port]
    store, counter = RedisStore(own_cluster.url, prefix=prefix), Counter(own_cluster.url)

    async def seconds(call: Awaitable[object], error: type[Exception]) -> float:
        started = time.perf_counter()
        with pytest.raises(error):
            await call
        return time.perf_counter() - started

    try:
        await store.set(key, b"v", TTL)
        await counter.hit(rate, *parts)
        frozen.send(signal.SIGSTOP)
        try:
            first = await seconds(store.get(key), redis.exceptions.TimeoutError)
            counted = await seconds(counter.hit(rate, *parts), ServiceUnavailable)
            later = [await seconds(store.get(key), redis.exceptions.TimeoutError) for _ in range(3)]
        finally:
            frozen.send(signal.SIGCONT)
        assert 0.4 <= first < FAST, first
        assert 0.4 <= counted < FAST, counted
        assert all(0.4 <= each < 2 * 0.5 + 0.3 for each in later), later
        assert await store.get(key) == b"v"
        await counter.hit(rate, *parts)
    finally:
        await store.close()
        await close_counter(counter)


async def test_a_session_survives_a_master_failover(tmp_path: Path, prefix: str) -> None:
    """Three masters with a replica each; the master holding a session is killed. Until
    its replica has taken over (about 2 s with a 1 s node timeout), calls for the session
    fail fast with a Redis error (what the app answers 503); then the same store, not
    restarted, reads the session from the new master, and writes it (the script reloaded
    there), and the counters count there too."""
    rate = parse_rate("5/minute", "test")
    assert rate is not None
    with redis_cluster(tmp_path / "cluster", replicas=1, node_timeout=1000) as cluster:
        store, counter = RedisStore(cluster.url, prefix=prefix), Counter(cluster.url)
        try:
            await store.set("session:a", b"kept", TTL)
            await store.compare_and_set("session:a", b"kept", b"kept", TTL)  # script loaded
            owner = cluster.owner(prefix + "session:a")
            # WAIT counts the replicas that have the writes of its own connection: on a
            # connection that wrote nothing it answers at once, proving nothing (a replica
            # still in its first sync then lost the session with its master). So one more
            # write of the same value on this connection, and WAIT for it: replication is
            # in order, so the replica then has the store's writes too.
            with redis.Redis(port=owner.port, socket_timeout=5) as direct:
                direct.set(prefix + "session:a", b"kept", px=int(TTL * 1000))
                assert direct.execute_command("WAIT", 1, 5000) == 1  # the replica has it
            owner.stop(signal.SIGKILL)

            failures: list[tuple[str, float]] = []
            started = time.perf_counter()
            while True:
                before = time.perf_counter()
                try:
                    value = await store.get("session:a")
                    break
                except redis.exceptions.RedisError as exc:
                    failures.append((type(exc).__name__, time.perf_counter() - before))
                assert time.perf_counter() - started < 15, failures
                await anyio.sleep(0.1)
            assert value == b"kept"
            assert failures, "the session was read before the failover: nothing was tested"
            assert {name for name, _ in failures} <= {"ConnectionError", "ClusterDownError"}
            assert max(seconds for _, seconds in failures) < FAST, failures
            assert len(cluster.masters()) == 3  # the replica is the master now

            assert await store.compare_and_set("session:a", b"kept", b"after", TTL) is True
            assert await store.get("session:a") == b"after"
            assert await store.health() is None
            await counter.hit(rate, "action", "limited", prefix)
        finally:
            await store.close()
            await close_counter(counter)


async def test_counters_on_the_cluster_share_a_limit_and_keep_a_window_in_one_slot(
    redis_cluster_url: str, prefix: str, cluster_raw: redis.RedisCluster
) -> None:
    """Two Counters on one cluster share 2/second (2 in total, then 429). When the window
    moves on, the sliding-window script reads both its counters in one call: limits names
    them LIMITS:{key} and LIMITS:{key}/-1, one hash tag, so they are in one slot (no
    CROSSSLOT) whatever the key parts."""
    rate = parse_rate("2/second", "test")
    assert rate is not None
    parts = ("action", "limited", prefix + "{user}")  # braces of the caller's own
    first, second = Counter(redis_cluster_url), Counter(redis_cluster_url)
    try:
        await first.hit(rate, *parts)
        await second.hit(rate, *parts)
        with pytest.raises(RateLimited):
            await first.hit(rate, *parts)
        await anyio.sleep(1.05)  # the next window: this one becomes the previous one
        await second.hit(rate, *parts)
        current = f"LIMITS:{{{rate.key_for(*parts)}}}"
        assert sorted(cluster_raw.scan_iter(match=f"*{prefix}*")) == [
            current.encode(),
            f"{current}/-1".encode(),
        ]
        assert cluster_raw.cluster_keyslot(current) == cluster_raw.cluster_keyslot(f"{current}/-1")
    finally:
        await close_counter(first)
        await close_counter(second)


async def test_the_moving_window_on_the_cluster_is_one_key(
    redis_cluster_url: str, prefix: str, cluster_raw: redis.RedisCluster
) -> None:
    """The log-in throttle's moving window (3/minute here): three failures counted, the
    fourth check refused with a Retry-After, all in one list key on one master."""
    rate = parse_rate("3/minute", "test")
    assert rate is not None
    counter = Counter(redis_cluster_url).moving()
    parts = ("login", prefix)
    try:
        for _ in range(3):
            await counter.count(rate, *parts)
        with pytest.raises(RateLimited) as refused:
            await counter.check(rate, *parts)
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        key = f"LIMITS:{rate.key_for(*parts)}"
        assert sorted(cluster_raw.scan_iter(match=f"*{prefix}*")) == [key.encode()]
        assert cluster_raw.llen(key) == 3
    finally:
        await close_counter(counter)


def test_bastion_store_env_selects_the_cluster_for_state_and_counters(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BASTION_STORE=redis+cluster://… makes the store a cluster RedisStore and puts the
    counters in limits' cluster storage on the same nodes, with the store's own kind of
    client (its timeouts and retry: a timeout is not retried)."""
    monkeypatch.setenv("BASTION_STORE", redis_cluster_url)
    app = Bastion(secret_key=SECRET)
    assert isinstance(app.store, RedisStore)
    assert app.store.url == redis_cluster_url
    assert type(app.counter.storage).__name__ == "RedisClusterStorage"
    client = app.counter.storage.bridge.storage  # type: ignore[attr-defined]
    assert type(client) is type(cluster_client(redis_cluster_url, 0.5))
    assert client.connection_kwargs["socket_timeout"] == 0.5
    assert redis.exceptions.TimeoutError not in client.ERRORS_ALLOW_RETRY
    anyio.run(app.store.close)


def test_shutdown_closes_the_counters_connections_too(redis_url: str) -> None:
    """An app on Redis that counted a call and shut down leaves no connection open:
    neither the store's nor the rate-limit counters' (limits' own client, which it
    never closes itself). Before, each app left its counter connections to the garbage
    collector, with a ResourceWarning each."""
    import gc
    import warnings

    from limits import parse

    from bastion import Bastion

    async def run() -> None:
        app = Bastion(
            secret_key=SECRET,
            allowed_origins=["https://app.example"],
            store=RedisStore(redis_url),
        )
        await app.counter.hit(parse("5/minute"), "shutdown-test", secrets.token_hex(4))
        await app.shutdown()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anyio.run(run)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
