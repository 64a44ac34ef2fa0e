"""Pipeline stages 12 and 17: the dependencies a call takes, opened and released.

Stage 12 runs every dependency the handler and its ``check=`` name, after the policy,
validation and bound values have passed — so nothing is opened for a call that is
refused earlier — and within the action's time limit. Each runs once per call (unless
declared ``use_cache=False``); sync ones run in a worker thread, as the handler would.

Stage 17 runs after output whatever happened: the code after each generator's
``yield`` runs, newest first, with the handler's exception thrown in if it raised. It
runs before the reply is made, so that a commit failing there is the call's failure
(500 with a digest, or 503 for a backend that is down), never a success the database
did not keep.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio.to_thread
from starlette.requests import Request

from bastion.actions.spec import ActionSpec, Argument, Dependency
from bastion.context import Context
from bastion.errors import Timeout
from bastion.timeouts import DeadlinePassed, within

__all__ = ["Resources", "bind", "open_all", "release"]


class Resources:
    """What one call's dependencies gave, and what must be closed after it."""

    __slots__ = ("cache", "check", "handler", "stack")

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.cache: dict[Callable[..., Any], Any] = {}
        self.handler: dict[str, Any] = {}
        """Values of the handler's dependency parameters, by name."""
        self.check: dict[str, Any] = {}
        """Values of ``check=``'s dependency parameters, by name."""


async def open_all(spec: ActionSpec, ctx: Context[Any], resources: Resources) -> None:
    """Stage 12: the values of every dependency parameter of the handler and the check,
    into ``resources`` (which stage 17 releases, whatever opened before a failure)."""
    try:
        await within(spec.timeout, functools.partial(_open, spec, ctx, resources))
    except DeadlinePassed:
        raise Timeout() from None


async def _open(spec: ActionSpec, ctx: Context[Any], resources: Resources) -> None:
    for target, arguments in (
        (resources.check, spec.check_arguments or ()),
        (resources.handler, spec.arguments),
    ):
        for argument in arguments:
            if argument.dependency is not None:
                target[argument.name] = await _value(argument.dependency, ctx, resources)


async def _value(dep: Dependency, ctx: Context[Any], resources: Resources) -> Any:
    if dep.use_cache and dep.fn in resources.cache:
        return resources.cache[dep.fn]
    kwargs: dict[str, Any] = {}
    for argument in dep.arguments:
        if argument.dependency is not None:
            kwargs[argument.name] = await _value(argument.dependency, ctx, resources)
        elif argument.source == "context":
            kwargs[argument.name] = ctx
        elif argument.source == "request":
            kwargs[argument.name] = Request(ctx.scope)
    call = functools.partial(dep.fn, **kwargs)
    if dep.kind == "async generator":
        value = await resources.stack.enter_async_context(contextlib.asynccontextmanager(call)())
    elif dep.kind == "generator":
        manager = contextlib.contextmanager(call)()
        value = await anyio.to_thread.run_sync(manager.__enter__)
        resources.stack.push_async_exit(functools.partial(_exit_in_thread, manager))
    elif dep.kind == "coroutine":
        value = await call()
    else:
        value = await anyio.to_thread.run_sync(call)
    if dep.use_cache:
        resources.cache[dep.fn] = value
    return value


async def _exit_in_thread(
    manager: contextlib.AbstractContextManager[Any],
    kind: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    return await anyio.to_thread.run_sync(manager.__exit__, kind, exc, tb)


async def release(resources: Resources, raised: BaseException | None) -> None:
    """Stage 17: close what stage 12 opened, handing the call's exception in."""
    if raised is None:
        await resources.stack.aclose()
    else:
        await resources.stack.__aexit__(type(raised), raised, raised.__traceback__)


def bind(
    arguments: tuple[Argument, ...], ctx: Context[Any], data: Any, values: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for a handler or a check, by where each comes from."""
    kwargs: dict[str, Any] = {}
    for argument in arguments:
        if argument.source == "dependency":
            kwargs[argument.name] = values[argument.name]
        elif argument.source == "context":
            kwargs[argument.name] = ctx
        elif argument.source == "data":
            kwargs[argument.name] = data
        elif argument.source == "bound":
            kwargs[argument.name] = ctx.bound
        else:
            kwargs[argument.name] = Request(ctx.scope)
    return kwargs
