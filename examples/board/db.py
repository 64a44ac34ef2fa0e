"""The board's data: accounts and posts, through SQLAlchemy 2.

The same code runs on SQLite (the default: one file, nothing to install) and on
PostgreSQL (``DATABASE_URL``). It is synchronous: bastion runs sync handlers in a worker
thread, and the pages call it through ``Database.run``, so the event loop never waits
on the database.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args

import anyio.to_thread
from pydantic import SecretStr
from sqlalchemy import CheckConstraint, ForeignKey, String, Text, create_engine, event, select
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import DateTime, TypeDecorator

from bastion import hash_password

__all__ = [
    "DATABASE_DOWN",
    "ROLES",
    "Account",
    "Base",
    "Database",
    "Post",
    "Role",
    "SeedAccount",
    "now",
]

log = logging.getLogger("board")

Role = Literal["reader", "author", "admin"]
"""Readers read; authors also post; admins also moderate every post and change roles."""

ROLES: Final[tuple[Role, ...]] = get_args(Role)

T = TypeVar("T")

DATABASE_DOWN: Final[tuple[type[Exception], ...]] = (OperationalError, PoolTimeout)
"""What SQLAlchemy raises when the database is not there to answer: the server is down or
refuses connections, the connection broke during a call (psycopg's ``OperationalError``,
wrapped), a lock or serialization conflict, or no pooled connection came free in time.
Actions (bastion's ``unavailable_errors``) and pages answer these with a generic 503."""


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database keeps (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no place in the board's tables")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy's own API


class Account(Base):
    """A member of the board. The row holds what must never leave: the password hash."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            "role IN (" + ", ".join(f"'{role}'" for role in ROLES) + ")", name="accounts_role"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=now)

    posts: Mapped[list[Post]] = relationship(
        back_populates="author",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Post.created_at.desc()",
    )


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now, index=True)
    updated_at: Mapped[datetime | None] = mapped_column(default=None)

    author: Mapped[Account] = relationship(back_populates="posts", lazy="joined")


@dataclass(frozen=True, slots=True)
class SeedAccount:
    """An account the board creates on its first start, with the posts it shows."""

    email: str
    name: str
    role: Role
    password: SecretStr | None
    """``None``: generate one, and print it once."""
    posts: tuple[tuple[str, str], ...] = ()
    """(title, body) of each post it starts with."""


class Database:
    """One engine and its sessions. ``transaction()`` commits on success and rolls back
    on any exception; ``session()`` only reads."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread: for async code (pages, async actions)."""
        return await anyio.to_thread.run_sync(fn, *args)

    def create_schema(self) -> None:
        """Create the tables that are missing (the first start), and the SQLite file
        readable by this user only: it holds password hashes."""
        database = self.url.database
        if self.engine.dialect.name == "sqlite" and database and database != ":memory:":
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        Base.metadata.create_all(self.engine)

    def seed(self, accounts: tuple[SeedAccount, ...]) -> dict[str, str | None]:
        """Create each account that does not exist yet, with its posts. Returns the
        accounts created: email → the password generated for it (``None`` if given)."""
        created: dict[str, str | None] = {}
        with self.transaction() as session:
            existing = set(session.scalars(select(Account.email)))
            for seed in accounts:
                if seed.email in existing:
                    continue
                generated: str | None
                if seed.password is None:
                    password = generated = secrets.token_urlsafe(15)
                else:
                    password, generated = seed.password.get_secret_value(), None
                account = Account(
                    email=seed.email,
                    name=seed.name,
                    role=seed.role,
                    password_hash=hash_password(password),
                )
                account.posts = [Post(title=t, body=b) for t, b in seed.posts]
                session.add(account)
                created[seed.email] = generated
        return created

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"  # URL's repr masks the password


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite ignores ON DELETE CASCADE without it
    cursor.execute("PRAGMA journal_mode=WAL")  # readers go on while a write commits
    cursor.close()
