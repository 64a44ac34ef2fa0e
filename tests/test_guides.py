"""The guides in docs/guides run as written. Each guide is a small project: its code
blocks are its files, each named on its first line (``# app.py``), as in the README
(``readme.py`` reads them). One test per guide writes them into a directory of their own
and runs pytest there, in a process of its own, as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import readme
from test_tsclient import tsc

GUIDES = Path(__file__).resolve().parent.parent / "docs" / "guides"


def write_guide(name: str, directory: Path) -> list[str]:
    """Every block of ``docs/guides/<name>`` written under ``directory`` by its name;
    the names, in order. A block that names no file fails the test: no line of a guide
    escapes being run."""
    written = []
    for block in readme.blocks((GUIDES / name).read_text()):
        assert block.file is not None, f"{name}: a block names no file:\n{block.text}"
        assert block.file not in written, f"{name}: {block.file} is written twice"
        path = directory / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)
        written.append(block.file)
    return written


def run_pytest(directory: Path) -> subprocess.CompletedProcess[str]:
    """pytest over ``directory``, warnings as errors, with none of this environment's
    ``BASTION_*`` settings: a guide's project sets its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_passed(done: subprocess.CompletedProcess[str], count: int) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^{count} passed in ", done.stdout, flags=re.M), done.stdout


def test_audit_doc(tmp_path: Path) -> None:
    """docs/audit.md: its waiver, its app and its test run as written; two tests pass."""
    for block in readme.blocks((GUIDES.parent / "audit.md").read_text()):
        if block.file is not None:  # the table's examples are prose; every file is run
            (tmp_path / block.file).write_text(block.text)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.py",
        "pyproject.toml",
        "test_audit.py",
    ]
    assert_passed(run_pytest(tmp_path), 2)


def test_every_guide_has_its_test() -> None:
    """Each docs/guides/*.md is run by a test_<name>_guide here."""
    guides = sorted(path.stem for path in GUIDES.glob("*.md"))
    tested = sorted(
        name.removeprefix("test_").removesuffix("_guide")
        for name in globals()
        if name.startswith("test_") and name.endswith("_guide")
    )
    assert guides == tested


def test_testing_guide(tmp_path: Path) -> None:
    """testing.md: its app, its conftest.py and five test files, whose eleven tests all
    pass."""
    files = write_guide("testing.md", tmp_path)
    assert files == [
        "app.py",
        "conftest.py",
        "test_calls.py",
        "test_forms.py",
        "test_limits.py",
        "test_bound.py",
        "test_passwords.py",
    ]
    assert_passed(run_pytest(tmp_path), 11)


def test_fastapi_guide(tmp_path: Path) -> None:
    """fastapi.md: a FastAPI app with an action, protected JSON routes and /docs under the
    security headers, and a Starlette app with a protected endpoint; nine tests pass."""
    files = write_guide("fastapi.md", tmp_path)
    assert files == [
        "app.py",
        "docs_csp.py",
        "conftest.py",
        "test_api.py",
        "test_docs.py",
        "starlette_app.py",
        "test_starlette.py",
    ]
    assert_passed(run_pytest(tmp_path), 9)


def test_schema_guide(tmp_path: Path) -> None:
    """schema.md: the manifest of a small app, printed by `bastion schema` and turned into
    a client by `bastion client --ts`, served to admins only (404 for the rest, as an
    unknown path), and merged into a FastAPI app's document; six tests pass."""
    files = write_guide("schema.md", tmp_path)
    assert files == [
        "app.py",
        "test_commands.py",
        "conftest.py",
        "test_served.py",
        "test_fastapi_docs.py",
    ]
    assert_passed(run_pytest(tmp_path), 6)


def test_tokens_guide(tmp_path: Path) -> None:
    """tokens.md: a step-up action makes a read-only token, a script reads with it and
    may neither write nor make tokens, revoked it is refused, in the URL it is refused;
    five tests pass."""
    files = write_guide("tokens.md", tmp_path)
    assert files == ["app.py", "script.py", "conftest.py", "test_tokens.py"]
    assert_passed(run_pytest(tmp_path), 5)


def test_scripts_guide(tmp_path: Path) -> None:
    """scripts.md: a page whose own script calls an action with bastion.call, the token
    from csrf_meta() and a value sealed for the visitor; five tests pass."""
    files = write_guide("scripts.md", tmp_path)
    assert files == ["app.py", "templates/post.html", "conftest.py", "test_page.py"]
    assert_passed(run_pytest(tmp_path), 5)


def test_dependencies_guide(tmp_path: Path) -> None:
    """dependencies.md: an SQLAlchemy async session per call through Depends, shared by an
    owner check on a bound ID and the handler, rolled back when the handler raises, and the
    same dependency in a FastAPI route; six tests pass."""
    files = write_guide("dependencies.md", tmp_path)
    assert files == [
        "db.py",
        "app.py",
        "conftest.py",
        "test_posts.py",
        "fastapi_app.py",
        "test_fastapi.py",
    ]
    assert_passed(run_pytest(tmp_path), 6)


def test_uploads_guide(tmp_path: Path) -> None:
    """uploads.md: one file under max_file_bytes=2 MiB (1.5 MiB taken, 2.5 MiB refused
    413), several files under a declared body cap, the file read and checked by its
    bytes, and bastion audit's account of the caps; eight tests pass."""
    files = write_guide("uploads.md", tmp_path)
    assert files == ["app.py", "conftest.py", "test_uploads.py", "test_audit.py"]
    assert_passed(run_pytest(tmp_path), 8)


def test_htmx_guide(tmp_path: Path) -> None:
    """htmx.md: a task list whose forms htmx sends, with fragments (the model, the user),
    refusals as alerts with their status, next= and Redirect as HX-Redirect, and the page's
    htmx_config() held to the guide's own copy of it; nine tests pass."""
    files = write_guide("htmx.md", tmp_path)
    assert files == [
        "app.py",
        "templates/tasks.html",
        "templates/deleted.html",
        "templates/reminded.html",
        "htmx_config.html",
        "conftest.py",
        "test_tasks.py",
    ]
    assert_passed(run_pytest(tmp_path), 9)


def test_typescript_guide(tmp_path: Path) -> None:
    """typescript.md: `bastion client --ts` writes the typed client, whose call the app
    takes (two tests pass), and the guide's browser and Node callers compile with it
    under ``tsc --strict``."""
    files = write_guide("typescript.md", tmp_path)
    assert files == [
        "app.py",
        "generate.sh",
        "web/notes.ts",
        "web/node.ts",
        "conftest.py",
        "test_client.py",
    ]
    assert_passed(run_pytest(tmp_path), 2)
    compiled = tsc(
        tmp_path / "web", "--lib", "es2022,dom", "--noEmit", *os.listdir(tmp_path / "web")
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr


def test_observability_page(tmp_path: Path) -> None:
    """docs/observability.md: a span named by the action, the metrics route a 404 for a
    stranger, a refusal as one JSON line, and structlog keeping its fields."""
    files = write_guide("../observability.md", tmp_path)
    assert files == ["app.py", "test_app.py", "jsonlog.py", "structlog_setup.py", "test_logs.py"]
    assert_passed(run_pytest(tmp_path), 3)
