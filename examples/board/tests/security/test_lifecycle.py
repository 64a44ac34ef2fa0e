"""Attacks on the life of the board's posts (issue 12, items 5 to 7): sealed forms that
outlive the post they were made for, edits and deletes of one post racing each other,
and post IDs in a path that the database or ``int()`` cannot take.

- A post's edit and delete forms seal its ID and its version. A form of a post that is
  gone answers 404 ``post_gone``; of a post edited since, or of a new post that got the
  old one's ID (a table made by an older board reuses IDs), 409 ``post_changed``. New
  tables never hand an ID out twice (AUTOINCREMENT on SQLite, sequences on PostgreSQL).
- Four deletes and four edits with one seal, released together against uvicorn on
  SQLite and on PostgreSQL: exactly one succeeds, every other is a clear 404 or 409,
  never a 5xx, and the database holds what the winner wrote.
- ``/posts/<id>/edit`` takes 1 to 18 digits without a leading zero: anything else is the
  board's own 404 page.

What depends on the database (IDs handed out, conditional writes, a table made by an
older board, racing writers, the largest ID) runs on SQLite and on PostgreSQL: in
process (``on_both_databases``), on the board's ``Database`` alone (``database_url``) or
under uvicorn (``served``). The rest runs on SQLite.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import httpx2 as httpx
import pytest
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)
from sqlalchemy.engine import URL

from bastion import hash_password

from ..databases import sqlite_rows, sqlite_url
from ..inprocess import Board, Person, delete_form, edit_form, hidden, html, on_both_databases
from ..served import (
    ADMIN,
    ADMIN_PASSWORD,
    AUTHOR,
    AUTHOR_PASSWORD,
    BoardServer,
    Browser,
    Form,
    Served,
    notice,
    serve,
)

POST_GONE: Final = {
    "ok": False,
    "error": {"code": "post_gone", "message": "This post no longer exists."},
}
POST_CHANGED: Final = {
    "ok": False,
    "error": {
        "code": "post_changed",
        "message": "This post was changed since this page was loaded: reload it and try again.",
    },
}
VERSION: Final = re.compile(r"[0-9a-f]{16}")
ROUNDS: Final = 3
"""Races per database: the winner is whichever call the database serves first."""
RACERS: Final = 8
"""Four edits and four deletes, half of them the author's and half an admin's."""


# --- helpers ----------------------------------------------------------------------------------


def snapshot(board: Board, post_id: int) -> tuple[Any, ...] | None:
    """Everything a write could change in the post, or ``None`` when there is no post."""
    Post = board.db_module.Post
    with board.core.db.session() as session:
        post = session.get(Post, post_id)
        if post is None:
            return None
        return (post.author_id, post.title, post.body, post.version, post.updated_at)


def publish(client: Any, title: str) -> int:
    """A post made through the create_post action, as the board's compose form makes it."""
    reply = client.call("create_post", {"title": title, "body": f"The body of {title}."})
    assert reply.status_code == 200, reply.text
    post_id: int = reply.json()["data"]["id"]
    return post_id


def recreate(board: Board, post_id: int, author: Person, title: str) -> None:
    """A new post under a deleted post's ID, as SQLite without AUTOINCREMENT (a table made
    by an older board) hands it out: written straight into the database."""
    Post = board.db_module.Post
    with board.core.db.transaction() as session:
        assert session.get(Post, post_id) is None
        session.add(Post(id=post_id, author_id=author.id, title=title, body="A new post."))


# --- 5: sealed forms do not outlive their post ------------------------------------------------


@on_both_databases
def test_a_deleted_posts_edit_form_does_not_edit_the_next_post(board: Board) -> None:
    """Attack: create a post, keep its edit page's ``_bound``, delete the post, create
    another (SQLite handed it the same ID), replay the old ``_bound``: it answered 200
    "Saved" and rewrote the new post. Now the new post has a new ID, and the replay is
    404 ``post_gone`` with the new post untouched."""
    author = board.account("author", "Replayer")
    with board.browser(author) as client:
        first = publish(client, "First")
        stale_edit = edit_form(client, first)
        deleted = client.call("delete_post", {"_bound": delete_form(client, first)})
        assert deleted.status_code == 200, deleted.text
        second = publish(client, "Second")
        assert second != first  # no ID is handed out twice
        assert second > first
        before = snapshot(board, second)

        replay = client.call(
            "edit_post",
            {"title": "Replayed", "body": "Written by a dead form.", "_bound": stale_edit},
        )
        assert (replay.status_code, replay.json()) == (404, POST_GONE)
    assert snapshot(board, first) is None
    assert snapshot(board, second) == before
    assert before is not None
    assert before[1:3] == ("Second", "The body of Second.")


@on_both_databases
def test_an_admins_stale_delete_form_does_not_delete_a_newer_post(board: Board) -> None:
    """Attack: an admin loads the board; the author deletes her post and another member
    posts (on SQLite, under the deleted post's ID); the admin's delete button, still on
    the page, deleted the other member's newer post. Now it is 404 ``post_gone`` and
    the newer post is still there, unchanged."""
    alice, bob = board.account("author", "Alice"), board.account("author", "Bob")
    admin = board.account("admin", "Moderator")
    old = board.post(alice, "Alice's, soon deleted")
    with board.browser(admin) as moderator:
        stale_delete = delete_form(moderator, old)
        with board.browser(alice) as client:
            reply = client.call("delete_post", {"_bound": delete_form(client, old)})
            assert reply.status_code == 200, reply.text
        with board.browser(bob) as client:
            newer = publish(client, "Bob's, newer")
        assert newer != old
        before = snapshot(board, newer)

        reply = moderator.call("delete_post", {"_bound": stale_delete})
        assert (reply.status_code, reply.json()) == (404, POST_GONE)
    assert snapshot(board, newer) == before
    assert before is not None
    assert before[:2] == (bob.id, "Bob's, newer")


@on_both_databases
def test_a_reused_id_does_not_reopen_the_deleted_posts_forms(board: Board) -> None:
    """Attack: on a table made by an older board (no AUTOINCREMENT) a new post gets a
    deleted post's ID, by the same author, so that the owner-or-admin check passes: the
    deleted post's forms (the author's edit page and delete button, an admin's) named
    "post N" and opened the new one. Their version is not the new post's: each is 409
    ``post_changed`` and the new post is exactly as written; its own forms work."""
    author, admin = board.account("author", "Owner"), board.account("admin", "Admin")
    post_id = board.post(author, "Deleted")
    with board.browser(author) as owner, board.browser(admin) as moderator:
        stale = {
            "author's edit": (owner, "edit_post", edit_form(owner, post_id)),
            "author's delete": (owner, "delete_post", delete_form(owner, post_id)),
            "admin's edit": (moderator, "edit_post", edit_form(moderator, post_id)),
            "admin's delete": (moderator, "delete_post", delete_form(moderator, post_id)),
        }
        reply = owner.call("delete_post", {"_bound": stale["author's delete"][2]})
        assert reply.status_code == 200, reply.text
        recreate(board, post_id, author, "Reborn")
        before = snapshot(board, post_id)
        assert before is not None

        for name, (client, action, sealed) in stale.items():
            fields = (
                {"title": "Hijacked", "body": "By an old form."} if action == "edit_post" else {}
            )
            reply = client.call(action, {**fields, "_bound": sealed})
            assert (reply.status_code, reply.json()) == (409, POST_CHANGED), name
            assert snapshot(board, post_id) == before, name

        fresh = edit_form(owner, post_id)
        reply = owner.call(
            "edit_post", {"title": "Reborn, edited", "body": "Mine.", "_bound": fresh}
        )
        assert reply.status_code == 200, reply.text
    after = snapshot(board, post_id)
    assert after is not None
    assert after[1:3] == ("Reborn, edited", "Mine.")
    assert after[3] != before[3]


@on_both_databases
def test_a_form_loaded_before_an_edit_changes_nothing(board: Board) -> None:
    """Attack (a lost update): two tabs load one post; the first saves an edit; the
    second tab's edit form and the board's delete button, loaded before that edit,
    overwrote or deleted the edited post. Now both are 409 ``post_changed``, the post
    holds the first tab's edit, and a reloaded delete form deletes it."""
    author = board.account("author", "Two tabs")
    post_id = board.post(author, "Open twice")
    with board.browser(author) as client:
        first_tab, second_tab = edit_form(client, post_id), edit_form(client, post_id)
        stale_delete = delete_form(client, post_id)
        saved = client.call(
            "edit_post", {"title": "First tab", "body": "Kept.", "_bound": first_tab}
        )
        assert saved.status_code == 200, saved.text
        edited = snapshot(board, post_id)
        assert edited is not None
        assert edited[1:3] == ("First tab", "Kept.")
        assert VERSION.fullmatch(edited[3])

        late = client.call(
            "edit_post", {"title": "Second tab", "body": "Lost?", "_bound": second_tab}
        )
        assert (late.status_code, late.json()) == (409, POST_CHANGED)
        late = client.call("delete_post", {"_bound": stale_delete})
        assert (late.status_code, late.json()) == (409, POST_CHANGED)
        assert snapshot(board, post_id) == edited

        reply = client.call("delete_post", {"_bound": delete_form(client, post_id)})
        assert reply.status_code == 200, reply.text
    assert snapshot(board, post_id) is None


def test_the_htmx_delete_of_an_edited_post_is_refused_in_its_form(board: Board) -> None:
    """Attack: the htmx delete button of a post edited since the board loaded deleted
    the edited post. Now htmx gets the 409 alert for the form's error slot, and the
    post stays."""
    author = board.account("author")
    post_id = board.post(author, "Edited behind the board")
    with board.browser(author) as client:
        page = html(client, "/").text
        fields = {
            "_csrf": hidden(page, "_csrf", within=f"post-{post_id}"),
            "_next": "/",
            "_bound": hidden(page, "_bound", within=f"post-{post_id}"),
        }
        saved = client.call(
            "edit_post",
            {"title": "Edited", "body": "Since.", "_bound": edit_form(client, post_id)},
        )
        assert saved.status_code == 200, saved.text
        before = snapshot(board, post_id)
        headers = {"HX-Request": "true", "HX-Target": f"post-{post_id}"}
        reply = client.post(board.bastion.url_for("delete_post"), data=fields, headers=headers)
    assert reply.status_code == 409
    assert reply.text == (
        '<p class="bastion-error" role="alert">'
        "This post was changed since this page was loaded: reload it and try again.</p>"
    )
    assert snapshot(board, post_id) == before


def test_a_seal_without_a_version_matches_no_post(board: Board) -> None:
    """Attack: a form sealed by a board from before versions (seals last a day) names
    only an ID, which may by now be another post's. It matches no version: 409, even
    for the post's own author, and nothing changes."""
    author = board.account("author")
    post_id = board.post(author, "Versioned")
    before = snapshot(board, post_id)
    with board.browser(author) as client:
        for action, fields in (("edit_post", {"title": "T", "body": "B"}), ("delete_post", {})):
            sealed = board.bastion.seal(action, {"post_id": post_id}, session=None)
            reply = client.call(action, {**fields, "_bound": sealed})
            assert (reply.status_code, reply.json()) == (409, POST_CHANGED), action
    assert snapshot(board, post_id) == before


# --- 5: a database made by an older board -----------------------------------------------------


def old_tables() -> MetaData:
    """The tables as a board from before post versions made them: no ``posts.version``,
    and (on SQLite) IDs without AUTOINCREMENT."""
    old = MetaData()
    Table(
        "accounts",
        old,
        Column("id", Integer, primary_key=True),
        Column("email", String(254), nullable=False, unique=True),
        Column("name", String(80), nullable=False),
        Column("password_hash", String(255), nullable=False),
        Column("role", String(16), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "posts",
        old,
        Column("id", Integer, primary_key=True),
        Column(
            "author_id",
            ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("title", String(200), nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        Column("updated_at", DateTime(timezone=True)),
    )
    return old


def make_old_database(url: URL, password_hash: str, titles: list[str]) -> None:
    """An older board's database at ``url``: the author account and its posts."""
    old = old_tables()
    engine = create_engine(url)
    moment = datetime.now(UTC)
    if url.get_backend_name() == "sqlite":
        moment = moment.replace(tzinfo=None)  # what the board keeps there: naive UTC
    try:
        with engine.begin() as connection:
            old.create_all(connection)
            account = connection.scalar(
                insert(old.tables["accounts"])
                .values(
                    email=AUTHOR,
                    name="Ada",
                    password_hash=password_hash,
                    role="author",
                    created_at=moment,
                )
                .returning(old.tables["accounts"].c.id)
            )
            for title in titles:
                connection.execute(
                    insert(old.tables["posts"]).values(
                        author_id=account,
                        title=title,
                        body=f"{title}, before versions.",
                        created_at=moment,
                    )
                )
    finally:
        engine.dispose()


def test_an_old_database_gets_a_version_of_its_own_for_each_post(
    database_url: URL, board_db: ModuleType
) -> None:
    """Attack surface: a database made by an older board has posts without versions.
    The board must still start, and give each post a version of its own, never a shared
    or an empty one that would let one post's forms match another (or a reused ID's):
    ``create_schema`` adds the column, NOT NULL, and fills it; a second start changes
    nothing; a new post gets a version of its own too."""
    url = database_url
    titles = ["One", "Two", "Three"]
    make_old_database(url, "-", titles)

    db = board_db.Database(url)
    Post = board_db.Post
    try:
        db.create_schema()
        with db.session() as session:
            rows = session.execute(select(Post.title, Post.body, Post.version).order_by(Post.id))
            posts = [tuple(row) for row in rows]
        assert [(t, b) for t, b, _ in posts] == [(t, f"{t}, before versions.") for t in titles]
        versions = [v for _, _, v in posts]
        assert all(VERSION.fullmatch(v) for v in versions), versions
        assert len(set(versions)) == len(versions)

        with db.engine.connect() as connection:
            if url.get_backend_name() == "sqlite":
                info = connection.exec_driver_sql("PRAGMA table_info(posts)").all()
                assert [row[3] for row in info if row[1] == "version"] == [1]  # NOT NULL
            else:
                assert connection.exec_driver_sql(
                    "SELECT is_nullable, column_default FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'posts' "
                    "AND column_name = 'version'"
                ).all() == [("NO", None)]

        db.create_schema()  # the next start
        with db.session() as session:
            assert list(session.scalars(select(Post.version).order_by(Post.id))) == versions
        with db.transaction() as session:
            author_id = session.scalars(select(Post.author_id)).first()
            post = Post(author_id=author_id, title="New", body="After versions.")
            session.add(post)
            session.flush()
            new_version = post.version
        assert VERSION.fullmatch(new_version)
        assert new_version not in versions
    finally:
        db.dispose()


def test_the_board_starts_and_edits_on_an_old_data_directory(tmp_path: Path) -> None:
    """Attack surface: ``make demo`` on a data directory of an older board (posts with
    no version). The board starts under uvicorn, its pages seal the version it gave each
    post, and the edit form saves."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    url = sqlite_url(data / "board.sqlite3")
    make_old_database(url, hash_password(AUTHOR_PASSWORD), ["From before"])
    with serve(tmp_path, url) as server, Browser(server) as ada:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        [(post_id, version)] = sqlite_rows(data / "board.sqlite3")(
            "SELECT id, version FROM posts WHERE title = %s", "From before"
        )
        assert VERSION.fullmatch(version)
        ada.open(f"/posts/{post_id}/edit")
        edit = ada.form(button="Save changes")
        page = ada.submit(edit, f"/#post-{post_id}", title="From before, edited", body="Yes.")
        assert notice("Saved “From before, edited”.") in page
        assert "Traceback" not in server.log()


# --- 6: edits and deletes of one post, at once ------------------------------------------------


def release_together(
    server: BoardServer, calls: list[tuple[Browser, Form, dict[str, Any]]]
) -> list[httpx.Response]:
    """Every call at once: a connection of its own each (opened beforehand, with the
    browser's cookies), all sent the moment the last thread is ready."""
    clients = [
        httpx.Client(
            base_url=server.base,
            timeout=30.0,
            trust_env=False,
            cookies=httpx.Cookies(browser.client.cookies),
        )
        for browser, _, _ in calls
    ]
    barrier = threading.Barrier(len(calls))

    def send(i: int) -> httpx.Response:
        _, form, body = calls[i]
        headers = {
            "Accept": "application/json",
            "Origin": server.base,
            "X-CSRF-Token": form.hidden["_csrf"],
        }
        barrier.wait(timeout=30)
        return clients[i].post(form.action, json=body, headers=headers)

    try:
        for client in clients:
            assert client.get("/static/board.css").status_code == 200  # connected
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(send, range(len(calls))))
    finally:
        for client in clients:
            client.close()


def test_racing_edits_and_deletes_of_one_post_have_exactly_one_winner(served: Served) -> None:
    """Attack: four deletes and four edits of one post, with the same sealed version,
    released together against uvicorn: some answered ``500 internal`` (StaleDataError
    in the log) and two answered "Deleted" for one deletion. Now, round after round, on
    SQLite and on PostgreSQL: no 5xx (no "database is locked" 503 either), exactly one
    200; if a delete won, every other call is 404 ``post_gone`` and the row is gone; if
    an edit won, every other is 409 ``post_changed`` and the row holds that edit, with
    a new version."""
    server, rows = served.server, served.rows
    with Browser(server) as ada, Browser(server) as grace:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        grace.sign_in(ADMIN, ADMIN_PASSWORD)
        for round_ in range(ROUNDS):
            ada.open("/")
            compose = ada.form(button="Publish", within="compose")
            made = ada.call(compose, {"title": f"Race {round_}", "body": "Contested."})
            assert made.status_code == 200, made.text
            post_id = made.json()["data"]["id"]
            [(sealed_version,)] = rows("SELECT version FROM posts WHERE id = %s", post_id)

            calls: list[tuple[Browser, Form, dict[str, Any]]] = []
            for browser in (ada, grace):
                browser.open(f"/posts/{post_id}/edit")
                edit = browser.form(button="Save changes")
                browser.open("/")
                delete = browser.form(button="Delete", within=f"post-{post_id}")
                for _ in range(RACERS // 4):
                    title = f"Race {round_}, edit {len(calls)}"
                    body = {"title": title, "body": f"{title}.", "_bound": edit.hidden["_bound"]}
                    calls.append((browser, edit, body))
                    calls.append((browser, delete, {"_bound": delete.hidden["_bound"]}))

            replies = release_together(server, calls)

            statuses = [reply.status_code for reply in replies]
            assert all(status < 500 for status in statuses), (statuses, server.log())
            assert statuses.count(200) == 1, [r.text for r in replies]
            [winner] = [i for i, status in enumerate(statuses) if status == 200]
            won = replies[winner].json()
            row = rows("SELECT title, body, version, updated_at FROM posts WHERE id = %s", post_id)
            if "title" in calls[winner][2]:  # an edit won
                title = calls[winner][2]["title"]
                assert won == {
                    "ok": True,
                    "data": {"id": post_id, "title": title, "message": f"Saved “{title}”."},
                }
                [(saved_title, saved_body, version, updated)] = row
                assert (saved_title, saved_body) == (title, f"{title}.")
                assert version != sealed_version
                assert VERSION.fullmatch(version)
                assert updated is not None
                refusal = (409, POST_CHANGED)
            else:
                assert won == {
                    "ok": True,
                    "data": {
                        "id": post_id,
                        "title": f"Race {round_}",
                        "message": f"Deleted “Race {round_}”.",
                    },
                }
                assert row == []
                refusal = (404, POST_GONE)
            for i, reply in enumerate(replies):
                if i != winner:
                    assert (reply.status_code, reply.json()) == refusal, (i, statuses)
    log = server.log()
    for word in ("Traceback", "StaleDataError", "database is locked", "failed [digest"):
        assert word not in log, word


# --- 7: post IDs in a path --------------------------------------------------------------------


@pytest.mark.parametrize(
    "post_id",
    [
        pytest.param("99999999999999999999", id="20-digits-sqlite-overflow"),
        pytest.param("9" * 5000, id="5000-digits-int-limit"),
        pytest.param(str(2**63), id="2**63"),
        pytest.param(str(2**31), id="2**31-postgresql-integer-overflow"),
        pytest.param("0", id="zero"),
        pytest.param("007", id="leading-zeros"),
        pytest.param("-1", id="negative"),
        pytest.param("+1", id="plus-sign"),
    ],
)
def test_a_post_id_out_of_range_or_odd_in_a_path_is_the_boards_404(
    board: Board, post_id: str
) -> None:
    """Attack: ``GET /posts/99999999999999999999/edit`` (past SQLite's integers; on
    PostgreSQL anything past 2**31 - 1) and a 5,000-digit ID (past Python's int-digits
    limit) answered Starlette's plain 500; 0 and 007 reached the handler too. Now each
    is the board's own 404 page, for the member signed in, and nothing reaches the
    database."""
    member = board.member("path-prober", "author")
    with board.browser(member, reuse=True) as client:
        reply = html(client, f"/posts/{post_id}/edit")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert "<title>Not found · Team board</title>" in reply.text
    assert "<p>There is no page here.</p>" in reply.text
    assert 'class="signed-in"' in reply.text  # the board's page, for the member
    for leaked in ("Internal Server Error", "Traceback", "OverflowError", "out of range"):
        assert leaked not in reply.text


@on_both_databases
def test_the_largest_post_id_a_path_takes_reaches_the_page(board: Board) -> None:
    """The other side of the range: 2**31 - 1, the largest ID either database's column
    holds, is a path the board serves; no post there is the edit page's own 404, not an
    overflow. The convertor writes no ID outside the range either."""
    member = board.member("path-prober", "author")
    with board.browser(member, reuse=True) as client:
        reply = html(client, f"/posts/{2**31 - 1}/edit")
    assert reply.status_code == 404
    assert "<p>This post does not exist (any more).</p>" in reply.text
    row_id = board.pages.RowId()
    assert row_id.to_string(2**31 - 1) == "2147483647"
    for wrong in (0, 2**31):
        with pytest.raises(ValueError, match="not a row ID"):
            row_id.to_string(wrong)


def test_the_path_pattern_is_every_id_from_1_to_the_largest_and_nothing_else(
    board: Board,
) -> None:
    """The convertor's pattern, at each of its edges: every number from 1 to 2**31 - 1
    in its one spelling, no other text."""
    pattern = re.compile(board.pages.RowId.regex)
    limit = board.db_module.MAX_ROW_ID
    near_edges = {1, 9, 10, 99, 100, 999_999_999, 1_000_000_000, 1_999_999_999, 2_000_000_000}
    for n in near_edges | {limit - 10**k for k in range(10)} | {limit, limit - 1}:
        assert pattern.fullmatch(str(n)), n
    for text in ("0", "00", "01", str(limit + 1), str(2 * limit), "9" * 11, "", "1 ", "1.0"):
        assert not pattern.fullmatch(text), text
