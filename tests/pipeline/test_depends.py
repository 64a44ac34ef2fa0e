"""Stages 11 and 16, dependencies: ``Annotated[T, Depends(fn)]`` in handlers and checks.

A database connection per call is the example throughout: a real SQLite file, opened
by a generator dependency, committed after the handler or rolled back when it raised.
(No ``from __future__ import annotations``: the handlers name types defined in the
tests' own bodies, which bastion resolves as a module-level app's would be.)
"""

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from bastion import (
    Bastion,
    Bound,
    ConfigurationError,
    Context,
    Depends,
    Forbidden,
    MemoryStore,
    User,
    authenticated,
    public,
)
from bastion.testing import ActionClient

DIGEST = re.compile(r"[0-9a-f]{16}")


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class NoteRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note_id: int


class Saved(BaseModel):
    id: int


class Database:
    """A SQLite file, and what each connection a dependency opened went through."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[str] = []
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, owner TEXT, text TEXT)")
            db.execute("INSERT INTO notes (id, owner, text) VALUES (1, 'ada', 'first')")

    def connection(self) -> Iterator[sqlite3.Connection]:
        """A sync generator dependency: commit after the handler, roll back if it raised."""
        db = sqlite3.connect(self.path, check_same_thread=False)
        self.events.append("open")
        try:
            yield db
            db.commit()
            self.events.append("commit")
        except BaseException as exc:
            db.rollback()
            self.events.append(f"rollback:{type(exc).__name__}")
            raise
        finally:
            db.close()

    def texts(self) -> list[str]:
        with sqlite3.connect(self.path) as db:
            return [row[0] for row in db.execute("SELECT text FROM notes ORDER BY id")]


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return Database(tmp_path / "notes.db")


def app_with(database: Database) -> tuple[Bastion, Any]:
    bastion: Bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=lambda i: User(i))
    connection = Depends(database.connection)
    Db = Annotated[sqlite3.Connection, connection]

    def owns(ctx: Context, ref: NoteRef, db: Db) -> bool:
        """The owner check, on the bound ID, through the call's one connection."""
        row = db.execute("SELECT owner FROM notes WHERE id = ?", (ref.note_id,)).fetchone()
        return row is not None and ctx.user is not None and row[0] == ctx.user.id

    @bastion.action(policy=public)
    def add_note(data: Note, db: Db) -> Saved:
        cursor = db.execute("INSERT INTO notes (owner, text) VALUES ('ada', ?)", (data.text,))
        return Saved(id=cursor.lastrowid or 0)

    @bastion.action(policy=public)
    def add_then_refuse(data: Note, db: Db) -> None:
        db.execute("INSERT INTO notes (owner, text) VALUES ('ada', ?)", (data.text,))
        raise Forbidden("not today")

    @bastion.action(policy=authenticated, check=owns)
    def edit_note(data: Note, ref: Annotated[NoteRef, Bound], db: Db) -> None:
        db.execute("UPDATE notes SET text = ? WHERE id = ?", (data.text, ref.note_id))

    @bastion.action(policy=public)
    async def sign_in(ctx: Context, data: Note) -> None:
        await ctx.login(User(data.text))

    return bastion, mounted(bastion)


def test_a_generator_dependency_commits_after_the_handler(database: Database) -> None:
    bastion, app = app_with(database)
    with ActionClient(app, bastion) as client:
        reply = client.call("add_note", {"text": "second"})
    assert_reply(reply, 200, {"ok": True, "data": {"id": 2}})
    assert database.texts() == ["first", "second"]
    assert database.events == ["open", "commit"]


def test_a_refused_handler_rolls_its_connection_back(database: Database) -> None:
    """The handler's exception is thrown into the dependency: nothing it wrote is kept,
    and the caller gets the handler's own refusal."""
    bastion, app = app_with(database)
    with ActionClient(app, bastion) as client:
        reply = client.call("add_then_refuse", {"text": "never"})
    assert_reply(reply, 403, {"ok": False, "error": {"code": "forbidden", "message": "not today"}})
    assert database.texts() == ["first"]
    assert database.events == ["open", "rollback:Forbidden"]


def test_attack_a_forged_call_opens_no_connection(database: Database) -> None:
    """A call refused before stage 11 (no CSRF token here) never reaches a dependency:
    an attacker cannot make the app open connections with calls it refuses."""
    bastion, app = app_with(database)
    with ActionClient(app, bastion) as client:
        client.token()  # the visitor has a session; the forged call carries no token
        reply = client.call("add_note", {"text": "forged"}, token=None)
        invalid = client.call("add_note", {"text": 5})
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "csrf_failed"
    assert invalid.status_code == 422
    assert database.events == []
    assert database.texts() == ["first"]


def test_the_owner_check_sees_the_bound_id_and_the_same_connection(database: Database) -> None:
    """``check=`` takes the bound model by its type: on another owner's note it refuses
    (403) before the handler runs; on the owner's own it allows. The check and the
    handler share the call's one connection."""
    bastion, app = app_with(database)
    with ActionClient(app, bastion) as client:
        client.call("sign_in", {"text": "grace"})
        sealed = client.bound("edit_note", {"note_id": 1})
        refused = client.call("edit_note", {"text": "mine now", "_bound": sealed})
        assert_reply(refused, 403, FORBIDDEN)
        assert database.events == ["open", "rollback:Forbidden"]
        client.call("sign_in", {"text": "ada"})
        sealed = client.bound("edit_note", {"note_id": 1})
        allowed = client.call("edit_note", {"text": "edited", "_bound": sealed})
    assert_reply(allowed, 200, {"ok": True, "data": None})
    assert database.texts() == ["edited"]
    assert database.events == ["open", "rollback:Forbidden", "open", "commit"]


FORBIDDEN = {
    "ok": False,
    "error": {"code": "forbidden", "message": "You are not allowed to do that."},
}


class Counted:
    """Dependencies of every kind, each counting its runs and its cleanups."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def plain(self) -> str:
        self.runs.append("plain")
        return "p"

    async def coroutine(self, ctx: Context) -> str:
        self.runs.append(f"coroutine:{ctx.action}")
        return "c"

    async def agen(self, request: Request) -> AsyncIterator[str]:
        self.runs.append(f"agen:{request.url.path.rsplit('/', 1)[0]}")
        yield "a"
        self.runs.append("agen closed")


def test_every_kind_of_dependency_runs_once_per_call() -> None:
    """Function, coroutine, async generator, and one that takes another: each runs once
    per call however many parameters name it; ``use_cache=False`` runs per parameter."""
    counted = Counted()
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    Plain = Annotated[str, Depends(counted.plain)]

    def combined(p: Plain, c: Annotated[str, Depends(counted.coroutine)]) -> str:
        counted.runs.append("combined")
        return p + c

    @bastion.action(policy=public)
    async def kinds(
        p: Plain,
        again: Plain,
        fresh: Annotated[str, Depends(counted.plain, use_cache=False)],
        both: Annotated[str, Depends(combined)],
        a: Annotated[str, Depends(counted.agen)],
    ) -> dict[str, str]:
        counted.runs.append("handler")
        return {"all": p + again + fresh + both + a}

    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.call(kinds, {})
    assert_reply(reply, 200, {"ok": True, "data": {"all": "ppppca"}})
    assert counted.runs == [
        "plain",
        "plain",
        "coroutine:kinds",
        "combined",
        "agen:/_actions",
        "handler",
        "agen closed",
    ]


class Down(ConnectionError):
    """What a database driver raises for a server that went away."""


def test_a_commit_that_fails_is_the_calls_failure_not_a_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The code after ``yield`` runs before the reply: a commit failing there answers
    500 with a digest (503 for a backend that is down), never the handler's success."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    def broken_commit() -> Iterator[str]:
        yield "db"
        raise RuntimeError("disk I/O error at /var/lib/app/secret.db")

    def gone() -> Iterator[str]:
        yield "db"
        raise Down("connection lost")

    @bastion.action(policy=public)
    def save(db: Annotated[str, Depends(broken_commit)]) -> str:
        return "saved"

    @bastion.action(policy=public)
    def save_gone(db: Annotated[str, Depends(gone)]) -> str:
        return "saved"

    with ActionClient(mounted(bastion), bastion) as client:
        failed = client.call(save, {})
        unavailable = client.call(save_gone, {})
    digest = failed.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    assert_reply(
        failed,
        500,
        {
            "ok": False,
            "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
        },
    )
    assert "secret.db" not in failed.text
    assert "saved" not in failed.text
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "unavailable"
    logged = [r for r in caplog.records if getattr(r, "digest", None) == digest]
    assert len(logged) == 1
    assert "disk I/O error" in str(logged[0].exc_info[1])


def test_a_dependency_past_the_time_limit_is_a_504() -> None:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    @bastion.action(policy=public, timeout=0.2)
    def waits(value: Annotated[str, Depends(slow)]) -> str:
        return value

    started = time.perf_counter()
    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.call(waits, {})
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "timeout"
    assert time.perf_counter() - started < 3


# --- registration: what a dependency or a check may take, decided at import time ------


def register(fn: Any, **options: Any) -> Bastion:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    bastion.action(policy=public, **options)(fn)
    return bastion


def test_a_dependency_asking_for_the_body_is_refused_at_registration() -> None:
    def wants_body(data: Note) -> str:
        return data.text

    def handler(value: Annotated[str, Depends(wants_body)]) -> None: ...

    with pytest.raises(ConfigurationError) as caught:
        register(handler)
    assert str(caught.value) == (
        "action 'handler': dependency "
        "test_a_dependency_asking_for_the_body_is_refused_at_registration.<locals>.wants_body's "
        "parameter 'data' must be annotated with Context, Request or Annotated[T, "
        "Depends(...)]: a dependency sees no body (the action's input reaches the handler "
        "and check= only)"
    )


def test_dependencies_that_depend_on_each_other_are_refused() -> None:
    def loop(value: str) -> str:
        return value

    loop.__annotations__["value"] = Annotated[str, Depends(loop)]

    def handler(value: Annotated[str, Depends(loop)]) -> None: ...

    with pytest.raises(ConfigurationError, match=r"depend on each other: .*loop -> .*loop$"):
        register(handler)


def test_a_positional_check_on_a_bound_only_action_is_refused_at_registration() -> None:
    """The old ``check(ctx, data)`` on an action that takes only bound values got an empty
    input and died with a 500 at run time; now it does not register, and says how."""

    def handler(ref: Annotated[NoteRef, Bound]) -> None: ...

    with pytest.raises(ConfigurationError) as caught:
        register(handler, check=lambda ctx, data: data.note_id == 1)
    assert str(caught.value) == (
        "action 'handler': check(ctx, data) gets no input here (the action takes only "
        "bound values): annotate its parameters, e.g. (ctx: Context, ref: NoteRef)"
    )


def test_a_check_parameter_the_action_cannot_supply_is_refused() -> None:
    def handler(data: Note) -> None: ...

    def check(ctx: Context, ref: NoteRef) -> bool:
        return True

    with pytest.raises(ConfigurationError) as caught:
        register(handler, check=check)
    assert str(caught.value) == (
        "action 'handler': check='s parameter 'ref' must be annotated with one of Context, "
        "Note or Annotated[T, Depends(...)]"
    )
