"""The board under uvicorn, as ``make demo`` serves it, driven over HTTP as a browser
without JavaScript drives it: pages asked for as HTML, the forms' hidden fields posted
back, 303s followed.

``BoardServer`` is ``uvicorn --app-dir examples board.app:app --no-proxy-headers`` in a
process of its own, configured by the environment alone, on the database it is given;
``Served`` is that server with its database read from outside (``rows``, ``tables``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

import httpx2 as httpx
import pytest
from services import free_port, wait_for
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL

from .databases import Rows
from .inprocess import EXAMPLES

__all__ = [
    "ADMIN",
    "ADMIN_PASSWORD",
    "AUTHOR",
    "AUTHOR_PASSWORD",
    "COOKIE",
    "PASSWORD",
    "BoardServer",
    "Browser",
    "Form",
    "Served",
    "forms",
    "notice",
    "serve",
]

ADMIN: Final = "admin@board.example"
AUTHOR: Final = "author@board.example"
ADMIN_PASSWORD: Final = "admin-password-for-the-served-board"
AUTHOR_PASSWORD: Final = "author-password-for-the-served-board"
PASSWORD: Final = "a long enough password, typed by hand"
"""A newcomer's, at sign-up."""
START_TIMEOUT: Final = 20.0
"""Seconds the board has to serve its first page (schema and seeded accounts first)."""
COOKIE: Final = "board_session"


# --- the board under uvicorn ------------------------------------------------------------------


class BoardServer:
    """The board under uvicorn on a free port of 127.0.0.1, with ``make demo``'s flags,
    configured by the environment alone (none of the test process's ``BASTION_*``,
    ``BOARD_*`` or ``DATABASE_URL``): a key of its own, its address as the one allowed
    origin, the seeded accounts' passwords, ``database_url``; sessions (and a SQLite
    database, unless ``database_url`` names another) in ``directory``/data. ``env`` adds
    to that or replaces it (``BASTION_STORE``, a key shared with another server)."""

    def __init__(
        self,
        directory: Path,
        database_url: URL,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "uvicorn.log"
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BASTION_", "BOARD_")) and key != "DATABASE_URL"
        }
        env = {
            **inherited,
            "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
            "BASTION_ALLOWED_ORIGINS": self.base,
            "BOARD_DATA_DIR": str(directory / "data"),
            "BOARD_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BOARD_AUTHOR_PASSWORD": AUTHOR_PASSWORD,
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            **(env or {}),
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "board.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-proxy-headers",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def wait_ready(self) -> None:
        def serving() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the board exited with {self.process.returncode}:\n{self.log()}")
            try:
                reply = httpx.get(self.base + "/login", timeout=1.0, trust_env=False)
            except httpx.TransportError:
                return False
            return reply.status_code == 200

        if not wait_for(serving, START_TIMEOUT):
            pytest.fail(f"the board did not serve in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(directory: Path, database_url: URL) -> Iterator[BoardServer]:
    """The board serving, stopped when the block ends (however it ends)."""
    server = BoardServer(directory, database_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Served:
    """The board under uvicorn, and its database as the test reads it: ``rows`` (what is
    committed, ``%s`` placeholders) and ``engine_url`` (SQLAlchemy's URL of it)."""

    server: BoardServer
    engine_url: URL
    rows: Rows

    def tables(self) -> list[str]:
        """The board's tables in its database (SQLite's own left out)."""
        engine = create_engine(self.engine_url)
        try:
            return sorted(inspect(engine).get_table_names())
        finally:
            engine.dispose()


# --- a browser without JavaScript -------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    hidden: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    """The named inputs a person fills in (not the hidden ones)."""
    button: str = ""
    within: str | None = None
    """The id of the innermost article or section around it."""
    id: str | None = None
    """The form's own id, if it has one."""


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._button = False
        self._around: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag in ("article", "section"):
            self._around.append(attributes.get("id"))
        elif tag == "form":
            within = next((i for i in reversed(self._around) if i), None)
            self._form = Form(
                attributes.get("action", ""),
                attributes.get("method", "get"),
                within=within,
                id=attributes.get("id"),
            )
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and attributes.get("type") == "hidden":
            self._form.hidden[attributes["name"]] = attributes.get("value", "")
        elif tag in ("input", "textarea") and "name" in attributes:
            self._form.fields.append(attributes["name"])
        elif tag == "button":
            self._button = True

    def handle_data(self, data: str) -> None:
        if self._button and self._form is not None:
            self._form.button += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("article", "section") and self._around:
            self._around.pop()
        elif tag == "form":
            self._form = None
        elif tag == "button":
            self._button = False


def forms(page: str) -> list[Form]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


class Browser:
    """One visitor with JavaScript off: a cookie jar, pages asked for as HTML, forms posted
    urlencoded with the headers a browser adds (Origin, Referer, Sec-Fetch-*), 303s
    followed with a GET."""

    def __init__(self, board: BoardServer) -> None:
        self.base = board.base
        self.client = httpx.Client(base_url=board.base, timeout=10.0, trust_env=False)
        self.page_path = "/"
        self.page_text = ""

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def get(self, path: str) -> httpx.Response:
        reply = self.client.get(
            path,
            headers={
                "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                "Sec-Fetch-Site": "same-origin",
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document",
            },
        )
        self.page_path, self.page_text = path, reply.text
        return reply

    def open(self, path: str) -> str:
        reply = self.get(path)
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        return reply.text

    def form(self, *, button: str, within: str | None = None) -> Form:
        """The one form of the current page with this button (in ``within``, or whose
        own id is ``within``)."""
        found = [
            f
            for f in forms(self.page_text)
            if f.button == button and (within is None or within in (f.within, f.id))
        ]
        assert len(found) == 1, f"{len(found)} forms with a {button!r} button on {self.page_path}"
        return found[0]

    def post(self, form: Form, **typed: str) -> httpx.Response:
        """What pressing the form's button sends: every hidden field, and what was typed
        into the form's own fields (no other)."""
        assert form.method == "post"
        assert set(typed) <= set(form.fields), (typed, form.fields)
        return self.client.post(
            form.action,
            data={**form.hidden, **typed},
            headers={
                "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                "Origin": self.base,
                "Referer": self.base + self.page_path,
                "Sec-Fetch-Site": "same-origin",
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document",
            },
        )

    def submit(self, form: Form, expect: str, **typed: str) -> str:
        """Post the form, expect a 303 to ``expect``, follow it: the page it lands on."""
        reply = self.post(form, **typed)
        assert reply.status_code == 303, (reply.status_code, reply.text)
        location = reply.headers["location"]
        assert location == expect, location
        return self.open(location.split("#", 1)[0])

    def call(self, form: Form, body: dict[str, Any]) -> httpx.Response:
        """The same action called as a script calls it (JSON, the token in a header)."""
        return self.client.post(
            form.action,
            json=body,
            headers={
                "Accept": "application/json",
                "Origin": self.base,
                "X-CSRF-Token": form.hidden["_csrf"],
            },
        )

    def sign_in(self, email: str, password: str) -> str:
        self.open("/login")
        return self.submit(self.form(button="Sign in"), "/", email=email, password=password)


def notice(text: str) -> str:
    return f'<p class="notice ok" role="status">{text}</p>'
