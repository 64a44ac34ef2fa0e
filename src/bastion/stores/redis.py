"""Shared state for several workers or hosts: Redis (redis-py's asyncio client).

Every call has a timeout (half a second by default) so that a Redis that stops
answering turns into a prompt 503 rather than requests piling up; the pipeline then
fails closed. Keys live under a prefix, so one Redis can serve several apps.
"""

from __future__ import annotations

try:
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion's Redis store (BASTION_STORE=redis://…, RedisStore) needs redis-py: "
        "pip install 'bastion[redis]'"
    ) from missing

__all__ = ["RedisStore", "reconnect_once"]

# Compare and set in one step on the server: one key, so it holds on Redis Cluster too.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""


def reconnect_once() -> Retry:
    """redis-py's retry policy for bastion: one immediate retry after a dropped
    connection, nothing else.

    A pooled connection that Redis closed (Redis restarted, a failover, an idle timeout)
    is only found dead when it is next used; without a retry that call answers 503 although
    Redis is up, once for every connection in the pool. The retry reconnects at once (a
    Redis that is down refuses that in a millisecond too). Timeouts are not retried: a
    Redis that does not answer costs one timeout per call, not two.
    """
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisStore:
    """State in Redis at ``url`` (``redis://host:port/db``)."""

    def __init__(self, url: str, *, timeout: float = 0.5, prefix: str = "bastion:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=reconnect_once(),
            health_check_interval=30,
        )
        # EVALSHA; redis-py loads the script again when a restarted Redis no longer has it.
        self._replace = self._redis.register_script(_REPLACE)

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self.prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        px = max(1, int(ttl * 1000))
        if expected is None:
            return bool(await self._redis.set(self.prefix + key, value, px=px, nx=True))
        return bool(await self._replace(keys=[self.prefix + key], args=[expected, value, px]))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self.prefix + key)

    @property
    def rate_limit_storage(self) -> str:
        """Where the rate-limit counters go by default: this same Redis (a ``limits``
        storage URI), so that they are shared like the sessions."""
        return self.url

    async def health(self) -> None:
        if not await self._redis.ping():
            raise ConnectionError("Redis did not answer PING")

    async def close(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        # The URL may hold a password: show where, not how.
        host = self._redis.connection_pool.connection_kwargs.get("host", "?")
        port = self._redis.connection_pool.connection_kwargs.get("port", "?")
        return f"RedisStore(host={host!r}, port={port!r})"
