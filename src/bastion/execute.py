"""Pipeline stage 9: run the handler, within its time limit."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel

from .context import Context
from .errors import Timeout
from .registry import ActionSpec

__all__ = ["run"]


async def run(spec: ActionSpec, ctx: Context, data: BaseModel) -> Any:
    """Call the handler with the context and the validated input; 504 when it overruns.

    Async handlers are cancelled at the deadline. A sync handler runs in a worker
    thread that Python cannot stop: the caller gets its 504 on time and the thread
    is left to finish alone, so sync handlers should bound their own I/O too.
    """
    kwargs: dict[str, Any] = {}
    if spec.context_param is not None:
        kwargs[spec.context_param] = ctx
    if spec.data_param is not None:
        kwargs[spec.data_param] = data
    if spec.bound_param is not None:
        kwargs[spec.bound_param] = ctx.bound
    result: Any = None
    # move_on_after rather than fail_after: a TimeoutError the handler raises itself
    # is its own failure (a 500), not bastion's deadline.
    with anyio.move_on_after(spec.timeout) as deadline:
        if spec.is_async:
            result = await spec.fn(**kwargs)
        else:
            call = functools.partial(spec.fn, **kwargs)
            result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    if deadline.cancelled_caught:
        raise Timeout()
    return result
