"""What the board's modules share, built once from the environment: the settings, the
database, the signed-in member and the ``Bastion`` every action registers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from bastion import Bastion, Context, SessionConfig, Unauthorized

from .db import DATABASE_DOWN, Account, Database, Post, Role
from .settings import Settings

__all__ = ["Member", "bastion", "db", "find_member", "member", "settings"]

settings = Settings.from_env()
db = Database(settings.database_url)


@dataclass(frozen=True, slots=True)
class Member:
    """The signed-in user, as pages and actions see it: the account without its password
    hash. Being a bastion ``Principal`` takes ``id``, ``roles`` and ``permissions``."""

    id: int
    name: str
    email: str
    role: Role

    @classmethod
    def of(cls, account: Account) -> Member:
        return cls(account.id, account.name, account.email, cast(Role, account.role))

    @property
    def roles(self) -> frozenset[str]:
        return frozenset({self.role})

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_post(self) -> bool:
        return self.role in ("author", "admin")

    def may_change(self, post: Post) -> bool:
        """Its author, or an admin: the object-level rule for editing and deleting."""
        return post.author_id == self.id or self.is_admin


def find_member(account_id: int) -> Member | None:
    with db.session() as session:
        account = session.get(Account, account_id)
        return None if account is None else Member.of(account)


async def load_user(user_id: int) -> Member | None:
    """Read on every call that needs the user, so a role change applies at once and a
    deleted account is signed out."""
    return await db.run(find_member, user_id)


bastion = Bastion(
    load_user=load_user,
    # Sessions in BASTION_STORE (redis://… for several processes or hosts), which bastion
    # reads itself, else SQLite here.
    data_dir=settings.sessions_dir,
    # A cookie of its own: the quickstart, served on the same origin from the same data
    # directory, must not find its sessions (and their user IDs) here.
    sessions=SessionConfig(cookie_name="board_session"),
    # A database that is down is "try again later" (503), not a bug (500); each action
    # writes in one transaction (``db.transaction()``), so a failure leaves nothing half-done.
    unavailable_errors=(ConnectionError, *DATABASE_DOWN),
)


def member(ctx: Context[Member]) -> Member:
    """The signed-in member of a call whose policy required one."""
    user = ctx.user
    if user is None:
        raise Unauthorized()
    return user
