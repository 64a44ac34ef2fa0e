"""The board's pages. Each renders the forms of its actions; none changes anything
(every change is an action, behind bastion's checks). Pages a visitor may not use send
them to log in; pages for admins answer others 403.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from sqlalchemy import func, select
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from bastion import ServiceUnavailable
from bastion.actions.audit import inventory

from . import api_tokens, passkeys, second_factor
from .core import Member, bastion, db
from .db import DATABASE_DOWN, MAX_ROW_ID, ROLES, Account, Post
from .schemas import PostRef

__all__ = [
    "ROUTES",
    "RowId",
    "not_found",
    "numbers_up_to",
    "post_ref",
    "templates",
    "unavailable",
]

log = logging.getLogger("board")

HERE: Final = Path(__file__).parent
BOARD_SIZE: Final = 100
"""Posts shown on the board, newest first."""

templates = Jinja2Templates(directory=HERE / "templates")
bastion.templates(templates)  # action_form, bastion_fields, bound_input, flash, csp_nonce …


def when(moment: datetime) -> str:
    """``27 Nov 2025, 14:03 UTC``: unambiguous for a team spread over time zones."""
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def post_ref(post: Post) -> dict[str, Any]:
    """What a post's edit and delete forms seal (``bind=post_ref(post)``): its ID and the
    version shown, so that the form is refused once the post is gone or has changed."""
    return PostRef(post_id=post.id, version=post.version).model_dump()


def unix_time(seconds: float) -> datetime:
    """A Unix time (an API token's expiry or last use) as the pages show times."""
    return datetime.fromtimestamp(seconds, UTC)


templates.env.filters["when"] = when
templates.env.filters["unix_time"] = unix_time
templates.env.globals["ROLES"] = ROLES
templates.env.globals["post_ref"] = post_ref
templates.env.globals["passkeys_enabled"] = passkeys.RELYING_PARTY is not None


def numbers_up_to(limit: int) -> str:
    """A regular expression of the decimal numbers from 1 to ``limit``, each in its one
    spelling (no sign, no leading zero): for 2147483647, ``[1-9][0-9]{0,8}`` (fewer
    digits), then ``1[0-9]{9}``, ``20[0-9]{8}``, ``21[0-3][0-9]{7}`` … and itself."""
    digits = str(limit)
    branches = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):  # the same first i digits, then a smaller one
        low, high, rest = (1 if i == 0 else 0), int(digit) - 1, len(digits) - i - 1
        if high >= low:
            smaller = str(low) if low == high else f"[{low}-{high}]"
            branches.append(digits[:i] + smaller + (f"[0-9]{{{rest}}}" if rest else ""))
    return "|".join([*branches, digits])


class RowId(Convertor[int]):
    """A row ID in a path (``{post_id:row_id}``): 1 to ``MAX_ROW_ID``, in the one spelling
    the board writes. Anything else (0, 007, -1, a number past the ID columns that the
    database cannot take, 5,000 digits that ``int()`` refuses) matches no route: the
    board's own 404 page, never a 500."""

    regex = numbers_up_to(MAX_ROW_ID)

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        if not 1 <= value <= MAX_ROW_ID:
            raise ValueError(f"not a row ID: {value!r}")
        return str(value)


register_url_convertor("row_id", RowId())  # before app.py builds the routes


# --- rendering and guards ---------------------------------------------------------------------


async def signed_in(request: Request) -> Member | None:
    user = await bastion.user(request)
    return user if isinstance(user, Member) else None


def render(
    request: Request, name: str, member: Member | None, status_code: int = 200, **context: Any
) -> Response:
    response = templates.TemplateResponse(
        request, name, {"member": member, **context}, status_code=status_code
    )
    # Pages hold CSRF tokens, sealed values and personal data: no cache keeps them.
    response.headers["Cache-Control"] = "no-store"
    return response


def refuse(request: Request, member: Member | None, status_code: int, message: str) -> Response:
    titles = {403: "Not allowed", 404: "Not found"}
    return render(
        request,
        "error.html",
        member,
        status_code=status_code,
        title=titles.get(status_code, "Error"),
        message=message,
    )


MemberPage = Callable[[Request, Member], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def members_only(page: MemberPage) -> Endpoint:
    """Visitors who are not signed in go to log in, and come back here after."""

    @functools.wraps(page)
    async def endpoint(request: Request) -> Response:
        member = await signed_in(request)
        if member is None:
            path = request.url.path
            query = "" if path == "/" else "?" + urlencode({"next": path})
            # Between the password and the code: on to the code, not the password again.
            halfway = second_factor.second_step_pending(request.scope)
            start = second_factor.SECOND_STEP_PAGE if halfway else "/login"
            return RedirectResponse(f"{start}{query}", status_code=303)
        return await page(request, member)

    return endpoint


def admins_only(page: MemberPage) -> Endpoint:
    @members_only
    @functools.wraps(page)
    async def endpoint(request: Request, member: Member) -> Response:
        if not member.is_admin:
            return refuse(request, member, 403, "This page is for admins.")
        return await page(request, member)

    return endpoint


_NEXT: Final = re.compile(r"/(?:[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)?")


def next_path(value: str | None) -> str:
    """Where to go after log-in: one of our own paths, never another site."""
    return value if value is not None and _NEXT.fullmatch(value) else "/"


# --- the board --------------------------------------------------------------------------------


def _board() -> list[Post]:
    with db.session() as session:
        newest = select(Post).order_by(Post.created_at.desc(), Post.id.desc()).limit(BOARD_SIZE)
        return list(session.scalars(newest))


@members_only
async def board(request: Request, member: Member) -> Response:
    return render(request, "board.html", member, posts=await db.run(_board))


def _post(post_id: int) -> Post | None:
    with db.session() as session:
        return session.get(Post, post_id)


@members_only
async def edit(request: Request, member: Member) -> Response:
    post = await db.run(_post, request.path_params["post_id"])
    if post is None:
        return refuse(request, member, 404, "This post does not exist (any more).")
    if not member.may_change(post):
        return refuse(request, member, 403, "Only its author or an admin can edit this post.")
    return render(request, "edit.html", member, post=post)


# --- accounts ---------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    after = next_path(request.query_params.get("next"))
    member = await signed_in(request)
    if member is not None:
        return RedirectResponse(after, status_code=303)
    return render(request, "login.html", None, next=after)


@members_only
async def reauth(request: Request, member: Member) -> Response:
    """Where a form refused for an old log-in lands: the password again, then back."""
    return render(request, "reauth.html", member, next=next_path(request.query_params.get("next")))


async def signup(request: Request) -> Response:
    if await signed_in(request) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "signup.html", None)


@dataclass(frozen=True, slots=True)
class Profile:
    joined: datetime
    posts: list[Post]


def _profile(account_id: int) -> Profile | None:
    with db.session() as session:
        account = session.get(Account, account_id)
        if account is None:
            return None
        return Profile(account.created_at, list(account.posts))


@members_only
async def me(request: Request, member: Member) -> Response:
    profile = await db.run(_profile, member.id)
    if profile is None:
        return refuse(request, member, 404, "Your account no longer exists.")
    tokens = await api_tokens.tokens_of(member.id)
    keys = await db.run(passkeys.passkeys_of, member.id)
    totp = await db.run(second_factor.totp_state, member.id)
    return render(
        request,
        "me.html",
        member,
        profile=profile,
        tokens=tokens,
        scopes=api_tokens.SCOPES,
        passkeys=keys,
        totp=totp,
    )


@dataclass(frozen=True, slots=True)
class Row:
    """An account as the admin page lists it: never its password hash."""

    id: int
    name: str
    email: str
    role: str
    joined: datetime
    posts: int


def _accounts() -> list[Row]:
    with db.session() as session:
        query = (
            select(Account, func.count(Post.id))
            .outerjoin(Post, Post.author_id == Account.id)
            .group_by(Account.id)
            .order_by(Account.created_at, Account.id)
        )
        return [
            Row(a.id, a.name, a.email, a.role, a.created_at, count)
            for a, count in session.execute(query)
        ]


@admins_only
async def admin(request: Request, member: Member) -> Response:
    return render(request, "admin.html", member, accounts=await db.run(_accounts))


# --- for everyone -----------------------------------------------------------------------------


async def report(request: Request) -> Response:
    return render(request, "report.html", await signed_in(request))


async def security(request: Request) -> Response:
    """The action inventory, as ``bastion audit`` prints it."""
    return render(request, "security.html", await signed_in(request), actions=inventory(bastion))


async def not_found(request: Request, exc: Exception) -> Response:
    try:
        member = await signed_in(request)
    except DATABASE_DOWN as down:  # who is asking is in the database
        return await unavailable(request, down)
    return refuse(request, member, 404, "There is no page here.")


async def unavailable(request: Request, exc: Exception) -> Response:
    """A page whose database is down (``DATABASE_DOWN``): 503 and the sentence bastion
    answers when its own store is down, in plain text, with nothing that needs the
    database (not even who is signed in). The error itself goes to the server log."""
    log.error("%s %s: the database is unavailable", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse(
        ServiceUnavailable.message, status_code=503, headers={"Cache-Control": "no-store"}
    )


ROUTES: Final = [
    ("/", board),
    ("/posts/{post_id:row_id}/edit", edit),
    ("/login", login),
    ("/reauth", reauth),
    ("/signup", signup),
    ("/me", me),
    ("/admin", admin),
    ("/report", report),
    ("/security", security),
]
