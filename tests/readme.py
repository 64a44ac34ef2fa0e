"""README.md's code blocks as what they are: files of an app, and shell commands.

A block whose first line names a file (``# app.py``, ``{# templates/index.html #}``) is
that file; every other block is a shell block. ``tests/test_readme.py`` runs them against
this checkout and ``tests/installed/test_wheel.py`` against the installed wheel, through
``serve`` and ``exercise`` here, so the README cannot drift from the API.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
from services import free_port, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```([\w+-]*)\n(.*?)^```$", re.M | re.S)
# ``# app.py``, ``{# templates/page.html #}``, and ``// client.ts`` for TypeScript.
NAMED = re.compile(r"^(?:# (\S+)|\{# (\S+) #\}|// (\S+\.[cm]?ts))$")
TOKEN = re.compile(r'name="_csrf" value="([A-Za-z0-9_-]{86})"')
FORM = re.compile(r'<form method="post" action="(/_actions/[^"]+)"')


@dataclass(frozen=True)
class Block:
    language: str
    text: str

    @property
    def file(self) -> str | None:
        """The file this block is, from its first line, or ``None``."""
        first = self.text.split("\n", 1)[0]
        named = NAMED.match(first)
        return None if named is None else named.group(1) or named.group(2) or named.group(3)


def blocks(text: str | None = None) -> list[Block]:
    return [Block(m.group(1), m.group(2)) for m in FENCE.finditer(text or README.read_text())]


def write_files(directory: Path) -> dict[str, Path]:
    """Every file block, written under ``directory`` by its name."""
    written = {}
    for block in blocks():
        if block.file is not None:
            path = directory / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            written[block.file] = path
    return written


def shell_block(starting: str) -> str:
    """The one shell block whose first line starts with ``starting``."""
    found = [b.text for b in blocks() if b.language == "sh" and b.text.startswith(starting)]
    assert len(found) == 1, f"{len(found)} shell blocks start with {starting!r}"
    return found[0]


@contextmanager
def serve(directory: Path, bin_dir: Path, extra_env: dict[str, str]) -> Iterator[str]:
    """The README's run block, as written, in ``directory`` with ``bin_dir`` first on
    PATH (where ``bastion`` and ``uvicorn`` are installed), on a free port instead of
    8000. Yields the base URL; the server is stopped by its process group."""
    port = free_port()
    script = shell_block("export BASTION_SECRET_KEY").replace(":8000", f":{port}")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BASTION_", "VIRTUAL_ENV"))
    }
    # uvicorn's own variable for --port: the command itself runs as written.
    env.update(extra_env, UVICORN_PORT=str(port))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    log = directory / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=directory,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the README app exited:\n{log.read_text()}")
            try:
                httpx.get(base + "/_actions/health", timeout=1.0, trust_env=False)
            except httpx.TransportError:
                return False
            return True

        assert wait_for(up, 30.0), f"the README app did not serve:\n{log.read_text()}"
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def exercise(base: str) -> None:
    """What the README says the app does: bastion.js is served; the page renders the form;
    a script's call gets the envelope; a plain form post lands back on ``/`` (303) and the
    page then shows the reply once; a call without its token is refused."""
    with httpx.Client(base_url=base, timeout=10.0, trust_env=False) as browser:
        script = browser.get("/_actions/bastion.js")
        assert script.status_code == 200, (script.status_code, script.text[:120])
        assert script.headers["content-type"].startswith("text/javascript")
        assert b"data-bastion" in script.content

        page = browser.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200, page.text
        token, url = TOKEN.findall(page.text)[0], FORM.findall(page.text)[0]

        called = browser.post(
            url,
            json={"name": "Ada"},
            headers={"Accept": "application/json", "Origin": base, "X-CSRF-Token": token},
        )
        assert (called.status_code, called.json()) == (
            200,
            {"ok": True, "data": {"message": "Hello, Ada!"}},
        )

        posted = browser.post(
            url,
            data={"name": "Grace", "_csrf": token, "_next": "/"},
            headers={"Accept": "text/html", "Origin": base},
        )
        assert (posted.status_code, posted.headers["location"]) == (303, "/")
        shown = browser.get("/", headers={"Accept": "text/html"})
        assert '<p role="status">Hello, Grace!</p>' in shown.text
        again = browser.get("/", headers={"Accept": "text/html"})
        assert "Hello, Grace!" not in again.text  # shown once

        forged = browser.post(
            url, json={"name": "Eve"}, headers={"Accept": "application/json", "Origin": base}
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "csrf_failed"


def run_readme_test(directory: Path, python: str) -> subprocess.CompletedProcess[str]:
    """The README's ``test_app.py``, with pytest, as a user would run it next to ``app.py``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        BASTION_SECRET_KEY="readme-test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        BASTION_ALLOWED_ORIGINS="http://127.0.0.1",
        BASTION_DATA_DIR=str(directory / "data"),
    )
    return subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
