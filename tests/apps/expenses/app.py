"""Expenses: members file their expenses, attach a receipt, and an approver decides.

A FastAPI app written from bastion's guides (docs/guides/), as a user would write it:
sign-up and log-in, owner-only edit and delete (an owner check on a bound expense ID, in
the call's database session), an approver role, a receipt upload of up to 2 MiB, an htmx
delete whose refusal shows in the page, a JSON route the page's script calls with
``bastion.call`` (under ``bastion.protect``) and a plain JSON GET route.

``EXPENSES_APPROVER`` and ``EXPENSES_APPROVER_PASSWORD`` seed the approver's account at
the first start.
"""

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import anyio.to_thread
from db import Account, Base, Db, Expense, Session, engine
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from bastion import (
    ActionError,
    Bastion,
    Bound,
    Context,
    LoginName,
    NotFound,
    Redirect,
    Unauthorized,
    Upload,
    ValidationFailed,
    authenticated,
    hash_password,
    needs_rehash,
    public,
    require,
)

HERE = Path(__file__).parent
MiB = 1024 * 1024
CURRENCIES = ("EUR", "USD", "GBP")
# What a receipt is, by its first bytes: its name and content type are the browser's to say.
SIGNATURES = {b"%PDF-": "pdf", b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}


@dataclass(frozen=True)
class Member:
    """The signed-in user, as policies, handlers and pages see it."""

    id: int
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


def member_of(account: Account) -> Member:
    return Member(account.id, account.name, frozenset({account.role}))


async def find_member(member_id: int) -> Member | None:
    # load_user runs for the policy, before any dependency: a session of its own.
    async with Session() as session:
        account = await session.get(Account, member_id)
    return None if account is None else member_of(account)


async def hashed(password: SecretStr) -> str:
    """argon2 takes ~150 ms of CPU: in a worker thread, not on the event loop."""
    return await anyio.to_thread.run_sync(hash_password, password.get_secret_value())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The tables (a real app runs migrations), and the approver's account, once."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    name = os.environ.get("EXPENSES_APPROVER")
    password = os.environ.get("EXPENSES_APPROVER_PASSWORD")
    if name and password:
        async with Session.begin() as session:
            found = await session.scalar(select(Account.id).where(Account.name == name))
            if found is None:
                password_hash = await hashed(SecretStr(password))
                session.add(Account(name=name, password_hash=password_hash, role="approver"))
    yield
    await engine.dispose()


# BASTION_SECRET_KEY, BASTION_ALLOWED_ORIGINS and BASTION_STORE come from the environment.
bastion = Bastion(load_user=find_member)
templates = Jinja2Templates(directory=HERE / "templates")
bastion.templates(templates)


# --- who is calling ----------------------------------------------------------------------


async def signed_in(ctx: Context[Member], db: Db) -> Account:
    """The calling member's row, in the call's session."""
    member = await ctx.current_user()
    account = None if member is None else await db.get(Account, member.id)
    if account is None:
        raise Unauthorized()
    return account


Me = Annotated[Account, Depends(signed_in)]


class SignUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[LoginName, Field(min_length=1, max_length=50)]
    password: SecretStr = Field(min_length=12, max_length=1024)


class LogIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[LoginName, Field(min_length=1, max_length=50)]
    password: SecretStr = Field(min_length=1, max_length=1024)


class MemberOut(BaseModel):
    id: int
    name: str
    role: str


@bastion.action(policy=public, rate="5/hour")
async def sign_up(ctx: Context[Member], data: SignUp, db: Db) -> MemberOut:
    account = Account(name=data.name, password_hash=await hashed(data.password), role="member")
    db.add(account)
    try:
        await db.flush()  # its ID, inside the call's transaction
    except IntegrityError:  # the unique name: two sign-ups at once cannot both have it
        raise ActionError("That name is taken.", code="name_taken", status=409) from None
    await ctx.login(member_of(account))
    return MemberOut(id=account.id, name=account.name, role=account.role)


@bastion.action(policy=public, rate="20/minute")
async def log_in(ctx: Context[Member], data: LogIn, db: Db) -> MemberOut:
    account = await db.scalar(select(Account).where(Account.name == data.name))
    stored = account.password_hash if account else None
    password = data.password.get_secret_value()
    if not await ctx.check_password(data.name, password, stored) or account is None:
        raise ActionError("Wrong name or password.", code="login_failed", status=401)
    if needs_rehash(account.password_hash):  # hashed with costs older than today's
        account.password_hash = await hashed(data.password)
    await ctx.login(member_of(account))
    return MemberOut(id=account.id, name=account.name, role=account.role)


@bastion.action(policy=authenticated)
def log_out(ctx: Context[Member]) -> Redirect:
    ctx.logout()
    return Redirect("/")


# --- expenses ----------------------------------------------------------------------------


class ExpenseRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expense_id: int


class ExpenseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(min_length=1, max_length=200)
    amount_cents: int = Field(gt=0, le=10_000_000)


class ExpenseOut(BaseModel):
    id: int
    description: str
    amount_cents: int
    status: str
    receipt: bool


class Removed(BaseModel):
    id: int
    description: str


def out(expense: Expense) -> ExpenseOut:
    return ExpenseOut(
        id=expense.id,
        description=expense.description,
        amount_cents=expense.amount_cents,
        status=expense.status,
        receipt=expense.receipt_sha256 is not None,
    )


async def find_expense(ref: ExpenseRef, db: Db) -> Expense:
    expense = await db.get(Expense, ref.expense_id)
    if expense is None:  # deleted since the page was rendered
        raise NotFound("This expense no longer exists.")
    return expense


def still_pending(expense: Expense) -> None:
    if expense.status != "pending":
        raise ActionError(f"This expense is {expense.status}.", code="decided", status=409)


async def owns_expense(ref: ExpenseRef, me: Me, db: Db) -> bool:
    """Only an expense's owner changes it. In the call's session: the expense loaded
    here is the one the handler changes."""
    return (await find_expense(ref, db)).owner_id == me.id


@bastion.action(policy=authenticated)
async def add_expense(data: ExpenseIn, me: Me, db: Db) -> ExpenseOut:
    expense = Expense(owner_id=me.id, description=data.description, amount_cents=data.amount_cents)
    db.add(expense)
    await db.flush()
    return out(expense)


@bastion.action(policy=authenticated, check=owns_expense)
async def edit_expense(data: ExpenseIn, ref: Annotated[ExpenseRef, Bound], db: Db) -> ExpenseOut:
    expense = await find_expense(ref, db)
    still_pending(expense)
    expense.description, expense.amount_cents = data.description, data.amount_cents
    return out(expense)


@bastion.action(policy=authenticated, check=owns_expense, fragment="deleted.html")
async def delete_expense(ref: Annotated[ExpenseRef, Bound], db: Db) -> Removed:
    expense = await find_expense(ref, db)
    still_pending(expense)
    await db.delete(expense)
    return Removed(id=expense.id, description=expense.description)


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scan: Upload


class ReceiptOut(BaseModel):
    expense_id: int
    kind: str
    size: int
    sha256: str


@bastion.action(policy=authenticated, check=owns_expense, max_file_bytes=2 * MiB)
async def attach_receipt(data: ReceiptIn, ref: Annotated[ExpenseRef, Bound], db: Db) -> ReceiptOut:
    content = await data.scan.read()  # at most 2 MiB: bastion stopped it there
    kind = next((k for magic, k in SIGNATURES.items() if content.startswith(magic)), None)
    if kind is None:
        raise ValidationFailed({"scan": "Send a PDF, a PNG or a JPEG file."})
    expense = await find_expense(ref, db)
    still_pending(expense)
    digest = hashlib.sha256(content).hexdigest()
    expense.receipt, expense.receipt_kind = content, kind
    expense.receipt_size, expense.receipt_sha256 = len(content), digest
    return ReceiptOut(expense_id=expense.id, kind=kind, size=len(content), sha256=digest)


# --- approval ----------------------------------------------------------------------------


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal["approved", "rejected"]


async def someone_elses(ref: ExpenseRef, me: Me, db: Db) -> bool:
    """An approver decides on others' expenses, never on their own."""
    return (await find_expense(ref, db)).owner_id != me.id


@bastion.action(policy=require(roles={"approver"}), check=someone_elses)
async def decide_expense(
    data: Decision, ref: Annotated[ExpenseRef, Bound], me: Me, db: Db
) -> ExpenseOut:
    expense = await find_expense(ref, db)
    still_pending(expense)
    expense.status, expense.decided_by = data.verdict, me.id
    return out(expense)


# --- pages and routes --------------------------------------------------------------------

app = FastAPI(title="Expenses", lifespan=lifespan, docs_url=None, redoc_url=None)
bastion.mount(app)
bastion.add_security_headers(app)  # the strict CSP: the page's script runs by its nonce
# static/htmx.min.js, from the htmx.org package: served by the app, never from a CDN.
app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")


async def expenses_of(db: Db, owner_id: int) -> list[Expense]:
    found = await db.scalars(
        select(Expense).where(Expense.owner_id == owner_id).order_by(Expense.id)
    )
    return list(found)


@app.get("/", response_class=HTMLResponse)
async def home(request: Request, db: Db) -> Response:
    member = await bastion.user(request)
    context: dict[str, object] = {"member": member, "currencies": CURRENCIES}
    if member is not None:
        account = await db.get(Account, member.id)
        context["currency"] = account.currency if account else CURRENCIES[0]
        context["expenses"] = await expenses_of(db, member.id)
        if "approver" in member.roles:
            pending = select(Expense).where(
                Expense.status == "pending", Expense.owner_id != member.id
            )
            context["pending"] = list(await db.scalars(pending.order_by(Expense.id)))
    return templates.TemplateResponse(request, "expenses.html", context)


async def route_member(request: Request, db: Db) -> Account:
    """The signed-in member's row, for a route (an action's refusals are its own)."""
    member = await bastion.user(request)
    account = None if member is None else await db.get(Account, member.id)
    if account is None:
        raise HTTPException(status_code=401, detail="Sign in first.")
    return account


RouteMember = Annotated[Account, Depends(route_member)]

# Every route here gets an action's origin and CSRF checks; GETs pass.
api = APIRouter(prefix="/api", dependencies=[Depends(bastion.protect)])


class ExpenseList(BaseModel):
    currency: str
    expenses: list[ExpenseOut]


@api.get("/expenses")
async def list_expenses(me: RouteMember, db: Db) -> ExpenseList:
    return ExpenseList(
        currency=me.currency, expenses=[out(e) for e in await expenses_of(db, me.id)]
    )


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: Literal["EUR", "USD", "GBP"]


@api.post("/preferences")
async def save_preferences(preferences: Preferences, me: RouteMember) -> Preferences:
    """What the page's script sends with bastion.call when the currency changes."""
    me.currency = preferences.currency  # committed by database() after the route
    return preferences


app.include_router(api)
