"""The board's configuration, read from the environment once, at import.

==========================  ==================================================
``BOARD_DATA_DIR``          where the SQLite database lives (``./data``)
``DATABASE_URL``            a database of your own instead, e.g.
                            ``postgresql://user@host:5432/board`` (psycopg 3)
``BASTION_DATA_DIR``        where bastion keeps sessions (``BOARD_DATA_DIR``)
``BOARD_ADMIN_PASSWORD``    the seeded accounts' passwords, read on the first
``BOARD_AUTHOR_PASSWORD``   start only; generated and printed once when unset
``BOARD_SERVED_BY``         a name for this process, sent back in an
                            ``X-Served-By`` header (``make cluster`` only)
==========================  ==================================================

bastion reads its own variables (``BASTION_SECRET_KEY``, ``BASTION_ALLOWED_ORIGINS``,
``BASTION_STORE``, ``BASTION_TRUSTED_PROXIES``, ``BASTION_HTTPS``…: ``bastion.Environment``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import SecretStr
from sqlalchemy.engine import URL, make_url

__all__ = ["MIN_PASSWORD_LENGTH", "Settings", "database_url"]

MIN_PASSWORD_LENGTH: Final = 12
"""For every account, the seeded ones included."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    data_dir: Path
    """``BOARD_DATA_DIR``: the SQLite database, unless ``DATABASE_URL`` names another."""

    database_url: URL
    """Where the posts and accounts are; its password never prints (``URL`` masks it)."""

    sessions_dir: Path
    """``BASTION_DATA_DIR``: bastion's session store (SQLite)."""

    admin_password: SecretStr | None
    """``BOARD_ADMIN_PASSWORD``, for the admin account seeded on the first start."""

    author_password: SecretStr | None
    """``BOARD_AUTHOR_PASSWORD``, for the author account seeded on the first start."""

    served_by: str | None = None
    """``BOARD_SERVED_BY``: which of several processes answered, for ``make cluster``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        data_dir = Path(environ.get("BOARD_DATA_DIR") or "data")
        return cls(
            data_dir=data_dir,
            database_url=database_url(environ.get("DATABASE_URL"), data_dir),
            sessions_dir=Path(environ.get("BASTION_DATA_DIR") or data_dir),
            admin_password=_password(environ, "BOARD_ADMIN_PASSWORD"),
            author_password=_password(environ, "BOARD_AUTHOR_PASSWORD"),
            served_by=environ.get("BOARD_SERVED_BY") or None,
        )


def database_url(raw: str | None, data_dir: Path) -> URL:
    """``raw`` as SQLAlchemy reads it, ``postgresql://`` meaning psycopg 3 (SQLAlchemy's
    default for that scheme is psycopg2); else a SQLite file in ``data_dir``."""
    if not raw:
        return URL.create("sqlite", database=str(data_dir / "board.sqlite3"))
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _password(environ: Mapping[str, str], name: str) -> SecretStr | None:
    value = environ.get(name)
    if not value:
        return None
    if len(value) < MIN_PASSWORD_LENGTH:
        # The same rule as the sign-up form: a demo is where weak passwords get copied from.
        raise ValueError(f"{name} must be at least {MIN_PASSWORD_LENGTH} characters")
    return SecretStr(value)
