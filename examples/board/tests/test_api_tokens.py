"""API tokens on the board, end to end: the author makes one on her profile, as a browser
without JavaScript does, and ``examples/board/api_script.py`` (httpx, no browser, no
cookie, no CSRF token) lists and publishes posts with it against the board under
uvicorn; once she revokes it on the same page, the script is refused (401) and nothing
more is written. On SQLite and PostgreSQL (the ``served`` fixture)."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

from .served import AUTHOR, AUTHOR_PASSWORD, Browser, Served, notice

SCRIPT = Path(__file__).resolve().parents[1] / "api_script.py"
SECRET = re.compile(r"bst_[A-Za-z0-9_-]{43}")


def script(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--token", token, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_script_lists_and_publishes_with_a_token_until_it_is_revoked(served: Served) -> None:
    board, rows = served.server, served.rows
    with Browser(board) as ada:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        ada.open("/me")
        create = ada.form(button="Create token", within="tokens")
        assert sorted(create.fields) == ["days", "name", "scopes", "scopes"]  # two boxes
        page = ada.submit(
            create,
            "/me#tokens",
            name="release notes bot",
            scopes=["posts:read", "posts:write"],  # type: ignore[arg-type] - two checkboxes
            days="7",
        )
        assert "Token “release notes bot” created. Copy it now: it is not shown again." in page
        [secret] = set(SECRET.findall(page))
        # Shown once: the next view of the page lists the token, never its secret.
        again = ada.open("/me")
        assert SECRET.search(again) is None
        assert "release notes bot" in again
        assert "never used" in again
        urls = dict(re.findall(r"--(list|create)-url (\S+)", html.unescape(again)))

        listed = script("--list-url", urls["list"], "list", token=secret)
        assert listed.returncode == 0, listed.stderr
        assert "Friday's release  (Ada)" in listed.stdout

        made = script(
            "--create-url", urls["create"], "create", "From a script", "Hi.", token=secret
        )
        assert made.returncode == 0, made.stderr
        assert rows("SELECT count(*) FROM posts WHERE title = %s", "From a script") == [(1,)]
        assert "last used" in ada.open("/me")

        revoke = ada.form(button="Revoke", within="tokens")
        page = ada.submit(revoke, "/me#tokens")
        assert notice("Token revoked. Scripts using it are refused from now on.") in page
        assert "release notes bot" not in page

    refused = script("--create-url", urls["create"], "create", "After", "No.", token=secret)
    assert refused.returncode == 1
    assert refused.stderr.startswith("refused: invalid_token: ")
    refused_list = script("--list-url", urls["list"], "list", token=secret)
    assert refused_list.returncode == 1
    assert rows("SELECT count(*) FROM posts WHERE title = %s", "After") == [(0,)]
