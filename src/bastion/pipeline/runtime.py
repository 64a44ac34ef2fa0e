"""What the pipeline's stages may use, and nothing more: the ``Runtime``.

``Bastion`` (the facade, ``app.py``) builds one from its arguments and hands it down; no
module below the facade imports ``Bastion``. A stage that needs the keys, the store or
the client address reads them here, so what a line may touch is what this class lists.
It is frozen: configuration does not change while the app serves. The one thing filled
in later, the Jinja environment htmx fragments render with (``bastion.templates()``),
sits in its own holder, ``Fragments``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import Scope

from bastion.actions.registry import Registry
from bastion.actions.spec import ActionSpec, Fragment
from bastion.auth import PasswordCheck, UserLoader
from bastion.config import Config
from bastion.context import Context
from bastion.crypto.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.events import AuditSink
from bastion.http import network
from bastion.messages import DEFAULT, Messages
from bastion.ratelimit import Counter, ScriptCall
from bastion.sessions import Session, SessionManager
from bastion.stores import Store
from bastion.taint import TaintSet
from bastion.telemetry import Telemetry
from bastion.tokens import Tokens

if TYPE_CHECKING:
    import jinja2
    from limits import RateLimitItem

ReadAndCount = Callable[[str, Sequence[ScriptCall]], Awaitable[tuple[bytes | None, list[Any]]]]
"""A store key's value and the counters' replies, from one round trip."""

__all__ = ["Fragments", "Runtime"]


@dataclass(slots=True)
class Fragments:
    """The templates htmx fragments are rendered with, once ``templates()`` gave them."""

    env: jinja2.Environment | None = None

    def render(self, spec: ActionSpec, scope: Scope, data: Any, user: Any) -> str | None:
        """The action's fragment for this result, or ``None`` if it declares none: the
        template gets ``data`` (the result as the return type reads it — the model, not
        its JSON), ``user`` (the signed-in user, or ``None``) and ``request``."""
        if spec.fragment is None:
            return None
        if self.env is None:
            raise ConfigurationError(
                f"action {spec.name!r} names a fragment: call bastion.templates(...) first"
            )
        template = self.env.get_template(spec.fragment)
        return template.render(request=Request(scope), data=data, user=user)

    def render_chosen(self, spec: ActionSpec, scope: Scope, chosen: Fragment, user: Any) -> str:
        """The template a ``-> Fragment`` handler chose, with its values, ``user`` and
        ``request`` (which its values cannot replace)."""
        if self.env is None:
            raise ConfigurationError(
                f"action {spec.name!r} returns a Fragment: call bastion.templates(...) first"
            )
        template = self.env.get_template(chosen.template)
        return template.render({**chosen.values, "request": Request(scope), "user": user})


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """Everything a call may use, built once by ``Bastion``."""

    config: Config
    keys: KeyRing
    registry: Registry
    store: Store
    sessions: SessionManager
    counter: Counter
    refusal_rate: RateLimitItem | None
    """Refused calls per client address before 429 (``Bastion(refusal_rate=...)``)."""
    tokens: Tokens
    token_rate: RateLimitItem
    """Calls per API token, whatever it calls (``Bastion(token_rate=...)``)."""
    password_check: PasswordCheck
    load_user: UserLoader | None
    trusted_proxies: network.Networks
    audit_sinks: tuple[AuditSink, ...]
    unavailable_errors: tuple[type[BaseException], ...]
    taints: TaintSet
    messages: Messages = DEFAULT
    """The words of every refusal (``Bastion(messages=...)``)."""
    telemetry: Telemetry | None = None
    """Spans and metrics per call (``Bastion(telemetry=...)``); ``None``: off."""
    fragments: Fragments = field(default_factory=Fragments)
    read_and_count: ReadAndCount | None = None
    """The store's read of a key with the counters' hits in one round trip, when both are
    on one Redis (``RedisStore.get_and_run``); ``None``: a read, then the hits."""
    checked_servers: set[tuple[object, ...]] = field(default_factory=set)
    """Listening addresses found on loopback, for debug mode (checked once each)."""

    @property
    def debug(self) -> bool:
        return self.config.debug

    def client_address(self, scope: Scope) -> str | None:
        return network.client_address(scope, self.trusted_proxies)

    def is_https(self, scope: Scope) -> bool:
        return network.is_https(self.config, scope)

    def origins_for(self, scope: Scope) -> Collection[str]:
        return network.origins_for(self.config, scope)

    def context(self, action: str, scope: Scope, session: Session) -> Context[Any]:
        """What a handler or a policy knows of a call to ``action`` (an action's name, or
        what a guarded route calls itself: "metrics", "openapi.json")."""
        return Context(
            action=action,
            scope=scope,
            session=session,
            client=self.client_address(scope),
            load_user=self.load_user,
            password_check=self.password_check,
            sessions=self.sessions,
        )

    def render_fragment(self, spec: ActionSpec, scope: Scope, data: Any, user: Any) -> str | None:
        return self.fragments.render(spec, scope, data, user)

    def __repr__(self) -> str:
        return f"Runtime(prefix={self.config.prefix!r}, actions={len(self.registry)})"
