"""The demo board (examples/board), in process: who may call which action, seeding, the
export, sign-up and log-in, sealed post IDs, plain forms, htmx, and the pages.

The board runs on SQLite here. The tests of what its database code does (seeding;
writing an account, a post or a role and reading it back; a post gone from under its
forms; the profile's query) run on PostgreSQL too (``on_both_databases``), in a schema of
the module's own that is dropped afterwards. The policy matrix reuses one session per
kind of caller.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from bastion.testing import ActionClient

from .inprocess import (
    ADMIN_PASSWORD,
    AUTHOR_PASSWORD,
    PASSWORD,
    Board,
    Person,
    delete_form,
    edit_form,
    element,
    hidden,
    html,
    invalid,
    new_email,
    on_both_databases,
    password_hash,
    sign_in,
)

DIGEST = re.compile(r"[0-9a-f]{16}")
ACTIONS = (
    "signup",
    "login",
    "logout",
    "reauthenticate",
    "change_password",
    "sign_out_everywhere",
    "export_my_data",
    "change_role",
    "end_member_sessions",
    "create_post",
    "edit_post",
    "delete_post",
    "report_problem",
    "create_api_token",
    "revoke_api_token",
    "list_posts",
    "begin_passkey_registration",
    "finish_passkey_registration",
    "delete_passkey",
    "begin_passkey_sign_in",
    "finish_passkey_sign_in",
    "totp_begin",
    "totp_confirm",
    "totp_disable",
    "login_totp",
)
REFUSED = {
    401: {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}},
    403: {
        "ok": False,
        "error": {"code": "forbidden", "message": "You are not allowed to do that."},
    },
}
NOT_YOURS = {
    "ok": False,
    "error": {
        "code": "forbidden",
        "message": "Only its author or an admin can change this post.",
    },
}
BOUND_INVALID = {
    "ok": False,
    "error": {
        "code": "bound_invalid",
        "message": "This form is no longer valid. Reload the page and try again.",
    },
}


# --- seeding and settings ---------------------------------------------------------------------


@on_both_databases
def test_first_start_seeds_an_admin_and_an_author(board: Board) -> None:
    """The two accounts exist once (a second start adds nothing), with their roles, an
    argon2id hash and not the password, and a post each; the passwords from the
    environment sign them in."""
    Account = board.db_module.Account
    board.app_module.prepare()
    seeded = {"admin@board.example": ADMIN_PASSWORD, "author@board.example": AUTHOR_PASSWORD}
    with board.core.db.session() as session:
        rows = list(session.scalars(select(Account).where(Account.email.in_(seeded))))
        assert sorted((a.email, a.role, len(a.posts)) for a in rows) == [
            ("admin@board.example", "admin", 1),
            ("author@board.example", "author", 1),
        ]
        for account in rows:
            assert account.password_hash.startswith("$argon2id$")
            assert seeded[account.email] not in account.password_hash
    for email, password in seeded.items():
        with board.client() as client:
            assert client.call("login", {"email": email, "password": password}).status_code == 200


def test_a_generated_password_is_printed_once(
    board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without BOARD_*_PASSWORD the first start makes each password, logs it once and keeps
    only its hash, in a file only its owner reads; the next start logs nothing."""
    fresh = board.db_module.Database(URL.create("sqlite", database=str(tmp_path / "fresh.db")))
    seeds = tuple(
        board.db_module.SeedAccount(seed.email, seed.name, seed.role, None, seed.posts)
        for seed in board.app_module.SEEDS
    )
    monkeypatch.setattr(board.app_module, "db", fresh)
    monkeypatch.setattr(board.app_module, "SEEDS", seeds)
    try:
        with caplog.at_level(logging.INFO, logger="board"):
            board.app_module.prepare()
            first = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            caplog.clear()
            board.app_module.prepare()
            second = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    finally:
        fresh.dispose()
    line = re.compile(r"created (\S+@board\.example) with the password (\S+)")
    printed = {m.group(1): m.group(2) for m in map(line.fullmatch, first) if m is not None}
    assert len(printed) == len(first) == 2
    assert sorted(printed) == ["admin@board.example", "author@board.example"]
    assert all(len(password) >= 20 for password in printed.values())
    assert second == []
    assert (tmp_path / "fresh.db").stat().st_mode & 0o777 == 0o600


def test_database_url_from_the_environment(board: Board, tmp_path: Path) -> None:
    """postgresql:// (and postgres://) mean psycopg 3; no DATABASE_URL means a SQLite file
    in BOARD_DATA_DIR; sessions go to BASTION_DATA_DIR, else the same directory."""
    settings = importlib.import_module("board.settings")
    url = settings.database_url
    assert url("postgresql://app@db:5432/board", tmp_path).drivername == "postgresql+psycopg"
    assert url("postgres://app@db/board", tmp_path).drivername == "postgresql+psycopg"
    assert url("postgresql+psycopg://app@db/board", tmp_path).drivername == "postgresql+psycopg"
    assert url(None, tmp_path).render_as_string() == f"sqlite:///{tmp_path}/board.sqlite3"
    read = settings.Settings.from_env({"BOARD_DATA_DIR": str(tmp_path)})
    assert (read.data_dir, read.sessions_dir) == (tmp_path, tmp_path)
    assert (read.admin_password, read.author_password) == (None, None)
    both = settings.Settings.from_env({"BASTION_DATA_DIR": "/srv/sessions"})
    assert (both.data_dir, both.sessions_dir) == (Path("data"), Path("/srv/sessions"))
    assert read.served_by is None
    assert settings.Settings.from_env({"BOARD_SERVED_BY": "worker-2"}).served_by == "worker-2"
    hidden_password = settings.Settings.from_env(
        {"DATABASE_URL": "postgresql://app:hunter2-secret@db/board"}
    )
    assert "hunter2-secret" not in repr(hidden_password)


def test_a_short_seed_password_stops_the_start(board: Board) -> None:
    """The seeded accounts follow the sign-up rule: 12 characters at least."""
    settings = importlib.import_module("board.settings")
    with pytest.raises(ValueError, match="BOARD_ADMIN_PASSWORD must be at least 12 characters"):
        settings.Settings.from_env({"BOARD_ADMIN_PASSWORD": "short"})


def test_every_action_passes_bastion_audit(board: Board) -> None:
    """The inventory /security shows: every action with a rate limit, no violation."""
    from bastion.actions.audit import inventory

    reports = inventory(board.bastion)
    assert [r.name for r in reports] == list(ACTIONS)
    assert [r.violations for r in reports] == [[]] * len(ACTIONS)
    assert {r.name: r.rate for r in reports} == {
        "signup": "10/hour",
        "login": "20/minute",
        "logout": "30/minute",
        "reauthenticate": "20/minute",
        "change_password": "6/minute",
        "sign_out_everywhere": "6/minute",
        "export_my_data": "6/minute",
        "change_role": "30/minute",
        "end_member_sessions": "30/minute",
        "create_post": "10/minute",
        "edit_post": "30/minute",
        "delete_post": "30/minute",
        "report_problem": "5/minute",
        "create_api_token": "6/minute",
        "revoke_api_token": "30/minute",
        "list_posts": "60/minute",
        "begin_passkey_registration": "10/minute",
        "finish_passkey_registration": "10/minute",
        "delete_passkey": "30/minute",
        "begin_passkey_sign_in": "20/minute",
        "finish_passkey_sign_in": "20/minute",
        "totp_begin": "6/minute",
        "totp_confirm": "10/minute",
        "totp_disable": "6/minute",
        "login_totp": "10/minute",
    }
    assert {r.name: r.bound_arguments for r in reports if r.bound_arguments} == {
        "change_role": ["account_id"],
        "end_member_sessions": ["account_id"],
        "edit_post": ["post_id", "version"],
        "delete_post": ["post_id", "version"],
        "delete_passkey": ["passkey_id"],
    }


# --- who may call what ------------------------------------------------------------------------

CALLERS = ("anonymous", "reader", "owner", "other author", "admin")
ROLE = {"reader": "reader", "owner": "author", "other author": "author", "admin": "admin"}
STATUS: dict[str, tuple[int, int, int, int, int]] = {
    # action            anonymous reader owner other admin
    "signup": (200, 200, 200, 200, 200),
    "login": (200, 200, 200, 200, 200),
    "logout": (401, 200, 200, 200, 200),
    "reauthenticate": (401, 200, 200, 200, 200),
    "change_password": (401, 200, 200, 200, 200),
    "sign_out_everywhere": (401, 200, 200, 200, 200),
    "export_my_data": (401, 200, 200, 200, 200),
    "change_role": (401, 403, 403, 403, 200),
    "end_member_sessions": (401, 403, 403, 403, 200),
    "create_post": (401, 403, 200, 200, 200),
    "edit_post": (401, 403, 200, 403, 200),
    "delete_post": (401, 403, 200, 403, 200),
    "report_problem": (500, 500, 500, 500, 500),
}
CASES = [
    pytest.param(
        action, caller, statuses[i], id=f"{action}-{caller.replace(' ', '-')}-{statuses[i]}"
    )
    for action, statuses in STATUS.items()
    for i, caller in enumerate(CALLERS)
]


@pytest.mark.parametrize(("action", "caller", "status"), CASES)
def test_policy_matrix(board: Board, action: str, caller: str, status: int) -> None:
    """Each action, for each kind of caller, with exact statuses and refusals. The post
    edited or deleted belongs to "owner"; its ID is sealed but tied to no session (as if
    it had leaked), so that only the handler's owner-or-admin check decides. A refused
    change changes nothing."""
    owner = board.member("owner", "author")
    post_id = board.post(owner, "The owner's post")
    target = board.account("author", "Target")
    person = None
    if caller != "anonymous":
        person = owner if caller == "owner" else board.member(caller, ROLE[caller])
    # These end the session they are called in: they sign in afresh.
    ending = ("login", "logout", "reauthenticate", "change_password", "sign_out_everywhere")
    with board.browser(person, reuse=action not in ending) as client:
        newcomer = board.account("author", "Newcomer")
        data: dict[str, Any] = {
            "signup": {
                "name": "Sam",
                "email": f"sam-{secrets.token_hex(4)}@board.example",
                "password": PASSWORD,
            },
            "login": {"email": newcomer.email, "password": newcomer.password},
            "reauthenticate": {"password": PASSWORD},
            "change_password": {"password": PASSWORD},  # the same: later sign-ins work
            "change_role": {
                "role": "reader",
                "_bound": board.sealed("change_role", {"account_id": target.id}),
            },
            "end_member_sessions": {
                "_bound": board.sealed("end_member_sessions", {"account_id": target.id}),
            },
            "create_post": {"title": "Matrix", "body": "A post from the matrix."},
            "edit_post": {
                "title": "Edited",
                "body": "Edited body.",
                "_bound": board.sealed("edit_post", board.ref(post_id)),
            },
            "delete_post": {"_bound": board.sealed("delete_post", board.ref(post_id))},
            "report_problem": {"summary": "It broke."},
        }.get(action, {})
        reply = client.call(action, data)
    if action in ("sign_out_everywhere", "change_password") and person is not None:
        board.forget_sessions(person)  # its other browsers were signed out too

    assert reply.status_code == status, reply.text
    body = reply.json()
    if status == 200:
        assert body["ok"] is True
    elif status == 500:
        assert body == {
            "ok": False,
            "error": {
                "code": "internal",
                "message": "Something went wrong.",
                "digest": body["error"]["digest"],
            },
        }
        assert DIGEST.fullmatch(body["error"]["digest"])
    elif action in ("edit_post", "delete_post") and caller == "other author":
        assert body == NOT_YOURS
    else:
        assert body == REFUSED[status]
    expected_title = {
        ("edit_post", 200): "Edited",
        ("delete_post", 200): None,
    }.get((action, status), "The owner's post")
    assert board.post_title(post_id) == expected_title


# --- sign-up and log-in -----------------------------------------------------------------------


@on_both_databases
def test_signup_creates_an_author_with_an_argon2_hash(board: Board) -> None:
    """The address is stored as one spelling (lower case); the password only as an
    argon2id hash; the new account can sign in at once, and post."""
    email = new_email()
    with board.client() as client:
        reply = client.call(
            "signup", {"name": "  Grace  ", "email": email.upper(), "password": PASSWORD}
        )
        assert reply.status_code == 200
        assert reply.json() == {
            "ok": True,
            "data": {
                "name": "Grace",
                "email": email,
                "message": "Welcome, Grace! Your account is ready: sign in.",
            },
        }
        assert PASSWORD not in reply.text
    Account = board.db_module.Account
    with board.core.db.session() as session:
        account = session.scalars(select(Account).where(Account.email == email)).one()
        assert (account.name, account.role) == ("Grace", "author")
        assert account.password_hash.startswith("$argon2id$")
        person = Person(account.id, "Grace", email, PASSWORD)
    with board.browser(person) as client:
        assert client.call("create_post", {"title": "Hi", "body": "First."}).status_code == 200


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        pytest.param(
            {"name": "Ann", "email": "not-an-email", "password": PASSWORD},
            {"email": "value is not a valid email address: An email address must have an @-sign."},
            id="email",
        ),
        pytest.param(
            {"name": "Ann", "email": "ann@board", "password": PASSWORD},
            {
                "email": "value is not a valid email address: The part after the @-sign is not "
                "valid. It should have a period."
            },
            id="email-domain",
        ),
        pytest.param(
            {"name": "Ann", "email": "NEW", "password": "elevenchars"},
            {"password": "Should have at least 12 characters."},
            id="password-11",
        ),
        pytest.param(
            {"name": "   ", "email": "NEW", "password": PASSWORD},
            {"name": "String should have at least 1 character"},
            id="blank-name",
        ),
        pytest.param(
            {"name": "Ann", "email": "NEW", "password": PASSWORD, "role": "admin"},
            {"role": "Extra inputs are not permitted"},
            id="role-is-not-yours-to-choose",
        ),
        pytest.param(
            {"name": "Ann", "email": "NEW"},
            {"password": "Field required"},
            id="no-password",
        ),
    ],
)
def test_signup_validation(board: Board, fields: dict[str, str], errors: dict[str, str]) -> None:
    """422 with a message per field, never echoing a password; nothing is created."""
    fields = {k: new_email() if v == "NEW" else v for k, v in fields.items()}
    with board.client() as client:
        reply = client.call("signup", fields)
    assert reply.status_code == 422
    assert reply.json() == invalid(errors)
    assert fields.get("password", PASSWORD) not in reply.text
    Account = board.db_module.Account
    with board.core.db.session() as session:
        assert session.scalar(select(func.count()).where(Account.email == fields["email"])) == 0


@on_both_databases
def test_signup_with_a_taken_address_is_refused_whatever_its_case(board: Board) -> None:
    taken = board.account("author")
    with board.client() as client:
        reply = client.call(
            "signup", {"name": "Copy", "email": taken.email.upper(), "password": PASSWORD}
        )
    assert reply.status_code == 422
    assert reply.json() == invalid({"email": "An account with this email already exists."})


def test_signup_is_rate_limited_per_address(board: Board) -> None:
    """Ten sign-ups an hour from one address, valid or not; the eleventh is 429."""
    with board.client() as client:
        for _ in range(10):
            reply = client.call("signup", {"name": "Bot", "email": "x", "password": "x"})
            assert reply.status_code == 422
        reply = client.call("signup", {"name": "Bot", "email": new_email(), "password": PASSWORD})
    assert reply.status_code == 429
    # Until this hour's counter stops weighing ten: at most the hour.
    assert 1 <= int(reply.headers["retry-after"]) <= 3600
    assert reply.json() == {
        "ok": False,
        "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
    }


def test_login_failures_look_alike_and_are_throttled(board: Board) -> None:
    """A wrong password and an unknown address get the same 401; after five failures
    for one account, even the right password is 429."""
    person = board.account("author")
    failed = {"ok": False, "error": {"code": "login_failed", "message": "Wrong email or password."}}
    with board.client() as client:
        unknown = client.call("login", {"email": new_email(), "password": PASSWORD})
        assert (unknown.status_code, unknown.json()) == (401, failed)
        for _ in range(5):
            wrong = client.call("login", {"email": person.email, "password": "not it at all"})
            assert (wrong.status_code, wrong.json()) == (401, failed)
        right = client.call("login", {"email": person.email, "password": PASSWORD})
    assert right.status_code == 429
    assert right.json()["error"]["code"] == "rate_limited"


def test_login_rotates_the_session_and_logout_ends_it(board: Board) -> None:
    """A session ID from before log-in is dead after it; after log-out, the member's
    actions answer 401."""
    person = board.account("author")
    with board.client() as client:
        html(client, "/login")
        before = client.session_id
        assert before is not None
        reply = client.call("login", {"email": f"  {person.email.upper()} ", "password": PASSWORD})
        assert reply.json() == {
            "ok": True,
            "data": {"name": "Test", "message": "Signed in as Test."},
        }
        assert client.session_id not in (None, before)
        assert client.call("export_my_data").status_code == 200
        assert client.call("logout").json() == {
            "ok": True,
            "data": {"message": "You are signed out."},
        }
        assert client.call("export_my_data").status_code == 401


# --- posts: sealed IDs and owner-or-admin -----------------------------------------------------


@on_both_databases
def test_an_author_edits_and_deletes_their_own_post_with_the_page_forms(board: Board) -> None:
    author = board.account("author")
    post_id = board.post(author, "Mine")
    with board.browser(author) as client:
        sealed = edit_form(client, post_id)
        edited = client.call("edit_post", {"title": "Mine, edited", "body": "B.", "_bound": sealed})
        assert edited.json() == {
            "ok": True,
            "data": {"id": post_id, "title": "Mine, edited", "message": "Saved “Mine, edited”."},
        }
        deleted = client.call("delete_post", {"_bound": delete_form(client, post_id)})
        assert deleted.json() == {
            "ok": True,
            "data": {"id": post_id, "title": "Mine, edited", "message": "Deleted “Mine, edited”."},
        }
    assert board.post_title(post_id) is None


def test_another_author_can_neither_forge_nor_replay_a_post_id(board: Board) -> None:
    """Mallory, an author, goes after Alice's post with everything a browser can send:
    the ID as a plain field (422), Alice's own sealed value (400: tied to Alice's
    session), her own sealed value edited (400), her delete form's value on the edit
    action (400), a value sealed before she signed in again (400), and a valid seal
    that leaked (403, the handler's own check). Alice's post is untouched; Mallory's
    own sealed value still edits Mallory's own post only."""
    alice, mallory = board.account("author", "Alice"), board.account("author", "Mallory")
    target, own = board.post(alice, "Alice's"), board.post(mallory, "Mallory's")
    with board.browser(alice) as alices:
        alices_seal = edit_form(alices, target)
    with board.browser(mallory) as client:
        own_seal = edit_form(client, own)
        own_delete = delete_form(client, own)
        assert f'id="post-{target}"' in html(client, "/").text
        page = html(client, f"/posts/{target}/edit")
        assert page.status_code == 403
        assert 'name="_bound"' not in page.text

        draft = {"title": "Pwned", "body": "Mallory was here."}
        forged = client.call("edit_post", {**draft, "post_id": target, "_bound": own_seal})
        assert forged.status_code == 422
        assert forged.json() == invalid({"post_id": "Extra inputs are not permitted"})
        for sealed in (
            alices_seal,
            own_seal[:-4] + ("AAAA" if not own_seal.endswith("AAAA") else "BBBB"),
            own_delete,
            "",
        ):
            reply = client.call("edit_post", {**draft, "_bound": sealed})
            assert (reply.status_code, reply.json()) == (400, BOUND_INVALID)
        leaked = board.sealed("edit_post", board.ref(target))
        reply = client.call("edit_post", {**draft, "_bound": leaked})
        assert (reply.status_code, reply.json()) == (403, NOT_YOURS)
        leaked = board.sealed("delete_post", board.ref(target))
        reply = client.call("delete_post", {"_bound": leaked})
        assert (reply.status_code, reply.json()) == (403, NOT_YOURS)

        assert client.call("logout").status_code == 200
        sign_in(client, mallory)
        stale = client.call("edit_post", {**draft, "_bound": own_seal})
        assert (stale.status_code, stale.json()) == (400, BOUND_INVALID)
        own_seal = edit_form(client, own)
        assert client.call("edit_post", {**draft, "_bound": own_seal}).status_code == 200
    assert board.post_title(target) == "Alice's"
    assert board.post_title(own) == "Pwned"


def test_an_admin_edits_and_deletes_anyones_post(board: Board) -> None:
    author, admin = board.account("author"), board.account("admin")
    post_id = board.post(author, "Needs moderation")
    with board.browser(admin) as client:
        page = html(client, f"/posts/{post_id}/edit")
        assert (
            "You are editing Test\N{RIGHT SINGLE QUOTATION MARK}s post, as an admin." in page.text
        )
        sealed = hidden(page.text, "_bound")
        edited = client.call(
            "edit_post", {"title": "Moderated", "body": "Tidied.", "_bound": sealed}
        )
        assert edited.status_code == 200
        assert board.post_title(post_id) == "Moderated"
        assert (
            client.call("delete_post", {"_bound": delete_form(client, post_id)}).status_code == 200
        )
    assert board.post_title(post_id) is None


@on_both_databases
def test_a_deleted_post_is_gone_for_its_sealed_forms_too(board: Board) -> None:
    author = board.account("author")
    post_id = board.post(author)
    with board.browser(author) as client:
        sealed = edit_form(client, post_id)
        assert (
            client.call("delete_post", {"_bound": delete_form(client, post_id)}).status_code == 200
        )
        reply = client.call("edit_post", {"title": "Late", "body": "Too late.", "_bound": sealed})
        assert reply.status_code == 404
        assert reply.json() == {
            "ok": False,
            "error": {"code": "post_gone", "message": "This post no longer exists."},
        }
        assert html(client, f"/posts/{post_id}/edit").status_code == 404


def test_post_fields_are_bounded_and_trimmed(board: Board) -> None:
    author = board.account("author")
    with board.browser(author) as client:
        reply = client.call("create_post", {"title": " " * 3, "body": "x" * 10_001})
        assert reply.status_code == 422
        assert reply.json() == invalid(
            {
                "title": "String should have at least 1 character",
                "body": "String should have at most 10000 characters",
            }
        )
        reply = client.call("create_post", {"title": "  Trimmed  ", "body": " Body "})
        assert reply.json()["data"]["title"] == "Trimmed"


# --- the export -------------------------------------------------------------------------------


@on_both_databases
def test_export_sends_only_safe_fields_of_ones_own_data(board: Board) -> None:
    """Name, email, role, when the account was made, and one's own posts: never the
    password hash nor anything of anyone else's."""
    person, someone = board.account("author", "Exporter"), board.account("author", "Someone")
    mine = board.post(person, "My post")
    board.post(someone, "Not mine")
    with board.browser(person) as client:
        reply = client.call("export_my_data")
    assert reply.status_code == 200
    data = reply.json()["data"]
    assert set(data) == {"name", "email", "role", "created_at", "posts"}
    assert (data["name"], data["email"], data["role"]) == ("Exporter", person.email, "author")
    assert [(p["id"], p["title"]) for p in data["posts"]] == [(mine, "My post")]
    assert set(data["posts"][0]) == {"id", "title", "body", "created_at", "updated_at"}
    for leaked in ("argon2", "password", "hash", password_hash(), "Not mine", someone.email):
        assert leaked not in reply.text


# --- roles ------------------------------------------------------------------------------------


@on_both_databases
def test_an_admin_changes_a_role_and_it_applies_at_once(board: Board) -> None:
    admin, author = board.account("admin", "Boss"), board.account("author", "Demoted")
    with board.browser(author) as authors:
        assert authors.call("create_post", {"title": "Before", "body": "Yes."}).status_code == 200
        with board.browser(admin) as client:
            page = html(client, "/admin")
            sealed = hidden(page.text, "_bound", within=f"role-form-{author.id}")
            reply = client.call("change_role", {"role": "reader", "_bound": sealed})
            assert reply.json() == {
                "ok": True,
                "data": {
                    "id": author.id,
                    "name": "Demoted",
                    "role": "reader",
                    "message": "Demoted is now a reader.",
                },
            }
            assert f'id="account-{admin.id}"' in page.text
            assert 'name="_bound"' not in element(page.text, f"account-{admin.id}")
        refused = authors.call("create_post", {"title": "After", "body": "No."})
        assert (refused.status_code, refused.json()) == (403, REFUSED[403])


def test_an_admin_cannot_change_their_own_role_nor_invent_one(board: Board) -> None:
    admin, other = board.account("admin"), board.account("author")
    with board.browser(admin) as client:
        own = board.bastion.seal("change_role", {"account_id": admin.id}, bind_session=False)
        reply = client.call("change_role", {"role": "reader", "_bound": own})
        assert reply.status_code == 409
        assert reply.json() == {
            "ok": False,
            "error": {
                "code": "own_role",
                "message": "You cannot change your own role: ask another admin.",
            },
        }
        sealed = board.sealed("change_role", {"account_id": other.id})
        reply = client.call("change_role", {"role": "root", "_bound": sealed})
        assert reply.status_code == 422
        assert reply.json() == invalid({"role": "Input should be 'reader', 'author' or 'admin'"})


# --- the problem report -----------------------------------------------------------------------


def test_report_fails_with_a_digest_that_is_in_the_server_log(
    board: Board, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets "Something went wrong." and a digest; the log has the same digest
    with the database error and its connection string, which the client never sees."""
    caplog.set_level(logging.ERROR, logger="bastion")
    with board.client() as client:
        reply = client.call("report_problem", {"summary": "The board is down."})
    assert reply.status_code == 500
    digest = reply.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    for leaked in ("postgresql", "reports-db", "not-a-real-password", "OperationalError", "INSERT"):
        assert leaked not in reply.text
    [record] = [r for r in caplog.records if r.name == "bastion" and r.levelno == logging.ERROR]
    assert record.getMessage() == f"action report_problem failed [digest {digest}]"
    assert "postgresql://board:not-a-real-password@reports-db.internal:5432/reports" in caplog.text


# --- plain forms (no JavaScript) and htmx -----------------------------------------------------


def test_a_plain_form_post_lands_on_the_board_with_its_message_once(board: Board) -> None:
    author = board.account("author")
    with board.browser(author) as client:
        reply = client.submit("create_post", {"title": "No JS", "body": "Plain.", "_next": "/"})
        assert (reply.status_code, reply.headers["location"]) == (303, "/")
        page = html(client, "/").text
        assert '<p class="notice ok" role="status">Published “No JS”.</p>' in page
        assert "Published" not in html(client, "/").text


def test_a_refused_plain_form_comes_back_with_messages_and_what_was_typed(board: Board) -> None:
    """Back to the page it came from (its Referer), the field's message beside it, the
    typed title in its input; the password of a refused sign-up is never sent back."""
    author = board.account("author")
    post_id = board.post(author, "Original")
    with board.browser(author) as client:
        sealed = edit_form(client, post_id)
        edit_page = f"/posts/{post_id}/edit"
        reply = client.submit(
            "edit_post",
            {"title": "Typed <b>title</b>", "body": "", "_bound": sealed, "_next": "/"},
            headers={"Referer": f"http://127.0.0.1{edit_page}"},
        )
        assert (reply.status_code, reply.headers["location"]) == (303, edit_page)
        page = html(client, edit_page).text
        assert '<p class="notice error" role="alert">Some fields are invalid.</p>' in page
        assert 'value="Typed &lt;b&gt;title&lt;/b&gt;"' in page
        assert (
            '<p class="error" id="edit-body-error" data-bastion-error="body">'
            "String should have at least 1 character</p>"
        ) in page
        assert 'aria-invalid="true"' in page
    assert board.post_title(post_id) == "Original"

    with board.client() as client:
        html(client, "/signup")
        typed = {"name": "Sam", "email": "sam@nowhere", "password": "a secret phrase, long"}
        reply = client.submit(
            "signup",
            {**typed, "_next": "/login?welcome=1"},
            headers={"Referer": "http://127.0.0.1/signup"},
        )
        assert (reply.status_code, reply.headers["location"]) == (303, "/signup")
        page = html(client, "/signup").text
        assert 'value="sam@nowhere"' in page
        assert typed["password"] not in page


def test_the_report_page_shows_the_digest_without_javascript(
    board: Board, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bastion")
    with board.client() as client:
        html(client, "/report")
        reply = client.submit("report_problem", {"summary": "Down.", "_next": "/report"})
        assert reply.status_code == 303
        page = html(client, "/report").text
    shown = re.findall(
        r"Something went wrong — reference <code class=\"digest\">(\w+)</code>", page
    )
    assert len(shown) == 1
    assert f"[digest {shown[0]}]" in caplog.text


def test_htmx_deletes_a_post_and_gets_the_fragment_that_replaces_it(board: Board) -> None:
    """The delete form as htmx sends it (form fields, HX-Request): the action's fragment
    back, not JSON and not a redirect. A refusal is a small alert with its status."""
    author, other = board.account("author"), board.account("author")
    post_id, others = board.post(author, "Swap me"), board.post(other, "Not yours")
    with board.browser(author) as client:
        page = html(client, "/").text
        fields = {
            "_csrf": hidden(page, "_csrf", within=f"post-{post_id}"),
            "_next": "/",
            "_bound": hidden(page, "_bound", within=f"post-{post_id}"),
        }
        assert f'id="post-{others}"' in page
        assert 'hx-post="' + board.bastion.url_for("delete_post") + '"' in page
        headers = {"HX-Request": "true", "HX-Target": f"post-{post_id}"}
        reply = client.post(board.bastion.url_for("delete_post"), data=fields, headers=headers)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert reply.text == (
            f'<p class="notice ok gone" id="post-{post_id}" role="status">Deleted “Swap me”.</p>'
        )
        again = client.post(board.bastion.url_for("delete_post"), data=fields, headers=headers)
        assert again.status_code == 404
        assert again.text == '<p class="bastion-error" role="alert">This post no longer exists.</p>'
        leaked = board.sealed("delete_post", board.ref(others))
        refused = client.post(
            board.bastion.url_for("delete_post"), data={**fields, "_bound": leaked}, headers=headers
        )
        assert refused.status_code == 403
        assert refused.text == (
            '<p class="bastion-error" role="alert">'
            "Only its author or an admin can change this post.</p>"
        )
    assert board.post_title(post_id) is None
    assert board.post_title(others) == "Not yours"


# --- pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "login"),
    [
        ("/", "/login"),
        ("/me", "/login?next=%2Fme"),
        ("/admin", "/login?next=%2Fadmin"),
        ("/posts/1/edit", "/login?next=%2Fposts%2F1%2Fedit"),
    ],
)
def test_a_visitor_is_sent_to_log_in(board: Board, path: str, login: str) -> None:
    with board.client() as client:
        reply = html(client, path)
    assert (reply.status_code, reply.headers["location"]) == (303, login)


@pytest.mark.parametrize(
    ("asked", "next_path"),
    [
        ("/admin", "/admin"),
        ("/posts/7/edit", "/posts/7/edit"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/admin?x=1", "/"),
    ],
)
def test_login_page_goes_back_only_to_our_own_pages(
    board: Board, asked: str, next_path: str
) -> None:
    with board.client() as client:
        page = html(client, "/login?" + urlencode({"next": asked})).text
    assert hidden(page, "_next", within="main") == next_path


def test_public_pages_and_their_headers(board: Board) -> None:
    """Sign-in, sign-up, report and security pages answer everyone, with the security
    headers and no-store; the security page lists every action with its policy."""
    with board.client() as client:
        for path in ("/login", "/signup", "/report", "/security"):
            reply = html(client, path)
            assert reply.status_code == 200
            assert reply.headers["cache-control"] == "no-store"
            assert reply.headers["x-frame-options"] == "DENY"
            csp = reply.headers["content-security-policy"]
            assert "script-src 'self' 'nonce-" in csp
            assert "frame-ancestors 'none'" in csp
        page = html(client, "/security").text
    assert re.findall(r'<tr id="action-(\w+)">', page) == list(ACTIONS)
    assert "<code>require(roles=[&#39;admin&#39;])</code>" in page
    assert f"{len(ACTIONS)} actions, 0 violations, " in page
    assert "<code>password</code>: SecretStr" in page


def test_the_board_offers_changes_only_where_they_are_allowed(board: Board) -> None:
    """An author sees edit and delete on their own posts only; a reader sees no form to
    post; an admin sees them on every post."""
    author, reader, admin = board.account("author"), board.account("reader"), board.account("admin")
    mine, theirs = board.post(author, "Mine"), board.post(board.account("author"), "Theirs")
    with board.browser(author) as client:
        page = html(client, "/").text
        assert f'href="/posts/{mine}/edit"' in page
        assert f'href="/posts/{theirs}/edit"' not in page
        assert 'id="compose"' in page
    with board.browser(reader) as client:
        page = html(client, "/").text
        assert 'id="compose"' not in page
        assert "/edit" not in page
        assert html(client, "/admin").status_code == 403
    with board.browser(admin) as client:
        page = html(client, "/").text
        assert f'href="/posts/{mine}/edit"' in page
        assert f'href="/posts/{theirs}/edit"' in page
        admin_page = html(client, "/admin").text
        assert author.email in admin_page
        assert "argon2" not in admin_page


@on_both_databases
def test_profile_page_and_unknown_pages(board: Board) -> None:
    person = board.account("author", "Profiled")
    board.post(person, "On my profile")
    with board.browser(person) as client:
        page = html(client, "/me").text
        assert person.email in page
        assert "On my profile" in page
        missing = html(client, "/nowhere")
        assert missing.status_code == 404
        assert "There is no page here." in missing.text
        assert html(client, "/posts/999999/edit").status_code == 404


# --- exactly once -----------------------------------------------------------------------------


@on_both_databases
def test_a_double_clicked_post_form_creates_one_post(board: Board) -> None:
    """A browser without JavaScript sends the compose form twice (a double click, or a
    reload that re-posts): the form's ``_idem`` key makes create-post run once. Both
    posts land on the board; one post exists, written once in the database."""
    author = board.account("author")
    title = f"Once {secrets.token_hex(4)}"
    with board.browser(author) as client:
        page = html(client, "/").text
        fields = {
            "title": title,
            "body": "Clicked twice.",
            "_csrf": hidden(page, "_csrf", within="compose"),
            "_idem": hidden(page, "_idem", within="compose"),
            "_next": "/",
        }
        replies = [client.submit("create_post", fields, token=None) for _ in range(2)]
        assert [(r.status_code, r.headers["location"]) for r in replies] == [(303, "/")] * 2
        # A new page renders a new key: the next post is a post of its own.
        again = hidden(html(client, "/").text, "_idem", within="compose")
        assert again != fields["_idem"]
    Post = board.db_module.Post
    with board.core.db.session() as session:
        assert session.scalar(select(func.count()).where(Post.title == title)) == 1


# --- step-up ----------------------------------------------------------------------------------


def age_login(board: Board, client: ActionClient, seconds: float) -> None:
    """Move the session's log-in ``seconds`` into the past, in the board's store."""
    store, manager = board.bastion.store, board.bastion.session_manager
    key = manager.store_keys(client.session_id or "")[0]
    record = json.loads(anyio.run(store.get, key) or b"{}")
    record["auth"] -= seconds
    anyio.run(store.set, key, json.dumps(record).encode(), 3600.0)


def test_changing_the_password_needs_a_recent_log_in(board: Board) -> None:
    """A session signed in an hour ago (left open, or copied) tries to change the
    password: without JavaScript it lands on /reauth, which sends it back to /me; as a
    script it gets 401 reauthentication_required. The password again, and the change
    goes through; the member's other session is signed out, this one is not."""
    author = board.account("author", "Ada")
    with board.browser(author) as here, board.browser(author) as elsewhere:
        age_login(board, here, 3600)
        html(here, "/me")
        new = "a brand new password for Ada"
        reply = here.submit("change_password", {"password": new}, referer="/me")
        assert (reply.status_code, reply.headers["location"]) == (303, "/reauth?next=%2Fme")
        page = html(here, "/reauth?next=%2Fme").text
        assert hidden(page, "_next", within="reauth") == "/me"
        script = here.call("change_password", {"password": new})
        assert script.status_code == 401
        assert script.json()["error"]["code"] == "reauthentication_required"
        wrong = here.call("reauthenticate", {"password": "not the password"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "login_failed")
        assert here.call("reauthenticate", {"password": author.password}).status_code == 200
        changed = here.call("change_password", {"password": new})
        assert changed.json() == {
            "ok": True,
            "data": {"message": "Your password is changed. 1 other session signed out."},
        }
        assert here.call("export_my_data").status_code == 200
        assert elsewhere.call("export_my_data").status_code in (401, 403)
    with board.client() as fresh:
        old = fresh.call("login", {"email": author.email, "password": author.password})
        assert old.status_code == 401
        assert fresh.call("login", {"email": author.email, "password": new}).status_code == 200
