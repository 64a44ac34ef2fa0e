"""Every uvicorn command bastion ships or documents leaves the client address to bastion.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default and rewrites the client
address before bastion sees it, so a command line without ``--no-proxy-headers`` lets a
local client choose its own address (issue 12, finding 3). This reads the Makefile, the
docs, the README and the examples' docstrings, and checks each uvicorn command in them.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = [
    REPO / "Makefile",
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "examples").rglob("*.py")),
    REPO / "bench" / "run.py",
    REPO / "bench" / "soak.py",
]
# A uvicorn command: `uvicorn app:app …` on one line (continued with a backslash), or the
# argument lists of the benchmarks ("-m", "uvicorn", …).
COMMAND = re.compile(r"(?:\$\(BIN\)/)?\buvicorn\b(?: [^\n`]*)?(?:\\\n[^\n]*)*")


def commands() -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in COMMAND.finditer(text):
            command = match.group(0)
            is_command = (
                " --host" in command or "--app-dir" in command or command.rstrip().endswith(":app")
            )
            if is_command:
                found.append((str(path.relative_to(REPO)), command))
        for listed in re.finditer(r'"-m", "uvicorn".*?\]', text, flags=re.S):
            found.append((str(path.relative_to(REPO)), listed.group(0)))
    return found


def test_every_uvicorn_command_turns_off_uvicorns_proxy_headers() -> None:
    """Each command found says --no-proxy-headers (the Makefile's through UVICORN_FLAGS)."""
    found = commands()
    assert len(found) >= 6, found  # make demo, quickstart, probe, the docs, the benchmarks
    missing = [
        (where, command)
        for where, command in found
        if "--no-proxy-headers" not in command and "$(UVICORN_FLAGS)" not in command
    ]
    assert missing == []
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^UVICORN_FLAGS := --no-proxy-headers$", makefile, flags=re.M)
