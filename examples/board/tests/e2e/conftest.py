"""The demo board in Chromium: the board as ``make demo`` serves it (``served.serve``: uvicorn,
a key of its own, the origin it is served at as its only allowed origin, data and sessions
in a fresh directory, on SQLite), and Debian's Chromium driven by Playwright (bastion's
tests/e2e/chromium.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from e2e.chromium import launch, screenshot_dir
from playwright.sync_api import Browser

from ..databases import sqlite_url
from ..served import ADMIN, ADMIN_PASSWORD, AUTHOR, AUTHOR_PASSWORD, BoardServer, serve


@dataclass
class Board:
    """examples/board served by uvicorn at ``url`` (http://127.0.0.1:P), its data in a fresh
    SQLite file, its seeded accounts' passwords chosen by the tests."""

    server: BoardServer
    admin_password: str = ADMIN_PASSWORD
    author_password: str = AUTHOR_PASSWORD

    ADMIN: ClassVar[str] = ADMIN
    AUTHOR: ClassVar[str] = AUTHOR

    @property
    def url(self) -> str:
        return self.server.base

    def statuses(self, method: str, path: str) -> list[int]:
        """The statuses the server answered to ``method path``, from uvicorn's access log."""
        # An action's line names it after its path (bastion.logging.ActionNameFilter).
        named = r"(?: \[action \w+\])?"
        line = re.compile(
            rf'"{re.escape(method)} {re.escape(path)}{named} HTTP/[0-9.]+" ([0-9]{{3}})'
        )
        return [int(status) for status in line.findall(self.server.log())]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """The board exactly as `make demo` serves it, for the module."""
    directory = tmp_path_factory.mktemp("board")
    with serve(directory, sqlite_url(directory / "data" / "board.sqlite3")) as server:
        yield Board(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launch() as chromium:
        yield chromium


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """build/screenshots/, where the tests leave what the browser showed."""
    return screenshot_dir()
