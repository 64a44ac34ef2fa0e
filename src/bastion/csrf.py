"""Pipeline stage 5: the CSRF token, always required.

Browser headers (stage 2) are one layer; this is the other, and it does not depend on
them. Every action call, public ones and anonymous visitors included, must carry a
token bound to the caller's session:

    token = mask || (HMAC(csrf key, session's CSRF secret) XOR mask)

with a fresh random ``mask`` each time a token is rendered, so the bytes on a page
change at every render and a compression side channel (BREACH) has nothing stable
to find. The token is read from the ``X-CSRF-Token`` header (scripts) or the
``_csrf`` form field (plain forms), and compared in constant time. It dies with the
session's CSRF secret, which ``session.rotate()`` replaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from typing import Final, NoReturn

from starlette.datastructures import Headers

from bastion.crypto.keys import KeyRing
from bastion.errors import Forbidden
from bastion.sessions import Session

__all__ = ["CsrfFailed", "issue", "verify"]

security_log = logging.getLogger("bastion.security")

HEADER: Final = "x-csrf-token"
FIELD: Final = "_csrf"
_SIZE: Final = 32
_TOKEN_LENGTH: Final = 86
"""Characters of a URL-safe base64 token of 64 bytes, without padding."""


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    message = "This form has expired. Reload the page and try again."


def issue(session: Session, keys: KeyRing) -> str:
    """A token for this session, masked afresh (creates the session if needed)."""
    raw = _raw(keys.current("csrf"), session.csrf_secret)
    mask = secrets.token_bytes(_SIZE)
    masked = _xor(raw, mask)
    return base64.urlsafe_b64encode(mask + masked).rstrip(b"=").decode()


def verify(
    session: Session, headers: Headers, form_token: str | None, keys: KeyRing, action: str
) -> None:
    """Refuse (403) unless the call carries a token made for this very session."""
    sent = headers.getlist(HEADER)
    if len(sent) > 1:
        _refuse(action, "repeated")
    token = sent[0] if sent else form_token
    if not token:
        _refuse(action, "missing")
    unmasked = _unmask(token)
    if unmasked is None:
        _refuse(action, "malformed")
    if not session.exists:
        _refuse(action, "no session")
    secret = session.csrf_secret
    # Every key generation is tried, all of them: no early exit to time.
    matches = [hmac.compare_digest(unmasked, _raw(key, secret)) for key in keys.all("csrf")]
    if not any(matches):
        _refuse(action, "mismatch")


def _xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR of two equal-length strings, as one big-integer operation."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _raw(key: bytes, secret: bytes) -> bytes:
    return hmac.new(key, secret, hashlib.sha256).digest()


def _unmask(token: str) -> bytes | None:
    if len(token) != _TOKEN_LENGTH or not token.isascii():
        return None
    try:
        blob = base64.urlsafe_b64decode(token + "==")
    except (binascii.Error, ValueError):
        return None
    if len(blob) != 2 * _SIZE:
        return None
    mask, masked = blob[:_SIZE], blob[_SIZE:]
    return _xor(masked, mask)


def _refuse(action: str, reason: str) -> NoReturn:
    # A security event, never with the token's value.
    security_log.warning(
        "refused %s: CSRF token %s",
        action,
        reason,
        extra={"event": "csrf_refused", "action": action, "reason": reason},
    )
    raise CsrfFailed()
