"""The benchmark's bastion server answers the benchmark's call (`make bench` refuses a run
otherwise, but it is not part of `make test`): the same login, headers and body, over the
same loopback Host, give 200 and the expected post."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from starlette.testclient import TestClient

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """The bench's app and shared values, imported from the repository root. The app
    quiets the bastion.audit logger as it is imported (for the bench server): that level
    is put back, so no later test loses its audit records."""
    monkeypatch.syspath_prepend(ROOT)
    audit = logging.getLogger("bastion.audit")
    level = audit.level
    try:
        yield importlib.import_module("bench.bastion_app"), importlib.import_module("bench.common")
    finally:
        audit.setLevel(level)
        for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
            del sys.modules[name]


def test_the_bench_call_is_answered_as_the_bench_expects(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    bastion_app, common = bench
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        login = client.get("/bench/login")
        assert login.status_code == 200, login.text
        reply = client.post(
            login.json()["url"],
            content=common.BODY,
            headers={
                "Origin": common.ORIGIN,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRF-Token": login.json()["token"],
            },
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["ok"] is True
    assert common.expected_post(reply.json()["data"])
