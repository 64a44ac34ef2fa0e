"""An in-process store: for tests and single-process development."""

from __future__ import annotations

import time

__all__ = ["MemoryStore"]


class MemoryStore:
    """A dict with expiry. Lost at restart and not shared between processes."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[bytes, float]] = {}
        self._next_purge = 0.0

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= time.monotonic():
            del self._items[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        self._items[key] = (value, now + ttl)
        if now >= self._next_purge:
            # Expired keys nobody reads again would otherwise stay forever.
            self._items = {k: v for k, v in self._items.items() if v[1] > now}
            self._next_purge = now + 60

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        # No await between the read and the write: atomic within the event loop.
        if await self.get(key) != expected:
            return False
        await self.set(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def health(self) -> None:
        return None  # in this process: it always answers

    async def close(self) -> None:
        # Nothing to release, and the data is the process's: an app whose lifespan runs
        # twice in one process (tests) keeps its sessions, as with SQLite or Redis.
        return None

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        # A store is a store even when empty: ``store or default`` must not replace it.
        return True

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._items)})"
