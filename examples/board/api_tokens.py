"""API tokens on the board: a member makes one on their profile (soon after a log-in),
copies it once, and a script lists and publishes posts with it, no browser involved::

    curl -X POST https://board.example/_actions/<create_post's ID> \\
         -H "Authorization: Bearer bst_…" -H "Content-Type: application/json" \\
         -d '{"title": "From a script", "body": "…"}'

``list_posts`` and ``create_post`` accept tokens (``tokens=``), with the scopes
``posts:read`` and ``posts:write``; no other action does. The token is bastion's: kept
in the session store as a hash, listed with its last use, revoked at once everywhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import select

from bastion import ActionError, ApiToken, Context, authenticated

from .actions import STEP_UP
from .core import Member, bastion, db, member
from .db import Account, Post
from .schemas import Input, Notice

__all__ = ["create_api_token", "list_posts", "revoke_api_token", "tokens_of"]

Scope = Literal["posts:read", "posts:write"]
SCOPES: dict[str, str] = {
    "posts:read": "read posts (list_posts)",
    "posts:write": "publish posts (create_post)",
}


class NewToken(Input):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    scopes: list[Scope] = Field(min_length=1, max_length=2)
    days: int = Field(default=30, ge=1, le=365)


class TokenRef(Input):
    token_id: str = Field(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$")


class TokenCreated(BaseModel):
    """Shown once: the secret is in this reply and nowhere else, ever."""

    id: str
    name: str
    token: str
    message: str


class PostSummary(BaseModel):
    id: int
    title: str
    author: str
    created_at: datetime


class PostList(BaseModel):
    posts: list[PostSummary]


@bastion.action(policy=STEP_UP, rate="6/minute")
async def create_api_token(ctx: Context[Member], data: NewToken) -> TokenCreated:
    """A token for scripts, soon after a log-in only: a session left open must not hand
    out a credential that outlives it."""
    token, secret = await bastion.tokens.create(
        member(ctx).id, name=data.name, scopes=data.scopes, expires_in=timedelta(days=data.days)
    )
    return TokenCreated(
        id=token.id,
        name=token.name,
        token=secret,
        message=f"Token “{token.name}” created. Copy it now: it is not shown again.",
    )


@bastion.action(policy=authenticated, rate="30/minute")
async def revoke_api_token(ctx: Context[Member], data: TokenRef) -> Notice:
    """Revoking needs no recent log-in: ending a credential fast matters more than who
    asked (and only the member's own tokens are found)."""
    if not await bastion.tokens.revoke(member(ctx).id, data.token_id):
        raise ActionError("You have no such token.", code="token_gone", status=404)
    return Notice(message="Token revoked. Scripts using it are refused from now on.")


@bastion.action(policy=authenticated, rate="60/minute", tokens="posts:read")
def list_posts() -> PostList:
    """The 50 newest posts, for scripts (the pages show them to browsers)."""
    with db.session() as session:
        rows = session.execute(
            select(Post, Account.name)
            .join(Account, Post.author_id == Account.id)
            .order_by(Post.created_at.desc(), Post.id.desc())
            .limit(50)
        )
        return PostList(
            posts=[
                PostSummary(id=post.id, title=post.title, author=name, created_at=post.created_at)
                for post, name in rows
            ]
        )


async def tokens_of(member_id: int) -> list[ApiToken]:
    """The member's live tokens, for the profile page."""
    return await bastion.tokens.list(member_id)
