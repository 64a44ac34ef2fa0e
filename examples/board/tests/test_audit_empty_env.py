"""``bastion audit board.app:bastion`` as a CI job runs it on a fresh clone: an empty
environment (no key, no origins, no data directory), audit-only stand-ins, exit 0.
Beside the board, not in tests/: it needs the board's own packages (SQLAlchemy…), which
the lowest-versions job does not install."""

from __future__ import annotations

import re
from pathlib import Path

from test_audit_cli import EXAMPLES, HEADER, audit


def test_the_board_audits_clean_from_an_empty_environment(tmp_path: Path) -> None:
    """env -i: exit 0, the audit-only header first on stdout and on stderr, no violation."""
    done = audit("board.app:bastion", cwd=EXAMPLES, BOARD_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"bastion audit: {HEADER}\n"
    lines = done.stdout.splitlines()
    assert lines[0] == HEADER
    assert re.fullmatch(r"25 actions, 0 violations, \d+ warnings", lines[-1]), lines[-1]
    assert list(tmp_path.iterdir()) == []  # importing wrote nothing
