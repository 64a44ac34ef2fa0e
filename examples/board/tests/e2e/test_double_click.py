"""A double-clicked "Publish" in Chromium publishes once (``create_post`` is declared
``idempotent=True``: every rendered form carries its own sealed ``_idem`` key).

The failure mode: a slow page, an impatient author, two clicks. Each click is a POST of
the same form; without the key, two posts with the same title. With bastion.js the page
guards itself (the form is ``aria-busy`` and its button disabled while the first call is
out), so a double click sends one POST and proves nothing about the server. Before that
script has loaded, or where it is blocked, the browser sends the form itself, and nothing
on the page stops a second click: the tests block bastion.js.

Chromium cancels a form navigation when another one starts; a second submission 5 ms
after the first cancels the first before its request has left (the server then sees
one POST). So the second click is made once the first call has reached the server: it
holds the key in the session store. Both POSTs are counted twice over: as the browser
sent them (``page.on("request")``) and as bastion answered them (its audit log, which
also has the call whose connection the browser dropped; uvicorn's access log does not).

When the second POST arrives after the first has published, it gets the first one's
reply. When it arrives while the first still runs, it waits for that reply
(``idempotency.FORM_WAIT``) and answers with it: the second test.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Error, Page, Request, Route, expect
from services import wait_for

from ..databases import sqlite_rows
from .conftest import Board

ARRIVED = 5.0
"""Seconds the first call has to reach the server and get as far as the test waits."""
ARRIVED_PATH = "/test/first-call-arrived"
"""Answered by the test, not the board: 200 once the first call is as far as wanted."""


def _data(board: Board) -> Path:
    return board.server.log_path.parent / "data"


def _claims(board: Board) -> dict[str, str]:
    """The idempotency keys in the board's session store, and the state of each:
    ``running`` while the first call with it runs, ``done`` once its reply is kept.
    (bastion's store, read from outside: what ``idempotency.claim`` writes.)"""
    path = _data(board) / "bastion.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as store:
        found = store.execute("SELECT key, value FROM bastion_kv WHERE key LIKE 'idem:%'")
        return {key: json.loads(value)["state"] for key, value in found}


def _posts_titled(board: Board, title: str) -> int:
    rows = sqlite_rows(_data(board) / "board.sqlite3")
    return int(rows("SELECT count(*) FROM posts WHERE title = %s", title)[0][0])


def _calls(board: Board, action: str) -> list[int]:
    """The statuses bastion answered calls of ``action`` with, from its audit log."""
    pattern = rf'bastion\.audit: \{{.*"action":"{action}".*"status":([0-9]{{3}})'
    return [int(status) for status in re.findall(pattern, board.server.log())]


def _durations(board: Board, action: str) -> list[float]:
    """How long (ms) bastion took over each call of ``action``, from its audit log."""
    pattern = rf'bastion\.audit: \{{.*"action":"{action}".*"duration_ms":([0-9.]+)'
    return [float(ms) for ms in re.findall(pattern, board.server.log())]


@contextmanager
def _author_composing(browser: Browser, board: Board, title: str) -> Iterator[Page]:
    """Ada signed in through the login page, JavaScript on and bastion.js blocked, with
    the new-post form filled in."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("**/bastion.js", lambda route: route.abort())
        page.goto(board.url + "/login")
        page.get_by_label("Email").fill(Board.AUTHOR)
        page.get_by_label("Password").fill(board.author_password)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(board.url + "/")
        assert page.evaluate("typeof window.bastion") == "undefined"
        compose = page.locator("#compose")
        compose.get_by_label("Title").fill(title)
        compose.get_by_label("Post").fill("Clicked twice.")
        yield page
    finally:
        context.close()


def _click_twice(page: Page, board: Board, state: str) -> list[Request]:
    """Submit the new-post form, and again from the same page once the first call holds
    its key in ``state``; the POSTs the browser sent."""
    known = set(_claims(board))

    def first_call_is(wanted: str) -> bool:
        new = [s for key, s in _claims(board).items() if key not in known]
        return new == [wanted]

    def arrived(route: Route) -> None:
        route.fulfill(status=200 if first_call_is(state) else 404)

    # Asked by the page (Playwright evaluates nothing in a page whose form navigation is
    # pending): from this page, not from the board the first call's 303 leads to.
    page.route(board.url + ARRIVED_PATH, arrived)
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)
    page.evaluate(
        """(path) => {
            const form = document.querySelector('#compose form');
            form.requestSubmit();
            const ask = () => fetch(path).then((reply) => {
                if (reply.ok) form.requestSubmit(); else setTimeout(ask, 2);
            });
            ask();
        }""",
        ARRIVED_PATH,
    )
    deadline = time.monotonic() + ARRIVED
    while len(sent) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(10)  # Playwright's events arrive while it waits
    return sent


def test_a_double_clicked_publish_makes_one_post_and_lands_on_the_board(
    browser: Browser, board: Board
) -> None:
    """The attack or accident: the same new-post form posted twice from one page, the
    second POST reaching the server after the first published. One post; the second
    click gets the first one's reply (303 to the board) and its message, no error."""
    title = f"Stand-up {secrets.token_hex(4)}"
    before = _calls(board, "create_post")
    with _author_composing(browser, board, title) as page:
        action = page.locator("#compose form").get_attribute("action")
        assert action is not None

        # Unheld, the board the first call's 303 leads to could replace the page before
        # the second click: it waits until the second POST is out.
        held: list[Route] = []
        page.route(board.url + "/", lambda route: held.append(route))
        sent = _click_twice(page, board, "done")
        page.unroute(board.url + "/")
        for route in held:
            with contextlib.suppress(Error):  # the first one: the second click cancelled it
                route.continue_()

        assert [(r.method, r.url) for r in sent] == [("POST", board.url + action)] * 2
        assert sent[0].post_data == sent[1].post_data  # one form, one key, sent twice
        assert "_idem=" in (sent[0].post_data or "")
        expect(page).to_have_url(board.url + "/")
        expect(page.locator("main > .notice")).to_have_text(f"Published “{title}”.")
        expect(page.locator("main > .notice.error")).to_have_count(0)
        expect(page.get_by_role("heading", name=title, exact=True)).to_have_count(1)
    assert wait_for(lambda: len(_calls(board, "create_post")) == len(before) + 2, ARRIVED)
    assert _calls(board, "create_post")[len(before) :] == [303, 303]
    assert _posts_titled(board, title) == 1


HELD = 0.5
"""Seconds the test keeps the database locked once the second POST has left: time for it
to reach the server and find the first call's key still held."""


def test_a_second_click_while_the_first_saves_waits_and_lands_on_the_board(
    browser: Browser, board: Board
) -> None:
    """The same double click, the second POST reaching the server while the first still
    waits for the database (the test holds its write lock). One post, and the author
    lands on the board with its message, not an error: the second call waits for the
    first one's reply and answers with it (a page rendered again would have a new key,
    and publishing from it would be a second post)."""
    title = f"Retro {secrets.token_hex(4)}"
    before = _calls(board, "create_post")
    with _author_composing(browser, board, title) as page:
        database = sqlite3.connect(_data(board) / "board.sqlite3", isolation_level=None)
        try:
            database.execute("BEGIN IMMEDIATE")  # create_post waits for it (busy timeout)
            sent = _click_twice(page, board, "running")
            page.wait_for_timeout(HELD * 1000)
        finally:
            database.execute("ROLLBACK")
            database.close()
        assert len(sent) == 2
        assert sent[0].post_data == sent[1].post_data  # one form, one key, sent twice
        page.wait_for_url(board.url + "/")
        expect(page.locator("main > .notice")).to_have_text(f"Published “{title}”.")
        expect(page.locator("main > .notice.error")).to_have_count(0)
        expect(page.get_by_role("heading", name=title, exact=True)).to_have_count(1)
    assert wait_for(lambda: len(_calls(board, "create_post")) == len(before) + 2, ARRIVED)
    assert _calls(board, "create_post")[len(before) :] == [303, 303]
    assert _posts_titled(board, title) == 1
    # The second call was held until the first had its reply: it waited, it did not run.
    assert min(_durations(board, "create_post")[len(before) :]) >= HELD / 2 * 1000
