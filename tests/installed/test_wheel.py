"""What a user gets from the wheel. ``make wheel-smoke`` builds the wheel and sdist, installs
the wheel (not this checkout) with its testing, server and redis extras in a clean venv,
and runs this file there, with tests/test_public_api.py.

Each test states what a user of the installed package relies on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import readme
import redis

import bastion

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WHEEL = Path(os.environ.get("BASTION_WHEEL", "dist/missing.whl"))
SDIST = Path(os.environ.get("BASTION_SDIST", "dist/missing.tar.gz"))
RUNTIME = {
    "anyio",
    "argon2-cffi",
    "confusable-homoglyphs",
    "cryptography",
    "jinja2",
    "limits",
    "markupsafe",
    "pydantic",
    "pydantic-core",
    "python-multipart",
    "starlette",
    "typing-extensions",
}
NEVER_AT_RUNTIME = {"sqlalchemy", "psycopg", "email-validator", "uvicorn", "redis", "httpx2"}


def requirement_name(line: str) -> str:
    return re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0].lower().replace("_", "-")


def test_bastion_is_imported_from_the_installed_wheel() -> None:
    """This run uses the installed package, not the checkout's src/ (an editable install
    would hide a file the wheel lacks)."""
    location = Path(bastion.__file__).resolve()
    assert location.is_relative_to(Path(sys.prefix).resolve())
    assert not location.is_relative_to(REPO / "src")
    direct = importlib.metadata.distribution("bastion").read_text("direct_url.json")
    assert direct is not None
    assert json.loads(direct).get("dir_info", {}).get("editable") is not True


def test_the_wheel_holds_every_file_of_the_package() -> None:
    """Every file under src/bastion that is not Python (bastion.js, py.typed) is in the
    wheel, and installed."""
    with zipfile.ZipFile(WHEEL) as wheel:
        names = set(wheel.namelist())
    source = REPO / "src"
    data = {
        str(path.relative_to(source))
        for path in (source / "bastion").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert {"bastion/static/bastion.js", "bastion/py.typed"} <= data
    assert data <= names
    installed = Path(bastion.__file__).parent
    assert (installed / "static" / "bastion.js").read_bytes() == (
        source / "bastion" / "static" / "bastion.js"
    ).read_bytes()


def test_the_wheel_requires_only_what_bastion_imports() -> None:
    """Requires-Dist without extras: exactly the runtime packages; nothing of the demo,
    the server, Redis or the test client."""
    with zipfile.ZipFile(WHEEL) as wheel:
        metadata = wheel.read(
            next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        )
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    plain = {requirement_name(r) for r in requires if "extra ==" not in r}
    assert plain == RUNTIME
    assert not plain & NEVER_AT_RUNTIME
    assert "License-Expression: MIT" in metadata.decode()
    assert "Classifier: Typing :: Typed" in metadata.decode()


def test_the_sdist_holds_the_package_data_and_the_license() -> None:
    with tarfile.open(SDIST) as sdist:
        names = sdist.getnames()
    root = names[0].split("/", 1)[0]
    for name in ("src/bastion/static/bastion.js", "src/bastion/py.typed", "LICENSE", "README.md"):
        assert f"{root}/{name}" in names, name


def test_the_readme_app_from_the_wheel(tmp_path: Path) -> None:
    """The README's quickstart, served by its own commands from this venv: bastion.js
    (200), the page, an action through the whole pipeline, a plain form and its flash."""
    readme.write_files(tmp_path)
    with readme.serve(tmp_path, BIN, {}) as base:
        readme.exercise(base)


def test_the_readme_app_on_redis(tmp_path: Path) -> None:
    """The same with ``bastion[redis]`` and ``BASTION_STORE`` naming the real Redis: the
    visitor's session is in Redis, under bastion's prefix."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is not set: make wheel-smoke needs the tests' Redis")
    store = re.sub(r"/\d*$", "", url) + "/14"
    client = redis.Redis.from_url(store, socket_timeout=5)
    client.flushdb()
    readme.write_files(tmp_path)
    try:
        with readme.serve(tmp_path, BIN, {"BASTION_STORE": store}) as base:
            readme.exercise(base)
        assert list(client.scan_iter(match="bastion:session:*"))
    finally:
        client.flushdb()
        client.close()


def test_the_readme_test_passes_from_the_wheel(tmp_path: Path) -> None:
    readme.write_files(tmp_path)
    done = readme.run_readme_test(tmp_path, sys.executable)
    assert done.returncode == 0, done.stdout + done.stderr


def command(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(BIN / "bastion"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_command_line() -> None:
    """``bastion --help`` names its commands; ``bastion keygen`` prints a fresh key;
    ``bastion audit`` passes the quickstart example."""
    helped = command("--help")
    for name in ("keygen", "audit", "probe"):
        assert name in helped
    first, second = command("keygen").strip(), command("keygen").strip()
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", first)
    audited = command(
        "audit",
        "quickstart:bastion",
        cwd=REPO / "examples",
        env={
            "BASTION_SECRET_KEY": first,
            "BASTION_ALLOWED_ORIGINS": "http://127.0.0.1",
            "BASTION_DATA_DIR": str(REPO / "build" / "wheel-audit"),
            "QUICKSTART_PASSWORD": "audit-password",
        },
    )
    assert "0 violations" in audited
