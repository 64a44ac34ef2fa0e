"""Where bastion keeps state that must outlive a request: sessions now, counters later.

A store is a small async key-value protocol with expiry, so that the same code runs on
memory (tests), SQLite (the embedded default: survives a restart) and, for several
workers or hosts, a shared server. Values are bytes; bastion serialises them itself.
Any store error is the store's own exception: the pipeline turns it into a 503 and
never carries on without the state it needed (fail closed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bastion.errors import ConfigurationError

from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["MemoryStore", "RedisStore", "SQLiteStore", "Store", "store_from_url"]


def __getattr__(name: str) -> Any:
    # RedisStore needs redis-py (the ``redis`` extra): imported when first named, so that
    # ``import bastion`` neither needs nor loads it.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class Store(Protocol):
    """Async key-value storage with a time to live on every key."""

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` if absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, replacing any previous value."""
        ...

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        """Store ``value`` for ``ttl`` seconds only if the key holds exactly ``expected``
        now (``None``: only if it is absent or expired), in one atomic step. Whether it
        was stored: ``False`` means another writer changed or deleted the key first.

        Sessions are saved through it, so that a request which loaded a session before a
        log-out deleted it can never write it back (a session is never resurrected)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the key; absent keys are not an error."""
        ...

    async def health(self) -> None:
        """Return if the store answers now; raise (its own exception) if it does not.
        ``GET {prefix}/health`` asks it, for load balancers."""
        ...

    async def close(self) -> None:
        """Release connections and files (the app's lifespan calls it at shutdown)."""
        ...


def store_from_url(url: str | None, data_dir: str = "data") -> Store:
    """``redis://…`` (or ``redis+cluster://host:port[,host:port…]``, a Redis Cluster) →
    ``RedisStore``, ``memory://`` → ``MemoryStore``, ``sqlite:///path/dir`` or nothing →
    ``SQLiteStore`` (in ``data_dir`` when no dir is named). Anything else is refused: a
    typo in ``BASTION_STORE`` must not quietly keep each worker's sessions to itself."""
    if url and url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        from .redis import RedisStore

        return RedisStore(url)
    if url == "memory://":
        return MemoryStore()
    if url and url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///") or data_dir)
    if url:
        # Only the scheme: the rest may hold a password.
        scheme = url.split("://", 1)[0] + "://" if "://" in url else "a value without a scheme"
        raise ConfigurationError(
            f"BASTION_STORE: {scheme} is not a store bastion knows; use redis://…, "
            "rediss://…, redis+cluster://host:port[,…], unix://…, memory:// or sqlite:///dir"
        )
    return SQLiteStore(data_dir)
