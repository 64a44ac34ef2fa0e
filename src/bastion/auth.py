"""Who is calling: principals, log-in and log-out, and throttled password checks.

The app says how to find a user by ID (``Bastion(load_user=...)``); bastion keeps the
ID in the server-side session, loads the user once per call when the policy needs it,
and rotates the session at log-in so an ID planted before log-in is worthless after.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from typing_extensions import TypeVar

from bastion.errors import ConfigurationError
from bastion.identity import canonical_login
from bastion.passwords import verify_in_thread
from bastion.ratelimit import Counter, parse_rate

if TYPE_CHECKING:
    from limits import RateLimitItem

    from bastion.sessions import Session

__all__ = ["LoginThrottle", "Principal", "U", "User", "UserLoader", "load_user"]


@runtime_checkable
class Principal(Protocol):
    """What bastion needs to know of a user: any object with these three attributes."""

    @property
    def id(self) -> str | int: ...

    @property
    def roles(self) -> Collection[str]: ...

    @property
    def permissions(self) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class User:
    """A ready-made ``Principal``; subclass it or bring your own class."""

    id: str | int
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


U = TypeVar("U", bound=Principal, default=Principal)
"""The app's own user class: ``Bastion(load_user=...)`` infers it from what the loader
returns, so ``ctx.user`` (in a handler taking ``Context[U]``) and ``bastion.user()`` are
that class under a type checker, with no cast."""

UserLoader: TypeAlias = Callable[[Any], U | Awaitable[U | None] | None]
"""``load_user(user_id)``: the user with this ID, or ``None`` if there is none (any more)."""


async def load_user(loader: UserLoader[U] | None, session: Session) -> U | None:
    """The signed-in user of this session, or ``None``. A user who no longer exists
    ends the session's sign-in rather than lingering as a ghost."""
    user_id = session.user_id
    if user_id is None:
        return None
    if loader is None:
        raise ConfigurationError("a session is signed in but Bastion has no load_user")
    user = loader(user_id)
    if inspect.isawaitable(user):
        user = await user
    if user is None:
        session.logout()
        return None
    if type(user) not in _PRINCIPAL_TYPES:
        # A runtime-checkable Protocol check is slow; each class is checked once.
        if not isinstance(user, Principal):
            raise ConfigurationError(
                f"load_user returned {type(user).__name__}, which has no id, roles and permissions"
            )
        _PRINCIPAL_TYPES.add(type(user))
    return user


_PRINCIPAL_TYPES: set[type] = set()


@dataclass(frozen=True, kw_only=True, slots=True)
class LoginThrottle:
    """How many failed log-ins are allowed before 429 (exact moving windows)."""

    per_account: str = "5/15 minutes"
    """Failures for one account from one client address."""

    per_address: str = "100/15 minutes"
    """Failures from one client address, whatever the account (password spraying)."""

    def __post_init__(self) -> None:
        parse_rate(self.per_account, "LoginThrottle.per_account")
        parse_rate(self.per_address, "LoginThrottle.per_address")


class PasswordCheck:
    """Verifies passwords behind the log-in throttle, the same way for unknown accounts."""

    def __init__(self, throttle: LoginThrottle, counter: Counter) -> None:
        account = parse_rate(throttle.per_account, "per_account")
        address = parse_rate(throttle.per_address, "per_address")
        if account is None or address is None:  # parse_rate only returns None for None
            raise ConfigurationError("LoginThrottle needs both rates")
        self._account: RateLimitItem = account
        self._address: RateLimitItem = address
        self._counter = counter

    async def __call__(
        self, account: str, password: str, stored_hash: str | None, address: str | None
    ) -> bool:
        """Whether the password is right. 429 once this account or address has failed
        too often; the answer (and its time) is the same for an unknown account."""
        who = canonical_login(account)
        where = address or "unknown"
        await self._counter.check(self._address, "login-address", where)
        # The attempt takes its place in the account's window before the (slow) verify,
        # in one atomic step: checking first and counting after the verify let a burst
        # of concurrent guesses all pass the check. A right password frees the window.
        await self._counter.hit(self._account, "login-account", who, where)
        if await verify_in_thread(stored_hash, password):
            await self._counter.clear(self._account, "login-account", who, where)
            return True
        # Counted, not refused: this failure is answered as a failure; the next is 429.
        await self._counter.count(self._address, "login-address", where)
        return False
