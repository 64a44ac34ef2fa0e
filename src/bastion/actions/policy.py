"""Pipeline stages 8 and 13: who may call an action, and the object check.

A policy answers allow (``True``) or deny for the call's ``Context``. Every action must
name one: an action without a policy does not register (deny by default, decided at
import time, not at request time). The vocabulary::

    public                              anyone, anonymous visitors included
    authenticated                       any signed-in user
    require("post:create")              a user with every listed permission
    require(roles={"author", "admin"})  a user with at least one of the roles
    recent_login(max_age=600)           a user who signed in (again) in the last 10 min
    predicate(fn)                       fn(ctx) -> bool, sync or async
    a & b,  a | b                       both, either (evaluated left to right)

A denial answers 401 when nobody is signed in and the policy is about signed-in users
(``authenticated``, ``require``: "sign in first"), else 403. Checks on the object a call
is about ("owns this post") come after validation: ``@bastion.action(check=...)``, or
``ctx.authorize(...)`` in the handler.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bastion.errors import Forbidden, ReauthenticationRequired, Unauthorized

if TYPE_CHECKING:
    from bastion.context import Context

__all__ = [
    "Policy",
    "authenticated",
    "authorize",
    "predicate",
    "public",
    "recent_login",
    "require",
]


class Policy:
    """A decision about a call. Subclasses answer in ``allows``."""

    needs_user: bool = True
    """Whether deciding needs the signed-in user (loaded once per call if so)."""

    wants_sign_in: bool = False
    """Whether an anonymous caller it denies is told to sign in (401) rather than 403."""

    admits_anonymous: bool = True
    """Whether it may let an anonymous caller through: such actions get the app's
    ``default_rate`` unless they name one, and ``bastion audit`` wants them limited."""

    step_up: float | None = None
    """The longest a log-in may be old for every call it allows (``recent_login``), in
    seconds; ``None`` when some call needs no recent log-in (``bastion audit`` shows it)."""

    def allows(self, ctx: Context) -> bool | Awaitable[bool]:
        raise NotImplementedError

    def __call__(self, ctx: Context) -> bool | Awaitable[bool]:
        """A policy is a callable of the context, like any plain function used as one."""
        return self.allows(ctx)

    def __and__(self, other: Policy) -> Policy:
        return _AllOf(self, _as_policy(other))

    def __or__(self, other: Policy) -> Policy:
        return _AnyOf(self, _as_policy(other))

    def __repr__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """A short human description, for logs and ``bastion audit``."""
        return type(self).__name__


class _Public(Policy):
    needs_user = False

    def allows(self, ctx: Context) -> bool:
        return True

    def describe(self) -> str:
        return "public"


class _Authenticated(Policy):
    wants_sign_in = True
    admits_anonymous = False

    def allows(self, ctx: Context) -> bool:
        return ctx.user is not None

    def describe(self) -> str:
        return "authenticated"


class _Require(Policy):
    wants_sign_in = True
    admits_anonymous = False

    def __init__(self, permissions: frozenset[str], roles: frozenset[str]) -> None:
        self.permissions = permissions
        self.roles = roles

    def allows(self, ctx: Context) -> bool:
        user = ctx.user
        if user is None:
            return False
        if not self.permissions <= _names(user.permissions):
            return False
        return not self.roles or bool(self.roles & _names(user.roles))

    def describe(self) -> str:
        parts = [repr(p) for p in sorted(self.permissions)]
        if self.roles:
            parts.append(f"roles={sorted(self.roles)!r}")
        return f"require({', '.join(parts)})"


class _Predicate(Policy):
    def __init__(self, fn: Callable[[Context], bool | Awaitable[bool]]) -> None:
        self.fn = fn

    async def allows(self, ctx: Context) -> bool:
        verdict = self.fn(ctx)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict is True

    def describe(self) -> str:
        return f"predicate({getattr(self.fn, '__qualname__', repr(self.fn))})"


class _AllOf(Policy):
    def __init__(self, *parts: Policy) -> None:
        self.parts = parts
        self.needs_user = any(p.needs_user for p in parts)
        self.wants_sign_in = any(p.wants_sign_in for p in parts)
        self.admits_anonymous = all(p.admits_anonymous for p in parts)
        windows = [p.step_up for p in parts if p.step_up is not None]
        self.step_up = min(windows) if windows else None  # every part must allow

    async def allows(self, ctx: Context) -> bool:
        for part in self.parts:
            if not await _verdict(part, ctx):
                return False
        return True

    def describe(self) -> str:
        return " & ".join(f"({p.describe()})" for p in self.parts)


class _AnyOf(Policy):
    def __init__(self, *parts: Policy) -> None:
        self.parts = parts
        self.needs_user = any(p.needs_user for p in parts)
        self.wants_sign_in = any(p.wants_sign_in for p in parts)
        self.admits_anonymous = any(p.admits_anonymous for p in parts)
        windows = [p.step_up for p in parts]
        # One part is enough: a part without a window lets calls through without one.
        self.step_up = None if None in windows else max(w for w in windows if w is not None)

    async def allows(self, ctx: Context) -> bool:
        for part in self.parts:
            if await _verdict(part, ctx):
                return True
        return False

    def describe(self) -> str:
        return " | ".join(f"({p.describe()})" for p in self.parts)


public: Policy = _Public()
"""Anyone may call, anonymous visitors included. Still behind every other stage, and
rate-limited by default."""

authenticated: Policy = _Authenticated()
"""Any signed-in user."""


def require(*permissions: str, roles: Iterable[str] = ()) -> Policy:
    """A signed-in user holding every permission named, and (if roles are given) at
    least one of the roles."""
    perms, wanted = frozenset(permissions), frozenset(roles)
    if isinstance(roles, str):
        raise TypeError("roles= takes a collection of role names, not one string")
    if not perms and not wanted:
        raise TypeError("require() needs at least one permission or role")
    return _Require(perms, wanted)


class _RecentLogin(Policy):
    wants_sign_in = True
    admits_anonymous = False

    def __init__(self, max_age: float, page: str | None) -> None:
        self.max_age = max_age
        self.page = page
        self.step_up = max_age

    def allows(self, ctx: Context) -> bool:
        if ctx.user is None:
            return False
        at = ctx.session.authenticated_at
        if at is None or not 0 <= time.time() - at <= self.max_age:
            # Not "forbidden": the same user, signed in again, may go on.
            raise ReauthenticationRequired(self.page)
        return True

    def describe(self) -> str:
        return f"recent_login(max_age={self.max_age:g}s)"


def recent_login(max_age: float | timedelta = 600.0, *, page: str | None = None) -> Policy:
    """A signed-in user whose log-in is at most ``max_age`` old (seconds, or a
    ``timedelta``): step-up for what a stolen session must not do on its own (change the
    password or e-mail, create an API token, delete the account). An older log-in is
    ``401 reauthentication_required``, not 403: the same user signs in again
    (``ctx.login()`` rotates the session and records the time) and retries. A plain form
    refused so is sent to ``page`` (``?next=`` its own page) when given. Combine it with
    ``&`` (``require(roles={"admin"}) & recent_login()``)."""
    seconds = max_age.total_seconds() if isinstance(max_age, timedelta) else max_age
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise TypeError(f"recent_login() takes a positive max_age, not {max_age!r}")
    if page is not None and not (page.startswith("/") and not page.startswith("//")):
        raise TypeError(f"recent_login(page=...) is a path of this site, not {page!r}")
    return _RecentLogin(float(seconds), page)


def predicate(fn: Callable[[Context], bool | Awaitable[bool]]) -> Policy:
    """A policy from a plain callable of the context: ``True`` allows, anything else denies."""
    if not callable(fn):
        raise TypeError(f"predicate() takes a callable, not {fn!r}")
    return _Predicate(fn)


def _names(values: Any) -> frozenset[str]:
    """A user's roles or permissions as a set; one string is one name, not its letters."""
    return frozenset((values,)) if isinstance(values, str) else frozenset(values)


def _as_policy(value: Any) -> Policy:
    if not isinstance(value, Policy):
        raise TypeError(f"policies combine with policies, not {value!r}; wrap it in predicate()")
    return value


async def _verdict(policy: Policy, ctx: Context) -> bool:
    verdict = policy.allows(ctx)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict is True


async def check_object(
    check: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """An action's own check on the validated call; anything but ``True`` is 403."""
    verdict = check(*args, **kwargs)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is not True:
        raise Forbidden()


async def authorize(policy: Policy, ctx: Context) -> None:
    """Run the policy; anything but a plain ``True`` denies. A denial is 401 for an
    anonymous caller of a policy about signed-in users (``authenticated``, ``require``),
    else 403."""
    if await _verdict(policy, ctx):
        return
    if policy.wants_sign_in and ctx.user is None:
        raise Unauthorized()
    raise Forbidden()
