"""Pipeline stages 7 and 16: how often one caller may call one action, and how often one
address may be refused (the ``limits`` library).

Limits are counted per action and per caller: the signed-in user when there is one,
else the client address. Every public action has a limit, the app's default unless it
names its own: the actions anyone may call are the ones abused first. A call refused
before it reaches its action's limit (an unknown action, another origin, a forged token)
is counted per client address instead (``refusal_rate``), so that forged calls cost an
attacker a limit too.

Two of ``limits``' strategies, each where it fits:

- **Actions: the sliding-window counter.** Two counters per caller and action (this
  window's and the last one's), so a hit costs the same and memory stays the same at any
  traffic; a moving window keeps one entry per call for a whole window. It weighs the last
  window's count by how much of it still overlaps the moving window, and lets a call in
  while ``floor(previous * overlap) + current < N``. That is exact for calls spread evenly
  and never more generous than a fixed window: at most 2N calls fall in any window-long
  span, and only for a caller that spends a window's N at its very end; even then a burst
  at the boundary is not doubled, the next window letting calls in only as the last one's
  weight falls (for 3/minute: one at once, the next after 20 s, the third after 40 s;
  ``tests/test_ratelimit_boundary.py`` pins these figures). ``Retry-After`` is worked
  out from the same two counters: the wait until the next call would pass.
- **Log-in throttling (``auth.py``): the moving window**, exact to the millisecond. It
  only counts failures and its limits are small, so a key holds at most N entries.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from bastion.errors import ConfigurationError, RateLimited, ServiceUnavailable
from bastion.timeouts import within

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import SlidingWindowCounterSupport
    from limits.aio.strategies import RateLimiter

__all__ = ["Counter", "parse_rate"]

logger = logging.getLogger("bastion")

T = TypeVar("T")

ScriptCall = tuple[Any, list[str], list[Any]]
"""A Lua script (redis-py's, registered by ``limits``), its keys and its arguments."""


@overload
def parse_rate(rate: str, where: str) -> RateLimitItem: ...
@overload
def parse_rate(rate: None, where: str) -> None: ...
@overload
def parse_rate(rate: str | None, where: str) -> RateLimitItem | None: ...
def parse_rate(rate: str | None, where: str) -> RateLimitItem | None:
    """``"20/minute"``, ``"5 per 15 minutes"`` … as the limits library reads them: one
    rate, of at least one call."""
    if rate is None:
        return None
    # The limits library is loaded by the first rate an app declares, not by import.
    from limits import parse_many

    try:
        items = parse_many(rate)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {rate!r} is not a rate like '20/minute'") from exc
    if len(items) != 1:
        # limits' own parse() would keep the first and silently drop the others.
        raise ConfigurationError(f"{where}: {rate!r} names {len(items)} rates; give one")
    if items[0].amount < 1:
        raise ConfigurationError(
            f"{where}: {rate!r} allows no call at all; use a policy to refuse everyone"
        )
    return items[0]


Strategy = Literal["sliding", "moving"]


class Counter:
    """Counters in a ``limits`` storage (memory by default; Redis or a Redis Cluster,
    ``redis+cluster://host:port[,host:port…]``, to share them between workers and hosts):
    the sliding-window counter, or with ``strategy="moving"`` the exact moving window
    (``moving()`` gives one over the same storage).

    On a cluster, limits keeps a sliding window's two counters under one hash tag
    (``LIMITS:{key}`` and ``LIMITS:{key}/-1``, one slot for the script that reads both)
    and a moving window in one key, whatever the key parts bastion passes in.

    A storage that fails or does not answer in time fails closed: the call is refused
    with 503, never let through uncounted.
    """

    def __init__(
        self,
        storage_uri: str = "memory://",
        *,
        timeout: float = 0.5,
        strategy: Strategy = "sliding",
    ) -> None:
        from limits.storage import storage_from_string

        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        options: dict[str, Any] = {}
        cluster = uri.startswith("async+redis+cluster://")
        self._deadline: float | None = None
        """bastion's deadline per call on one Redis (``RedisStore``'s reason: redis-py's
        socket timeout costs a task per command); ``None``: the storage's own."""
        if uri.startswith(("async+redis://", "async+rediss://")):
            # redis-py (the redis extra), with bounded waits on every call, and a
            # connection that Redis dropped (a restart) replaced at once, not a 503.
            from bastion.stores.redis import reconnect_once

            options = {
                "implementation": "redispy",
                "socket_connect_timeout": timeout,
                "retry": reconnect_once(),
            }
            self._deadline = timeout
        elif cluster:
            # redis-py too; its client is then replaced by one like the store's.
            options = {"implementation": "redispy"}
        self.uri = uri.removeprefix("async+")
        """Where the counters are (a ``limits`` storage URI)."""
        self.storage = (
            _swept_memory()() if uri == "async+memory://" else storage_from_string(uri, **options)
        )
        if cluster:
            _use_store_client(self.storage, uri.removeprefix("async+"), timeout)
        self.strategy: Strategy = strategy
        self.limiter: RateLimiter = _limiter(strategy, self.storage)

    def moving(self) -> Counter:
        """Exact moving-window counters over this same storage (the log-in throttle's)."""
        other = object.__new__(Counter)
        other.storage, other.strategy, other._deadline = self.storage, "moving", self._deadline
        other.uri = self.uri
        other.limiter = _limiter("moving", self.storage)
        return other

    async def close(self) -> None:
        """Release the storage's connections (the app's shutdown). limits has no close of
        its own: its Redis client is closed directly."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        closing = getattr(client, "aclose", None)
        if closing is not None:
            await closing()

    async def hit(self, rate: RateLimitItem, *key: str) -> None:
        """Count one call; 429 with ``Retry-After`` once the window is full."""
        if not await self._call(self.limiter.hit(rate, *key)):
            raise RateLimited(await self.retry_after(rate, *key))

    def scripts(self, rate: RateLimitItem, keys: list[tuple[str, ...]]) -> list[ScriptCall]:
        """The hits of ``keys`` as the Lua script calls ``limits`` makes for them on one
        Redis (its sliding-window script, its key names), for a caller that sends them
        with a command of its own in one round trip (``RedisStore.get_and_run``: the
        session's read). ``settle`` reads their replies. Only for a sliding-window counter
        on one Redis (``shares``)."""
        storage = cast("Any", self.storage)
        script = storage.bridge.lua_acquire_sliding_window
        calls = []
        for key in keys:
            name = rate.key_for(*key)
            current = storage.bridge.prefixed_key(storage._current_window_key(name))
            previous = storage.bridge.prefixed_key(storage._previous_window_key(name))
            calls.append((script, [previous, current], [rate.amount, rate.get_expiry(), 1]))
        return calls

    def shares(self, url: str | None) -> bool:
        """Whether these are sliding-window counters on the one Redis at ``url`` (not a
        cluster: a session and a counter there live on different nodes), so that a hit
        can go with a read of the store's in one round trip."""
        return (
            url is not None
            and url == self.uri
            and self.strategy == "sliding"
            and self._deadline is not None  # one Redis through redis-py
        )

    async def settle(
        self, rate: RateLimitItem, keys: list[tuple[str, ...]], replies: list[Any]
    ) -> None:
        """429 if one of the hits ``scripts`` sent was refused (its ``Retry-After`` from
        that counter)."""
        for key, accepted in zip(keys, replies, strict=True):
            if not accepted:
                raise RateLimited(await self.retry_after(rate, *key))

    async def count(self, rate: RateLimitItem, *key: str) -> None:
        """Count one event without refusing anything (a failed log-in)."""
        await self._call(self.limiter.hit(rate, *key))

    async def check(self, rate: RateLimitItem, *key: str) -> None:
        """429 if one more would go over, without counting this one."""
        if not await self._call(self.limiter.test(rate, *key)):
            raise RateLimited(await self.retry_after(rate, *key))

    async def clear(self, rate: RateLimitItem, *key: str) -> None:
        await self._call(self.limiter.clear(rate, *key))

    async def healthy(self) -> bool:
        """Whether the storage answers now (for health checks)."""
        checked = self.storage.check()
        if not inspect.isawaitable(checked):
            return bool(checked)
        if self._deadline is None:
            return bool(await checked)
        return bool(await within(self._deadline, lambda: checked))

    async def retry_after(self, rate: RateLimitItem, *key: str) -> int:
        """Whole seconds until one more call would pass (at least 1)."""
        if self.strategy == "moving":
            stats = await self._call(self.limiter.get_window_stats(rate, *key))
            return max(1, math.ceil(stats.reset_time - time.time()))
        storage = cast("SlidingWindowCounterSupport", self.storage)
        window = await self._call(storage.get_sliding_window(rate.key_for(*key), rate.get_expiry()))
        wait = sliding_wait(rate.amount, rate.get_expiry(), *window)
        # To the millisecond first: the storages' clocks (and Redis's TTLs) go no finer, and
        # 10.0000001 seconds of float noise must not read as 11.
        return max(1, math.ceil(round(wait, 3)))

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            if self._deadline is None:
                return await pending
            return await within(self._deadline, lambda: pending)
        except Exception:
            logger.exception("bastion: the rate-limit storage failed; refusing the call")
            raise ServiceUnavailable() from None


def sliding_wait(
    limit: int, expiry: float, previous: int, previous_ttl: float, current: int, current_ttl: float
) -> float:
    """Seconds until ``floor(previous * overlap) + current < limit`` holds (from the instant
    after them on, a call passes), from the
    two counters as ``limits`` reports them (``get_sliding_window``): the last window's
    count and the seconds left of this window, this window's count and its key's TTL
    (the seconds left plus one window)."""
    left = current_ttl - expiry if current_ttl > expiry else previous_ttl
    if current >= limit:
        # Not before this window ends; then its count, weighed, must fall below the limit.
        return left + expiry * (1 - limit / current)
    if previous == 0:
        return 0.0
    # previous * (previous_ttl - t) / expiry < limit - current
    return max(0.0, previous_ttl - (limit - current) * expiry / previous)


def _use_store_client(storage: Any, url: str, timeout: float) -> None:
    """Put the store's own cluster client (``RedisStore``'s: same timeouts, a dropped
    connection retried once, a timeout not retried) in a ``limits`` Redis Cluster storage.

    limits builds redis-py's cluster client itself and retries a timeout there, so a node
    that stopped answering would cost every call two timeouts. Its client has connected
    to nothing yet; its scripts are registered again on this one."""
    from bastion.stores.redis import cluster_client

    storage.bridge.storage = cluster_client(url, timeout)
    storage.bridge.register_scripts()


SWEEP_EVERY: float = 1.0
"""Seconds between two sweeps of the expired counters in process memory."""


@functools.cache
def _swept_memory() -> type[Any]:
    """``limits``' async memory storage, its sweep of expired keys run at most every
    ``SWEEP_EVERY`` seconds.

    ``limits`` starts a sweep of every key it holds whenever the last sweep is done: under
    load, once per turn of the event loop. A sweep walks all the live counters, two per
    caller and action, so a hit's cost grew with the number of callers in the window
    (~11 µs a hit with one, ~80 µs with 1,000 keys, ~1.7 ms with 20,000, measured with a
    turn of the loop between hits), and many addresses, each with its refusal counter,
    made every call slower. The sweep only frees memory: a counter past its expiry reads
    as zero whenever it is read (``get`` checks it first), so sweeping once a second
    changes no count, and keeps memory bounded by the keys of the last window and a
    second."""
    from limits.aio.storage import MemoryStorage

    class SweptMemoryStorage(MemoryStorage):
        def __init__(self) -> None:
            super().__init__()
            self._next_sweep = 0.0

        # limits' private ``__schedule_expiry`` (its name mangled), called by every
        # increment and moving-window entry.
        async def _MemoryStorage__schedule_expiry(self) -> None:
            now = asyncio.get_running_loop().time()  # the loop's clock: monotonic
            if now < self._next_sweep or (self.timer is not None and not self.timer.done()):
                return
            self._next_sweep = now + SWEEP_EVERY
            sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009
            self.timer = asyncio.create_task(sweep())

    return SweptMemoryStorage


def _limiter(strategy: Strategy, storage: Any) -> RateLimiter:
    from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    if strategy == "moving":
        return MovingWindowRateLimiter(storage)
    return SlidingWindowCounterRateLimiter(storage)
