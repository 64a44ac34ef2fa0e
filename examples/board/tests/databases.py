"""The two databases the board runs on, as its tests reach them.

- SQLite: a file of the test's own, read back with ``sqlite3`` (``sqlite_rows``).
- PostgreSQL: the one at ``DATABASE_URL`` (default postgresql://postgres@127.0.0.1:5432/test),
  in a schema of the test's own (``search_path``), dropped afterwards; read back with
  psycopg (``Postgres.rows``). When no server answers there, a test that needs one is
  skipped with that reason, unless ``DATABASE_URL`` is set: then it fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

__all__ = [
    "DATABASES",
    "POSTGRES",
    "Postgres",
    "Rows",
    "postgres_schema",
    "sqlite_rows",
    "sqlite_url",
    "statements",
]

DATABASES: Final = ("sqlite", "postgresql")
"""What a test of the board's database code is parametrised over."""

POSTGRES: Final = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"

Rows = Callable[..., list[tuple[Any, ...]]]
"""``rows(query, *params)``: what is committed now (``%s`` placeholders on both databases)."""


@dataclass(frozen=True)
class Postgres:
    """The test server, and a schema on it that only this test uses."""

    base: URL
    schema: str

    def url(self, *, port: int | None = None) -> URL:
        """The URL that puts the board in the schema (``search_path``), optionally through
        another port of 127.0.0.1 (a proxy's)."""
        url = self.base.update_query_dict({"options": f"-csearch_path={self.schema}"})
        return url if port is None else url.set(host="127.0.0.1", port=port)

    @property
    def address(self) -> tuple[str, int]:
        return self.base.host or "127.0.0.1", self.base.port or 5432

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """What is committed now, read with a connection of the test's own."""
        text = self.url().render_as_string(hide_password=False)
        with psycopg.connect(text, autocommit=True, connect_timeout=3) as connection:
            return connection.execute(query.encode(), params).fetchall()


@contextmanager
def postgres_schema(prefix: str) -> Iterator[Postgres]:
    """A schema of its own (``{prefix}_`` and random letters) on the test server, dropped
    with everything in it when the block ends."""
    base = make_url(POSTGRES).set(drivername="postgresql")
    shown = base.render_as_string(hide_password=True)
    try:
        connection = psycopg.connect(
            base.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as error:
        refused = str(error)
    else:
        refused = None
    if refused is not None:
        if os.environ.get("DATABASE_URL"):
            pytest.fail(
                f"DATABASE_URL is set, and {shown} does not answer: {refused}", pytrace=False
            )
        pytest.skip(f"no PostgreSQL answers at {shown} (set DATABASE_URL)")
    schema = f"{prefix}_{secrets.token_hex(4)}"
    with connection:
        connection.execute(f'CREATE SCHEMA "{schema}"'.encode())
        try:
            yield Postgres(base, schema)
        finally:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite", database=str(path))


def sqlite_rows(path: Path) -> Rows:
    """What is committed in the SQLite file now, read with a connection of the test's own
    (``%s`` placeholders, as for PostgreSQL)."""

    def rows(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
            return c.execute(query.replace("%s", "?"), params).fetchall()

    return rows


def statements(db: Any) -> list[str]:
    """Every statement the board's ``Database`` sends from now on, as sent."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", note)
    return sent
