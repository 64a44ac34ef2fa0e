"""Who may call an action: pipeline stage 6.

A policy is a plain callable of the ``Context`` that answers allow (``True``) or deny
(``False``), sync or async. Every action must name one: an action without a policy
does not register (deny by default, decided at import time, not at request time).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from .context import Context
from .errors import Forbidden

__all__ = ["Policy", "authorize", "public"]

Policy = Callable[[Context], bool | Awaitable[bool]]
"""A callable of the context answering whether the call may go on."""


class _Public:
    """Anyone may call, anonymous visitors included. Still behind every other stage."""

    __name__ = "public"

    def __call__(self, ctx: Context) -> bool:
        return True

    def __repr__(self) -> str:
        return "public"


public: Policy = _Public()
"""The policy of an action anyone may call: sign-up, log-in, a contact form."""


def describe(policy: Policy) -> str:
    """A short human name for a policy, for logs and ``bastion audit``."""
    return getattr(policy, "__name__", None) or repr(policy)


async def authorize(policy: Policy, ctx: Context) -> None:
    """Run the policy; anything but a plain ``True`` denies."""
    verdict = policy(ctx)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is not True:
        raise Forbidden()
