"""``bastion probe`` against the real board under uvicorn, signed in as the author and as
the admin (``--login``, the seeded accounts' known passwords), with the board's own
``bastion schema`` (``--schema``, made with the served board's key: action URLs are an
HMAC of it): every case passes, and every action of the board's registry is reached for
each identity — found on a page, or probed from the schema as a script calls it (its
control past the guards, or refused by the policy of an action not for that identity).

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

FROM_SCHEMA_ONLY: Final = {
    "revoke_api_token": "its form is shown only for an API token, and the probe makes none",
    "delete_passkey": "its form is shown only for a registered passkey (a browser's WebAuthn)",
    "totp_confirm": "its form follows totp_begin, which the probe never runs",
    "totp_disable": "its form is shown only once TOTP is on",
    "login_totp": "the second step of a log-in, for an account with TOTP only",
}
"""The board's actions on no page a signed-in crawl reaches without running other actions
first: the schema names them. (``reauthenticate`` is on /reauth, linked from nowhere:
``--start /reauth``.)"""


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
                "--schema",
                str(schema),
                "--start",
                "/reauth",
                "--max-wait",
                "10",
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
                "80",
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
    registry = set(_registry(tmp_path / "registry-data"))
    assert set(names.values()) == registry
    assert len(registry) == 25
    seen = {i["name"]: i for i in report["identities"]}
    assert [(n, seen[n]["signed_in"]) for n in seen] == [
        ("anonymous", False),
        ("author", True),
        ("admin", True),
    ]
    by_label = {f["label"]: names[_path(f["action"])] for f in report["forms"]}
    reached = {n: {names[p] for p in seen[n]["reached"]} for n in seen}
    from_schema = {n: {by_label[label] for label in seen[n]["from_schema"]} for n in seen}
    on_pages = {n: {by_label[label] for label in seen[n]["forms"]} - from_schema[n] for n in seen}
    for n in seen:
        print(
            f"{n}: {len(on_pages[n])} found on pages, {len(from_schema[n])} from the schema,"
            f" reached {len(reached[n])} of {len(registry)},"
            f" not reached {sorted(names[p] for p in seen[n]['not_reached'])}"
        )
    print(
        f"{report['summary']['rate_limited']} cases skipped for 429,"
        f" waited {report['summary']['waited']} s, {report['summary']['requests']} requests"
    )
    # Every action of the registry, for the author and for the admin (and anonymous too).
    assert reached["author"] == registry
    assert reached["admin"] == registry
    assert reached["anonymous"] == registry
    assert report["not_reached"] == []
    assert on_pages["anonymous"] == {
        "login",
        "signup",
        "report_problem",
        "begin_passkey_sign_in",
        "finish_passkey_sign_in",
    }
    assert {"change_role", "end_member_sessions", "reauthenticate"} <= on_pages["admin"]
    assert not {"change_role", "end_member_sessions"} & on_pages["author"]
    assert set(FROM_SCHEMA_ONLY) <= from_schema["author"] & from_schema["admin"]
    assert seen["author"]["reached"][_key(names, "login")] == "signed in through it"
    # The author reaches the admin's actions only to be refused by their policy.
    for action in ("change_role", "end_member_sessions"):
        how = seen["author"]["reached"][_key(names, action)]
        assert how.startswith("refused by policy (403"), (action, how)
    for action in FROM_SCHEMA_ONLY:
        for who in ("author", "admin"):
            how = seen[who]["reached"][_key(names, action)]
            assert how.startswith(("past the guards (", "refused by policy")), (who, action, how)
    # A policy refusal is never a CSRF pass: signed in, the forged calls that passed were
    # refused by the origin or token check; anonymous, so were they.
    for r in report["results"]:
        if r["case"].startswith(("csrf:", "origin:")) and r["status"] == "PASS":
            assert (
                r["got"].split(" (")[0]
                in (
                    "403 csrf_failed",
                    "403 no_session",
                    "403 cross_origin",
                )
                or "the control got" in r["got"]
            ), r
    assert any(r["case"].startswith("cross: author") for r in report["results"])
    assert report["summary"]["requests"] <= 5000


def _key(names: dict[str, str], action: str) -> str:
    return next(path for path, name in names.items() if name == action)


def _registry(data: Path) -> list[str]:
    """The names of the board's registered actions, read in a process of its own (the
    board reads its settings at import)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from board.app import bastion;"
            " print(json.dumps(sorted(spec.name for spec in bastion.registry)))",
        ],
        cwd=EXAMPLES,
        env={
            **_clean_env(),
            "BASTION_SECRET_KEY": KEY,
            "BASTION_ALLOWED_ORIGINS": "http://localhost",
            "BOARD_DATA_DIR": str(data),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout))


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BASTION_", "BOARD_")) and k != "DATABASE_URL"
    }
