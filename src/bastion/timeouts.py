"""Deadlines for the pipeline's awaits, cheap on the hot path.

On asyncio, ``asyncio.timeout`` costs a fraction of an anyio cancel scope, and every
call passes through two deadlines (the body's arrival, the handler); under another
event loop (trio, through anyio) anyio's scope does the same job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["DeadlinePassed", "within"]

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The deadline passed before the awaited work finished (it was cancelled)."""


async def within(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, cancelled after ``seconds`` with ``DeadlinePassed``. A
    ``TimeoutError`` that ``work`` raises itself passes through as its own failure."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await _within_anyio(seconds, work)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await work()
    except TimeoutError:
        if deadline.expired():
            raise DeadlinePassed() from None
        raise


async def _within_anyio(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    with anyio.move_on_after(seconds):
        return await work()
    raise DeadlinePassed()
