"""An app as its authors write it under ``mypy --strict``: the user is the app's own
class everywhere, with no cast and no ``type: ignore``. tests/typing/test_types.py runs
mypy on this file and reads the types it reveals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, reveal_type

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from bastion import Bastion, Bound, Context, Depends, authenticated


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


MEMBERS = {1: Member(1, "Ada")}


async def find_member(member_id: int) -> Member | None:
    return MEMBERS.get(member_id)


bastion = Bastion(load_user=find_member)


class ExpenseRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expense_id: int


class Receipt(BaseModel):
    owner: str


def ledger() -> Iterator[dict[int, int]]:
    yield {7: 1}


Ledger = Annotated[dict[int, int], Depends(ledger)]


def owns(ctx: Context[Member], ref: ExpenseRef, books: Ledger) -> bool:
    user = ctx.user
    return user is not None and books.get(ref.expense_id) == user.id


@bastion.action(policy=authenticated, check=owns)
async def receipt(ctx: Context[Member], ref: Annotated[ExpenseRef, Bound]) -> Receipt:
    user = ctx.user
    assert user is not None  # authenticated: loaded before the handler
    return Receipt(owner=user.name)


async def page(request: Request) -> str:
    member = await bastion.user(request)
    return member.name if member is not None else "stranger"


if TYPE_CHECKING:
    reveal_type(bastion)
    reveal_type(bastion.user)

    def shows(ctx: Context[Member]) -> None:
        reveal_type(ctx.user)
