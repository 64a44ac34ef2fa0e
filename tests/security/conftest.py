"""The apps under attack, built once for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from bastion import Bastion
from bastion.testing import ActionClient

from . import probe
from ._support import KEY, ORIGIN, OTHER_KEY, PASSWORD, Target, fresh_address, load_quickstart

QUICKSTART_EMAILS = {
    "user": "user@quickstart.example",
    "author": "author@quickstart.example",
    "admin": "admin@quickstart.example",
}


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """examples/quickstart.py imported fresh, its configuration in the environment first
    (key, origin, session directory, demo password); all restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_SECRET_KEY", KEY)
        mp.setenv("BASTION_ALLOWED_ORIGINS", ORIGIN)
        mp.setenv("BASTION_DATA_DIR", str(tmp_path_factory.mktemp("security-quickstart")))
        mp.setenv("QUICKSTART_PASSWORD", PASSWORD)
        yield load_quickstart(mp)


def sign_in(app: object, bastion: Bastion, email: str, password: str) -> str:
    """The session ID of a browser signed in through the ``login`` action."""
    with ActionClient(app, bastion, client=(fresh_address(), 50000)) as client:  # type: ignore[arg-type]
        reply = client.call("login", {"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        sid = client.session_id
    assert sid is not None
    return sid


@pytest.fixture(scope="session")
def qs(quickstart: ModuleType) -> Target:
    """The quickstart as a target: its click count is the state no refused call changes;
    signed-in sessions are made once per role (a log-in costs an argon2 hash)."""
    sessions: dict[str, str] = {}

    def signed_in(role: str) -> str:
        if role not in sessions:
            email = QUICKSTART_EMAILS[role]
            sessions[role] = sign_in(quickstart.app, quickstart.bastion, email, PASSWORD)
        return sessions[role]

    return Target(
        "quickstart",
        quickstart.app,
        quickstart.bastion,
        state=lambda: quickstart.clicks,
        signed_in=signed_in,
    )


@pytest.fixture(scope="session")
def other(quickstart: ModuleType) -> Bastion:
    """The quickstart's and the probe's action names, registered under another key: its
    IDs, tokens and seals are the ones the real apps must not accept."""
    mirrored = probe.mirror(OTHER_KEY)
    for spec in quickstart.bastion.registry:
        mirrored.action(policy=spec.policy, name=spec.name, rate=None)(spec.fn)
    return mirrored


@pytest.fixture(scope="session")
def probe_target() -> Target:
    return Target("probe", probe.app, probe.bastion)
