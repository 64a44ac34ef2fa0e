"""Pipeline stage 21: the audit trail, one structured event per action call.

Every call, whatever its outcome, produces one ``AuditEvent``: when, which action, who
(principal ID and client address), how it ended, the status, how long it took, and the
digest of an internal error. Never an input value, a token or a secret. The default
sink writes it as one JSON line on the ``bastion.audit`` logger; pass
``Bastion(audit_sinks=[...])`` to send it elsewhere as well (any callable taking the
event, sync or async).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from bastion.errors import ActionError

__all__ = ["AuditEvent", "AuditSink", "log_sink", "outcome_of"]

audit_log = logging.getLogger("bastion.audit")

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
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A broken sink must not turn a served call into an error; it is logged.
            logging.getLogger("bastion").exception("bastion: an audit sink failed")
