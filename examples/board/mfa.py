"""Codes from an authenticator app: set up and turned off on the profile (``/me/totp``),
typed at sign-in after the password (``/login/totp``). The tables and the rules they
share with log-in are in second_factor.py.

Setting up takes two actions, both soon after a log-in (``STEP_UP``, as changing the
password does): ``totp_begin`` puts a new secret in the session, not the database, and
the page shows it as a QR code; ``totp_confirm`` takes a first code, which proves the app
has the secret, and only then stores it, with ten recovery codes shown that once.
Turning codes off takes a recent log-in and a code too: a session left open, with its
password typed in again by someone else, is not enough.
"""

from __future__ import annotations

import time
from typing import Any, Final

from pydantic import BaseModel, Field, SecretStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion import ActionError, Context, Session, ValidationFailed, get_session, public, totp

from . import second_factor
from .actions import STEP_UP
from .core import Member, bastion, db, find_member, member
from .pages import members_only, next_path, render, signed_in
from .schemas import Input, Notice, SignedIn
from .second_factor import SECOND_STEP_PAGE, Used

__all__ = [
    "ROUTES",
    "login_totp",
    "totp_begin",
    "totp_confirm",
    "totp_disable",
]

ENROLMENT_TTL: Final = 900.0
"""Seconds a secret waits in the session for its first code: time to find and install
an app. After that, the set-up starts again."""

_ENROLMENT: Final = "board.totp_enrolment"


class Code(Input):
    """A code from the app (``123 456``) or a recovery code (``7kq2-m9xd-4hrt-b0we``).
    A secret: never kept in the flash to fill the form again."""

    code: SecretStr = Field(min_length=1, max_length=64)


class RecoveryCodes(BaseModel):
    """Shown once, at the end of the set-up: only their hashes are stored."""

    message: str
    codes: list[str]


def _already_on() -> ActionError:
    return ActionError("Codes are on already.", code="totp_on", status=409)


def _enrolment(session: Session, account_id: int) -> str | None:
    """The secret ``totp_begin`` made for this member in this session, if it is recent.
    Tied to the member: ``ctx.login`` keeps a session's data, and another member signing
    in in this browser must not confirm this one's secret."""
    kept: Any = session.get(_ENROLMENT)
    if not isinstance(kept, dict) or kept.get("account") != account_id:
        return None
    secret, at = kept.get("secret"), kept.get("at")
    if not isinstance(secret, str) or not isinstance(at, int | float):
        return None
    return secret if 0 <= time.time() - at <= ENROLMENT_TTL else None


# --- setting up and turning off ---------------------------------------------------------------


@bastion.action(policy=STEP_UP, rate="6/minute")
async def totp_begin(ctx: Context[Member]) -> Notice:
    """A new secret, in the session only, until a first code confirms it."""
    me = member(ctx)
    if await db.run(second_factor.has_totp, me.id):
        raise _already_on()
    ctx.session[_ENROLMENT] = {"account": me.id, "secret": totp.new_secret(), "at": time.time()}
    return Notice(message="Scan the QR code with your authenticator app, then type its code.")


@bastion.action(policy=STEP_UP, rate="10/minute")
async def totp_confirm(ctx: Context[Member], data: Code) -> RecoveryCodes:
    """The app's first code: the secret is stored, with the step of this code (which
    cannot sign in afterwards) and the hashes of ten recovery codes, shown now, once."""
    me = member(ctx)
    secret = _enrolment(ctx.session, me.id)
    if secret is None:
        raise ActionError(
            "This set-up has expired: start again.", code="totp_not_started", status=409
        )
    step = totp.verify(secret, data.code.get_secret_value(), None)
    if step is None:
        raise ValidationFailed({"code": "That code is not right: type the 6 digits of your app."})
    codes = totp.new_recovery_codes()
    if not await db.run(second_factor.enrol, me.id, secret, step, codes):
        raise _already_on()
    del ctx.session[_ENROLMENT]
    return RecoveryCodes(
        message="Codes are on. Keep these recovery codes somewhere safe: each signs you in "
        "once without your phone, and they are shown only now.",
        codes=codes,
    )


@bastion.action(policy=STEP_UP, rate="6/minute")
async def totp_disable(ctx: Context[Member], data: Code) -> Notice:
    """Codes off, with a code from the app or a recovery code (throttled as at sign-in)."""
    me = member(ctx)
    await second_factor.check_code(me.id, data.code.get_secret_value())
    await db.run(second_factor.disable, me.id)
    return Notice(message="Codes are off: your password alone signs you in again.")


# --- signing in -------------------------------------------------------------------------------


def _expired() -> ActionError:
    return ActionError(
        "Your sign-in has expired: type your email and password again.",
        code="second_step_expired",
        status=401,
    )


@bastion.action(policy=public, rate="10/minute")
async def login_totp(ctx: Context[Member], data: Code) -> SignedIn:
    """The second step: only within five minutes of the right password, in that session
    (``second_factor.pending_account``); five codes per account per fifteen minutes
    (``check_code``: then 429), each good once. Signs in as ``login`` does: a new session."""
    account_id = second_factor.pending_account(ctx.session)
    if account_id is None:
        raise _expired()
    try:
        used = await second_factor.check_code(account_id, data.code.get_secret_value())
    except second_factor.NoAuthenticator:
        raise _expired() from None
    signed = await db.run(find_member, account_id)
    if signed is None:
        raise _expired()
    second_factor.end_second_step(ctx.session)
    await ctx.login(signed)
    message = f"Signed in as {signed.name}."
    if used is Used.RECOVERY_CODE:
        left = await db.run(second_factor.totp_state, account_id)
        count = left.recovery_codes if left is not None else 0
        message += f" That recovery code is used up: {count} left."
    return SignedIn(name=signed.name, message=message)


# --- pages ------------------------------------------------------------------------------------


def _qr(secret: str, email: str) -> str:
    return totp.qr_svg(totp.provisioning_uri(secret, email, second_factor.ISSUER))


@members_only
async def totp_page(request: Request, member: Member) -> Response:
    """Set-up and state: the QR code and the secret of a set-up begun in this session, or
    whether codes are on; the recovery codes once, after the set-up."""
    state = await db.run(second_factor.totp_state, member.id)
    secret = None if state is not None else _enrolment(get_session(request.scope), member.id)
    qr = None if secret is None else await db.run(_qr, secret, member.email)  # off the loop
    grouped = None if secret is None else " ".join(secret[i : i + 4] for i in range(0, 32, 4))
    return render(request, "totp_setup.html", member, totp=state, qr=qr, secret=grouped)


async def second_step_page(request: Request) -> Response:
    """The code, after the password. Without a password step in the last five minutes,
    a way back to the log-in page (and the flash of the refusal that sent the visitor
    here, which a redirect would lose)."""
    after = next_path(request.query_params.get("next"))
    if await signed_in(request) is not None:
        return RedirectResponse(after, status_code=303)
    pending = second_factor.second_step_pending(request.scope)
    return render(request, "totp_login.html", None, next=after, pending=pending)


ROUTES: Final = [
    ("/me/totp", totp_page),
    (SECOND_STEP_PAGE, second_step_page),
]
