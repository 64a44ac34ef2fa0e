"""The demo board on PostgreSQL, end to end: uvicorn in a process of its own, driven over
HTTP as a browser without JavaScript drives it (pages, the forms' hidden fields, 303s
followed), with every write checked in PostgreSQL itself.

- A newcomer signs up, signs in, publishes, edits and deletes a post: each step's rows
  are read back with psycopg.
- The database goes away: the board reaches PostgreSQL through a TCP proxy of the
  test's own (127.0.0.1 only), which is cut mid-run. Action calls answer 503 with the
  generic envelope and nothing else, pages a plain 503; no traceback, no word of the
  driver. The proxy comes back: calls succeed again, the same process still serving.
- A connection lost between a handler's UPDATE and its COMMIT writes nothing.
- The board's multi-row write (the first start's accounts with their posts) failing
  halfway writes nothing; nor does a transaction that raises after its writes. On
  SQLite and on PostgreSQL, in process.

PostgreSQL is the one at DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test);
each test works in a schema of its own (``search_path``), dropped afterwards. When no
server answers there, the tests that need one are skipped, with that reason.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import httpx2 as httpx
import psycopg
import pytest
from pydantic import SecretStr
from services import free_port, wait_for
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from bastion import ActionError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
POSTGRES = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_PASSWORD = "admin-password-for-the-postgres-tests"
AUTHOR_PASSWORD = "author-password-for-the-postgres-tests"
AUTHOR = "author@board.example"
PASSWORD = "a long enough password, typed by hand"
START_TIMEOUT = 20.0
"""Seconds the board has to serve its first page (schema and seeded accounts first)."""
FAILS_WITHIN = 5.0
"""Seconds a call may take to be refused once the database is gone."""
RECOVERED_WITHIN = 10.0
"""Seconds after the database is back by which pages must answer again."""
UNAVAILABLE = "The service is unavailable. Try again later."
UNAVAILABLE_ENVELOPE = {"ok": False, "error": {"code": "unavailable", "message": UNAVAILABLE}}
LEAKS = ("traceback", 'file "', ".py", "postgres", "psycopg", "sqlalchemy", "operationalerror")
"""What no refusal may hold (compared in lower case)."""
COOKIE = "board_session"
DIGEST = re.compile(r"[0-9a-f]{16}")


# --- PostgreSQL: a schema of the test's own ---------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """The test server, and a schema on it that only this test uses."""

    base: URL
    schema: str

    def url(self, *, port: int | None = None) -> URL:
        """The URL that puts the board in the schema (``search_path``), optionally through
        another port of 127.0.0.1 (the proxy's)."""
        url = self.base.update_query_dict({"options": f"-csearch_path={self.schema}"})
        return url if port is None else url.set(host="127.0.0.1", port=port)

    @property
    def address(self) -> tuple[str, int]:
        return self.base.host or "127.0.0.1", self.base.port or 5432

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """What is committed now, read with a connection of the test's own."""
        text = self.url().render_as_string(hide_password=False)
        with psycopg.connect(text, autocommit=True, connect_timeout=3) as connection:
            return connection.execute(query.encode(), params).fetchall()


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    base = make_url(POSTGRES).set(drivername="postgresql")
    shown = base.render_as_string(hide_password=True)
    try:
        connection = psycopg.connect(
            base.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError:
        pytest.skip(f"no PostgreSQL answers at {shown} (set DATABASE_URL)")
    schema = f"board_pg_{secrets.token_hex(4)}"
    with connection:
        connection.execute(f'CREATE SCHEMA "{schema}"'.encode())
        try:
            yield Postgres(base, schema)
        finally:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())


# --- a TCP proxy that the test cuts -----------------------------------------------------------


class Proxy:
    """127.0.0.1:``port`` → ``target``, a thread per direction. ``cut()`` closes every
    connection and then accepts new ones only to close them at once, as a database that
    went away; ``restore()`` lets them through again. ``cut_on(marker)`` cuts the moment
    the client sends bytes holding ``marker`` (which never reach the server)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._up = True
        self._closing = False
        self._marker: bytes | None = None
        self.forwarded: list[bytes] = []
        """What the client sent while a ``cut_on`` was armed, until it fired."""
        self.fired = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        with self._lock:
            self._up = False
            self._shut_all()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def cut_on(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker
            self.forwarded.clear()
            self.fired.clear()

    def close(self) -> None:
        """Every connection closed, every thread ended, the port given back."""
        with self._lock:
            self._closing = True
            self._shut_all()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _shut_all(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                up = self._up and not self._closing
            if not up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            connection = threading.Thread(target=self._serve, args=(client, server))
            self._threads.append(connection)
            connection.start()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        """Both directions until either ends or is cut; then both sockets closed."""
        upstream = threading.Thread(target=self._pump, args=(client, server, True))
        upstream.start()
        self._pump(server, client, False)
        upstream.join()
        with self._lock:
            self._open -= {client, server}
        client.close()
        server.close()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream and self._trapped(data):
                    return
                sink.sendall(data)
        except OSError:
            pass  # cut, or closed by the other side
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _trapped(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is None:
                return False
            if self._marker not in data:
                self.forwarded.append(data)
                return False
            self._marker = None
            self._shut_all()
        self.fired.set()
        return True


@pytest.fixture
def proxy(postgres: Postgres) -> Iterator[Proxy]:
    relay = Proxy(postgres.address)
    try:
        yield relay
    finally:
        relay.close()


# --- the board under uvicorn ------------------------------------------------------------------


class BoardServer:
    """``uvicorn --app-dir examples board.app:app`` on a free port, configured by the
    environment alone, its data (SQLite sessions) in ``directory``."""

    def __init__(self, directory: Path, database_url: URL) -> None:
        self.port = free_port()
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


def serve(tmp_path: Path, database_url: URL) -> Iterator[BoardServer]:
    server = BoardServer(tmp_path, database_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def board(tmp_path: Path, postgres: Postgres) -> Iterator[BoardServer]:
    """The board on the schema, straight to PostgreSQL."""
    yield from serve(tmp_path, postgres.url())


@pytest.fixture
def proxied_board(tmp_path: Path, postgres: Postgres, proxy: Proxy) -> Iterator[BoardServer]:
    """The board on the schema, through the proxy."""
    yield from serve(tmp_path, postgres.url(port=proxy.port))


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
                attributes.get("action", ""), attributes.get("method", "get"), within=within
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
        """The one form of the current page with this button (in ``within``)."""
        found = [
            f
            for f in forms(self.page_text)
            if f.button == button and (within is None or f.within == within)
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


def assert_json_unavailable(reply: httpx.Response, started: float) -> str | None:
    """503 and the generic envelope, nothing else but (as for every failure that bastion
    logs) the digest the server log has it under: returned, to look for there."""
    assert time.perf_counter() - started < FAILS_WITHIN
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    digest = body["error"].pop("digest", None)
    assert body == UNAVAILABLE_ENVELOPE
    assert digest is None or DIGEST.fullmatch(digest), digest
    assert_no_leak(reply)
    return digest


def assert_page_unavailable(reply: httpx.Response, started: float) -> None:
    assert time.perf_counter() - started < FAILS_WITHIN
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.text == UNAVAILABLE
    assert_no_leak(reply)


def assert_no_leak(reply: httpx.Response) -> None:
    text = reply.text.lower()
    for word in LEAKS:
        assert word not in text, (word, reply.text)


# --- sign up, sign in, publish, edit, delete --------------------------------------------------


def test_a_newcomer_publishes_edits_and_deletes_a_post_on_postgresql(
    board: BoardServer, postgres: Postgres
) -> None:
    """Every step as a browser without JavaScript takes it, and its rows in PostgreSQL:
    the schema holds the board's tables and seeded accounts; a sign-up adds an author
    with an argon2id hash; a post appears, changes and goes, and the account stays."""
    tables = postgres.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        postgres.schema,
    )
    assert sorted(t for (t,) in tables) == ["accounts", "posts"]
    assert postgres.rows("SELECT email, role FROM accounts ORDER BY id") == [
        ("admin@board.example", "admin"),
        (AUTHOR, "author"),
    ]
    email = f"sam-{secrets.token_hex(3)}@board.example"

    with Browser(board) as browser:
        browser.open("/signup")
        signup = browser.form(button="Create account")
        assert sorted(signup.fields) == ["email", "name", "password"]
        assert set(signup.hidden) == {"_csrf", "_next"}
        page = browser.submit(
            signup, "/login?welcome=1", name="Sam", email=email, password=PASSWORD
        )
        assert notice("Welcome, Sam! Your account is ready: sign in.") in page
        [(account_id, name, role, hashed)] = postgres.rows(
            "SELECT id, name, role, password_hash FROM accounts WHERE email = %s", email
        )
        assert (name, role) == ("Sam", "author")
        assert hashed.startswith("$argon2id$")
        assert PASSWORD not in hashed

        login = browser.form(button="Sign in")
        assert f'value="{email}"' in page  # filled in from the sign-up
        page = browser.submit(login, "/", email=email, password=PASSWORD)
        assert notice("Signed in as Sam.") in page
        assert browser.client.cookies.get(COOKIE)

        compose = browser.form(button="Publish", within="compose")
        page = browser.submit(compose, "/", title="On PostgreSQL", body="Rows, not files.")
        assert notice("Published “On PostgreSQL”.") in page
        [(post_id, author_id, title, body, updated)] = postgres.rows(
            "SELECT id, author_id, title, body, updated_at FROM posts WHERE title = %s",
            "On PostgreSQL",
        )
        assert (author_id, title, body, updated) == (
            account_id,
            "On PostgreSQL",
            "Rows, not files.",
            None,
        )
        assert f'href="/posts/{post_id}/edit"' in page

        browser.open(f"/posts/{post_id}/edit")
        edit = browser.form(button="Save changes")
        assert set(edit.hidden) == {"_csrf", "_next", "_bound"}
        page = browser.submit(
            edit, f"/#post-{post_id}", title="Still on PostgreSQL", body="Edited in place."
        )
        assert notice("Saved “Still on PostgreSQL”.") in page
        [(title, body, updated)] = postgres.rows(
            "SELECT title, body, updated_at FROM posts WHERE id = %s", post_id
        )
        assert (title, body) == ("Still on PostgreSQL", "Edited in place.")
        assert updated is not None

        delete = browser.form(button="Delete", within=f"post-{post_id}")
        page = browser.submit(delete, "/")
        assert notice("Deleted “Still on PostgreSQL”.") in page
        assert postgres.rows("SELECT id FROM posts WHERE id = %s", post_id) == []
        assert postgres.rows("SELECT count(*) FROM posts WHERE author_id = %s", account_id) == [
            (0,)
        ]
        assert postgres.rows("SELECT name FROM accounts WHERE id = %s", account_id) == [("Sam",)]

    assert board.process.poll() is None
    assert "Traceback" not in board.log()


# --- the database goes away, and comes back ---------------------------------------------------


def test_a_database_that_is_down_answers_503_and_recovers(
    proxied_board: BoardServer, postgres: Postgres, proxy: Proxy
) -> None:
    """With the proxy cut: every action that needs the database answers 503 with exactly
    the generic envelope, fast; a plain form post goes back to its page; every page that
    needs the database answers a plain 503 (sign-in and sign-up pages, which need none,
    still serve). Nothing names the driver or the server. The proxy restored, the same
    process serves pages and writes again."""
    board = proxied_board
    with Browser(board) as ada, Browser(board) as visitor:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        [(post_id,)] = postgres.rows("SELECT id FROM posts ORDER BY id DESC LIMIT 1")
        ada.open(f"/posts/{post_id}/edit")
        edit = ada.form(button="Save changes")
        ada.open("/me")
        export = ada.form(button="Export my data")
        ada.open("/")
        compose = ada.form(button="Publish", within="compose")
        visitor.open("/login")
        login = visitor.form(button="Sign in")
        visitor.open("/signup")
        signup = visitor.form(button="Create account")
        warm = ada.call(compose, {"title": "Before", "body": "The database is there."})
        assert warm.status_code == 200, warm.text
        pid = board.process.pid

        proxy.cut()

        calls = [
            (ada, compose, {"title": "During", "body": "Nowhere to go."}),
            (ada, edit, {"title": "During", "body": "No.", "_bound": edit.hidden["_bound"]}),
            (ada, export, {}),
            (visitor, signup, {"name": "Sam", "email": "sam@board.example", "password": PASSWORD}),
            (visitor, login, {"email": AUTHOR, "password": AUTHOR_PASSWORD}),
        ]
        digests: list[str | None] = []
        for browser, form, body in calls:
            started = time.perf_counter()
            digests.append(assert_json_unavailable(browser.call(form, body), started))

        # Without JavaScript: back to the page the form is on ("/"), which needs the
        # database too, so it answers the plain 503 (and its flash goes with that page).
        reply = ada.post(compose, title="During", body="Posted while down.")
        assert (reply.status_code, reply.headers["location"]) == (303, "/")
        for path in ("/", "/me", f"/posts/{post_id}/edit", "/login", "/security", "/nowhere"):
            started = time.perf_counter()
            assert_page_unavailable(ada.get(path), started)
        for path in ("/login", "/security", "/signup"):
            visitor.open(path)  # no one signed in: no database needed
        # A sign-up form comes back with the message, what was typed, and no password.
        typed = {"name": "Sam", "email": "sam@board.example"}
        page = visitor.submit(signup, "/signup", **typed, password=PASSWORD)
        assert f'<p class="notice error" role="alert">{UNAVAILABLE}</p>' in page
        assert 'value="Sam"' in page
        assert 'value="sam@board.example"' in page
        assert PASSWORD not in page

        assert postgres.rows("SELECT count(*) FROM posts WHERE title = 'During'") == [(0,)]

        proxy.restore()

        assert wait_for(lambda: ada.get("/").status_code == 200, RECOVERED_WITHIN, 0.1)
        assert board.process.pid == pid
        assert board.process.poll() is None
        reply = ada.call(compose, {"title": "After", "body": "The database is back."})
        assert reply.status_code == 200, reply.text
        assert postgres.rows("SELECT count(*) FROM posts WHERE title = 'After'") == [(1,)]
        visitor.open("/signup")
        reply = visitor.post(
            visitor.form(button="Create account"),
            name="Sam",
            email=f"sam-{secrets.token_hex(3)}@board.example",
            password=PASSWORD,
        )
        assert (reply.status_code, reply.headers["location"]) == (303, "/login?welcome=1")

    # The server log has what the replies leave out (under each refusal's digest).
    log = board.log()
    for digest in digests:
        assert digest is None or f"failed [digest {digest}]" in log
    assert "bastion: action create_post failed [digest " in log
    assert "board: GET /: the database is unavailable" in log
    assert "psycopg.OperationalError" in log


# --- no half-written changes ------------------------------------------------------------------


def test_a_connection_lost_before_commit_writes_nothing(
    proxied_board: BoardServer, postgres: Postgres, proxy: Proxy
) -> None:
    """The proxy forwards the edit's UPDATE and cuts the connection when COMMIT comes:
    PostgreSQL ran the UPDATE in a transaction that never commits. The call answers 503;
    the post is as it was. Called again, the edit goes through."""
    board = proxied_board
    with Browser(board) as ada:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        [(post_id, title, body)] = postgres.rows(
            "SELECT p.id, p.title, p.body FROM posts p JOIN accounts a ON a.id = p.author_id "
            "WHERE a.email = %s",
            AUTHOR,
        )
        ada.open(f"/posts/{post_id}/edit")
        edit = ada.form(button="Save changes")
        changed = {"title": "Half-written?", "body": "Never.", "_bound": edit.hidden["_bound"]}

        proxy.cut_on(b"COMMIT")
        started = time.perf_counter()
        reply = ada.call(edit, changed)
        assert proxy.fired.is_set()
        assert any(b"UPDATE posts SET" in chunk for chunk in proxy.forwarded)
        assert_json_unavailable(reply, started)
        assert postgres.rows(
            "SELECT title, body, updated_at FROM posts WHERE id = %s", post_id
        ) == [(title, body, None)]

        reply = ada.call(edit, changed)
        assert reply.status_code == 200, reply.text
        assert postgres.rows("SELECT title, body FROM posts WHERE id = %s", post_id) == [
            ("Half-written?", "Never.")
        ]


@pytest.fixture
def board_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/board/db.py, imported as the board imports it (and forgotten after)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    forget = [n for n in sys.modules if n == "board" or n.startswith("board.")]
    for name in forget:
        monkeypatch.delitem(sys.modules, name)
    try:
        yield importlib.import_module("board.db")
    finally:
        for name in [n for n in sys.modules if n == "board" or n.startswith("board.")]:
            del sys.modules[name]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, board_db: ModuleType, tmp_path: Path) -> Iterator[Any]:
    """The board's ``Database`` with its tables, on SQLite or in a PostgreSQL schema."""
    if request.param == "sqlite":
        url = URL.create("sqlite", database=str(tmp_path / "board.sqlite3"))
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        url = pg.url().set(drivername="postgresql+psycopg")
    db = board_db.Database(url)
    try:
        db.create_schema()
        yield db
    finally:
        db.dispose()


def statements(db: Any) -> list[str]:
    """Every statement the engine sends from now on, as sent."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", note)
    return sent


def test_seeding_that_fails_halfway_writes_no_account_and_no_post(
    database: Any, board_db: ModuleType
) -> None:
    """The first start's write: accounts and their posts, in one transaction. A post that
    breaks a NOT NULL constraint fails it after the accounts' INSERT ran: neither the
    accounts nor the posts before it are left. The same seeds, fixed, then go in whole."""
    Account, Post, SeedAccount = board_db.Account, board_db.Post, board_db.SeedAccount
    broken = cast(str, None)  # posts.body is NOT NULL
    seeds = (
        SeedAccount("one@board.example", "One", "author", SecretStr(PASSWORD), (("A", "a"),)),
        SeedAccount(
            "two@board.example", "Two", "admin", SecretStr(PASSWORD), (("B", "b"), ("C", broken))
        ),
    )
    sent = statements(database)
    with pytest.raises(IntegrityError):
        database.seed(seeds)
    inserts = [s.split("(", 1)[0].strip() for s in sent if s.startswith("INSERT")]
    assert inserts[0] == "INSERT INTO accounts", sent
    assert "INSERT INTO posts" in inserts, sent
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
        assert session.scalar(select(func.count()).select_from(Post)) == 0

    fixed = (seeds[0], SeedAccount("two@board.example", "Two", "admin", None, (("B", "b"),)))
    assert sorted(database.seed(fixed)) == ["one@board.example", "two@board.example"]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 2
        assert sorted(session.scalars(select(Post.title))) == ["A", "B"]


def test_a_transaction_that_raises_after_its_writes_leaves_nothing(
    database: Any, board_db: ModuleType
) -> None:
    """What every handler does in ``db.transaction()``: rows written and flushed (the
    database has them, uncommitted), then a refusal raised. Nothing stays."""
    Account, Post = board_db.Account, board_db.Post
    sent = statements(database)

    def handler() -> None:
        with database.transaction() as session:
            account = Account(email="x@board.example", name="X", role="author", password_hash="-")
            session.add(account)
            session.flush()
            session.add(Post(author_id=account.id, title="Half", body="written"))
            session.flush()
            raise ActionError("Changed my mind.", code="refused", status=409)

    with pytest.raises(ActionError):
        handler()
    assert [s.split("(", 1)[0].strip() for s in sent if s.startswith("INSERT")] == [
        "INSERT INTO accounts",
        "INSERT INTO posts",
    ]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
        assert session.scalar(select(func.count()).select_from(Post)) == 0
