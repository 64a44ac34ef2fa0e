"""Step-up re-authentication in Chromium, with JavaScript on and off: a member whose
log-in is older than ten minutes (a session left open on a shared computer) asks to
change the password; the board sends them to "Confirm it is you" (with JavaScript,
bastion.js follows the 401's ``page``; without, the plain form's 303 does), they type the
password, land back on their profile, and the same change then goes through.

The log-in is made old in the session store itself (the board's SQLite file), as eleven
minutes of waiting would."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import Board

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new password, long enough"
MODES = [pytest.param(True, id="js"), pytest.param(False, id="no-js")]


def age_logins(board: Board, seconds: float) -> int:
    """Every session's log-in made ``seconds`` older; how many sessions that was."""
    directory = board.server.log_path.parent
    [path] = directory.rglob("bastion.sqlite3")
    with sqlite3.connect(path) as db:
        changed = db.execute(
            "UPDATE bastion_kv SET value = CAST(json_set(CAST(value AS TEXT), '$.auth', "
            "json_extract(CAST(value AS TEXT), '$.auth') - ?) AS BLOB) "
            "WHERE key LIKE 'session:%' AND json_extract(CAST(value AS TEXT), '$.auth') "
            "IS NOT NULL",
            (seconds,),
        ).rowcount
    return int(changed)


def sign_up_and_in(page: Page, board: Board) -> str:
    email = f"sam-{secrets.token_hex(4)}@board.example"
    page.goto(board.url + "/signup")
    page.fill("#signup-name", "Sam")
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/login**")
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(board.url + "/")
    return email


@pytest.mark.parametrize("javascript", MODES)
def test_an_old_log_in_confirms_the_password_then_changes_it(
    browser: Browser, board: Board, javascript: bool
) -> None:
    context = browser.new_context(java_script_enabled=javascript)
    try:
        page = context.new_page()
        sign_up_and_in(page, board)
        page.goto(board.url + "/me")
        assert age_logins(board, 11 * 60) >= 1

        page.fill("#me-password", NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        page.wait_for_url(board.url + "/reauth?next=%2Fme")
        expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()

        started = time.time()
        page.fill("#reauth-password", PASSWORD)
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_url(board.url + "/me**")
        assert time.time() - started < 30

        page.fill("#me-password", NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_text("Your password is changed.")).to_be_visible()
    finally:
        context.close()
    assert Path(board.server.log_path).exists()
