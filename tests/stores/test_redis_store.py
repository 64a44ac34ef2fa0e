"""RedisStore against a real Redis (``REDIS_URL``, else a throwaway redis-server), and the
rate-limit counters in that Redis.

Each test writes under a key prefix of its own (``bastion-test-<random>:``) and deletes
every key under it afterwards, so a shared Redis is left as it was and runs in parallel
do not meet. The conformance tests are those of tests/stores/test_stores.py; the rest checks
what only a server brings: the TTL Redis holds, what a second client sees, and that a
Redis that refuses or does not answer fails every call fast (< 1 s) with an exception.
"""

from __future__ import annotations

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
from services import free_port, redis_server

from bastion import Bastion
from bastion.errors import RateLimited, ServiceUnavailable
from bastion.ratelimit import Counter, parse_rate
from bastion.stores import RedisStore, Store, store_from_url

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


async def assert_fails_fast(store: RedisStore, call: Call, error: type[Exception]) -> float:
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
