"""An action call's session is read at stage 6, after the checks that need no state; a
call refused before it still has its session read afterwards (stage 20), for its audit
line's user and a plain form's flash, and the middleware saves what the pipeline read.

The store is real (memory); the attacks are a signed-in user's browser made to send a
call from another site, and a call with a forged token.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict

from bastion import Bastion, Context, User, authenticated, get_session, public
from bastion.events import AuditEvent
from bastion.sessions import SCOPE_KEY, Pending, Session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

ORIGIN = "http://127.0.0.1"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class Done(BaseModel):
    ok: bool = True


@dataclass
class Site:
    bastion: Bastion[User]
    events: list[AuditEvent]
    runs: list[str]

    def client(self) -> ActionClient:
        return ActionClient(mounted(self.bastion), self.bastion, origin=ORIGIN)


def build() -> Site:
    events: list[AuditEvent] = []
    runs: list[str] = []
    app: Bastion[User] = Bastion(
        secret_key=SECRET,
        allowed_origins=[ORIGIN],
        store=MemoryStore(),
        load_user=lambda user_id: User(id=user_id),
        audit_sinks=[events.append],
    )

    @app.action(policy=public)
    async def sign_in(ctx: Context[User], data: SignIn) -> Done:
        await ctx.login(User(id=data.user))
        return Done()

    @app.action(policy=authenticated)
    def publish(ctx: Context[User]) -> Done:
        runs.append("publish")
        return Done()

    return Site(app, events, runs)


def test_a_call_refused_before_its_session_is_read_is_still_audited_as_its_user() -> None:
    """A signed-in user's browser sends a call from another site (its cookie attached),
    then one with a forged token: each is refused (403) before the session is read, the
    handler does not run, and each audit event still names the user, whose session was
    read once the call had been refused."""
    site = build()
    with site.client() as client:
        assert client.call("sign_in", {"user": 42}).status_code == 200
        cross = client.call("publish", origin="https://evil.example")
        assert cross.status_code == 403
        assert cross.json()["error"]["code"] == "cross_origin"
        forged = client.call("publish", token="A" * 86)
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "csrf_failed"
        assert client.call("publish").status_code == 200
    assert site.runs == ["publish"]
    audited = [(e.action, e.outcome, e.status, e.principal) for e in site.events[1:]]
    assert audited == [
        ("publish", "csrf", 403, "42"),
        ("publish", "csrf", 403, "42"),
        ("publish", "ok", 200, "42"),
    ]


def test_a_plain_form_refused_before_its_session_is_read_keeps_its_flash() -> None:
    """A plain form posted with a forged token lands back on its page (303) and the page
    shows why: the flash was kept in the session read after the refusal, and saved."""
    site = build()
    with site.client() as client:
        assert client.call("sign_in", {"user": 7}).status_code == 200
        reply = client.submit("publish", {}, token="A" * 86, referer="/page")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/page"
        flash = client.flash("publish")
        assert flash is not None
        assert flash.code == "csrf_failed"
    assert site.runs == []


def test_the_session_of_an_action_call_is_not_in_the_scope_before_stage_6() -> None:
    """Until the pipeline reads it, ``get_session`` says where the session is, rather
    than handing out a session that is not the caller's; once read, it is the caller's."""
    pending = Pending("A" * 43)
    scope = {SCOPE_KEY: pending}
    with pytest.raises(RuntimeError, match=r"not loaded yet.*ctx\.session"):
        get_session(scope)
    pending.session = Session("A" * 43, {"user": 1, "created": 0.0, "seen": 0.0})
    assert get_session(scope) is pending.session
