"""Every server action of the board. Each names who may call it (its policy), how often
(its rate), what it takes (a pydantic model, unknown fields refused) and the only
fields it may send back (its return type). ``/security`` lists them as ``bastion audit``
does.

Handlers that touch the database are plain functions: bastion runs them in a worker
thread. The two that need ``await`` (``ctx.check_password``, ``ctx.login``) are async
and send their queries to a thread with ``db.run``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Final

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import Session, selectinload

from bastion import (
    ActionError,
    Bound,
    Context,
    ValidationFailed,
    authenticated,
    hash_password,
    needs_rehash,
    public,
    recent_login,
    require,
)

from .core import Member, bastion, db, member
from .db import Account, Post, new_version, now
from .schemas import (
    AccountRef,
    Credentials,
    Draft,
    Export,
    NewPassword,
    Notice,
    PostDeleted,
    PostRef,
    PostSaved,
    ProblemReport,
    Reauthentication,
    RoleChanged,
    RoleChoice,
    SignedIn,
    SignUp,
    Welcome,
)
from .second_factor import SecondStep, has_totp, start_second_step

__all__ = [
    "change_password",
    "change_role",
    "create_post",
    "delete_post",
    "edit_post",
    "export_my_data",
    "login",
    "logout",
    "reauthenticate",
    "report_problem",
    "signup",
]

authors = require(roles={"author", "admin"})
admins = require(roles={"admin"})

EMAIL_TAKEN = "An account with this email already exists."


# --- accounts ---------------------------------------------------------------------------------


@bastion.action(policy=public, rate="10/hour")
def signup(data: SignUp) -> Welcome:
    """Anyone may open an account (an author's); ten tries an hour per address.

    Saying that an address is taken tells the caller it has an account: the price of a
    useful message, which the rate limit keeps to ten addresses an hour."""
    email = data.email  # bastion's one spelling (``check_new_login``), as log-in reads it
    with db.session() as session:
        if session.scalar(select(Account.id).where(Account.email == email)) is not None:
            raise ValidationFailed({"email": EMAIL_TAKEN})
    account = Account(
        email=email,
        name=data.name,
        role="author",
        password_hash=hash_password(data.password.get_secret_value()),  # argon2id
    )
    try:
        with db.transaction() as session:
            session.add(account)
    except IntegrityError:  # the same address, signed up a moment ago by another call
        raise ValidationFailed({"email": EMAIL_TAKEN}) from None
    return Welcome(
        name=account.name,
        email=account.email,
        message=f"Welcome, {account.name}! Your account is ready: sign in.",
    )


def _find_account(email: str) -> Account | None:
    with db.session() as session:
        return session.scalar(select(Account).where(Account.email == email))


def _store_hash(account_id: int, password: str) -> None:
    with db.transaction() as session:
        account = session.get(Account, account_id)
        if account is not None:
            account.password_hash = hash_password(password)


@bastion.action(policy=public, rate="20/minute")
async def login(ctx: Context[Member], data: Credentials) -> SignedIn | SecondStep:
    """Throttled per account and address (``ctx.check_password``: 429 past five failures),
    the same answer and the same time for an unknown address, and a new session ID. With
    codes on, the password alone signs no one in: a code must follow (``login_totp``)."""
    email = data.email  # canonical (``LoginName``): sign-up stored this same spelling
    password = data.password.get_secret_value()
    account = await db.run(_find_account, email)
    if account is not None:
        ctx.taint(account.password_hash, "password hash")
    stored = account.password_hash if account is not None else None
    if not await ctx.check_password(email, password, stored) or account is None:
        raise ActionError("Wrong email or password.", code="login_failed", status=401)
    if needs_rehash(account.password_hash):
        await db.run(_store_hash, account.id, password)
    if await db.run(has_totp, account.id):
        return start_second_step(ctx, account.id)  # a new session, signed in to no one
    await ctx.login(Member.of(account))  # rotates the session: a planted ID dies here
    return SignedIn(name=account.name, message=f"Signed in as {account.name}.")


@bastion.action(policy=authenticated, rate="30/minute")
def logout(ctx: Context[Member]) -> Notice:
    ctx.logout()
    return Notice(message="You are signed out.")


STEP_UP: Final = recent_login(max_age=timedelta(minutes=10), page="/reauth")
"""What a session left open, or a copied cookie, must not do alone: within ten minutes
of a log-in only; later, the member types their password again on /reauth."""


@bastion.action(policy=authenticated, rate="20/minute")
async def reauthenticate(ctx: Context[Member], data: Reauthentication) -> Notice:
    """The member's password again: a log-in of the same member (throttled as log-in is,
    the session rotated), which opens the step-up window."""
    me = member(ctx)
    account = await db.run(_find_account, me.email)
    if account is not None:
        ctx.taint(account.password_hash, "password hash")
    stored = account.password_hash if account is not None else None
    password = data.password.get_secret_value()
    if not await ctx.check_password(me.email, password, stored) or account is None:
        raise ActionError("Wrong password.", code="login_failed", status=401)
    await ctx.login(Member.of(account))
    return Notice(message="Thank you. You may go on.")


@bastion.action(policy=STEP_UP, rate="6/minute")
async def change_password(ctx: Context[Member], data: NewPassword) -> Notice:
    """A new password, only soon after a log-in; every other session of the member
    ends (a thief's among them), and this browser stays signed in, in a new session."""
    me = member(ctx)
    await db.run(_store_hash, me.id, data.password.get_secret_value())
    ended = await ctx.end_sessions()  # this one too: it signs straight back in below
    await ctx.login(me)
    others = ended - 1
    return Notice(
        message=f"Your password is changed. {others} other session"
        f"{'' if others == 1 else 's'} signed out."
    )


@bastion.action(policy=authenticated, rate="6/minute")
async def sign_out_everywhere(ctx: Context[Member]) -> Notice:
    """Every session of the caller ends, on every worker and host sharing the session
    store (a phone left signed in, a cookie someone copied); this browser's too."""
    ended = await ctx.end_sessions()
    return Notice(message=f"Signed out everywhere ({_sessions(ended)} ended).")


def _sessions(count: int) -> str:
    return f"{count} session" if count == 1 else f"{count} sessions"


@bastion.action(policy=authenticated, rate="6/minute")
def export_my_data(ctx: Context[Member]) -> Export:
    """Your account and posts. The handler returns the ORM row, hash and all; only the
    fields ``Export`` declares are read from it, and the hash is tainted besides: were
    it ever to reach the reply, the reply would be refused."""
    with db.session() as session:
        account = session.get(Account, member(ctx).id, options=[selectinload(Account.posts)])
        if account is None:
            raise ActionError("Your account no longer exists.", code="account_gone", status=404)
        ctx.taint(account.password_hash, "password hash")
        return Export.model_validate(account, from_attributes=True)


@bastion.action(policy=admins, rate="30/minute")
def change_role(
    ctx: Context[Member], data: RoleChoice, ref: Annotated[AccountRef, Bound]
) -> RoleChanged:
    """Admins only. Which account is sealed into its row of the admin page."""
    if ref.account_id == member(ctx).id:
        # The board would be left without an admin, by a slip of the mouse.
        raise ActionError(
            "You cannot change your own role: ask another admin.", code="own_role", status=409
        )
    with db.transaction() as session:
        account = session.get(Account, ref.account_id)
        if account is None:
            raise ActionError("This account no longer exists.", code="account_gone", status=404)
        account.role = data.role
        name = account.name
    article = "an" if data.role[0] in "aeiou" else "a"
    return RoleChanged(
        id=ref.account_id,
        name=name,
        role=data.role,
        message=f"{name} is now {article} {data.role}.",
    )


@bastion.action(policy=admins, rate="30/minute")
async def end_member_sessions(ctx: Context[Member], ref: Annotated[AccountRef, Bound]) -> Notice:
    """Admins only: sign a member out on every device (a lost laptop, a suspicion). Their
    next click is anonymous; their role and posts are untouched."""
    if ref.account_id == member(ctx).id:
        raise ActionError(
            "Use “Sign out everywhere” on your profile for your own sessions.",
            code="own_sessions",
            status=409,
        )
    name = await db.run(_account_name, ref.account_id)
    ended = await ctx.end_sessions(ref.account_id)
    return Notice(message=f"{name} is signed out everywhere ({_sessions(ended)} ended).")


def _account_name(account_id: int) -> str:
    with db.session() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise ActionError("This account no longer exists.", code="account_gone", status=404)
        return account.name


# --- posts ------------------------------------------------------------------------------------


@bastion.action(policy=authors, rate="10/minute", idempotent=True, tokens="posts:write")
def create_post(ctx: Context[Member], data: Draft) -> PostSaved:
    """Authors and admins: 401 for visitors, 403 for readers."""
    with db.transaction() as session:
        post = Post(author_id=member(ctx).id, title=data.title, body=data.body)
        session.add(post)
        session.flush()  # assigns the ID
        post_id = post.id
    return PostSaved(id=post_id, title=data.title, message=f"Published “{data.title}”.")


def _post_gone() -> ActionError:
    return ActionError("This post no longer exists.", code="post_gone", status=404)


def _post_changed() -> ActionError:
    return ActionError(
        "This post was changed since this page was loaded: reload it and try again.",
        code="post_changed",
        status=409,
    )


def _changeable_post(ctx: Context[Member], session: Session, ref: PostRef) -> Post:
    """The post the seal names, as the page showed it, if this member may change it.

    The seal holds the post's ID and its version: gone is 404, another version (edited
    since, or on a table made by an older board an ID handed out again) is 409, and only
    then who may change it (403). Read in the transaction that writes."""
    post = session.get(Post, ref.post_id)
    if post is None:
        raise _post_gone()
    if not ref.version or post.version != ref.version:  # "": a seal from before versions
        raise _post_changed()
    ctx.authorize(member(ctx).may_change(post), "Only its author or an admin can change this post.")
    return post


def _same_post(ref: PostRef) -> ColumnElement[bool]:
    """The row of the sealed post in the version the seal names: the condition of every
    write, so that of writers racing with one seal exactly one changes the post."""
    return and_(Post.id == ref.post_id, Post.version == ref.version)


def _lost(session: Session, ref: PostRef) -> ActionError:
    """Why a conditional write matched no row: another call deleted or changed the post
    between this one's read and its write (read again, as committed now)."""
    version = session.scalar(select(Post.version).where(Post.id == ref.post_id))
    return _post_gone() if version is None else _post_changed()


@bastion.action(policy=authors, rate="30/minute")
def edit_post(ctx: Context[Member], data: Draft, ref: Annotated[PostRef, Bound]) -> PostSaved:
    """Owner or admin. The post ID and version come sealed from the edit page: a changed
    or replayed one is refused (400) before this runs; a valid one for a post that is not
    yours, here (403); for a post deleted or changed since, 404 or 409.

    One conditional UPDATE, which a new version ends: of edits and deletes sent at once
    with the same seal, one wins and the others are told why they did not."""
    with db.transaction() as session:
        _changeable_post(ctx, session, ref)
        written = session.connection().execute(
            update(Post)
            .where(_same_post(ref))
            .values(title=data.title, body=data.body, updated_at=now(), version=new_version())
        )
        if written.rowcount != 1:
            raise _lost(session, ref)
    return PostSaved(id=ref.post_id, title=data.title, message=f"Saved “{data.title}”.")


@bastion.action(policy=authors, rate="30/minute", fragment="fragments/post_deleted.html")
def delete_post(ctx: Context[Member], ref: Annotated[PostRef, Bound]) -> PostDeleted:
    """Owner or admin, like editing, and like it one conditional statement: a delete form
    loaded before an edit deletes nothing (409). htmx gets the fragment that replaces the
    post."""
    with db.transaction() as session:
        title = _changeable_post(ctx, session, ref).title
        deleted = session.connection().execute(delete(Post).where(_same_post(ref)))
        if deleted.rowcount != 1:
            raise _lost(session, ref)
    return PostDeleted(id=ref.post_id, title=title, message=f"Deleted “{title}”.")


# --- the problem report -----------------------------------------------------------------------


@bastion.action(policy=public, rate="5/minute")
def report_problem(data: ProblemReport) -> Notice:
    """Fails inside, as a bug would (a table the code expects is missing): the database's
    message, with the connection string it names, goes to the server log under a digest;
    the visitor gets the digest only. (A database that is down is no bug: the board
    answers it 503, "try again later" — ``DATABASE_DOWN``.)"""
    raise ProgrammingError(
        "INSERT INTO problem_reports (summary) VALUES (%(summary)s)",
        {"summary": "[withheld]"},
        LookupError(
            'relation "problem_reports" does not exist in the database at '
            "postgresql://board:not-a-real-password@reports-db.internal:5432/reports"
        ),
    )
