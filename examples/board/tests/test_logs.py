"""The board's log under uvicorn, as ``make demo`` prints it: the access line of an
action call names the action (``bastion.logging.ActionNameFilter``), and a refusal is one
``bastion.security`` line with its action, stage, code and client."""

from __future__ import annotations

import re
from pathlib import Path

from .databases import sqlite_url
from .served import AUTHOR, AUTHOR_PASSWORD, Browser, serve


def test_the_access_line_names_the_action_and_a_refusal_is_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "data" / "board.sqlite3")
    with serve(tmp_path, url) as board:
        with Browser(board) as browser:
            browser.open("/login")
            form = browser.form(button="Sign in")
            form.hidden.pop("_csrf")
            refused = browser.post(form, email=AUTHOR, password=AUTHOR_PASSWORD)
            assert refused.headers["location"] == "/login"  # back, with the flash
            browser.sign_in(AUTHOR, AUTHOR_PASSWORD)  # accepted: 303 to /
        login_id = form.action.rsplit("/", 1)[1]
    log = board.log()
    access = [line for line in log.splitlines() if f"POST /_actions/{login_id}" in line]
    assert len(access) == 2, log
    for line in access:  # the refused call, then the accepted one: both 303s
        assert re.fullmatch(
            rf'INFO: +127\.0\.0\.1:\d+ - "POST /_actions/{login_id} \[action login\]'
            r' HTTP/1\.1" 303 See Other',
            line,
        ), line
    security = [line for line in log.splitlines() if "bastion.security:" in line]
    assert security == [
        "WARNING:  bastion.security: refused login: CSRF token missing"
        " action=login stage=CSRF token code=csrf_failed client=127.0.0.1 digest=None"
    ], log
    print(access[1])
    print(security[0])
