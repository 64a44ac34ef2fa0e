"""The bastion quickstart: four actions and a page with a form for each.

Run it with `make quickstart` (or `make demo`), then open http://127.0.0.1:8000/.
Configuration comes from the environment, as in production: BASTION_SECRET_KEY,
BASTION_ALLOWED_ORIGINS (the page's origin) and BASTION_DATA_DIR (sessions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, public

bastion = Bastion(secret_key=os.environ.get("BASTION_SECRET_KEY"))

clicks = 0


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


@dataclass
class User:
    """What a real app loads from its database: more than it may show."""

    name: str
    role: str
    email: str
    password_hash: str


class Profile(BaseModel):
    name: str
    role: str


@bastion.action(policy=public)
def whoami() -> Profile:
    """Returns a User row; only the fields Profile declares leave the server."""
    return User(  # type: ignore[return-value]  # read through Profile's fields
        name="Ada",
        role="author",
        email="ada@board.example",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
    )


class Clicks(BaseModel):
    total: int


@bastion.action(policy=public)
async def count() -> Clicks:
    """Changes server state: the kind of call a cross-site page would love to make."""
    global clicks
    clicks += 1
    return Clicks(total=clicks)


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
bastion.templates(templates)


async def home(request: Request) -> Response:
    return templates.TemplateResponse(request, "quickstart.html", {"clicks": clicks})


app = Starlette(routes=[Route("/", home)])
bastion.mount(app)
