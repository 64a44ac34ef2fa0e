"""The board's second factor: one-time codes (``bastion.totp``) kept per account, and the
sign-in's second step. What log-in (actions.py), the pages (pages.py) and the enrolment
and second-step actions (mfa.py) share; it imports none of them.

A member who turned codes on signs in in two steps. The password alone (``login``) does
not sign in: it leaves "the password was right for account X at time T" in a new session
(``start_second_step``), good for five minutes, and ``login_totp`` then takes a code from
the app or a recovery code. Wrong codes are throttled per account (``check_code``: five in
fifteen minutes, as wrong passwords are), whoever sends them and from wherever: whoever
has got this far has the password.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, UniqueConstraint, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import Scope

from bastion import ActionError, Context, Session, get_session, totp
from bastion.ratelimit import parse_rate

from .core import Member, bastion, db
from .db import Base, now

__all__ = [
    "ISSUER",
    "SECOND_STEP_PAGE",
    "RecoveryCode",
    "Refused",
    "SecondStep",
    "TotpCredential",
    "TotpState",
    "Used",
    "check_code",
    "disable",
    "end_second_step",
    "enrol",
    "has_totp",
    "pending_account",
    "second_step_pending",
    "start_second_step",
    "totp_state",
]

ISSUER: Final = "Team board"
"""How the entry is named in the member's authenticator app."""

SECOND_STEP_PAGE: Final = "/login/totp"

SECOND_STEP_TTL: Final = 300.0
"""Seconds between the right password and the code, at most: time to unlock a phone and
open the app, not to leave a half-signed-in session lying about."""

WRONG_CODES: Final = parse_rate("5/15 minutes", "WRONG_CODES")
"""Codes tried per account in a moving window, as ``LoginThrottle.per_account`` for
passwords: 5 guesses of 10^6 (three steps of drift: 3 x 10^6 codes right at a time) give
an attacker with the password a chance of about 1 in 67,000 per 15 minutes."""

_PENDING: Final = "board.second_step"
"""Session key: the account whose password was right, and when."""

_attempts: Final = bastion.counter.moving()
"""The log-in throttle's own exact counters (in the same storage: Redis when the
sessions are there), under keys of their own."""


# --- the tables -------------------------------------------------------------------------------


class TotpCredential(Base):
    """A member's authenticator: the TOTP secret (never sent back, shown only at
    enrolment, from the session) and the last time step a code was accepted for, which
    refuses that code, and every earlier one, from then on."""

    __tablename__ = "totp_credentials"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(64))
    last_step: Mapped[int | None] = mapped_column(default=None)
    """``None`` until the first code; then ``unix time // 30`` of the last code used (an
    INTEGER holds it until the year 4010)."""
    created_at: Mapped[datetime] = mapped_column(default=now)


class RecoveryCode(Base):
    """One recovery code of a member, as its SHA-256 (``bastion.totp.hash_recovery_code``):
    deleted when used. Belongs to the authenticator: turning codes off deletes these too."""

    __tablename__ = "recovery_codes"
    __table_args__ = (
        UniqueConstraint("account_id", "code_hash", name="recovery_codes_once"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("totp_credentials.account_id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))


# --- reading and writing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotpState:
    """What the profile shows: since when, and how many recovery codes are left."""

    since: datetime
    recovery_codes: int


def totp_state(account_id: int) -> TotpState | None:
    """The member's authenticator, or ``None`` when codes are off (run it in a thread)."""
    with db.session() as session:
        since = session.scalar(
            select(TotpCredential.created_at).where(TotpCredential.account_id == account_id)
        )
        if since is None:
            return None
        left = session.scalar(select(func.count()).where(RecoveryCode.account_id == account_id))
        return TotpState(since, int(left or 0))


def has_totp(account_id: int) -> bool:
    with db.session() as session:
        return session.get(TotpCredential, account_id) is not None


def enrol(account_id: int, secret: str, step: int, recovery_codes: list[str]) -> bool:
    """Store the confirmed secret, the step of the code that confirmed it (so that code
    cannot sign in too) and the recovery codes' hashes. ``False`` if the member already
    has one (another tab confirmed first)."""
    try:
        with db.transaction() as session:
            session.add(TotpCredential(account_id=account_id, secret=secret, last_step=step))
            session.flush()  # the credential first: the codes' foreign key names it
            session.add_all(
                RecoveryCode(account_id=account_id, code_hash=totp.hash_recovery_code(code))
                for code in recovery_codes
            )
    except IntegrityError:
        return False
    return True


def disable(account_id: int) -> bool:
    """Codes off: the secret and the recovery codes go (one statement: the codes follow
    their credential, ``ON DELETE CASCADE``). ``False`` if they were off already."""
    with db.transaction() as session:
        # SQLite keeps foreign keys (and so the cascade) only with PRAGMA foreign_keys=ON,
        # which the board sets; the codes are deleted first all the same, in case.
        session.connection().execute(
            delete(RecoveryCode).where(RecoveryCode.account_id == account_id)
        )
        gone = session.connection().execute(
            delete(TotpCredential).where(TotpCredential.account_id == account_id)
        )
        return bool(gone.rowcount)


class Used(enum.Enum):
    """What signed in: a code from the app, or one of the recovery codes."""

    CODE = "code"
    RECOVERY_CODE = "recovery code"


class Refused(enum.Enum):
    """Why a code did not sign in: the message the member reads, and its error code."""

    WRONG = "That code is not right. Type the 6 digits your app shows now, or a recovery code."
    REUSED = (
        "That code was used already. Wait for the next one in your app: a new one comes "
        "every 30 seconds."
    )


def _use(account_id: int, code: str) -> Used | Refused | None:
    """Check ``code`` and spend it, in one transaction: the credential's step is raised
    (a code from the app) or the recovery code's row deleted, each by a conditional
    statement, so of two calls racing with one code exactly one gets in. ``None`` when
    the account has no authenticator (any more)."""
    with db.transaction() as session:
        credential = session.get(TotpCredential, account_id)
        if credential is None:
            return None
        digits = totp.normalize_code(code)
        if digits is not None:
            step = totp.verify(credential.secret, digits, credential.last_step)
            if step is None:
                seen = totp.matching_step(credential.secret, digits) is not None
                return Refused.REUSED if seen else Refused.WRONG
            raised = session.connection().execute(
                update(TotpCredential)
                .where(
                    TotpCredential.account_id == account_id,
                    or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
                )
                .values(last_step=step)
            )
            return Used.CODE if raised.rowcount == 1 else Refused.REUSED
        hashes = session.scalars(
            select(RecoveryCode.code_hash).where(RecoveryCode.account_id == account_id)
        )
        matched = totp.match_recovery_code(code, list(hashes))
        if matched is None:
            return Refused.WRONG
        spent = session.connection().execute(
            delete(RecoveryCode).where(
                RecoveryCode.account_id == account_id, RecoveryCode.code_hash == matched
            )
        )
        return Used.RECOVERY_CODE if spent.rowcount == 1 else Refused.WRONG


class NoAuthenticator(ActionError):
    """The account has no authenticator (turned off since the password step)."""

    status = 409
    code = "totp_off"
    message = "Codes are off for this account."


async def check_code(account_id: int, code: str) -> Used:
    """Spend a code of the account's, or refuse: 401 ``totp_failed`` (wrong) or
    ``totp_reused`` (right, but used already), 429 once the account has tried
    ``WRONG_CODES`` in its window, right codes included, as ``LoginThrottle`` counts
    passwords: the try takes its place before the check, in one atomic step (concurrent
    guesses cannot all pass a check made first), and a right code frees the window."""
    key = ("totp-account", str(account_id))
    await _attempts.hit(WRONG_CODES, *key)
    outcome = await db.run(_use, account_id, code)
    if outcome is None:
        raise NoAuthenticator()
    if isinstance(outcome, Refused):
        error = "totp_reused" if outcome is Refused.REUSED else "totp_failed"
        raise ActionError(outcome.value, code=error, status=401)
    await _attempts.clear(WRONG_CODES, *key)
    return outcome


# --- the second step of a sign-in -------------------------------------------------------------


class SecondStep(BaseModel):
    """``login``'s answer when the password was right and a code must follow."""

    message: str
    next: str


def start_second_step(ctx: Context[Member], account_id: int) -> SecondStep:
    """The password was right: no sign-in yet. Whoever was signed in in this browser is
    signed out, the session starts afresh (a new ID: one planted before dies here) and
    holds the account and the time, for ``SECOND_STEP_TTL`` seconds."""
    ctx.logout()
    ctx.session[_PENDING] = {"account": account_id, "at": time.time()}
    return SecondStep(
        message="Password accepted. Now type the code from your authenticator app.",
        next=SECOND_STEP_PAGE,
    )


def pending_account(session: Session) -> int | None:
    """The account whose password this session gave, if that was less than
    ``SECOND_STEP_TTL`` seconds ago and no one is signed in."""
    pending: Any = session.get(_PENDING)
    if session.user_id is not None or not isinstance(pending, dict):
        return None
    account, at = pending.get("account"), pending.get("at")
    if not isinstance(account, int) or not isinstance(at, int | float):
        return None
    return account if 0 <= time.time() - at <= SECOND_STEP_TTL else None


def end_second_step(session: Session) -> None:
    session.pop(_PENDING, None)


def second_step_pending(scope: Scope) -> bool:
    """Whether this request's visitor is between the password and the code (pages)."""
    return pending_account(get_session(scope)) is not None
