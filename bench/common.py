"""What the three servers share: the request, the models, the user, the stored object.

Each server does the same job on the same JSON: a signed-in author creates a post,
the post is kept in a bounded in-memory list, and only the public fields go back.
"""

from __future__ import annotations

import itertools
import json
import string
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

ORIGIN: Final = "http://bench.localhost"
"""The page origin every server allows, sent as ``Origin`` on each call."""

RATE: Final = "100000000/minute"
"""Checked on every call and never reached: the cost of the check, not of a refusal."""

PAYLOAD: Final = {
    "title": "Benchmarking server actions on one core",
    "body": (
        "A realistic post body: a few sentences of text that a form would send, long "
        "enough for validation to have something to look at, short enough to be typical. "
    )
    * 4,
    "tags": ["python", "security", "asgi"],
}
BODY: Final = json.dumps(PAYLOAD, separators=(",", ":")).encode()


class NewPost(BaseModel):
    """The input: bounded fields, unknown fields refused."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    body: str = Field(max_length=10_000)
    tags: list[Annotated[str, Field(max_length=30)]] = Field(default_factory=list, max_length=5)


class PostOut(BaseModel):
    """The output: what may leave the server (not the author's email, not the body)."""

    id: int
    title: str
    tags: list[str]
    author: str


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    email: str
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()


@dataclass(slots=True)
class Post:
    """What the handler stores: more than it may return."""

    id: int
    title: str
    body: str
    tags: list[str]
    author: str
    author_email: str


AUTHOR: Final = Account(2, "Ada", "ada@bench.example", frozenset({"author"}))
ACCOUNTS: Final = {1: Account(1, "Uma", "uma@bench.example"), AUTHOR.id: AUTHOR}


def load_user(user_id: int) -> Account | None:
    return ACCOUNTS.get(user_id)


class Posts:
    """A bounded in-memory list of posts, and how many were ever created."""

    def __init__(self) -> None:
        self.items: deque[Post] = deque(maxlen=1000)
        self._ids = itertools.count(1)
        self.created = 0

    def add(self, data: NewPost, user: Account) -> Post:
        post = Post(
            id=next(self._ids),
            title=data.title,
            body=data.body,
            tags=list(data.tags),
            author=user.name,
            author_email=user.email,
        )
        self.items.append(post)
        self.created += 1
        return post


def expected_post(reply: object) -> bool:
    """Whether a reply's post is the benchmark's, and carries nothing it must not."""
    return (
        isinstance(reply, dict)
        and set(reply) == {"id", "title", "tags", "author"}
        and isinstance(reply["id"], int)
        and reply["title"] == PAYLOAD["title"]
        and reply["tags"] == PAYLOAD["tags"]
        and reply["author"] == AUTHOR.name
    )


# --- the hostile call: a forged CSRF token of the right shape ---------------------------

REFUSED_STATUS: Final = 403
REFUSED_CODE: Final = "csrf_failed"
"""What a call with a forged token must get, every time: 403 and this code."""

TOKEN_LENGTH: Final = 86
"""A CSRF token: URL-safe base64 of 64 bytes, without padding."""
_B64URL: Final = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

FORM_FIELDS: Final = {
    "title": PAYLOAD["title"],
    "body": "A short post, sent as a plain form would send it.",
}
FORM_TYPE: Final = "application/x-www-form-urlencoded"


def forge(token: str) -> str:
    """A token shaped like ``token`` (86 base64url characters, decoding to 64 bytes) that
    is not it: every character but the last moved one place along the alphabet (the last
    one carries padding bits, kept as they are). It unmasks to some other MAC: refused as
    a mismatch, after the whole check, not as malformed."""
    if len(token) != TOKEN_LENGTH or any(c not in _B64URL for c in token):
        raise ValueError("not a CSRF token: 86 URL-safe base64 characters expected")
    moved = (_B64URL[(_B64URL.index(c) + 1) % len(_B64URL)] for c in token[:-1])
    return "".join(moved) + token[-1]


def form_body(token: str) -> bytes:
    """The small urlencoded form of the hostile form call, its token in ``_csrf``."""
    return urlencode({**FORM_FIELDS, "_csrf": token}).encode()


def refused(status: int, reply: Any) -> bool:
    """Whether a reply is the forged token's refusal: 403 and the error envelope
    ``{"ok": false, "error": {"code": "csrf_failed", ...}}``."""
    return (
        status == REFUSED_STATUS
        and isinstance(reply, dict)
        and reply.get("ok") is False
        and isinstance(reply.get("error"), dict)
        and reply["error"].get("code") == REFUSED_CODE
    )


RATE_LIMITED_STATUS: Final = 429
RATE_LIMITED_CODE: Final = "rate_limited"


def rate_limited(status: int, reply: Any) -> bool:
    """Whether a reply is a rate limit's refusal: 429 and ``rate_limited``."""
    return (
        status == RATE_LIMITED_STATUS
        and isinstance(reply, dict)
        and reply.get("ok") is False
        and isinstance(reply.get("error"), dict)
        and reply["error"].get("code") == RATE_LIMITED_CODE
    )
