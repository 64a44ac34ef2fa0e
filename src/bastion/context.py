"""What a handler knows about the call it serves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import Scope

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["Context"]


class Context:
    """Handed to every handler (and policy) as its ``Context``-annotated parameter.

    It carries request metadata only: the body has already been read, capped and
    validated into the action's input model, which the handler receives separately.
    """

    __slots__ = ("_scope", "action", "client", "headers", "session", "state")

    def __init__(self, *, action: str, scope: Scope, session: Session) -> None:
        self._scope = scope
        self.action = action
        """The action's registered name."""
        self.headers = Headers(scope=scope)
        """The request headers, read-only. No header changes which checks run."""
        client = scope.get("client")
        self.client: str | None = client[0] if client else None
        """The peer address of the connection."""
        self.session = session
        """The caller's server-side session (a mapping; ``rotate()`` at login)."""
        self.state: dict[str, Any] = {}
        """Free space for one call: what a policy computes, a handler may reuse."""

    @property
    def scope(self) -> Scope:
        """The raw ASGI scope, for integrations that need it."""
        return self._scope

    def __repr__(self) -> str:
        return f"Context(action={self.action!r}, client={self.client!r})"
