"""Pipeline stage 5: the CSRF token, required on every call a cookie authenticates.

Browser headers (stage 2, the origin check) are one layer; this is the other, and it
does not depend on them. Every action call, public ones and anonymous visitors
included, must carry a token bound to the caller's session (the one exception: a
script's call made with an API token, stage 3, which sends no cookie for a cross-site
page to ride on):

    token = mask || (HMAC(csrf key, session ID) XOR mask)

masked afresh at every render (``bastion.crypto.tokens``). The token is read from the
``X-CSRF-Token`` header (scripts) or the ``_csrf`` form field (plain forms), and
compared in constant time. It dies with the session ID, which signing in
(``session.rotate()``) and out (``session.clear()``) replace.

Bound to the ID the cookie carries, the token is checked before the session is read
from the store, so that the session's read can go with the rate-limit hit in one round
trip (stages 6 and 7); a forged call is refused before it (its session is read
afterwards, for its audit line and a form's flash). The ID never appears in the token;
the store holds sessions under another HMAC of it (the session key's), so a copy of the
store makes no token either.

A call that brings a token but no session (its cookie was not sent, or names a session
that has ended: found when it is read, stage 6) is refused as ``no_session``, with words
of its own: "this form has expired" would send a visitor whose browser blocks cookies
round and round a reload. Every other reason (no token, a malformed one, one of another
session) is ``csrf_failed``, and each is a line on the ``bastion.security`` log.
"""

from __future__ import annotations

from typing import Final, NoReturn

from starlette.datastructures import Headers

from bastion import events
from bastion.crypto import tokens
from bastion.crypto.keys import KeyRing
from bastion.errors import Forbidden
from bastion.messages import CATALOG
from bastion.sessions import Session

__all__ = ["CsrfFailed", "NoSession", "issue", "verify"]

HEADER: Final = "x-csrf-token"
FIELD: Final = "_csrf"


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    message = CATALOG["csrf_failed"]


class NoSession(CsrfFailed):
    """No session came with the call: its cookie was not sent (cookies off, a script's
    ``fetch`` without credentials) or its session ended. A ``CsrfFailed`` still, so that
    whatever treats CSRF refusals alike goes on doing so."""

    code = "no_session"
    message = CATALOG["no_session"]


def issue(session: Session, keys: KeyRing) -> str:
    """A token for this session, masked afresh (creates the session if needed)."""
    session.ensure()
    return tokens.mask(tokens.mac(keys.current("csrf"), str(session.id).encode()))


def verify(
    sid: str | None, headers: Headers, form_token: str | None, keys: KeyRing, action: str
) -> None:
    """Refuse (403) unless the call carries a token made for the session ``sid`` names
    (the cookie's session ID, or ``None`` when it brought none)."""
    sent = headers.getlist(HEADER)
    if len(sent) > 1:
        _refuse(action, "repeated")
    token = sent[0] if sent else form_token
    if not token:
        _refuse(action, "missing")
    unmasked = tokens.unmask(token)
    if unmasked is None:
        _refuse(action, "malformed")
    if sid is None:
        # A real token's shape but no session: the page had one, the call did not bring
        # its cookie. The visitor must hear that, not that a form expired.
        _refuse(action, "no session", NoSession)
    if not tokens.matches(unmasked, keys.all("csrf"), sid.encode()):
        _refuse(action, "mismatch")


def session_ended(action: str) -> NoReturn:
    """The token was made for the cookie's session, which has ended since (a log-out, its
    timeout, every session of its user ended): ``no_session``."""
    _refuse(action, "no session", NoSession, stage="session")


def _refuse(
    action: str,
    reason: str,
    refusal: type[CsrfFailed] = CsrfFailed,
    stage: str = "CSRF token",
) -> NoReturn:
    # A security event, never with the token's value.
    events.refused(
        "refused %s: CSRF token %s",
        action,
        reason,
        event="csrf_refused",
        action=action,
        reason=reason,
        stage="CSRF token",
        code=refusal.code,
    )
    raise refusal()
