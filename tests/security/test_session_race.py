"""A log-out is never undone by a request still in flight (issue 12, finding 1).

The attack: with a signed-in session cookie S, start a request (a form post whose body is
sent only in part, or a page that takes its time), log out with S meanwhile, then let the
first request finish. Before the fix its reply saved the session it had loaded at the
start (its refusal's flash, the flash a page took, a "last seen" touch), after the log-out
had deleted it: ``S`` was signed in again, and a post sent with a token was written after
the log-out. Now a session is written back only if the store still holds what the request
loaded, and a call whose body arrived after its session ended is refused before its
handler runs.

Everything runs over real uvicorn: tests/fixtures/shared_app.py on each store (memory,
SQLite, Redis), and the demo board itself (SQLite and Redis) for the exact report.
"""

from __future__ import annotations

import http.client
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from services import REPO, AppServer, app_servers, free_port, with_db

COOKIE = "bastion_session"
BOARD_COOKIE = "board_session"
TOKEN = re.compile(r'name="_csrf" value="([A-Za-z0-9_-]{86})"')
AUTHOR_PASSWORD = "author-password-for-the-race-tests"
ADMIN_PASSWORD = "admin-password-for-the-race-tests"


# --- a browser and a request left half-sent ---------------------------------------------------


class Browser:
    """One cookie jar, the token of the last page it loaded and the action URLs of it."""

    def __init__(self, base: str, cookie: str) -> None:
        self.base = base
        self.cookie = cookie
        self.client = httpx.Client(base_url=base, timeout=15.0, trust_env=False)
        self.token = ""
        self.forms: dict[str, str] = {}

    @property
    def sid(self) -> str:
        sid = self.client.cookies.get(self.cookie)
        assert sid is not None, "no session cookie"
        return sid

    def page(self, path: str = "/") -> httpx.Response:
        reply = self.client.get(path, headers={"Accept": "text/html"})
        found = TOKEN.findall(reply.text)
        if found:
            self.token = found[0]
        return reply

    def call(self, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """POST as bastion.js does: JSON, the token in a header."""
        return self.client.post(
            url,
            json=body or {},
            headers={"Accept": "application/json", "Origin": self.base, "X-CSRF-Token": self.token},
        )

    def close(self) -> None:
        self.client.close()


class HalfSent:
    """A plain form post (as a browser sends it, cookie S and all) whose body is sent only
    in part; ``finish()`` sends the rest (or nothing) and reads the reply."""

    def __init__(self, port: int, path: str, sid_cookie: str, origin: str, body: bytes) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        self.body = body
        self.connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in (
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
            ("Accept", "text/html"),
            ("Origin", origin),
            ("Referer", origin + "/"),
            ("Cookie", sid_cookie),
        ):
            self.connection.putheader(name, value)
        self.connection.endheaders(body[:3])

    def finish(self, *, send_rest: bool = True) -> http.client.HTTPResponse:
        if send_rest:
            self.connection.send(self.body[3:])
        reply = self.connection.getresponse()
        reply.read()
        return reply

    def close(self) -> None:
        self.connection.close()


def settle() -> None:
    """Let the server load the half-sent request's session before the log-out."""
    time.sleep(0.3)


# --- the shared app, on each store ------------------------------------------------------------


@dataclass
class Served:
    server: AppServer
    browser: Browser
    urls: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The shared app under uvicorn on one store, and a browser signed in on it."""
    env = {
        "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
        "BASTION_ALLOWED_ORIGINS": "",
    }
    if request.param == "memory":
        env["BASTION_STORE"] = "memory://"
    elif request.param == "redis":
        env["BASTION_STORE"] = with_db(request.getfixturevalue("redis_url"), 12)
    port = free_port()
    env["BASTION_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{port}"
    server = AppServer(port, env, tmp_path / "app", args=("--no-proxy-headers",))
    with app_servers([server]):
        browser = Browser(server.base, COOKIE)
        try:
            reply = browser.page("/")
            urls = dict(re.findall(r'data-name="(\w+)" href="([^"]+)"', reply.text))
            user = f"victim-{secrets.token_hex(4)}"
            assert browser.call(urls["sign_in"], {"user": user}).status_code == 200
            browser.page("/")  # log-in rotated the token
            assert browser.call(urls["whoami"]).json() == {"ok": True, "data": {"user": user}}
            assert signed_in(Served(server, browser, urls), browser.sid)
            yield Served(server, browser, urls)
        finally:
            browser.close()


def signed_in(served: Served, sid: str) -> bool:
    """Whether the stolen cookie S alone is signed in: the page names its user."""
    with httpx.Client(base_url=served.server.base, timeout=10.0, trust_env=False) as thief:
        thief.cookies.set(COOKIE, sid)
        page = thief.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    user = re.search(r'<p id="user">([^<]*)</p>', page.text)
    assert user is not None
    return bool(user.group(1))


def log_out(served: Served) -> None:
    reply = served.browser.call(served.urls["sign_out"])
    assert reply.status_code == 200, reply.text
    assert "max-age=0" in reply.headers["set-cookie"].lower()


def half_sent(served: Served, action: str, body: bytes) -> HalfSent:
    return HalfSent(
        served.server.port,
        served.urls[action],
        f"{COOKIE}={served.browser.sid}",
        served.server.base,
        body,
    )


def test_a_form_post_without_token_finished_after_logout_does_not_sign_in_again(
    served: Served,
) -> None:
    """Attack: half a form post with S (no token), log out, send the rest. The refusal
    (303 with a flash) must not save S back: S stays signed out."""
    sid = served.browser.sid
    pending = half_sent(served, "remember", b"text=after-logout")
    try:
        settle()
        log_out(served)
        assert not signed_in(served, sid)
        reply = pending.finish()
    finally:
        pending.close()
    assert reply.status == 303
    assert not signed_in(served, sid)
    assert served.server.status()["remember"] == 0


def test_a_form_post_with_token_finished_after_logout_is_refused(served: Served) -> None:
    """Attack: half a form post with S and its valid token, log out, send the rest. The
    handler must not run after the log-out, and S stays signed out."""
    sid = served.browser.sid
    body = f"_csrf={served.browser.token}&text=after-logout".encode()
    pending = half_sent(served, "remember", body)
    try:
        settle()
        log_out(served)
        reply = pending.finish()
    finally:
        pending.close()
    assert reply.status == 303  # back to the form, with the refusal in its flash
    assert served.server.status()["remember"] == 0
    assert not signed_in(served, sid)


def test_a_stalled_body_that_ends_in_408_after_logout_does_not_sign_in_again(
    served: Served,
) -> None:
    """Attack: half a form post with S to an action with a one-second timeout, log out,
    never send the rest: the timeout's refusal (its flash) must not save S back."""
    sid = served.browser.sid
    pending = half_sent(served, "quick_note", b"text=never-finished")
    try:
        settle()
        log_out(served)
        started = time.monotonic()
        reply = pending.finish(send_rest=False)
        waited = time.monotonic() - started
    finally:
        pending.close()
    assert reply.status == 303  # a plain form lands on its page, the 408 in its flash
    assert waited < 10
    assert served.server.status()["quick_note"] == 0
    assert not signed_in(served, sid)


def test_a_page_in_flight_during_logout_does_not_sign_in_again(served: Served) -> None:
    """Attack: a flash is waiting in S; a slow page loads S (and takes the flash); log out
    while it renders: the page's reply must not write S back."""
    sid = served.browser.sid
    refused = served.browser.client.post(
        served.urls["remember"],
        data={"text": "no token"},
        headers={"Accept": "text/html", "Origin": served.server.base},
    )
    assert refused.status_code == 303  # the refusal left a flash in S
    replies: list[int] = []

    def slow_page() -> None:
        with httpx.Client(base_url=served.server.base, timeout=15.0, trust_env=False) as tab:
            tab.cookies.set(COOKIE, sid)
            replies.append(tab.get("/slow?ms=1000", headers={"Accept": "text/html"}).status_code)

    tab = threading.Thread(target=slow_page)
    tab.start()
    settle()
    log_out(served)
    tab.join(timeout=15)
    assert replies == [200]
    assert not signed_in(served, sid)


# --- the board, exactly as reported -----------------------------------------------------------


EXAMPLES = REPO / "examples"
FORM = re.compile(r'<form method="post" action="(/_actions/[^"]+)"[^>]*>(.*?)</form>', re.S)


@pytest.fixture(params=["sqlite", "redis"])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppServer]:
    """``make demo``'s board under uvicorn (its sessions in SQLite, or in Redis by
    ``BASTION_STORE``), with the seeded author's password chosen."""
    port = free_port()
    env = {
        "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
        "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "BOARD_DATA_DIR": str(tmp_path / "board"),
        "BOARD_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BOARD_AUTHOR_PASSWORD": AUTHOR_PASSWORD,
    }
    if request.param == "redis":
        env["BASTION_STORE"] = with_db(request.getfixturevalue("redis_url"), 12)
    server = AppServer(
        port,
        env,
        tmp_path / "server",
        target="board.app:app",
        app_dir=EXAMPLES,
        args=("--no-proxy-headers",),
    )
    with app_servers([server]):
        yield server


def forms(html: str) -> dict[str, str]:
    """The board page's forms by what they hold: the new-post form and the sign-out."""
    found: dict[str, str] = {}
    for url, inner in FORM.findall(html):
        if 'name="title"' in inner and "_bound" not in inner:
            found["create_post"] = url
        elif 'id="sign-out"' in html and "_bound" not in inner and "email" not in inner:
            found.setdefault("logout", url)
    return found


def test_board_a_post_finished_after_logout_neither_signs_in_nor_writes(
    board: AppServer, tmp_path: Path
) -> None:
    """The report, step by step: sign in as the author; start a new-post form post with S
    and its token, sending part of the body; log out (200, cookie cleared, /me → 303);
    send the rest. Before: 303 and /me with S → 200, and the post written. Now: /me with S
    stays 303 and no post is written."""
    browser = Browser(board.base, BOARD_COOKIE)
    try:
        login_page = browser.page("/login")
        login_url = FORM.findall(login_page.text)[0][0]
        signed = browser.call(
            login_url, {"email": "author@board.example", "password": AUTHOR_PASSWORD}
        )
        assert signed.status_code == 200, signed.text
        urls = forms(browser.page("/").text)
        sid = browser.sid
        assert browser.client.get("/me").status_code == 200

        title = f"written after the log-out {secrets.token_hex(4)}"
        body = f"_csrf={browser.token}&_next=/&title={title}&body=late".encode()
        pending = HalfSent(
            board.port, urls["create_post"], f"{BOARD_COOKIE}={sid}", board.base, body
        )
        try:
            settle()
            out = browser.call(urls["logout"])
            assert out.status_code == 200, out.text
            assert "max-age=0" in out.headers["set-cookie"].lower()
            with httpx.Client(base_url=board.base, timeout=10.0, trust_env=False) as thief:
                thief.cookies.set(BOARD_COOKIE, sid)
                assert thief.get("/me").status_code == 303
            reply = pending.finish()
        finally:
            pending.close()
        assert reply.status == 303
        with httpx.Client(base_url=board.base, timeout=10.0, trust_env=False) as thief:
            thief.cookies.set(BOARD_COOKIE, sid)
            me = thief.get("/me")
            assert (me.status_code, me.headers["location"]) == (303, "/login?next=%2Fme")
        with sqlite3.connect(tmp_path / "board" / "board.sqlite3") as db:
            written = db.execute("SELECT count(*) FROM posts WHERE title = ?", (title,)).fetchone()
        assert written == (0,)
    finally:
        browser.close()
