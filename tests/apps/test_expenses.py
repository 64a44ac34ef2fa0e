"""The expenses app (tests/apps/expenses/), written from docs/guides/ alone: its own tests
pass, run as its authors would run them, and ``mypy --strict`` passes on all of it
without a cast or a ``type: ignore``.

Both run in a process of their own, from the app's directory, with its own settings
(its pyproject.toml) and none of this environment's ``BASTION_*`` or ``EXPENSES_*``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXPENSES = Path(__file__).resolve().parent / "expenses"
TESTS = 30
"""How many tests the app has: a test that is no longer collected fails this count."""


def run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "EXPENSES_"))}
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=EXPENSES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def sources() -> list[Path]:
    return sorted(EXPENSES.glob("*.py"))


def test_the_expenses_apps_own_tests_pass() -> None:
    """Sign-up and log-in, owner checks, the approver, the receipt, htmx and the routes."""
    done = run("pytest", "-q", "-W", "error")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^{TESTS} passed in ", done.stdout, flags=re.M), done.stdout


def test_the_expenses_app_checks_strictly_without_a_cast_or_an_ignore(tmp_path: Path) -> None:
    """Its app, its fixtures and its tests: mypy --strict clean, and not by silencing it."""
    files = sources()
    assert [p.name for p in files if "cast(" in p.read_text()] == []
    assert [p.name for p in files if "type: ignore" in p.read_text()] == []
    # The cache goes to a throwaway directory, not into the checkout.
    done = run("mypy", "--strict", "--cache-dir", str(tmp_path), ".")
    assert done.stdout.splitlines()[-1] == (
        f"Success: no issues found in {len(files)} source files"
    ), done.stdout + done.stderr
