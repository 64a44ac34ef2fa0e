"""The demo board's fixtures: the board in process, its database alone, and the board under
uvicorn, each on SQLite or PostgreSQL.

What bastion itself does is tested once, in tests/, and through the board on SQLite.
What the board's own database code does (its conditional writes, IDs, transactions,
constraints, seeding) is tested on both databases: ``on_both_databases`` for the board in
process, the ``database`` and ``served`` fixtures otherwise.

The helpers of bastion's own tests (tests/services.py, tests/security/, tests/e2e/) are
imported from tests/, which pytest puts on ``sys.path`` (``pythonpath`` in
pyproject.toml).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import summary
from sqlalchemy.engine import URL

from .databases import DATABASES, Postgres, postgres_schema, sqlite_rows, sqlite_url
from .inprocess import EXAMPLES, Board, board_modules, imported_board
from .served import Served, serve


def pytest_configure(config: pytest.Config) -> None:
    """The count of distinct test functions (tests/summary.py), once per run."""
    summary.register(config)


@pytest.fixture(scope="module", params=["sqlite"])
def board(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Board]:
    """examples/board in process, for the module (``inprocess.imported_board``): on SQLite;
    for a test under ``on_both_databases``, on PostgreSQL too, in a schema of the module's
    own."""
    data = tmp_path_factory.mktemp("board-data")
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            schema = stack.enter_context(postgres_schema("board_test"))
            url = schema.url().render_as_string(hide_password=False)
        yield stack.enter_context(imported_board(data, url))


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    with postgres_schema("board_pg") as schema:
        yield schema


@pytest.fixture
def board_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/board/db.py alone, imported as the board imports it (and forgotten after:
    the board's modules the test found are put back)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in board_modules():
        monkeypatch.delitem(sys.modules, name)
    try:
        yield importlib.import_module("board.db")
    finally:
        for name in board_modules():
            del sys.modules[name]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    """SQLAlchemy's URL of an empty database: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "board.sqlite3")
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.url().set(drivername="postgresql+psycopg")


@pytest.fixture
def database(database_url: URL, board_db: ModuleType) -> Iterator[Any]:
    """The board's ``Database`` with its tables, on SQLite or in a PostgreSQL schema."""
    db = board_db.Database(database_url)
    try:
        db.create_schema()
        yield db
    finally:
        db.dispose()


@pytest.fixture(params=DATABASES)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The board under uvicorn, on SQLite (its own file) or in a PostgreSQL schema, with a
    way to read its rows."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "board.sqlite3"
        url = engine_url = sqlite_url(path)
        rows = sqlite_rows(path)
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        url, rows = pg.url(), pg.rows
        engine_url = url.set(drivername="postgresql+psycopg")
    with serve(tmp_path, url) as server:
        yield Served(server, engine_url, rows)
