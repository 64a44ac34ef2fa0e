"""The client never chooses its own address, nor the host a redirect names (issue 12,
findings 3 and 8), against the board under real uvicorn.

3. uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default and rewrites the client
   address before bastion sees it, so ``trusted_proxies=()`` was moot: a locked account
   answered 401 again, and a spent sign-up limit opened again, with a made-up address.
   Now bastion sees the rewrite and refuses such a call (400) when the app trusts no
   proxy; ``make demo`` and every documented command serve with ``--no-proxy-headers``,
   under which forwarded headers change nothing at all.
8. ``GET /login/`` with ``Host: evil.example`` answered ``307 Location:
   http://evil.example/login``. The host guard now covers the whole app, and by default
   trusts only the allowed origins' hosts.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from services import REPO, AppServer, app_servers, free_port

AUTHOR = "author@board.example"
AUTHOR_PASSWORD = "author-password-for-the-forwarding-tests"
TOKEN = re.compile(r'name="_csrf" value="([A-Za-z0-9_-]{86})"')
FORM = re.compile(r'<form method="post" action="(/_actions/[^"]+)"')
FORWARDING_REFUSED = {
    "ok": False,
    "error": {
        "code": "forwarding_refused",
        "message": "This request's forwarding headers are not accepted here.",
    },
}
MADE_UP = "203.0.113.7"
OTHER_HEADERS = [
    ("Forwarded", f"for={MADE_UP}"),
    ("Forwarded", 'for="[2001:db8::7]";proto=https'),
    ("X-Real-IP", MADE_UP),
    ("True-Client-IP", MADE_UP),
    ("CF-Connecting-IP", MADE_UP),
    ("X-Client-IP", MADE_UP),
    ("X-Cluster-Client-IP", MADE_UP),
]


def start_board(tmp_path: Path, *args: str) -> AppServer:
    port = free_port()
    env = {
        "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
        "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "BOARD_DATA_DIR": str(tmp_path / "board"),
        "BOARD_ADMIN_PASSWORD": "admin-password-for-the-forwarding-tests",
        "BOARD_AUTHOR_PASSWORD": AUTHOR_PASSWORD,
    }
    return AppServer(
        port,
        env,
        tmp_path / "server",
        target="board.app:app",
        app_dir=REPO / "examples",
        args=args,
    )


@pytest.fixture
def uvicorn_defaults(tmp_path: Path) -> Iterator[AppServer]:
    """The board as the report ran it: uvicorn's defaults (proxy headers trusted from
    127.0.0.1)."""
    with app_servers([start_board(tmp_path)]) as (server,):
        yield server


@pytest.fixture
def as_shipped(tmp_path: Path) -> Iterator[AppServer]:
    """The board as ``make demo`` serves it: ``--no-proxy-headers``."""
    with app_servers([start_board(tmp_path, "--no-proxy-headers")]) as (server,):
        yield server


class Caller:
    """A browser on one of the board's pages: its token and its form's action URL."""

    def __init__(self, server: AppServer, page: str) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.base, timeout=15.0, trust_env=False)
        reply = self.client.get(page, headers={"Accept": "text/html"})
        self.token = TOKEN.findall(reply.text)[0]
        self.url = FORM.findall(reply.text)[-1]

    def call(self, body: dict[str, str], *headers: tuple[str, str]) -> httpx.Response:
        return self.client.post(
            self.url,
            json=body,
            headers=[
                ("Accept", "application/json"),
                ("Origin", self.server.base),
                ("X-CSRF-Token", self.token),
                *headers,
            ],
        )

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def lock_the_author(login: Caller) -> None:
    """Five wrong passwords for the seeded author: the sixth attempt is 429 for 15 minutes."""
    wrong = {"email": AUTHOR, "password": "not the password"}
    assert [login.call(wrong).status_code for _ in range(5)] == [401] * 5
    locked = login.call(wrong)
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 800


def test_uvicorn_defaults_a_made_up_address_does_not_unlock_an_account(
    uvicorn_defaults: AppServer,
) -> None:
    """The report's attack: a locked account (429) answered 401 again with
    ``X-Forwarded-For: 203.0.113.7``. Now that call is refused (400) before anything
    counts it, and the account stays locked for the real address."""
    with Caller(uvicorn_defaults, "/login") as login:
        lock_the_author(login)
        for hop in (MADE_UP, f"{MADE_UP}, 198.51.100.1", "2001:db8::7"):
            forged = login.call(
                {"email": AUTHOR, "password": AUTHOR_PASSWORD}, ("X-Forwarded-For", hop)
            )
            assert (forged.status_code, forged.json()) == (400, FORWARDING_REFUSED), hop
        still = login.call({"email": AUTHOR, "password": AUTHOR_PASSWORD})
        assert still.status_code == 429


def test_uvicorn_defaults_a_made_up_address_does_not_reopen_sign_up(
    uvicorn_defaults: AppServer,
) -> None:
    """The report's attack: a spent sign-up limit (10 an hour) opened again with another
    made-up address. Now refused (400), and the limit still holds."""
    with Caller(uvicorn_defaults, "/signup") as signup:
        junk = {"name": "Bot", "email": "x", "password": "x"}
        assert [signup.call(junk).status_code for _ in range(10)] == [422] * 10
        assert signup.call(junk).status_code == 429
        for n in range(3):
            forged = signup.call(junk, ("X-Forwarded-For", f"203.0.113.{n + 10}"))
            assert (forged.status_code, forged.json()) == (400, FORWARDING_REFUSED)
        assert signup.call(junk).status_code == 429


def test_uvicorn_defaults_other_forwarded_headers_change_nothing(
    uvicorn_defaults: AppServer,
) -> None:
    """``Forwarded``, ``X-Real-IP`` and their kin are read by neither uvicorn nor bastion:
    the locked account stays locked (429), whatever each of them says."""
    with Caller(uvicorn_defaults, "/login") as login:
        lock_the_author(login)
        for name, value in OTHER_HEADERS:
            reply = login.call({"email": AUTHOR, "password": AUTHOR_PASSWORD}, (name, value))
            assert reply.status_code == 429, name


def test_as_shipped_no_forwarded_header_changes_the_address(as_shipped: AppServer) -> None:
    """``make demo``'s command line (``--no-proxy-headers``): every forwarded header, the
    report's included, is ignored; the locked account stays locked (429), never 400."""
    with Caller(as_shipped, "/login") as login:
        lock_the_author(login)
        for name, value in [("X-Forwarded-For", MADE_UP), *OTHER_HEADERS]:
            reply = login.call({"email": AUTHOR, "password": AUTHOR_PASSWORD}, (name, value))
            assert reply.status_code == 429, name


UNTRUSTED_HOST = b'{"ok":false,"error":{"code":"untrusted_host","message":"Invalid host header"}}'


@pytest.mark.parametrize(
    ("path", "redirect", "refusal"),
    [
        ("/login/", "/login", b"Invalid host header"),
        ("/static", "/static/", b"Invalid host header"),
        ("/_actions", None, UNTRUSTED_HOST),
    ],
)
def test_no_redirect_names_a_forged_host(
    uvicorn_defaults: AppServer, path: str, redirect: str | None, refusal: bytes
) -> None:
    """The report's attack (finding 8): ``GET /login/`` with ``Host: evil.example`` got
    ``307 Location: http://evil.example/login``; ``/static`` likewise. Now a foreign Host
    is refused (400) before any route runs; the served host still gets its redirect."""
    with httpx.Client(base_url=uvicorn_defaults.base, timeout=10.0, trust_env=False) as browser:
        forged = browser.get(path, headers={"Host": "evil.example", "Accept": "text/html"})
        served = browser.get(path, headers={"Accept": "text/html"})
    assert (forged.status_code, forged.content) == (400, refusal)
    assert "location" not in forged.headers
    if redirect is not None:
        assert (served.status_code, served.headers["location"]) == (
            307,
            uvicorn_defaults.base + redirect,
        )
