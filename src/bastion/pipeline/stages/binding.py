"""Pipeline stage 10: values the server put into a form come back sealed.

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

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ValidationError

from bastion.errors import BadRequest

if TYPE_CHECKING:
    from bastion.actions.spec import ActionSpec
    from bastion.crypto.keys import KeyRing
    from bastion.sessions import Session

__all__ = ["DEFAULT_TTL", "BoundInvalid", "open_bound", "seal"]

security_log = logging.getLogger("bastion.security")

DEFAULT_TTL: Final = 24 * 3600.0
_AAD: Final = b"bastion/bound/v1"
_NONCE: Final = 12
_MAX_SEALED: Final = 8192
"""Characters of a ``_bound`` field at most: what a server seals is small."""
_SEALED_TEXT: Final = re.compile(r"[A-Za-z0-9_-]+")


class BoundInvalid(BadRequest):
    code = "bound_invalid"
    message = "This form is no longer valid. Reload the page and try again."


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
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(keys.current("bound")).encrypt(
        nonce, json.dumps(payload, separators=(",", ":")).encode(), _AAD
    )
    return _encode(nonce + sealed)


def _encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


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
    if len(sealed) > _MAX_SEALED or not _SEALED_TEXT.fullmatch(sealed):
        _refuse(spec, "malformed")
    try:
        blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    except (binascii.Error, ValueError):
        _refuse(spec, "malformed")
    # Python's decoder skips unknown characters and ignores a last character's spare
    # bits: only the one spelling seal() writes is accepted, so a token has one text.
    if _encode(blob) != sealed:
        _refuse(spec, "malformed")
    nonce, ciphertext = blob[:_NONCE], blob[_NONCE:]
    if len(nonce) != _NONCE or not ciphertext:
        _refuse(spec, "malformed")
    for key in keys.all("bound"):
        try:
            plain = AESGCM(key).decrypt(nonce, ciphertext, _AAD)
        except InvalidTag:
            continue
        return json.loads(plain)
    _refuse(spec, "not sealed by this app (tampered, truncated or an unknown key)")


def _refuse(spec: ActionSpec, reason: str) -> NoReturn:
    security_log.warning(
        "refused %s: bound values %s",
        spec.name,
        reason,
        extra={"event": "bound_refused", "action": spec.name, "reason": reason},
    )
    raise BoundInvalid()
