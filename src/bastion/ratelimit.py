"""Pipeline stage 5: how often one caller may call one action (the ``limits`` library).

Limits are counted in a moving window per action and per caller: the signed-in user
when there is one, else the client address. Every public action has a limit, the
app's default unless it names its own: the actions anyone may call are the ones
abused first. Log-in throttling (``auth.py``) counts failures with the same machinery.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from .errors import ConfigurationError, RateLimited

__all__ = ["Counter", "parse_rate"]


def parse_rate(rate: str | None, where: str) -> RateLimitItem | None:
    """``"20/minute"``, ``"5 per 15 minutes"`` … as the limits library reads them: one
    rate, of at least one call."""
    if rate is None:
        return None
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
    """Moving-window counters in a ``limits`` storage (memory by default)."""

    def __init__(self, storage_uri: str = "memory://") -> None:
        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        self.storage = storage_from_string(uri)
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, rate: RateLimitItem, *key: str) -> None:
        """Count one call; 429 with ``Retry-After`` once the window is full."""
        if not await self.limiter.hit(rate, *key):
            raise RateLimited(await self.retry_after(rate, *key))

    async def check(self, rate: RateLimitItem, *key: str) -> None:
        """429 if one more would go over, without counting this one."""
        if not await self.limiter.test(rate, *key):
            raise RateLimited(await self.retry_after(rate, *key))

    async def clear(self, rate: RateLimitItem, *key: str) -> None:
        await self.limiter.clear(rate, *key)

    async def retry_after(self, rate: RateLimitItem, *key: str) -> int:
        stats = await self.limiter.get_window_stats(rate, *key)
        return max(1, math.ceil(stats.reset_time - time.time()))
