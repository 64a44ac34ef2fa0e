"""``bastion probe --login`` on a log-in form whose page is also where a log-in lands (the
quickstart's, on ``/``): a right password signs in, a wrong one is told apart by the
session it keeps, and the probe stops with exit 2 and says so, never with the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_probe import EXAMPLES, serve

PASSWORD = "probe-test-password"  # what serve() gives the quickstart's demo accounts


def _probe(base: str, password: str) -> tuple[int, str, str]:
    argv = [
        base + "/",
        "--login",
        base + "/",
        "--as",
        "ci",
        "--user",
        "author@quickstart.example",
        "--password-env",
        "PROBE_TEST_PASSWORD",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "probe", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "PROBE_TEST_PASSWORD": password},
    )
    return result.returncode, result.stdout, result.stderr


def test_a_login_form_on_the_page_it_lands_on(tmp_path: Path) -> None:
    with serve(EXAMPLES, "quickstart:app", tmp_path) as base:
        status, out, err = _probe(base, PASSWORD)
        assert status == 0, out[-2000:] + err[-2000:]
        assert "PASS  ci " in out
        status, out, err = _probe(base, "not-the-password")
    assert status == 2
    assert err == "bastion probe: ci: signing in as author@quickstart.example failed (303 to /)\n"
    assert "not-the-password" not in out + err
