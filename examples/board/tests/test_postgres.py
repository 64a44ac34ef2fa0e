"""The demo board on PostgreSQL alone, end to end: uvicorn in a process of its own,
driven over HTTP as a browser without JavaScript drives it, its database reached through
a TCP proxy of the test's own (127.0.0.1 only).

- The database goes away: the proxy is cut mid-run. Action calls answer 503 with the
  generic envelope and nothing else, pages a plain 503; no traceback, no word of the
  driver. The proxy comes back: calls succeed again, the same process still serving.
- A connection lost between a handler's UPDATE and its COMMIT writes nothing.

What the board writes on either database is tested in test_database.py. PostgreSQL is
the one at DATABASE_URL (databases.py); each test works in a schema of its own.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from services import wait_for

from .databases import Postgres
from .served import AUTHOR, AUTHOR_PASSWORD, PASSWORD, BoardServer, Browser, serve

FAILS_WITHIN = 5.0
"""Seconds a call may take to be refused once the database is gone."""
RECOVERED_WITHIN = 10.0
"""Seconds after the database is back by which pages must answer again."""
UNAVAILABLE = "The service is unavailable. Try again later."
UNAVAILABLE_ENVELOPE = {"ok": False, "error": {"code": "unavailable", "message": UNAVAILABLE}}
LEAKS = ("traceback", 'file "', ".py", "postgres", "psycopg", "sqlalchemy", "operationalerror")
"""What no refusal may hold (compared in lower case)."""
DIGEST = re.compile(r"[0-9a-f]{16}")


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


@pytest.fixture
def proxied_board(tmp_path: Path, postgres: Postgres, proxy: Proxy) -> Iterator[BoardServer]:
    """The board on the schema, through the proxy."""
    with serve(tmp_path, postgres.url(port=proxy.port)) as server:
        yield server


# --- what a refusal holds -------------------------------------------------------------------


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
