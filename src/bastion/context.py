"""What a handler (and a policy) knows about the call it serves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic

from starlette.datastructures import Headers
from starlette.types import Scope

from bastion.auth import U, load_user
from bastion.errors import ConfigurationError, Forbidden, Unauthorized
from bastion.taint import TaintSet

if TYPE_CHECKING:
    from bastion.auth import PasswordCheck, UserLoader
    from bastion.sessions import Session, SessionManager

__all__ = ["Context"]

_UNLOADED: Final[Any] = object()


class Context(Generic[U]):
    """Handed to every handler (and policy) as its ``Context``-annotated parameter.

    It carries request metadata, the session and the signed-in user: the body has
    already been read, capped and validated into the action's input model, which the
    handler receives separately. ``Context[AppUser]`` types ``ctx.user`` as the app's
    own user class (what ``load_user`` returns); a bare ``Context`` is ``Context[Principal]``.
    """

    __slots__ = (
        "_load_user",
        "_password_check",
        "_scope",
        "_sessions",
        "_user",
        "action",
        "bound",
        "client",
        "headers",
        "session",
        "state",
        "taints",
    )

    def __init__(
        self,
        *,
        action: str,
        scope: Scope,
        session: Session,
        client: str | None,
        load_user: UserLoader[U] | None,
        password_check: PasswordCheck,
        sessions: SessionManager | None = None,
    ) -> None:
        self._scope = scope
        self._sessions = sessions
        self._load_user = load_user
        self._password_check = password_check
        self._user: Any = _UNLOADED
        self.action = action
        """The action's registered name."""
        self.headers = Headers(scope=scope)
        """The request headers, read-only. No header changes which checks run."""
        self.client = client
        """The caller's address: the socket peer, or the right-most untrusted
        ``X-Forwarded-For`` entry when ``trusted_proxies`` are configured."""
        self.session = session
        """The caller's server-side session (a mapping)."""
        self.bound: Any = None
        """The values sealed into the form (the action's bound model), once opened. A
        handler or ``check=`` gets them typed by naming the parameter
        (``ref: Annotated[PostRef, Bound]``; in a check, ``ref: PostRef``)."""
        self.state: dict[str, Any] = {}
        """Free space for one call: what a policy computes, a handler may reuse."""
        self.taints: TaintSet | None = None
        """Values tainted for this call only (``ctx.taint``)."""

    @property
    def scope(self) -> Scope:
        """The raw ASGI scope, for integrations that need it."""
        return self._scope

    # --- the user ----------------------------------------------------------------------

    @property
    def user(self) -> U | None:
        """The signed-in user, or ``None``. Loaded before the policy runs when the policy
        needs it; in an action whose policy does not (``public``), use
        ``await ctx.current_user()``."""
        if self._user is _UNLOADED:
            if self.session.user_id is None:
                return None
            raise RuntimeError(
                "ctx.user is not loaded for this action's policy: use await ctx.current_user()"
            )
        user: U | None = self._user
        return user

    async def current_user(self) -> U | None:
        """The signed-in user, loaded once per call (``load_user``), or ``None``."""
        if self._user is _UNLOADED:
            self._user = await load_user(self._load_user, self.session)
        user: U | None = self._user
        return user

    async def login(self, user: U) -> None:
        """Sign ``user`` in: a new session ID and CSRF secret (the old ID dies)."""
        if self._load_user is None:
            # Without it, every later call of this user could not be answered.
            raise ConfigurationError("ctx.login() needs Bastion(load_user=...)")
        self.session.login(user.id)
        self._user = user

    def logout(self) -> None:
        """Sign out: the session ends."""
        self.session.logout()
        self._user = None

    async def end_sessions(self, user_id: str | int | None = None) -> int:
        """End every session of ``user_id`` (by default the signed-in caller's own), on
        every worker and host that shares the store: each browser of theirs is signed
        out at its next request. When that includes this call's session, this reply
        signs this browser out too. Returns how many sessions were ended."""
        target = self.session.user_id if user_id is None else user_id
        if target is None:
            raise Unauthorized()
        if self._sessions is None:
            raise RuntimeError("this Context was built without the app's sessions")
        ended = await self._sessions.end_all(target)
        if self.session.user_id == target:
            self.logout()
        return ended

    async def check_password(self, account: str, password: str, stored_hash: str | None) -> bool:
        """Whether ``password`` is right for ``account`` (``stored_hash`` is ``None`` when
        there is no such account). Failures are throttled per account and address (429);
        an unknown account costs the same time as a wrong password."""
        return await self._password_check(account, password, stored_hash, self.client)

    def taint(self, value: str | bytes, reason: str = "tainted in this call") -> None:
        """Never let ``value`` leave in this call's reply (a password hash just loaded)."""
        if self.taints is None:
            self.taints = TaintSet()
        self.taints.add(value, reason)

    def authorize(self, allowed: object, message: str | None = None) -> None:
        """Refuse the call (403) unless ``allowed`` is exactly ``True``: an object-level
        check inside a handler, e.g. ``ctx.authorize(post.author_id == ctx.user.id)``."""
        if allowed is not True:
            raise Forbidden(message)

    def __repr__(self) -> str:
        return f"Context(action={self.action!r}, client={self.client!r})"
