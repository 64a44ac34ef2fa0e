"""The board as one Starlette app: pages, static files, actions, security headers.

    uvicorn --app-dir examples board.app:app --no-proxy-headers   # what `make demo` runs
    bastion audit board.app:bastion          # from examples/: every action checked

On start-up it creates the schema and, the first time, two accounts (an admin and an
author) with a post each; a password it had to generate is printed then, and never again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.logging import ActionNameFilter

from . import actions, api_tokens, mfa, pages, passkeys  # noqa: F401 - imported to register them
from .core import bastion, db, settings
from .db import DATABASE_DOWN, SeedAccount

__all__ = ["app", "bastion"]

log = logging.getLogger("board")

SEEDS: Final = (
    SeedAccount(
        email="admin@board.example",
        name="Grace",
        role="admin",
        password=settings.admin_password,
        posts=(
            (
                "Welcome to the team board",
                "Post updates for the team here. Authors edit and delete their own posts; "
                "admins look after all of them and hand out roles.\n\n"
                "Every button on this board is a bastion server action. The Security page "
                "lists each one with its policy, rate limit and fields.",
            ),
        ),
    ),
    SeedAccount(
        email="author@board.example",
        name="Ada",
        role="author",
        password=settings.author_password,
        posts=(
            (
                "Friday's release",
                "The export button on your profile now hands out your name, email, role "
                "and posts, and nothing else.\n\nTry to edit this post as someone else.",
            ),
        ),
    ),
)


def prepare() -> None:
    """The schema, and on the first start the seeded accounts (run in a worker thread)."""
    log.info("data in %s", db.url.render_as_string(hide_password=True))
    db.create_schema()
    for email, password in db.seed(SEEDS).items():
        if password is None:
            log.info("created %s with the password from the environment", email)
        else:
            # Printed once: it is stored nowhere but as an argon2 hash.
            log.warning("created %s with the password %s", email, password)


class _UvicornStyle(logging.Formatter):
    """``INFO:     board: …``, aligned with uvicorn's own lines; a refusal's line on
    ``bastion.security`` with its fields (``action=… stage=… code=… client=…``)."""

    FIELDS: Final = ("action", "stage", "code", "client", "digest")

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname + ':':<9} {super().format(record)}"
        if record.name == "bastion.security" and hasattr(record, "stage"):
            line += "".join(f" {name}={getattr(record, name, None)}" for name in self.FIELDS)
        return line


def _log_to_stderr() -> None:
    """The board's messages and bastion's (errors with their digest, one audit event per
    action call) on stderr, beside uvicorn's, unless logging is set up already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_UvicornStyle("%(name)s: %(message)s"))
    root.addHandler(handler)
    for name in ("board", "bastion"):
        logging.getLogger(name).setLevel(logging.INFO)


# uvicorn's access lines name the action ("POST /_actions/… [action login]"), not only its
# opaque ID; set at import, once uvicorn has configured its loggers and before any request.
logging.getLogger("uvicorn.access").addFilter(ActionNameFilter(bastion))


class ServedBy:
    """``X-Served-By: <name>`` on every reply: which of the cluster's processes answered
    (``BOARD_SERVED_BY``, set by ``make cluster`` only; a name, nothing about the host)."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.header = (b"x-served-by", name.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    _log_to_stderr()
    await db.run(prepare)
    yield
    db.dispose()


app = Starlette(
    routes=[
        *(Route(path, endpoint) for path, endpoint in (*pages.ROUTES, *mfa.ROUTES)),
        Mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static"),
    ],
    exception_handlers={404: pages.not_found, **dict.fromkeys(DATABASE_DOWN, pages.unavailable)},
    lifespan=lifespan,
)
bastion.mount(app)  # POST /_actions/<id>, and a session for every page
bastion.add_security_headers(app)  # CSP with a nonce, no framing, nosniff, …
if settings.served_by is not None:
    app.add_middleware(ServedBy, name=settings.served_by)
