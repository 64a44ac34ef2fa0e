"""What each action takes, and the only things it may send back.

Inputs forbid unknown fields (bastion refuses to register one that does not) and bound
every text, so ``bastion audit`` finds nothing to say. Outputs name each field that
leaves: an ``Account`` row read through ``Export`` loses its password hash on the way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
)

from bastion import LoginName, check_new_login

from .db import MAX_ROW_ID, Role
from .settings import MIN_PASSWORD_LENGTH

__all__ = [
    "AccountRef",
    "Credentials",
    "Draft",
    "Export",
    "ExportedPost",
    "Notice",
    "PostDeleted",
    "PostRef",
    "PostSaved",
    "ProblemReport",
    "RoleChanged",
    "RoleChoice",
    "SignUp",
    "SignedIn",
    "Welcome",
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
Summary = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- inputs -------------------------------------------------------------------------------


class SignUp(Input):
    name: Name
    # A well-formed address, in bastion's one spelling (full-width, case), and refused
    # when it imitates another with look-alike letters (a Cyrillic a, U+0430, in admin@…).
    email: Annotated[EmailStr, Field(max_length=254), AfterValidator(check_new_login)]
    # bastion words a too-short secret's error without its length: nothing to add here.
    password: Annotated[SecretStr, Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]


class NewPassword(Input):
    password: Annotated[SecretStr, Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]


class Reauthentication(Input):
    """The signed-in member's own password, once more, for what needs a recent log-in."""

    password: SecretStr = Field(min_length=1, max_length=1024)


class Credentials(Input):
    # Not EmailStr: a log-in says nothing about which addresses are well-formed accounts.
    # The same spelling as sign-up's, so it finds the account and shares its throttle.
    email: Annotated[LoginName, Field(min_length=3, max_length=254)]
    password: SecretStr = Field(min_length=1, max_length=1024)


class Draft(Input):
    title: Title
    body: Body


class ProblemReport(Input):
    summary: Summary


class RoleChoice(Input):
    role: Role


class PostRef(Input):
    """Sealed into a post's edit and delete forms: which post, and which version of it,
    as the server said. A form outlives neither: once the post is deleted (and its ID,
    on a table made by an older board, handed to a new post) or edited, the version no
    longer matches and the form is refused (404 or 409)."""

    post_id: int = Field(ge=1, le=MAX_ROW_ID)
    version: str = Field(default="", max_length=32, pattern=r"^[0-9a-f]*$")
    """``Post.version`` when the page was rendered. A seal without one was made by a
    board from before versions (seals last a day): "" is no post's version, so such a
    form is refused as changed (409), never matched to a post."""


class AccountRef(Input):
    """Sealed into each row of the admin page: whose role changes. The ID alone is
    enough: account IDs are never handed out twice (``Account``'s AUTOINCREMENT) and the
    board deletes no account, so a sealed ID always names the account it was made for."""

    account_id: int = Field(ge=1, le=MAX_ROW_ID)


# --- outputs ------------------------------------------------------------------------------


class Notice(BaseModel):
    message: str


class Welcome(BaseModel):
    name: str
    email: str
    message: str


class SignedIn(BaseModel):
    name: str
    message: str


class PostSaved(BaseModel):
    id: int
    title: str
    message: str


class PostDeleted(BaseModel):
    id: int
    title: str
    message: str


class RoleChanged(BaseModel):
    id: int
    name: str
    role: Role
    message: str


class ExportedPost(BaseModel):
    id: int
    title: str
    body: str
    created_at: datetime
    updated_at: datetime | None


class Export(BaseModel):
    """Everything the board holds about you that is safe to hand out: no password hash,
    no ID, nothing about anyone else."""

    name: str
    email: str
    role: Role
    created_at: datetime
    posts: list[ExportedPost]
