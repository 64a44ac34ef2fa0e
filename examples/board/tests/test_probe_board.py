"""``bastion probe`` against the real board under uvicorn, signed in as the author and as
the admin (``--login``, the seeded accounts' known passwords): every case passes, and the
report names which of the board's actions (its ``bastion schema``) the crawl reached.

The board is served at ``localhost`` (so that its passkeys are on and their begin and
finish actions, named in ``data-*`` attributes, are there to find).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

from services import free_port

from .databases import sqlite_url
from .inprocess import EXAMPLES
from .served import ADMIN, ADMIN_PASSWORD, AUTHOR, AUTHOR_PASSWORD, BoardServer

KEY: Final = "board-probe-key-0123456789-abcdefghijklmnopqrstuvwxyz"

NOT_REACHABLE: Final = {
    "reauthenticate": "its page, /reauth, is linked from nowhere: a step-up refusal sends there",
    "revoke_api_token": "its form is shown only for an API token, and the probe makes none",
    "delete_passkey": "its form is shown only for a registered passkey (a browser's WebAuthn)",
    "totp_confirm": "its form follows totp_begin, which the probe never runs",
    "totp_disable": "its form is shown only once TOTP is on",
    "login_totp": "the second step of a log-in, for an account with TOTP only",
}
"""The board's actions no crawl can reach without running other actions first."""


def test_the_probe_reaches_the_board_as_author_and_admin(tmp_path: Path) -> None:
    port = free_port()
    origin = f"http://localhost:{port}"
    env = {"BASTION_SECRET_KEY": KEY, "BASTION_ALLOWED_ORIGINS": origin}
    server = BoardServer(tmp_path, sqlite_url(tmp_path / "board.sqlite3"), port=port, env=env)
    server.base = origin  # its host guard answers 400 to any other Host
    try:
        server.wait_ready()
        schema = tmp_path / "schema.json"
        made = subprocess.run(
            [sys.executable, "-m", "bastion.cli", "schema", "board.app:bastion", "--out", schema],
            cwd=EXAMPLES,
            env={**_clean_env(), **env, "BOARD_DATA_DIR": str(tmp_path / "schema-data")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bastion.cli",
                "probe",
                origin + "/",
                "--login",
                origin + "/login",
                "--expect",
                str(schema),
                "--format",
                "json",
                "--as",
                "author",
                "--user",
                AUTHOR,
                "--password-env",
                "PROBE_AUTHOR",
                "--as",
                "admin",
                "--user",
                ADMIN,
                "--password-env",
                "PROBE_ADMIN",
                "--timeout",
                "60",
            ],
            env={**_clean_env(), "PROBE_AUTHOR": AUTHOR_PASSWORD, "PROBE_ADMIN": ADMIN_PASSWORD},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["fail"] == 0
    names = {
        path: op["post"]["operationId"]
        for path, op in json.loads(schema.read_text())["paths"].items()
    }
    assert len(names) == 25
    seen = {i["name"]: i for i in report["identities"]}
    assert [(n, seen[n]["signed_in"]) for n in seen] == [
        ("anonymous", False),
        ("author", True),
        ("admin", True),
    ]
    by_label = {f["label"]: names[_path(f["action"])] for f in report["forms"]}
    reached = {n: {by_label[label] for label in seen[n]["forms"]} for n in seen}
    assert reached["anonymous"] == {
        "login",
        "signup",
        "report_problem",
        "begin_passkey_sign_in",
        "finish_passkey_sign_in",
    }
    assert {"change_role", "end_member_sessions"} <= reached["admin"]
    assert not {"change_role", "end_member_sessions"} & reached["author"]
    assert reached["author"] < reached["admin"] | {"report_problem"}
    assert {names[p] for p in report["not_reached"]} == set(NOT_REACHABLE)
    assert set(names.values()) == set().union(*reached.values()) | set(NOT_REACHABLE)
    # Signed in, the forged calls were refused by the token check, not by a policy.
    for r in report["results"]:
        if r["case"].startswith("csrf:") and r["status"] == "PASS":
            assert r["got"] in ("403 csrf_failed", "403 no_session"), r
    assert any(r["case"].startswith("cross: author") for r in report["results"])
    assert report["summary"]["requests"] <= 5000


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BASTION_", "BOARD_")) and k != "DATABASE_URL"
    }
