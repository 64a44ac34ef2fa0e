"""What the board's database code does, on SQLite and on PostgreSQL alike: one test each,
parametrised over the database.

- A newcomer signs up, signs in, publishes, edits and deletes a post through the board
  under uvicorn (``served``), as a browser without JavaScript does: each step's rows are
  read back from the database itself.
- The board's multi-row write (the first start's accounts with their posts) failing
  halfway writes nothing; nor does a transaction that raises after its writes
  (``database``: the board's ``Database`` alone).

PostgreSQL is the one at DATABASE_URL (databases.py); each test works in a schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import secrets
from types import ModuleType
from typing import Any, cast

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bastion import ActionError

from .databases import statements
from .served import ADMIN, AUTHOR, COOKIE, PASSWORD, Browser, Served, notice

# --- sign up, sign in, publish, edit, delete --------------------------------------------------


def test_a_newcomer_publishes_edits_and_deletes_a_post(served: Served) -> None:
    """Every step as a browser without JavaScript takes it, and its rows in the database:
    it holds the board's tables and seeded accounts; a sign-up adds an author with an
    argon2id hash; a post appears, changes and goes, and the account stays."""
    board, rows = served.server, served.rows
    assert served.tables() == [
        "accounts",
        "passkeys",
        "posts",
        "recovery_codes",
        "totp_credentials",
    ]
    assert rows("SELECT email, role FROM accounts ORDER BY id") == [
        (ADMIN, "admin"),
        (AUTHOR, "author"),
    ]
    email = f"sam-{secrets.token_hex(3)}@board.example"

    with Browser(board) as browser:
        browser.open("/signup")
        signup = browser.form(button="Create account")
        assert sorted(signup.fields) == ["email", "name", "password"]
        assert set(signup.hidden) == {"_csrf", "_next"}
        page = browser.submit(
            signup, "/login?welcome=1", name="Sam", email=email, password=PASSWORD
        )
        assert notice("Welcome, Sam! Your account is ready: sign in.") in page
        [(account_id, name, role, hashed)] = rows(
            "SELECT id, name, role, password_hash FROM accounts WHERE email = %s", email
        )
        assert (name, role) == ("Sam", "author")
        assert hashed.startswith("$argon2id$")
        assert PASSWORD not in hashed

        login = browser.form(button="Sign in")
        assert f'value="{email}"' in page  # filled in from the sign-up
        page = browser.submit(login, "/", email=email, password=PASSWORD)
        assert notice("Signed in as Sam.") in page
        assert browser.client.cookies.get(COOKIE)

        compose = browser.form(button="Publish", within="compose")
        page = browser.submit(compose, "/", title="In the database", body="Rows, not files.")
        assert notice("Published “In the database”.") in page
        [(post_id, author_id, title, body, updated)] = rows(
            "SELECT id, author_id, title, body, updated_at FROM posts WHERE title = %s",
            "In the database",
        )
        assert (author_id, title, body, updated) == (
            account_id,
            "In the database",
            "Rows, not files.",
            None,
        )
        assert f'href="/posts/{post_id}/edit"' in page

        browser.open(f"/posts/{post_id}/edit")
        edit = browser.form(button="Save changes")
        assert set(edit.hidden) == {"_csrf", "_next", "_bound"}
        page = browser.submit(
            edit, f"/#post-{post_id}", title="Still in the database", body="Edited in place."
        )
        assert notice("Saved “Still in the database”.") in page
        [(title, body, updated)] = rows(
            "SELECT title, body, updated_at FROM posts WHERE id = %s", post_id
        )
        assert (title, body) == ("Still in the database", "Edited in place.")
        assert updated is not None

        delete = browser.form(button="Delete", within=f"post-{post_id}")
        page = browser.submit(delete, "/")
        assert notice("Deleted “Still in the database”.") in page
        assert rows("SELECT id FROM posts WHERE id = %s", post_id) == []
        assert rows("SELECT count(*) FROM posts WHERE author_id = %s", account_id) == [(0,)]
        assert rows("SELECT name FROM accounts WHERE id = %s", account_id) == [("Sam",)]

    assert board.process.poll() is None
    assert "Traceback" not in board.log()


# --- no half-written changes ------------------------------------------------------------------


def test_seeding_that_fails_halfway_writes_no_account_and_no_post(
    database: Any, board_db: ModuleType
) -> None:
    """The first start's write: accounts and their posts, in one transaction. A post that
    breaks a NOT NULL constraint fails it after the accounts' INSERT ran: neither the
    accounts nor the posts before it are left. The same seeds, fixed, then go in whole."""
    Account, Post, SeedAccount = board_db.Account, board_db.Post, board_db.SeedAccount
    broken = cast(str, None)  # posts.body is NOT NULL
    seeds = (
        SeedAccount("one@board.example", "One", "author", SecretStr(PASSWORD), (("A", "a"),)),
        SeedAccount(
            "two@board.example", "Two", "admin", SecretStr(PASSWORD), (("B", "b"), ("C", broken))
        ),
    )
    sent = statements(database)
    with pytest.raises(IntegrityError):
        database.seed(seeds)
    inserts = [s.split("(", 1)[0].strip() for s in sent if s.startswith("INSERT")]
    assert inserts[0] == "INSERT INTO accounts", sent
    assert "INSERT INTO posts" in inserts, sent
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
        assert session.scalar(select(func.count()).select_from(Post)) == 0

    fixed = (seeds[0], SeedAccount("two@board.example", "Two", "admin", None, (("B", "b"),)))
    assert sorted(database.seed(fixed)) == ["one@board.example", "two@board.example"]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 2
        assert sorted(session.scalars(select(Post.title))) == ["A", "B"]


def test_a_transaction_that_raises_after_its_writes_leaves_nothing(
    database: Any, board_db: ModuleType
) -> None:
    """What every handler does in ``db.transaction()``: rows written and flushed (the
    database has them, uncommitted), then a refusal raised. Nothing stays."""
    Account, Post = board_db.Account, board_db.Post
    sent = statements(database)

    def handler() -> None:
        with database.transaction() as session:
            account = Account(email="x@board.example", name="X", role="author", password_hash="-")
            session.add(account)
            session.flush()
            session.add(Post(author_id=account.id, title="Half", body="written"))
            session.flush()
            raise ActionError("Changed my mind.", code="refused", status=409)

    with pytest.raises(ActionError):
        handler()
    assert [s.split("(", 1)[0].strip() for s in sent if s.startswith("INSERT")] == [
        "INSERT INTO accounts",
        "INSERT INTO posts",
    ]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
        assert session.scalar(select(func.count()).select_from(Post)) == 0
