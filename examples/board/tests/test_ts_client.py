"""The TypeScript client, end to end: ``bastion client --ts`` writes it from the board's own
schema, ``tsc --strict`` compiles it with ``examples/ts/caller.ts`` and
``examples/ts/board_demo.ts``, and the demo runs under plain ``node`` against the board
under uvicorn: a wrong password refused, the author signed in, the pre-log-in token
refused, a post created once for two calls with one idempotency key, and the post in
the board's database.

TypeScript and Node as in tests/test_tsclient.py: skipped without them, failed in CI."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tsclient import TSC_FLAGS, tool

from .databases import sqlite_rows, sqlite_url
from .inprocess import EXAMPLES
from .served import AUTHOR, AUTHOR_PASSWORD, BoardServer

TS = EXAMPLES / "ts"
BASTION = Path(sys.executable).with_name("bastion")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[tuple[BoardServer, Path, str]]:
    """The board under uvicorn on SQLite, with a key the test knows: the client's action
    paths are made with it, as ``make demo``'s .bastion-secret keeps them."""
    key = secrets.token_urlsafe(48)
    database = tmp_path / "data" / "board.sqlite3"
    server = BoardServer(tmp_path, sqlite_url(database), env={"BASTION_SECRET_KEY": key})
    try:
        server.wait_ready()
        yield server, database, key
    finally:
        server.stop()


def generate(out: Path, base: str, key: str, data: Path) -> None:
    """``bastion client --ts`` from examples/, as a user runs it beside ``make demo``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "BOARD_"))}
    env.update(BASTION_SECRET_KEY=key, BASTION_ALLOWED_ORIGINS=base, BOARD_DATA_DIR=str(data))
    done = subprocess.run(
        [str(BASTION), "client", "--ts", str(out), "board.app:bastion"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_generated_client_signs_in_and_posts_from_node(
    board: tuple[BoardServer, Path, str], tmp_path: Path
) -> None:
    server, database, key = board
    out = tmp_path / "client"
    generate(out, server.base, key, tmp_path / "generate-data")
    assert sorted(p.name for p in out.iterdir()) == ["bastion-client.ts"]
    for name in ("caller.ts", "board_demo.ts"):
        shutil.copy(TS / name, out / name)

    # The demo uses Node's fetch and Response: the DOM library's types describe them.
    files = ["bastion-client.ts", "caller.ts", "board_demo.ts"]
    compiled = subprocess.run(
        [
            tool("tsc"),
            *TSC_FLAGS,
            "--lib",
            "es2022,dom",
            "--pretty",
            "false",
            "--outDir",
            "js",
            *files,
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    title = "From Node, typed"
    run = subprocess.run(
        [tool("node"), "js/board_demo.js", server.base, AUTHOR, AUTHOR_PASSWORD, title],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(run.stdout)  # the demo's line, quoted in the guide
    assert run.returncode == 0, run.stdout + run.stderr + server.log()
    summary = json.loads(run.stdout)
    rows = sqlite_rows(database)(
        "SELECT posts.id, accounts.email FROM posts JOIN accounts"
        " ON accounts.id = posts.author_id WHERE posts.title = %s",
        title,
    )
    assert rows == [(summary["post"]["id"], AUTHOR)]
    assert summary == {
        "wrong_password": "login_failed",
        "signed_in": "Ada",
        "old_token": "csrf_failed",
        "post": {"id": rows[0][0], "title": title, "message": f"Published “{title}”."},
        "repeat_same_id": True,
    }
