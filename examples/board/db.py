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
from typing import Any, Final, Literal, TypeVar, cast, get_args

import anyio.to_thread
from pydantic import SecretStr
from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Dialect
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
    "MAX_ROW_ID",
    "ROLES",
    "Account",
    "Base",
    "Database",
    "Post",
    "Role",
    "SeedAccount",
    "new_version",
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

MAX_ROW_ID: Final = 2**31 - 1
"""The largest row ID of the board: its ID columns are INTEGER, which PostgreSQL keeps in
32 bits (SQLite in 64). A larger number names no row on either, and sent as a query
parameter fails there instead ("integer out of range"; past 64 bits, SQLite's
``OverflowError``)."""

SQLITE_BUSY_TIMEOUT: Final = 15.0
"""Seconds a SQLite write waits for another one to commit before it gives up ("database
is locked", a 503): the board's writes take milliseconds, so only a stuck writer gets
there, not a handful of members saving at once."""

_WRITE: Final = "board_write"
"""The execution option of ``Database.transaction()``'s connections (SQLite: ``BEGIN
IMMEDIATE``)."""


def now() -> datetime:
    return datetime.now(UTC)


def new_version() -> str:
    """A post's version: random, not a counter. A counter would start again at 1 for a
    post that got the ID of a deleted one (an old SQLite table reuses IDs), and the
    deleted post's sealed forms would then match the new post."""
    return secrets.token_hex(8)


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
        # The admin page seals account IDs (change_role). SQLite without AUTOINCREMENT
        # hands the highest ID out again once its row is gone; with it (and on
        # PostgreSQL, whose sequences never go back) an ID names one account for good.
        # That is enough here: the board never deletes an account, and never changes
        # which account an ID is, so unlike a post an account needs no version.
        {"sqlite_autoincrement": True},
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
    """A post. Its edit and delete forms seal its ID *and* its version: a form names the
    post as the page showed it, and is refused once that post is gone or has changed."""

    __tablename__ = "posts"
    # IDs never handed out twice (SQLite reuses the highest one without AUTOINCREMENT;
    # PostgreSQL's sequences never do). A table made by an older board keeps reusing
    # them: there, the version alone tells an old post's forms from a new one.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now, index=True)
    updated_at: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[str] = mapped_column(String(32), default=new_version)
    """Set when the post is made, replaced by every edit (``new_version``)."""

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
    on any exception; ``session()`` only reads.

    On SQLite each transaction is one, from its first statement (the ``sqlite3`` module
    would start it only at the first write, leaving the reads before it outside), and
    ``transaction()`` takes the write lock at its start (``BEGIN IMMEDIATE``): writers
    queue for it (``SQLITE_BUSY_TIMEOUT``) instead of failing when one that read first
    tries to write after another committed."""

    def __init__(self, url: URL) -> None:
        self.url = url
        sqlite = url.get_backend_name() == "sqlite"
        self.engine = create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT} if sqlite else {},
        )
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._writes.begin() as session:
            yield session

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread: for async code (pages, async actions)."""
        return await anyio.to_thread.run_sync(fn, *args)

    def create_schema(self) -> None:
        """Create the tables that are missing (the first start), and the SQLite file
        readable by this user only: it holds password hashes. A database made by an older
        board gets what it lacks (``posts.version``)."""
        database = self.url.database
        if self.engine.dialect.name == "sqlite" and database and database != ":memory:":
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        with self.engine.execution_options(**{_WRITE: True}).begin() as connection:
            # Several boards starting at once on one PostgreSQL database would each find
            # the tables missing and the second CREATE would fail: one at a time.
            _one_starting_at_a_time(connection)
            Base.metadata.create_all(connection)
        if not _has_column(self.engine, "posts", "version"):
            self._add_post_versions()

    def _add_post_versions(self) -> None:
        """``posts.version`` for a table made before it, each post given a version of its
        own, in one transaction: a second board starting at the same moment waits for it
        (SQLite's write lock, PostgreSQL's table lock), then finds the column there."""
        posts = cast(Table, Post.__table__)
        with self.engine.execution_options(**{_WRITE: True}).begin() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE"))
            if _has_column(connection, "posts", "version"):
                return
            # NOT NULL needs a default for the rows already there; each gets its own
            # version at once, below. (SQLite cannot drop the default afterwards; every
            # post the board writes has a version of its own anyway.)
            connection.execute(
                text("ALTER TABLE posts ADD COLUMN version VARCHAR(32) NOT NULL DEFAULT ''")
            )
            ids = list(connection.scalars(select(posts.c.id)))
            if ids:
                connection.execute(
                    update(posts)
                    .where(posts.c.id == bindparam("row_id"))
                    .values(version=bindparam("new_version")),
                    [{"row_id": i, "new_version": new_version()} for i in ids],
                )
            if postgres:
                connection.execute(text("ALTER TABLE posts ALTER COLUMN version DROP DEFAULT"))
            log.info("added a version to each of %d posts", len(ids))

    def seed(self, accounts: tuple[SeedAccount, ...]) -> dict[str, str | None]:
        """Create each account that does not exist yet, with its posts. Returns the
        accounts created: email → the password generated for it (``None`` if given)."""
        created: dict[str, str | None] = {}
        with self.transaction() as session:
            # The same for the seeded accounts: created once, whichever board comes first.
            _one_starting_at_a_time(session.connection())
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


_START_LOCK: Final = 0x626F617264
"""The PostgreSQL advisory lock (any fixed number; "board" in ASCII) that start-ups take."""


def _one_starting_at_a_time(connection: Connection) -> None:
    """On PostgreSQL, wait for any other board's start-up transaction to end (the lock
    is released with this transaction). SQLite's write lock already does this."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _START_LOCK})


def _has_column(bind: Any, table: str, column: str) -> bool:
    return column in {c["name"] for c in inspect(bind).get_columns(table)}


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # The busy timeout is sqlite3's own ``timeout`` (SQLITE_BUSY_TIMEOUT, connect_args).
    # The sqlite3 module starts no transaction of its own: _sqlite_begin does.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite ignores ON DELETE CASCADE without it
    cursor.execute("PRAGMA journal_mode=WAL")  # readers go on while a write commits
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """A read begins deferred (a snapshot, no lock); a write takes the write lock first.
    In WAL mode a deferred transaction that read and then writes after another writer
    committed fails at once with "database is locked", whatever the busy timeout."""
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
