"""Step-up: ``recent_login(max_age=...)``, for what a stolen or forgotten session must
not do on its own (change the password, create an API token, delete the account).

A session's log-in is aged by rewriting its record in the real store, as the session
timeout tests do; each test asserts the exact refusal and that the handler did not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict

from bastion import (
    Bastion,
    Context,
    ReauthenticationRequired,
    public,
    recent_login,
    require,
)
from bastion.actions.audit import inventory
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

REAUTH = {
    "ok": False,
    "error": {
        "code": "reauthentication_required",
        "message": "Please confirm it is you: sign in again to do this.",
    },
}
UNAUTHORIZED = {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}}


@dataclass(frozen=True)
class Member:
    id: int
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()


MEMBERS = {1: Member(1, frozenset({"admin"})), 2: Member(2)}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = ""


class Done(BaseModel):
    done: bool = True


class App:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.ran: list[str] = []
        self.bastion: Bastion[Member] = Bastion(
            secret_key=SECRET,
            allowed_origins=["http://127.0.0.1"],
            store=self.store,
            load_user=MEMBERS.get,
            default_rate="10000/minute",
        )
        ran = self.ran

        @self.bastion.action(policy=public)
        async def sign_in(ctx: Context[Member], data: SignIn) -> Done:
            await ctx.login(MEMBERS[data.user])
            return Done()

        @self.bastion.action(policy=recent_login(max_age=timedelta(minutes=10), page="/reauth"))
        def change_password(data: NewPassword) -> Done:
            ran.append("change_password")
            return Done()

        @self.bastion.action(policy=recent_login(60))
        def delete_account() -> Done:
            ran.append("delete_account")
            return Done()

        @self.bastion.action(policy=require(roles={"admin"}) & recent_login())
        def change_role() -> Done:
            ran.append("change_role")
            return Done()

        self.app = mounted(self.bastion)

    @contextmanager
    def client(self, user: int | None = None) -> Iterator[ActionClient]:
        """A browser, signed in as ``user`` a moment ago if given."""
        with ActionClient(self.app, self.bastion) as client:
            if user is not None:
                assert client.call("sign_in", {"user": user}).status_code == 200
            yield client

    def age_login(self, client: ActionClient, seconds: float) -> None:
        """Move the session's log-in ``seconds`` into the past, in the store."""
        sid = client.session_id
        assert sid is not None
        key = self.bastion.session_manager.store_keys(sid)[0]
        raw = anyio.run(self.store.get, key)
        assert raw is not None
        record = json.loads(raw)
        record["auth"] -= seconds
        anyio.run(self.store.set, key, json.dumps(record).encode(), 3600.0)


@pytest.fixture
def app() -> App:
    return App()


def test_a_fresh_log_in_may_change_the_password(app: App) -> None:
    with app.client(user=2) as client:
        assert client.call("change_password", {"password": "n"}).status_code == 200
    assert app.ran == ["change_password"]


def test_an_old_log_in_must_sign_in_again_then_may(app: App) -> None:
    """The attack: a session left open on a shared computer, 11 minutes after its log-in,
    tries to change the password. 401 reauthentication_required (not 403: the same user
    may), nothing runs. Signed in again (the session rotates), the change goes through."""
    with app.client(user=2) as client:
        app.age_login(client, 11 * 60)
        before = client.session_id
        reply = client.call("change_password", {"password": "n"})
        # The policy names a page: the envelope says where to sign in again (bastion.js
        # goes there), the other step-up actions' envelopes do not.
        expected = {"ok": False, "error": {**REAUTH["error"], "page": "/reauth"}}
        assert (reply.status_code, reply.json()) == (401, expected)
        assert app.ran == []
        assert client.call("sign_in", {"user": 2}).status_code == 200
        assert client.session_id != before
        assert client.call("change_password", {"password": "n"}).status_code == 200
    assert app.ran == ["change_password"]


def test_each_action_has_its_own_window(app: App) -> None:
    """Two minutes after the log-in: within change_password's 10 minutes, past
    delete_account's one."""
    with app.client(user=2) as client:
        app.age_login(client, 120)
        assert client.call("change_password", {"password": "n"}).status_code == 200
        assert client.call("delete_account").json() == REAUTH
    assert app.ran == ["change_password"]


def test_an_anonymous_caller_is_told_to_sign_in(app: App) -> None:
    with app.client() as client:
        assert client.call("change_password", {"password": "n"}).json() == UNAUTHORIZED
    assert app.ran == []


def test_a_session_from_before_log_in_times_were_kept_must_sign_in_again(app: App) -> None:
    """A session signed in before bastion kept log-in times has none: not recent."""
    with app.client(user=2) as client:
        key = app.bastion.session_manager.store_keys(client.session_id or "")[0]
        record = json.loads(anyio.run(app.store.get, key) or b"{}")
        del record["auth"]
        anyio.run(app.store.set, key, json.dumps(record).encode(), 3600.0)
        assert client.call("delete_account").json() == REAUTH
    assert app.ran == []


def test_a_plain_form_goes_to_the_sign_in_again_page_and_back(app: App) -> None:
    """Without JavaScript, a stale form post lands on the policy's page with ``next`` the
    form's own page; an action whose policy names no page sends the form back with the
    message in its flash."""
    with app.client(user=2) as client:
        app.age_login(client, 3600)
        reply = client.submit("change_password", {"password": "n"}, referer="/settings?tab=1")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/reauth?next=%2Fsettings%3Ftab%3D1"
        back = client.submit("delete_account", {}, referer="/settings")
        assert (back.status_code, back.headers["location"]) == (303, "/settings")
        flash = client.flash("delete_account")
        assert flash is not None
        assert flash.code == "reauthentication_required"
    assert app.ran == []


def test_with_a_role_both_must_hold(app: App) -> None:
    """``require(roles={"admin"}) & recent_login()``: a fresh non-admin is 403, a stale
    admin must sign in again, a fresh admin may."""
    with app.client(user=2) as author, app.client(user=1) as admin:
        assert author.call("change_role").status_code == 403
        app.age_login(admin, 3600)
        assert admin.call("change_role").json() == REAUTH
        assert admin.call("sign_in", {"user": 1}).status_code == 200
        assert admin.call("change_role").status_code == 200
    assert app.ran == ["change_role"]


def test_the_audit_shows_the_window(app: App) -> None:
    policies = {r.name: r.policy for r in inventory(app.bastion)}
    assert policies["change_password"] == "recent_login(max_age=600s)"
    assert policies["change_role"] == "(require(roles=['admin'])) & (recent_login(max_age=600s))"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_age": 0}, "recent_login() takes a positive max_age, not 0"),
        ({"max_age": True}, "recent_login() takes a positive max_age, not True"),
        ({"max_age": timedelta(0)}, "recent_login() takes a positive max_age, not "),
        ({"page": "//evil.example/x"}, "recent_login(page=...) is a path of this site"),
        ({"page": "https://evil.example/"}, "recent_login(page=...) is a path of this site"),
    ],
)
def test_recent_login_refuses_what_means_nothing(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError) as caught:
        recent_login(**kwargs)
    assert str(caught.value).startswith(message)


def test_the_refusal_is_a_401_with_its_page() -> None:
    refusal = ReauthenticationRequired("/reauth")
    assert (refusal.status, refusal.code, refusal.page) == (
        401,
        "reauthentication_required",
        "/reauth",
    )
