"""What ``import bastion`` costs and needs: no optional package loaded, nothing slow done
at import, and a clear message naming the extra when an optional part is used without it.

The import cost is read from ``python -X importtime`` (printed with ``-s``), never timed
against a threshold: what this asserts is which modules load.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

OPTIONAL = (
    "redis",
    "hiredis",
    "jinja2",
    "httpx2",
    "uvicorn",
    "sqlalchemy",
    "psycopg",
    "email_validator",
    "confusable_homoglyphs",
    "limits",
    "starlette.testclient",
    "opentelemetry",
    "prometheus_client",
)


def importtime(statement: str) -> dict[str, int]:
    """Module → cumulative microseconds, as ``-X importtime`` reports them; under ``""``,
    the whole statement (the sum of the modules it imported directly)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    found = {"": 0}
    for line in done.stderr.splitlines():
        row = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
        if row:
            found[row.group(3)] = int(row.group(1))
            if not row.group(2):
                found[""] += int(row.group(1))
    return found


def test_import_bastion_loads_no_optional_package() -> None:
    """``import bastion`` loads none of Redis, Jinja2, the test client, the server, the
    demo's packages, the confusable tables or the rate-limit library: each comes with the
    first use that needs it."""
    modules = importtime("import bastion")
    assert "bastion" in modules
    loaded = sorted(m for m in modules if m.split(".")[0] in OPTIONAL or m in OPTIONAL)
    assert loaded == []
    floor = importtime("import asyncio, pydantic.main, starlette.applications")[""]
    print(  # the figures `pytest -s` shows
        f"import bastion: {modules[''] / 1000:.1f} ms; "
        f"asyncio, pydantic and starlette alone: {floor / 1000:.1f} ms"
    )


def test_import_computes_no_password_hash() -> None:
    """The dummy argon2 hash (for unknown accounts) is made by the first password check,
    not by ``import bastion``: ~130 ms and 64 MiB nobody asked for."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import bastion.passwords as p; print(p._dummy_hash.cache_info().currsize);"
            "p.verify_password(None, 'x'); print(p._dummy_hash.cache_info().currsize)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["0", "1"]


@pytest.mark.parametrize(
    ("blocked", "statement", "extra"),
    [
        ("redis", "from bastion.stores import RedisStore", "redis"),
        (
            "redis",
            "from bastion.stores import store_from_url; store_from_url('redis://x')",
            "redis",
        ),
        ("httpx2", "import bastion.testing", "testing"),
        ("httpx2", "import bastion.probe", "probe"),
    ],
)
def test_an_optional_part_without_its_extra_names_the_extra(
    blocked: str, statement: str, extra: str
) -> None:
    """With the package absent (Python's own import machinery refuses it), using the part
    that needs it raises ImportError saying which extra to install."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules[{blocked!r}] = None; {statement}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    assert f"pip install 'bastion[{extra}]'" in last
