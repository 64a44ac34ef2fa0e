"""Passkeys on the board: a member adds one on their profile (soon after a log-in), then
signs in with it from the login page, without typing an address or a password.

bastion.passkeys does the WebAuthn part: the relying party is the board's own allowed
origin (``BASTION_ALLOWED_ORIGINS``, never the request's ``Host``), and each challenge
waits in the session, for one purpose, once, five minutes at most. Here are the table of
credentials and the five actions; static/passkeys.js is the browser's half.

A passkey needs a host name: WebAuthn takes no IP address for a site. Served at
``http://127.0.0.1:8000`` (``make demo``'s default), the board says so and offers none;
at ``http://localhost:8000`` (``make demo HOST=localhost``), it does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import ForeignKey, LargeBinary, String, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import BigInteger

from bastion import ActionError, Bound, ConfigurationError, Context, Session, public
from bastion.passkeys import PasskeyRejected, Passkeys

from .actions import STEP_UP
from .core import Member, bastion, db, member
from .db import MAX_ROW_ID, Account, Base, now
from .schemas import Input, Notice, SignedIn

__all__ = [
    "RELYING_PARTY",
    "Passkey",
    "begin_passkey_registration",
    "begin_passkey_sign_in",
    "delete_passkey",
    "finish_passkey_registration",
    "finish_passkey_sign_in",
    "passkeys_of",
]

log = logging.getLogger("board")

MAX_PASSKEYS: Final = 10
"""Passkeys one member may have: a phone, a laptop, a security key or two, and spares."""

MAX_ANSWER: Final = 64 * 1024
"""Characters of a browser's answer (a few KiB in practice): bastion refuses longer."""


def _relying_party() -> Passkeys | None:
    try:
        return Passkeys.from_config(bastion.config, rp_name="Team board")
    except ConfigurationError as why:
        log.info("passkeys are off: %s", why)
        return None


RELYING_PARTY: Final = _relying_party()
"""The board as a WebAuthn relying party, or ``None`` where it has no host name (the
pages then offer no passkey: ``passkeys_enabled``)."""


# --- the table --------------------------------------------------------------------------------


class Passkey(Base):
    """A member's passkey: its credential ID and public key (nothing secret: the private
    key never leaves the authenticator), and the counter its sign-ins must raise."""

    __tablename__ = "passkeys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(60))
    # One credential is one account's: a second registration of it is refused.
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(4096))
    user_handle: Mapped[bytes] = mapped_column(LargeBinary(64))
    # The authenticator's counter is 32 bits, unsigned: more than PostgreSQL's INTEGER.
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


@dataclass(frozen=True, slots=True)
class Stored:
    """A passkey as a sign-in verifies it (bastion's ``StoredPasskey``)."""

    row_id: int
    account_id: int
    public_key: bytes
    sign_count: int
    user_handle: bytes | None


@dataclass(frozen=True, slots=True)
class Listed:
    """A passkey as the profile lists it."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


def passkeys_of(account_id: int) -> list[Listed]:
    """The member's passkeys, oldest first (for the profile page; run it in a thread)."""
    with db.session() as session:
        rows = session.execute(
            select(Passkey.id, Passkey.name, Passkey.created_at, Passkey.last_used_at)
            .where(Passkey.account_id == account_id)
            .order_by(Passkey.id)
        )
        return [Listed(*row) for row in rows]


# --- what the actions take and give -----------------------------------------------------------

PasskeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class NewPasskey(Input):
    """The browser's answer to the registration options, as JSON, and a name for it."""

    credential: str = Field(min_length=2, max_length=MAX_ANSWER)
    name: PasskeyName = "Passkey"


class PasskeyAnswer(Input):
    """The browser's answer to the sign-in options, as JSON."""

    credential: str = Field(min_length=2, max_length=MAX_ANSWER)


class PasskeyRef(Input):
    """Sealed into each passkey's remove form: which one."""

    passkey_id: int = Field(ge=1, le=MAX_ROW_ID)


class PasskeyOptions(BaseModel):
    """The options for ``navigator.credentials``, as JSON (bastion.passkeys made them)."""

    options: str


class PasskeyAdded(BaseModel):
    id: int
    name: str
    message: str


def _relying() -> Passkeys:
    if RELYING_PARTY is None:
        raise ActionError(
            "Passkeys need the board served at a host name (such as localhost), not an IP address.",
            code="passkeys_unavailable",
            status=404,
        )
    return RELYING_PARTY


# --- adding one -------------------------------------------------------------------------------


@bastion.action(policy=STEP_UP, rate="10/minute")
def begin_passkey_registration(ctx: Context[Member]) -> PasskeyOptions:
    """Soon after a log-in only (a session left open must not add a way in), as is the
    finish: refused here, before the browser asks for a fingerprint in vain."""
    relying, me = _relying(), member(ctx)
    with db.session() as session:
        existing = list(
            session.scalars(select(Passkey.credential_id).where(Passkey.account_id == me.id))
        )
    if len(existing) >= MAX_PASSKEYS:
        raise _too_many()
    options = relying.registration_options(
        ctx.session, me.id, me.email, existing, display_name=me.name
    )
    return PasskeyOptions(options=options)


@bastion.action(policy=STEP_UP, rate="10/minute")
def finish_passkey_registration(ctx: Context[Member], data: NewPasskey) -> PasskeyAdded:
    credential = _relying().verify_registration(ctx.session, data.credential)
    me = member(ctx)
    try:
        with db.transaction() as session:
            count = session.scalar(
                select(func.count(Passkey.id)).where(Passkey.account_id == me.id)
            )
            if (count or 0) >= MAX_PASSKEYS:
                raise _too_many()
            row = Passkey(
                account_id=me.id,
                name=data.name,
                credential_id=credential.id,
                public_key=credential.public_key,
                user_handle=credential.user_handle,
                sign_count=credential.sign_count,
                transports=",".join(credential.transports),
            )
            session.add(row)
            session.flush()
            row_id = row.id
    except IntegrityError:  # this authenticator's credential is registered already
        raise ActionError(
            "This passkey is registered already.", code="passkey_taken", status=409
        ) from None
    return PasskeyAdded(id=row_id, name=data.name, message=f"Passkey “{data.name}” added.")


def _too_many() -> ActionError:
    return ActionError(
        f"You have {MAX_PASSKEYS} passkeys: remove one first.", code="passkey_limit", status=409
    )


@bastion.action(policy=STEP_UP, rate="30/minute")
def delete_passkey(ctx: Context[Member], ref: Annotated[PasskeyRef, Bound]) -> Notice:
    """The passkey sealed into the form, if it is the caller's own (else 404: whose it
    is, is not said)."""
    with db.transaction() as session:
        name = session.scalar(
            select(Passkey.name).where(
                Passkey.id == ref.passkey_id, Passkey.account_id == member(ctx).id
            )
        )
        deleted = session.connection().execute(
            delete(Passkey).where(
                Passkey.id == ref.passkey_id, Passkey.account_id == member(ctx).id
            )
        )
        if name is None or deleted.rowcount != 1:
            raise ActionError("This passkey no longer exists.", code="passkey_gone", status=404)
    return Notice(message=f"Passkey “{name}” removed.")


# --- signing in with one ----------------------------------------------------------------------


@bastion.action(policy=public, rate="20/minute")
def begin_passkey_sign_in(ctx: Context[Member]) -> PasskeyOptions:
    """Any passkey of the board's the authenticator holds may answer: the member picks
    theirs, and types nothing."""
    return PasskeyOptions(options=_relying().authentication_options(ctx.session))


def _stored(credential_id: bytes) -> Stored | None:
    with db.session() as session:
        row = session.scalar(select(Passkey).where(Passkey.credential_id == credential_id))
        if row is None:
            return None
        return Stored(row.id, row.account_id, row.public_key, row.sign_count, row.user_handle)


def _sign_in(session: Session, answer: str) -> Member:
    """Verify the answer against its stored passkey and record the use: one conditional
    UPDATE on the counter the verification read, so of two sign-ins racing with one
    counting passkey, one wins."""
    verified = _relying().verify_authentication(session, answer, _stored)
    stored = verified.credential
    with db.transaction() as tx:
        used = tx.connection().execute(
            update(Passkey)
            .where(Passkey.id == stored.row_id, Passkey.sign_count == stored.sign_count)
            .values(sign_count=verified.sign_count, last_used_at=now())
        )
        account = tx.get(Account, stored.account_id)
        if used.rowcount != 1 or account is None:
            raise PasskeyRejected()
        return Member.of(account)


@bastion.action(policy=public, rate="20/minute")
async def finish_passkey_sign_in(ctx: Context[Member], data: PasskeyAnswer) -> SignedIn:
    """As ``login`` ends: the session rotates (a planted ID dies) and the member is in.
    A passkey with user verification is two factors already."""
    signed = await db.run(_sign_in, ctx.session, data.credential)
    await ctx.login(signed)
    return SignedIn(name=signed.name, message=f"Signed in as {signed.name}.")
