"""``bastion.timeouts.within``: the deadline of the body's arrival and of the handler.

One timer per event loop, at the earliest deadline in flight; each case states what a
call sees, on asyncio's own loop and on uvloop (the servers' loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from bastion.timeouts import DeadlinePassed, within

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop  # uvicorn's loop, with bastion[standard]
except ImportError:  # pragma: no cover - the lowest-versions run has no server
    pass
else:
    LOOPS["uvloop"] = uvloop.new_event_loop


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    loop = LOOPS[request.param]()
    yield loop.run_until_complete
    loop.close()


async def _sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def test_work_past_its_deadline_is_cancelled_at_the_deadline(run: Any) -> None:
    async def main() -> float:
        started = time.perf_counter()
        with pytest.raises(DeadlinePassed):
            await within(0.1, lambda: _sleep(30))
        return time.perf_counter() - started

    assert 0.09 <= run(main()) < 0.6


def test_work_within_its_deadline_returns_its_value_and_nothing_fires_later(run: Any) -> None:
    """The finished call's deadline (still the loop's armed timer) cancels nothing that
    runs after it."""

    async def main() -> str:
        assert await within(0.05, lambda: _sleep(0)) == "done"
        return await _sleep(0.15)  # past the first call's deadline

    assert run(main()) == "done"


def test_a_shorter_deadline_after_a_longer_one_fires_on_its_own_time(run: Any) -> None:
    """A later call with an earlier deadline re-arms the timer; each call ends at its own
    deadline, in whatever order they came."""

    async def one(seconds: float, started: float) -> float:
        with pytest.raises(DeadlinePassed):
            await within(seconds, lambda: _sleep(30))
        return time.perf_counter() - started

    async def main() -> list[float]:
        started = time.perf_counter()
        return list(await asyncio.gather(*(one(s, started) for s in (0.4, 0.1, 0.3, 0.2, 0.1))))

    ended = run(main())
    for seconds, took in zip((0.4, 0.1, 0.3, 0.2, 0.1), ended, strict=True):
        assert seconds - 0.01 <= took < seconds + 0.15


def test_the_works_own_timeout_error_is_not_the_deadline(run: Any) -> None:
    async def own() -> None:
        raise TimeoutError("the handler's own")

    async def main() -> None:
        with pytest.raises(TimeoutError, match="the handler's own"):
            await within(30, own)

    run(main())


def test_a_cancellation_from_elsewhere_is_not_the_deadline(run: Any) -> None:
    """The client left or the server stops: the task is cancelled, and stays cancelled."""

    async def main() -> None:
        task = asyncio.ensure_future(within(30, lambda: _sleep(30)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_a_cancellation_from_elsewhere_at_the_deadline_still_cancels(run: Any) -> None:
    """Both at once: asyncio.timeout's rule, the outside cancellation wins."""

    async def main() -> None:
        async def work() -> str:
            # The deadline has fired (the task is being cancelled): cancelled again.
            try:
                return await _sleep(30)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                assert current is not None
                current.cancel()
                raise

        with pytest.raises(asyncio.CancelledError):
            await within(0.05, work)

    with pytest.raises(asyncio.CancelledError):
        run(main())


def test_nested_deadlines_the_inner_one_passes_the_outer_goes_on(run: Any) -> None:
    async def inner() -> str:
        with pytest.raises(DeadlinePassed):
            await within(0.05, lambda: _sleep(30))
        return await _sleep(0.05)

    async def main() -> str:
        return await within(5, inner)

    assert run(main()) == "done"


def test_a_closed_event_loop_is_freed() -> None:
    """Servers and test clients make and close loops: none is kept alive by its deadlines
    (its armed timer included, which holds them only weakly)."""
    import gc
    import weakref

    from bastion import timeouts

    def one_loop() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            await within(30, lambda: _sleep(0))  # leaves a timer armed 30 s ahead

        loop.run_until_complete(main())
        loop.close()
        return weakref.ref(loop)

    refs = [one_loop() for _ in range(5)]
    gc.collect()
    assert [ref() for ref in refs] == [None] * 5
    assert not any(ref() in timeouts._LOOPS for ref in refs)
