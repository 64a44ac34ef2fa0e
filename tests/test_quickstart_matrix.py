"""Who may call what in the quickstart: every action, for every kind of caller.

Each case is a fresh browser (its own ActionClient, at its own address, so no case
shares a rate-limit count with another) that signs in through the ``login`` action as
the demo account named, then calls one action. The status and the whole JSON envelope
are exact; for a refusal, the handler did not run. Which handlers ran is observed,
not replaced: a profile hook on the threads the client starts notes when the code of
a registered handler begins to execute.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import httpx2 as httpx
import pytest

from bastion.testing import ActionClient

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
KEY = "quickstart-matrix-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PASSWORD = "quickstart-matrix-password"
DIGEST = re.compile(r"[0-9a-f]{16}")

CALLERS = ("anonymous", "user", "author", "admin")
EMAILS = {
    "user": "user@quickstart.example",
    "author": "author@quickstart.example",
    "admin": "admin@quickstart.example",
}
PROFILES: dict[str, dict[str, Any]] = {
    "user": {"name": "Uma", "roles": []},
    "author": {"name": "Ada", "roles": ["author"]},
    "admin": {"name": "Root", "roles": ["admin"]},
}
INPUT: dict[str, dict[str, Any]] = {
    "greet": {"name": "Grace"},
    "publish": {"title": "Matrix"},
}
STATUS: dict[str, tuple[int, int, int, int]] = {
    # action      anonymous  user  author  admin
    "greet": (200, 200, 200, 200),
    "boom": (500, 500, 500, 500),
    "count": (200, 200, 200, 200),
    "login": (200, 200, 200, 200),
    "logout": (401, 200, 200, 200),
    "whoami": (401, 200, 200, 200),
    "publish": (401, 403, 200, 200),
    "stats": (401, 403, 403, 200),
}
REFUSALS = {
    401: {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}},
    403: {
        "ok": False,
        "error": {"code": "forbidden", "message": "You are not allowed to do that."},
    },
}
CASES = [
    pytest.param(action, caller, statuses[i], id=f"{action}-{caller}-{statuses[i]}")
    for action, statuses in STATUS.items()
    for i, caller in enumerate(CALLERS)
]
_addresses = count(1)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """examples/quickstart.py imported fresh with its configuration in the environment
    (key, origin, session directory, demo password); environment and sys.modules are
    restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_SECRET_KEY", KEY)
        mp.setenv("BASTION_ALLOWED_ORIGINS", "http://127.0.0.1")
        mp.setenv("BASTION_DATA_DIR", str(tmp_path_factory.mktemp("quickstart-matrix")))
        mp.setenv("QUICKSTART_PASSWORD", PASSWORD)
        spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "quickstart", module)
        spec.loader.exec_module(module)
        yield module


@contextmanager
def handlers_run(module: ModuleType) -> Iterator[set[str]]:
    """The names of the quickstart's handlers whose code ran on threads started inside
    this block (the test client's event loop and its worker threads)."""
    codes = {spec.fn.__code__: spec.name for spec in module.bastion.registry}
    ran: set[str] = set()

    def note(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            ran.add(codes[frame.f_code])

    threading.setprofile(note)  # type: ignore[arg-type]
    try:
        yield ran
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]


def test_matrix_covers_every_action_and_caller(quickstart: ModuleType) -> None:
    """The table names each registered action once, for each of the four callers."""
    assert sorted(STATUS) == sorted(spec.name for spec in quickstart.bastion.registry)
    assert len(CASES) == 32


def expected(
    module: ModuleType, action: str, caller: str, status: int, reply: httpx.Response
) -> dict[str, Any]:
    """The whole envelope this case must answer."""
    if status in REFUSALS:
        return REFUSALS[status]
    if status == 500:
        digest = reply.json()["error"]["digest"]
        assert DIGEST.fullmatch(digest)
        return {
            "ok": False,
            "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
        }
    data: Any
    if action == "greet":
        data = {"message": "Hello, Grace!"}
    elif action == "count":
        data = {"total": module.clicks}
    elif action == "login":
        data = PROFILES["user" if caller == "anonymous" else caller]
    elif action == "logout":
        data = None
    elif action == "whoami":
        data = PROFILES[caller]
    elif action == "publish":
        data = {"message": "Published “Matrix”."}
    elif action == "stats":
        data = {"clicks": module.clicks, "accounts": 3}
    return {"ok": True, "data": data}


@pytest.mark.parametrize(("action", "caller", "status"), CASES)
def test_who_may_call_what(quickstart: ModuleType, action: str, caller: str, status: int) -> None:
    """One action called by one kind of caller answers exactly its status and envelope;
    a refused call (401 for anonymous, 403 for a signed-in user without the role or
    permission) never reaches its handler, an allowed one does."""
    address = f"198.51.100.{next(_addresses)}"
    with (
        handlers_run(quickstart) as ran,
        ActionClient(quickstart.app, quickstart.bastion, client=(address, 50000)) as client,
    ):
        if caller != "anonymous":
            signed_in = client.call("login", {"email": EMAILS[caller], "password": PASSWORD})
            assert signed_in.status_code == 200
            assert signed_in.json() == {"ok": True, "data": PROFILES[caller]}
        ran.clear()
        clicks = quickstart.clicks
        if action == "login":
            email = EMAILS["user" if caller == "anonymous" else caller]
            reply = client.call("login", {"email": email, "password": PASSWORD})
        else:
            reply = client.call(action, INPUT.get(action, {}))

        assert reply.status_code == status
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["cache-control"] == "no-store"
        assert reply.json() == expected(quickstart, action, caller, status, reply)
        assert quickstart.clicks == clicks + (action == "count")
        if status in REFUSALS:
            assert ran == set()
        else:
            assert ran == {action}

        if action == "logout" and status == 200:
            # Signed out for real: the next call that needs a user is told to sign in.
            assert client.call("whoami").json() == REFUSALS[401]
        if action == "login":
            # Whoever was signed in before, the account just logged in is the caller now.
            signed_as = "user" if caller == "anonymous" else caller
            assert client.call("whoami").json() == {"ok": True, "data": PROFILES[signed_as]}
