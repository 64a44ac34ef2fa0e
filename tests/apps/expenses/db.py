"""The expenses app's data, through SQLAlchemy 2's asyncio API.

``EXPENSES_DATABASE_URL`` names the database (``sqlite+aiosqlite:///expenses.db`` by
default). Every action call and every route gets one session from ``database()``:
committed once the handler and its output are done, rolled back when anything raised.
"""

import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

engine = create_async_engine(
    os.environ.get("EXPENSES_DATABASE_URL", "sqlite+aiosqlite:///expenses.db")
)
# Nothing read before the commit is loaded again behind the handler's back.
Session = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="member")
    currency: Mapped[str] = mapped_column(String(3), default="EUR")


class Expense(Base):
    __tablename__ = "expenses"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    description: Mapped[str] = mapped_column(String(200))
    amount_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(10), default="pending")
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    receipt_kind: Mapped[str | None] = mapped_column(String(4))
    receipt_size: Mapped[int | None]
    receipt_sha256: Mapped[str | None] = mapped_column(String(64))
    # Deferred: listing expenses never loads their scans.
    receipt: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


async def database() -> AsyncIterator[AsyncSession]:
    """One session per call, shared by the action's check= and its handler."""
    async with Session() as session:
        try:
            yield session
        except Exception:
            await session.rollback()  # the check, the handler or its output raised
            raise
        await session.commit()  # a failing commit is the call's failure, never a success


# FastAPI's Depends: the routes read it, and so do the actions.
Db = Annotated[AsyncSession, Depends(database)]
