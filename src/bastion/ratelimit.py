"""Pipeline stage 6: how often one caller may call one action (the ``limits`` library).

Limits are counted in a moving window per action and per caller: the signed-in user
when there is one, else the client address. Every public action has a limit, the
app's default unless it names its own: the actions anyone may call are the ones
abused first. Log-in throttling (``auth.py``) counts failures with the same machinery.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.errors import ConfigurationError, RateLimited, ServiceUnavailable

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["Counter", "parse_rate"]

logger = logging.getLogger("bastion")

T = TypeVar("T")


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


class Counter:
    """Moving-window counters in a ``limits`` storage (memory by default; Redis to share
    them between workers and hosts).

    A storage that fails or does not answer in time fails closed: the call is refused
    with 503, never let through uncounted.
    """

    def __init__(self, storage_uri: str = "memory://", *, timeout: float = 0.5) -> None:
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        options: dict[str, Any] = {}
        if uri.startswith(("async+redis://", "async+rediss://")):
            # redis-py (the redis extra), with bounded waits on every call, and a
            # connection that Redis dropped (a restart) replaced at once, not a 503.
            from bastion.stores.redis import reconnect_once

            options = {
                "implementation": "redispy",
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": reconnect_once(),
            }
        self.storage = storage_from_string(uri, **options)
        self.limiter: MovingWindowRateLimiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, rate: RateLimitItem, *key: str) -> None:
        """Count one call; 429 with ``Retry-After`` once the window is full."""
        if not await self._call(self.limiter.hit(rate, *key)):
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
        return bool(await checked) if inspect.isawaitable(checked) else bool(checked)

    async def retry_after(self, rate: RateLimitItem, *key: str) -> int:
        stats = await self._call(self.limiter.get_window_stats(rate, *key))
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except Exception:
            logger.exception("bastion: the rate-limit storage failed; refusing the call")
            raise ServiceUnavailable() from None
