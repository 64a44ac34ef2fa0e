"""The bastion quickstart: a page with a form for each action, and three demo accounts.

Run it with `make quickstart` (or `make demo`), then open http://127.0.0.1:8000/.
Configuration comes from the environment, as in production, read by bastion itself
(``bastion.Environment``): BASTION_SECRET_KEY, BASTION_ALLOWED_ORIGINS (the page's
origin), BASTION_DATA_DIR or BASTION_STORE (sessions), and the rest; QUICKSTART_PASSWORD
for the demo accounts (generated and logged when unset).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import (
    ActionError,
    Bastion,
    Context,
    LoginName,
    authenticated,
    hash_password,
    needs_rehash,
    public,
    require,
)

log = logging.getLogger("quickstart")


@dataclass
class Account:
    """What a real app loads from its database: more than it may show."""

    id: int
    name: str
    email: str
    password_hash: str
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


def _demo_accounts() -> dict[str, Account]:
    password = os.environ.get("QUICKSTART_PASSWORD")
    if not password:
        password = secrets.token_urlsafe(12)
        log.warning("quickstart demo accounts: password %s", password)
    hashed = hash_password(password)
    accounts = [
        Account(1, "Uma", "user@quickstart.example", hashed),
        Account(2, "Ada", "author@quickstart.example", hashed, frozenset({"author"})),
        Account(
            3,
            "Root",
            "admin@quickstart.example",
            hashed,
            frozenset({"admin"}),
            frozenset({"stats:read"}),
        ),
    ]
    return {account.email: account for account in accounts}


ACCOUNTS = _demo_accounts()
clicks = 0


def load_user(user_id: int) -> Account | None:
    return next((a for a in ACCOUNTS.values() if a.id == user_id), None)


bastion = Bastion(load_user=load_user)


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)


class Reply(BaseModel):
    message: str


@bastion.action(policy=public)
async def greet(data: Greeting) -> Reply:
    """Anyone may be greeted: input validated, output declared."""
    return Reply(message=f"Hello, {data.name}!")


@bastion.action(policy=public)
async def boom() -> None:
    """Fails inside. The client sees a reference, never this message."""
    raise RuntimeError("database connection lost: postgresql://app:password=hunter2@db/prod")


class Clicks(BaseModel):
    total: int


@bastion.action(policy=public)
async def count() -> Clicks:
    """Changes server state: the kind of call a cross-site page would love to make."""
    global clicks
    clicks += 1
    return Clicks(total=clicks)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # bastion's one spelling of an account name: the throttle keys on the same.
    email: Annotated[LoginName, Field(min_length=3, max_length=254)]
    password: SecretStr = Field(min_length=1, max_length=1024)


class Profile(BaseModel):
    name: str
    roles: list[str]


@bastion.action(policy=public, rate="20/minute")
async def login(ctx: Context[Account], data: Credentials) -> Profile:
    """Throttled per account and address; the same answer for an unknown account."""
    account = ACCOUNTS.get(data.email)
    password = data.password.get_secret_value()
    stored = account.password_hash if account else None
    if not await ctx.check_password(data.email, password, stored) or account is None:
        raise ActionError("Wrong email or password.", code="login_failed", status=401)
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    await ctx.login(account)  # a new session ID: one planted before log-in is dead
    return Profile(name=account.name, roles=sorted(account.roles))


@bastion.action(policy=authenticated)
def logout(ctx: Context[Account]) -> None:
    ctx.logout()


@bastion.action(policy=authenticated)
def whoami(ctx: Context[Account]) -> Profile:
    """Reads the account row, with its email and password hash; only the fields Profile
    declares are read from it."""
    return Profile.model_validate(ctx.user, from_attributes=True)


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=100)


@bastion.action(policy=require(roles={"author", "admin"}))
async def publish(ctx: Context[Account], data: Draft) -> Reply:
    """Authors and admins only: 401 for visitors, 403 for other users."""
    return Reply(message=f"Published “{data.title}”.")


class Stats(BaseModel):
    clicks: int
    accounts: int


@bastion.action(policy=require("stats:read"))
async def stats() -> Stats:
    """A permission, not a role: only the admin account holds it."""
    return Stats(clicks=clicks, accounts=len(ACCOUNTS))


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
bastion.templates(templates)


async def home(request: Request) -> Response:
    user = await bastion.user(request)
    return templates.TemplateResponse(request, "quickstart.html", {"clicks": clicks, "user": user})


app = Starlette(routes=[Route("/", home)])
bastion.mount(app)
bastion.add_security_headers(app)  # CSP with a nonce, no framing, HSTS over https
