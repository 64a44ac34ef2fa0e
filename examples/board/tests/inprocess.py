"""The board in process: imported as uvicorn imports it, its actions called through
bastion's ``ActionClient``, its pages read as a browser reads them.

Every client is a fresh browser at an address of its own, so no test shares a
rate-limit window with another. Accounts are made straight in the database (with one
argon2 hash for all: hashing takes a third of a second) and signed in through the
``login`` action.
"""

from __future__ import annotations

import functools
import importlib
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookiejar import Cookie
from itertools import count
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import httpx2 as httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from bastion import Bastion, hash_password
from bastion.testing import ActionClient

from .databases import DATABASES

__all__ = [
    "ADMIN_PASSWORD",
    "AUTHOR_PASSWORD",
    "EXAMPLES",
    "KEY",
    "PASSWORD",
    "Board",
    "Person",
    "board_modules",
    "delete_form",
    "edit_form",
    "element",
    "forget_board",
    "hidden",
    "html",
    "imported_board",
    "invalid",
    "new_email",
    "on_both_databases",
    "password_hash",
    "sign_in",
]

EXAMPLES: Final = Path(__file__).resolve().parents[2]
KEY: Final = "board-test-key-0123456789-abcdefghijklmnopqrstuvwxyz"
ADMIN_PASSWORD: Final = "admin-password-for-the-board-tests"
AUTHOR_PASSWORD: Final = "author-password-for-the-board-tests"
PASSWORD: Final = "a password for every test account"
ORIGIN: Final = "http://127.0.0.1"
"""Where ActionClient says its calls come from: the board's one allowed origin."""

on_both_databases: Final = pytest.mark.parametrize("board", DATABASES, indirect=True)
"""For a test of what the board's database code does: the ``board`` fixture on SQLite and
on PostgreSQL (without it, SQLite alone)."""

_addresses = count(1)
_emails = count(1)


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    email: str
    password: str


@functools.cache
def password_hash() -> str:
    """One argon2id hash for every test account: hashing takes a third of a second."""
    return hash_password(PASSWORD)


@dataclass
class Board:
    """The board's modules, and helpers to make accounts, posts and browsers."""

    app_module: ModuleType
    actions: ModuleType
    core: ModuleType
    db_module: ModuleType
    pages: ModuleType
    _people: dict[str, Person] = field(default_factory=dict)
    _jars: dict[int, list[Cookie]] = field(default_factory=dict)

    @property
    def app(self) -> Starlette:
        app: Starlette = self.app_module.app
        return app

    @property
    def bastion(self) -> Bastion:
        bastion: Bastion = self.core.bastion
        return bastion

    def client(self) -> ActionClient:
        """A new browser: no cookie, an address of its own."""
        return ActionClient(self.app, self.bastion, client=(f"10.9.0.{next(_addresses)}", 5000))

    @contextmanager
    def browser(
        self, person: Person | None = None, *, reuse: bool = False
    ) -> Iterator[ActionClient]:
        """A new browser, signed in as ``person`` through the login action. With ``reuse``,
        the session of an earlier sign-in is reused (its cookie copied over), which saves
        the password check: for callers whose session the call leaves alive."""
        with self.client() as client:
            if person is not None:
                jar = self._jars.get(person.id) if reuse else None
                if jar is None:
                    sign_in(client, person)
                    if reuse:
                        self._jars[person.id] = list(client.cookies.jar)
                else:
                    for cookie in jar:
                        client.cookies.jar.set_cookie(cookie)
            yield client

    def forget_sessions(self, person: Person) -> None:
        """After every session of ``person`` was ended: the next browser signs in afresh."""
        self._jars.pop(person.id, None)

    def account(self, role: str, name: str = "Test") -> Person:
        email = f"{role}-{next(_emails)}-{secrets.token_hex(3)}@board.example"
        Account = self.db_module.Account
        with self.core.db.transaction() as session:
            row = Account(email=email, name=name, role=role, password_hash=password_hash())
            session.add(row)
            session.flush()
            return Person(row.id, name, email, PASSWORD)

    def member(self, key: str, role: str) -> Person:
        """The same account for ``key`` all through the module."""
        if key not in self._people:
            self._people[key] = self.account(role, key.title())
        return self._people[key]

    def post(self, author: Person, title: str = "A post") -> int:
        Post = self.db_module.Post
        with self.core.db.transaction() as session:
            row = Post(author_id=author.id, title=title, body="Its body.")
            session.add(row)
            session.flush()
            post_id: int = row.id
            return post_id

    def post_title(self, post_id: int) -> str | None:
        with self.core.db.session() as session:
            post = session.get(self.db_module.Post, post_id)
            return None if post is None else str(post.title)

    def ref(self, post_id: int) -> dict[str, Any]:
        """What the post's forms seal now: its ID and its current version."""
        with self.core.db.session() as session:
            version = session.scalar(
                select(self.db_module.Post.version).where(self.db_module.Post.id == post_id)
            )
        assert version is not None, f"no post {post_id}"
        return {"post_id": post_id, "version": version}

    def sealed(self, action: str, values: dict[str, Any]) -> str:
        """A valid seal tied to no session, as if it had leaked: only the handler's own
        owner-or-admin check stands between it and the post."""
        sealed: str = self.bastion.seal(action, values, bind_session=False)
        return sealed


def sign_in(client: ActionClient, person: Person) -> None:
    reply = client.call("login", {"email": person.email, "password": person.password})
    assert reply.status_code == 200, reply.text


# --- importing the board ----------------------------------------------------------------------


def board_modules() -> list[str]:
    """The names of the board's modules in sys.modules: ``board`` and its submodules, but
    not its tests (this package)."""
    tests = __package__ or "board.tests"
    return [
        name
        for name in sys.modules
        if (name == "board" or name.startswith("board."))
        and name != tests
        and not name.startswith(tests + ".")
    ]


def forget_board() -> None:
    for name in board_modules():
        del sys.modules[name]


@contextmanager
def imported_board(data: Path, database_url: str | None = None) -> Iterator[Board]:
    """examples/board imported fresh, as uvicorn imports it, with its configuration in the
    environment: key, origin, data directory, the seeded accounts' passwords and the
    database (``None``: its own SQLite file in ``data``). Started once (schema and seeded
    accounts). Environment and sys.modules are restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_SECRET_KEY", KEY)
        mp.setenv("BASTION_ALLOWED_ORIGINS", ORIGIN)
        mp.setenv("BOARD_DATA_DIR", str(data))
        mp.delenv("BASTION_DATA_DIR", raising=False)
        mp.setenv("BOARD_ADMIN_PASSWORD", ADMIN_PASSWORD)
        mp.setenv("BOARD_AUTHOR_PASSWORD", AUTHOR_PASSWORD)
        if database_url is None:
            mp.delenv("DATABASE_URL", raising=False)
        else:
            mp.setenv("DATABASE_URL", database_url)
        mp.syspath_prepend(str(EXAMPLES))
        forget_board()
        try:
            loaded = Board(
                app_module=importlib.import_module("board.app"),
                actions=importlib.import_module("board.actions"),
                core=importlib.import_module("board.core"),
                db_module=importlib.import_module("board.db"),
                pages=importlib.import_module("board.pages"),
            )
            with loaded.client():  # starts the app once: schema and seeded accounts
                pass
            yield loaded
            loaded.core.db.dispose()
        finally:
            forget_board()


# --- pages and replies ------------------------------------------------------------------------


def html(client: ActionClient, path: str, **headers: str) -> httpx.Response:
    """A page as a browser asks for it (so a flash waiting for it is shown, once)."""
    return client.get(path, headers={"Accept": "text/html", **headers})


def element(page: str, element_id: str) -> str:
    """The element with this id, from its start tag to the first end tag of its kind."""
    found = re.search(rf'<(\w+)[^>]* id="{re.escape(element_id)}".*?</\1>', page, flags=re.S)
    assert found is not None, f"no #{element_id} on the page"
    return found.group(0)


def hidden(page: str, name: str, within: str | None = None) -> str:
    """The value of the one hidden input ``name`` on the page, or in its element ``within``
    (an id)."""
    if within is not None:
        page = element(page, within)
    values: list[str] = re.findall(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert len(values) == 1, f"{len(values)} {name} inputs"
    return values[0]


def edit_form(client: ActionClient, post_id: int) -> str:
    """The ``_bound`` of the post's edit page, as this browser gets it."""
    page = html(client, f"/posts/{post_id}/edit")
    assert page.status_code == 200
    return hidden(page.text, "_bound")


def delete_form(client: ActionClient, post_id: int) -> str:
    """The ``_bound`` of the post's delete form on the board, as this browser gets it."""
    page = html(client, "/")
    assert page.status_code == 200
    return hidden(page.text, "_bound", within=f"post-{post_id}")


def invalid(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields},
    }


def new_email() -> str:
    return f"new-{secrets.token_hex(4)}@board.example"
