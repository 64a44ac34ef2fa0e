"""Pipeline stage 11: values the server put into a form come back sealed.

A page that renders "edit post 42" must not let the visitor edit post 43 by changing a
hidden input. Such values are *bound* when the form is rendered and travel in one
``_bound`` field, sealed with AES-GCM under the bound-arguments purpose key::

    _bound = base64url(nonce ‖ AES-GCM(key, nonce, {"a": action, "v": values,
                                                    "e": expiry, "s": session}))

The sealed payload names the action it is for, expires (one day by default), and — for
a signed-in visitor, by default — is tied to the session, so it cannot be replayed
elsewhere, later, or by someone else (what the model's encrypted closures allowed). The
server opens it with the current key or a fallback, checks action, expiry and session,
and validates the values against the action's declared bound model. Anything wrong
answers 400 with one generic message: the client learns nothing of which check failed.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

from pydantic import BaseModel, ValidationError

from bastion import events
from bastion.crypto import seal as sealing
from bastion.errors import BadRequest
from bastion.messages import CATALOG

if TYPE_CHECKING:
    from bastion.actions.spec import ActionSpec
    from bastion.crypto.keys import KeyRing
    from bastion.sessions import Session

__all__ = ["DEFAULT_TTL", "BoundInvalid", "open_bound", "seal"]


DEFAULT_TTL: Final = 24 * 3600.0
_AAD: Final = b"bastion/bound/v1"
_MAX_SEALED: Final = 8192
"""Characters of a ``_bound`` field at most: what a server seals is small."""


class BoundInvalid(BadRequest):
    code = "bound_invalid"
    message = CATALOG["bound_invalid"]


def _session_tag(session: Session) -> str:
    """A stand-in for the session in the seal: it changes when the session rotates."""
    return hashlib.sha256(b"bound:" + session.csrf_secret).hexdigest()[:32]


def seal(
    keys: KeyRing,
    spec: ActionSpec,
    values: dict[str, Any],
    session: Session | None,
    *,
    ttl: float = DEFAULT_TTL,
    bind_session: bool | None = None,
) -> str:
    """Seal ``values`` for ``spec``'s action. ``bind_session`` defaults to whether a user
    is signed in; pass ``True`` to tie an anonymous visitor's form to their session."""
    if spec.bound is None:
        raise TypeError(f"action {spec.name!r} declares no bound parameter")
    checked = spec.bound.model_validate(values)  # a wrong value is the page's bug: say so now
    tie = (
        bind_session
        if bind_session is not None
        else (session is not None and session.user_id is not None)
    )
    if tie and session is None:
        raise TypeError("bind_session=True needs the visitor's session")
    payload = {
        "a": spec.name,
        "v": checked.model_dump(mode="json"),
        "e": time.time() + ttl,
        "s": _session_tag(session) if tie and session is not None else None,
    }
    plaintext = json.dumps(payload, separators=(",", ":")).encode()
    return sealing.seal(keys.current("bound"), plaintext, _AAD)


def open_bound(
    keys: KeyRing, spec: ActionSpec, sealed: str | None, session: Session
) -> BaseModel | None:
    """The action's bound model from a ``_bound`` value; 400 for anything amiss."""
    if spec.bound is None:
        if sealed is not None:
            _refuse(spec, "sent to an action without bound values")
        return None
    if not sealed:
        _refuse(spec, "missing")
    payload = _decrypt(keys, sealed, spec)
    if not isinstance(payload, dict) or payload.get("a") != spec.name:
        _refuse(spec, "for another action")
    expires = payload.get("e")
    if not isinstance(expires, int | float) or expires < time.time():
        _refuse(spec, "expired")
    tag = payload.get("s")
    if tag is not None and (not session.exists or tag != _session_tag(session)):
        _refuse(spec, "for another session")
    try:
        return spec.bound.model_validate(payload.get("v"))
    except ValidationError:
        _refuse(spec, "values do not fit the bound model")


def _decrypt(keys: KeyRing, sealed: str, spec: ActionSpec) -> Any:
    try:
        plaintext = sealing.unseal(keys.all("bound"), sealed, _AAD, max_chars=_MAX_SEALED)
    except sealing.Unsealable as exc:
        _refuse(spec, exc.reason)
    return json.loads(plaintext)


def _refuse(spec: ActionSpec, reason: str) -> NoReturn:
    events.refused(
        "refused %s: bound values %s",
        spec.name,
        reason,
        event="bound_refused",
        action=spec.name,
        reason=reason,
        stage="bound values",
        code=BoundInvalid.code,
    )
    raise BoundInvalid()
