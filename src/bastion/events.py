"""Pipeline stage 22: the audit trail, one structured event per action call.

Every call, whatever its outcome, produces one ``AuditEvent``: when, which action, who
(principal ID and client address), how it ended, the status, how long it took, and the
digest of an internal error. Never an input value, a token or a secret. The default
sink writes it as one JSON line on the ``bastion.audit`` logger; pass
``Bastion(audit_sinks=[...])`` to send it elsewhere as well (any callable taking the
event, sync or async).

A refused call (status below 500) is also one line on the ``bastion.security`` logger,
with ``action``, ``stage``, ``code``, ``client`` and ``digest`` in the record's
``extra``. The module that found the refusal (the CSRF check, the origin check…) gives
its words with ``refused()``; within an action call they are held (``hold()``) and
become that one line, with the fields only the pipeline knows (``log_refusal()``).
Outside a call (``bastion.protect`` on a plain route), they are logged at once.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Final

from bastion.errors import ActionError

__all__ = ["AuditEvent", "AuditSink", "Held", "log_refusal", "log_sink", "outcome_of", "refused"]

audit_log = logging.getLogger("bastion.audit")
security_log = logging.getLogger("bastion.security")

AuditSink = Callable[["AuditEvent"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    timestamp: float
    """Seconds since the epoch, when the call arrived."""
    action: str | None
    """The action's name (``None`` for an unknown action ID)."""
    action_id: str | None
    principal: str | None
    """The signed-in user's ID, as text."""
    client: str | None
    outcome: str
    """ok, invalid, unauthenticated, forbidden, csrf, rate_limited, too_large, not_found,
    error or timeout."""
    status: int
    duration_ms: float
    digest: str | None = None
    token_id: str | None = None
    """The ID of the API token the call was made with (never its secret)."""

    def as_dict(self) -> dict[str, object]:
        # By hand: dataclasses.asdict deep-copies every field, on every call.
        return {name: getattr(self, name) for name in _FIELDS}

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))


_FIELDS: Final = tuple(AuditEvent.__dataclass_fields__)


_OUTCOMES: Final = {
    401: "unauthenticated",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
    504: "timeout",
}


def outcome_of(error: ActionError | None) -> str:
    """The outcome word for a refusal (``None``: the call succeeded)."""
    if error is None:
        return "ok"
    if error.code in ("csrf_failed", "no_session", "cross_origin"):
        return "csrf"
    if error.status == 403:
        return "forbidden"
    if error.status >= 500 and error.status != 504:
        return "error"
    return _OUTCOMES.get(error.status, "invalid")


def log_sink(event: AuditEvent) -> None:
    """The default sink: one JSON line on the ``bastion.audit`` logger."""
    if audit_log.isEnabledFor(logging.INFO):  # no JSON built for a logger nobody reads
        fields = event.as_dict()
        audit_log.info(json.dumps(fields, separators=(",", ":")), extra={"audit": fields})


async def emit(sinks: tuple[AuditSink, ...], event: AuditEvent) -> None:
    for sink in sinks:
        try:
            result = sink(event)
            if result is not None and inspect.isawaitable(result):  # None: a plain sink
                await result
        except Exception:
            # A broken sink must not turn a served call into an error; it is logged.
            logging.getLogger("bastion").exception("bastion: an audit sink failed")


# --- the one line of a refused call ------------------------------------------------------


@dataclass(slots=True)
class Held:
    """The words a module gave for the refusal of the call under way, kept for its line."""

    message: str | None = None
    args: tuple[object, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


_held: ContextVar[Held | None] = ContextVar("bastion_refusal", default=None)

# Refusals that say someone may not do something are warnings; the everyday ones (a form
# that does not validate, a rate limit, an unknown action) are information.
_WARNINGS: Final = frozenset({"csrf", "forbidden", "unauthenticated"})


def refused(message: str, *args: object, **extra: object) -> None:
    """A refusal's words (``%``-style, never a value the client sent), from the module
    that found it: held for the call's one line, or logged now outside an action call."""
    held = _held.get()
    if held is None:
        security_log.warning(message, *args, extra=extra)
    elif held.message is None:  # the first refusal is the call's: it ends the checks
        held.message, held.args, held.extra = message, args, extra


def hold() -> tuple[Held, Token[Held | None]]:
    """Start holding the words of a refusal for the call about to run."""
    held = Held()
    return held, _held.set(held)


def release(token: Token[Held | None]) -> None:
    _held.reset(token)


def log_refusal(
    held: Held | None,
    *,
    action: str,
    stage: str,
    code: str,
    outcome: str,
    client: str | None,
    digest: str | None,
) -> None:
    """A refused call's one line on ``bastion.security``: the module's words if it gave
    some (its ``event`` and ``reason`` too), else ``refused <action>: <stage> <code>``."""
    noted = held is not None and held.message is not None
    level = logging.WARNING if noted or outcome in _WARNINGS else logging.INFO
    if not security_log.isEnabledFor(level):
        return
    fields: dict[str, object] = {"event": "refused"}
    if held is not None and held.message is not None:
        fields.update(held.extra)
        message, args = held.message, held.args
    else:
        message, args = "refused %s: %s %s", (action, stage, code)
    fields.update(action=action, stage=stage, code=code, client=client, digest=digest)
    security_log.log(level, message, *args, extra=fields)
