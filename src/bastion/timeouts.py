"""Deadlines for the pipeline's awaits, cheap on the hot path.

Every call passes through two deadlines (the body's arrival, the handler). On asyncio,
the event loop's ``Deadlines`` keeps one timer, at the earliest deadline of the calls in
flight, and cancels the task of each call whose deadline has passed; the call tells that
cancellation from any other as ``asyncio.timeout`` does (``Task.uncancel``). Calls of one
action arrive in deadline order, so a new call's deadline is almost never the earliest:
the timer is re-armed about once per timeout, not once per call (``asyncio.timeout``,
a timer per call, cost ~5 µs a deadline here; this, ~1.3 µs). Under another event
loop (trio, through anyio) anyio's cancel scope does the same job.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["DeadlinePassed", "within"]

T = TypeVar("T")

_EARLY: float = 0.001
"""A timer may fire this much before its time (asyncio's and libuv's clocks run in
milliseconds): a deadline that close is due."""


class DeadlinePassed(Exception):
    """The deadline passed before the awaited work finished (it was cancelled)."""


class _Deadline:
    """One call's deadline: its task, when it is due, and whether it expired."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        self.task, self.when = task, when
        self.cancelling = task.cancelling()
        self.expired = False


class Deadlines:
    """The deadlines of the calls in flight on one event loop, and the one timer, armed
    at the earliest of them.

    Nothing here holds the loop or its timers (a timer holds this only weakly) while no
    call is in flight, and ``_LOOPS`` holds the loops weakly: a closed loop is freed, and
    its ``Deadlines`` with it. A timer made stale by an earlier deadline is left to fire,
    and does nothing."""

    __slots__ = ("__weakref__", "_armed_at", "_generation", "_pending")

    def __init__(self) -> None:
        self._pending: set[_Deadline] = set()
        self._armed_at = math.inf
        self._generation = 0

    def add(self, deadline: _Deadline, loop: asyncio.AbstractEventLoop) -> None:
        self._pending.add(deadline)
        if deadline.when < self._armed_at:
            self._arm(loop, deadline.when)

    def discard(self, deadline: _Deadline) -> None:
        # The timer stays: when it fires, it finds nothing due and re-arms (or stops).
        self._pending.discard(deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._generation += 1
        self._armed_at = when
        loop.call_at(when, _fire, weakref.ref(self), self._generation)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._armed_at = math.inf
        now = loop.time() + _EARLY
        due = [d for d in self._pending if d.when <= now]
        for deadline in due:
            self._pending.discard(deadline)
            deadline.expired = True
            deadline.task.cancel()
        if self._pending:
            self._arm(loop, min(d.when for d in self._pending))


def _fire(owner: weakref.ref[Deadlines], generation: int) -> None:
    deadlines = owner()
    if deadlines is not None and generation == deadlines._generation:  # else: stale
        deadlines._expire(asyncio.get_running_loop())


_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def _deadlines(loop: asyncio.AbstractEventLoop) -> Deadlines:
    found = _LOOPS.get(loop)
    if found is None:
        found = _LOOPS[loop] = Deadlines()
    return found


async def within(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, cancelled after ``seconds`` with ``DeadlinePassed``. A
    ``TimeoutError`` that ``work`` raises itself passes through as its own failure, and
    so does a cancellation from elsewhere (the client left, the server stops)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _within_anyio(seconds, work)
    task = asyncio.current_task(loop)
    if task is None:  # pragma: no cover - a coroutine runs in a task under asyncio
        raise RuntimeError("within() needs a task")
    deadlines = _deadlines(loop)
    deadline = _Deadline(task, loop.time() + seconds)
    deadlines.add(deadline, loop)
    try:
        return await work()
    except asyncio.CancelledError:
        # Ours only if no one else cancelled the task too (as asyncio.timeout decides).
        if deadline.expired and task.uncancel() <= deadline.cancelling:
            raise DeadlinePassed() from None
        raise
    finally:
        deadlines.discard(deadline)


async def _within_anyio(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    with anyio.move_on_after(seconds):
        return await work()
    raise DeadlinePassed()
