"""Pipeline stage 14: run the handler, within its time limit (once per idempotency key,
for an idempotent action: ``bastion.idempotency``)."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel

from bastion.actions.spec import ActionSpec
from bastion.context import Context
from bastion.errors import Timeout
from bastion.pipeline.stages.depends import bind
from bastion.timeouts import DeadlinePassed, within

__all__ = ["run"]


async def run(spec: ActionSpec, ctx: Context[Any], data: BaseModel, values: dict[str, Any]) -> Any:
    """Call the handler with its arguments (the context, the validated input, the bound
    values, the dependencies' ``values``); 504 when it overruns.

    Async handlers are cancelled at the deadline. A sync handler runs in a worker
    thread that Python cannot stop: the caller gets its 504 on time and the thread
    is left to finish alone, so sync handlers should bound their own I/O too.
    """
    kwargs = bind(spec.arguments, ctx, data, values)
    if spec.is_async:
        call = functools.partial(spec.fn, **kwargs)
    else:
        # A worker thread Python cannot stop: abandoned (not killed) at the deadline.
        sync = functools.partial(spec.fn, **kwargs)
        call = functools.partial(anyio.to_thread.run_sync, sync, abandon_on_cancel=True)
    try:
        return await within(spec.timeout, call)
    except DeadlinePassed:
        raise Timeout() from None
