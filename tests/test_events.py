"""The audit trail: one ``AuditEvent`` per call, for every outcome, never with input.

Each call below sends a canary value in its body (and, where it can, in a header),
then the test checks the one event the call produced: its outcome word, status,
action, principal, client and digest, exactly. The attack they stand for is the audit
log as a leak: whatever a caller sends must not be copied into it, whichever stage
refused the call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette

from bastion import (
    ActionError,
    BadRequest,
    Bastion,
    Context,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnsupportedMediaType,
    User,
    ValidationFailed,
    authenticated,
    public,
    require,
)
from bastion.csrf import CsrfFailed
from bastion.events import AuditEvent, emit, log_sink, outcome_of
from bastion.http.origin import CrossOrigin
from bastion.pipeline import INTERNAL
from bastion.pipeline.stages.binding import BoundInvalid
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

CANARY = "canary-5e1f0a-must-not-be-audited"
PEER = ("192.0.2.10", 4321)
DIGEST = re.compile(r"[0-9a-f]{16}")


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=100)
    count: int = 0


class Saved(BaseModel):
    saved: bool


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    events: list[AuditEvent]
    calls: list[str] = field(default_factory=list)

    def client(self, **options: Any) -> ActionClient:
        options.setdefault("client", PEER)
        return ActionClient(self.app, self.bastion, **options)

    def id(self, action: str) -> str:
        return self.bastion.registry.get(action).id


def build() -> Site:
    events: list[AuditEvent] = []
    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        load_user=lambda user_id: User(id=user_id),
        audit_sinks=[events.append, log_sink],
    )
    calls: list[str] = []

    @bastion.action(policy=public, rate=None)
    def save(data: Note) -> Saved:
        calls.append("save")
        return Saved(saved=True)

    @bastion.action(policy=authenticated, rate=None)
    def members(data: Note) -> None:
        calls.append("members")

    @bastion.action(policy=require("admin"), rate=None)
    def admin(data: Note) -> None:
        calls.append("admin")

    @bastion.action(policy=public, rate="1/minute")
    def limited(data: Note) -> None:
        calls.append("limited")

    @bastion.action(policy=public, rate=None, max_body_bytes=256)
    def small(data: Note) -> None:
        calls.append("small")

    @bastion.action(policy=public, rate=None)
    def explode(data: Note) -> None:
        calls.append("explode")
        raise RuntimeError(f"could not store {data.text}")

    @bastion.action(policy=public, rate=None, timeout=0.05)
    async def slow(data: Note) -> None:
        calls.append("slow")
        await anyio.sleep(5)

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context, data: SignIn) -> None:
        await ctx.login(User(id=data.user))

    app = Starlette()
    bastion.mount(app)
    return Site(bastion, app, events, calls)


@pytest.fixture
def site() -> Site:
    return build()


@pytest.fixture
def client(site: Site) -> Iterator[ActionClient]:
    with site.client() as c:
        yield c


NOTE = {"text": CANARY}
CANARY_HEADERS = {"X-Request-Note": CANARY, "User-Agent": CANARY}


def only_event(site: Site, before: int = 0) -> AuditEvent:
    """The one event the last call produced (``before``: events there were before it)."""
    assert len(site.events) == before + 1
    return site.events[-1]


def fields_of(event: AuditEvent) -> dict[str, Any]:
    """The event without its two measured fields (checked on their own)."""
    found = dataclasses.asdict(event)
    del found["timestamp"], found["duration_ms"]
    return found


def expect(
    site: Site,
    action: str | None,
    outcome: str,
    status: int,
    *,
    principal: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    return {
        "action": action,
        "action_id": site.id(action) if action else None,
        "principal": principal,
        "client": PEER[0],
        "outcome": outcome,
        "status": status,
        "digest": digest,
        "token_id": None,
    }


def assert_no_canary(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    for event in site.events:
        assert CANARY not in event.as_json()
        assert CANARY not in repr(event)
    for record in caplog.records:
        if record.name == "bastion.audit":
            assert CANARY not in record.getMessage()


def sign_in(client: ActionClient, user: str) -> None:
    assert client.call("sign_in", {"user": user}).status_code == 200


# --- one event per outcome --------------------------------------------------------------


def test_ok_call_is_one_ok_event(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A successful call: outcome ok, 200, the action and its ID, the client address;
    timestamp of arrival and a duration; the input is not in it."""
    before = time.time()
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("save", NOTE, headers=CANARY_HEADERS)
    after = time.time()
    assert reply.status_code == 200
    event = only_event(site)
    assert fields_of(event) == expect(site, "save", "ok", 200)
    assert before <= event.timestamp <= after
    assert isinstance(event.duration_ms, float)
    assert 0 <= event.duration_ms <= (after - before) * 1000 + 1
    assert_no_canary(site, caplog)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (json.dumps({"text": CANARY, "count": "many"}), "application/json", 422),
        (json.dumps({"text": CANARY, "unknown": CANARY}), "application/json", 422),
        ('{"text": "' + CANARY, "application/json", 400),
        (CANARY, "text/plain", 415),
    ],
    ids=["invalid-field", "unknown-field", "malformed-json", "unsupported-type"],
)
def test_refused_input_is_one_invalid_event(
    site: Site,
    client: ActionClient,
    caplog: pytest.LogCaptureFixture,
    body: str,
    content_type: str,
    status: int,
) -> None:
    """Input that fails validation (422), is malformed (400) or of a refused content
    type (415): outcome invalid, the handler not run, the input not audited."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.post(
            client.url("save"),
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
    assert reply.status_code == status
    assert fields_of(only_event(site)) == expect(site, "save", "invalid", status)
    assert site.calls == []
    assert_no_canary(site, caplog)


def test_anonymous_call_to_a_members_action_is_unauthenticated(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """401: outcome unauthenticated, no principal."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("members", NOTE)
    assert reply.status_code == 401
    assert fields_of(only_event(site)) == expect(site, "members", "unauthenticated", 401)
    assert site.calls == []
    assert_no_canary(site, caplog)


def test_signed_in_user_without_permission_is_forbidden_with_their_id(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """403 from the policy: outcome forbidden, and the principal is the user's ID."""
    sign_in(client, "ada")
    before = len(site.events)
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("admin", NOTE)
    assert reply.status_code == 403
    event = only_event(site, before)
    assert fields_of(event) == expect(site, "admin", "forbidden", 403, principal="ada")
    assert site.calls == []
    assert_no_canary(site, caplog)


def test_signed_in_success_names_the_principal(site: Site, client: ActionClient) -> None:
    """An allowed call of a signed-in user: ok, with their ID as text."""
    sign_in(client, "ada")
    before = len(site.events)
    assert client.call("members", NOTE).status_code == 200
    assert fields_of(only_event(site, before)) == expect(
        site, "members", "ok", 200, principal="ada"
    )


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"token": None}, "csrf_failed"),
        ({"token": "forged-" + CANARY}, "csrf_failed"),
        ({"origin": "https://evil.example"}, "cross_origin"),
        ({"origin": "null"}, "cross_origin"),
    ],
    ids=["no-token", "forged-token", "cross-origin", "null-origin"],
)
def test_csrf_and_origin_refusals_are_csrf_events(
    site: Site,
    client: ActionClient,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, Any],
    code: str,
) -> None:
    """Attack: a cross-site request (no or forged token, foreign or null Origin). Outcome
    csrf, 403; neither the canary nor the forged token is audited."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("save", NOTE, **options)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == code
    assert fields_of(only_event(site)) == expect(site, "save", "csrf", 403)
    assert site.calls == []
    assert_no_canary(site, caplog)


def test_call_over_the_rate_is_rate_limited(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The second call of a 1/minute action: outcome rate_limited, 429."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        first = client.call("limited", NOTE)
        second = client.call("limited", NOTE)
    assert (first.status_code, second.status_code) == (200, 429)
    assert [fields_of(e) for e in site.events] == [
        expect(site, "limited", "ok", 200),
        expect(site, "limited", "rate_limited", 429),
    ]
    assert site.calls == ["limited"]
    assert_no_canary(site, caplog)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_body_over_the_cap_is_too_large(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture, declared: bool
) -> None:
    """A body over the action's 256 bytes, declared or streamed without a length:
    outcome too_large, 413, the handler not run."""
    body = json.dumps({"text": CANARY * 20}).encode()

    def chunks() -> Iterator[bytes]:
        yield body

    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.post(
            client.url("small"),
            content=body if declared else chunks(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
    assert reply.status_code == 413
    assert fields_of(only_event(site)) == expect(site, "small", "too_large", 413)
    assert site.calls == []
    assert_no_canary(site, caplog)


def test_handler_exception_is_an_error_event_with_the_digest(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's exception: outcome error, 500, and the digest the client got (the
    link to the traceback in the server log, which the event does not hold)."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("explode", NOTE)
    assert reply.status_code == 500
    digest = reply.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    assert fields_of(only_event(site)) == expect(site, "explode", "error", 500, digest=digest)
    assert_no_canary(site, caplog)


def test_overrunning_handler_is_a_timeout_event(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler past its 50 ms deadline: outcome timeout, 504, a duration of at least
    the deadline."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.call("slow", NOTE)
    assert reply.status_code == 504
    event = only_event(site)
    assert fields_of(event) == expect(site, "slow", "timeout", 504)
    assert event.duration_ms >= 50
    assert_no_canary(site, caplog)


def test_unknown_action_id_is_a_not_found_event_without_an_action(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: probing action IDs. 404, outcome not_found, no action named (the probed ID
    is not recorded either: it is the caller's input)."""
    probe = "probe" + CANARY
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        reply = client.post(f"/_actions/{probe}", json=NOTE)
    assert reply.status_code == 404
    assert fields_of(only_event(site)) == expect(site, None, "not_found", 404)
    assert_no_canary(site, caplog)
    assert all(probe not in e.as_json() for e in site.events)


def test_get_on_an_action_is_an_invalid_event(site: Site, client: ActionClient) -> None:
    """405 (actions are POST only) counts as invalid, and names the action it was for."""
    reply = client.get(client.url("save"))
    assert reply.status_code == 405
    assert fields_of(only_event(site)) == expect(site, "save", "invalid", 405)


def test_refused_plain_form_event_has_the_303_status_and_the_refusals_outcome(
    site: Site, client: ActionClient
) -> None:
    """A browser's refused form gets a 303 to the page; the event keeps both facts: the
    status sent (303) and why (invalid)."""
    reply = client.submit("save", {"text": CANARY, "count": "many"})
    assert reply.status_code == 303
    assert fields_of(only_event(site)) == expect(site, "save", "invalid", 303)
    assert CANARY not in site.events[0].as_json()


def test_tainted_reply_is_an_error_event_with_the_digest_sent(site: Site) -> None:
    """The taint guard's 500 is audited as error, under the digest the client got."""
    site.bastion.taint("sk_live_events_0123456789", "api key")

    @site.bastion.action(policy=public)
    def leak() -> Saved:
        raise ActionError("key sk_live_events_0123456789", code="x", status=409)

    with site.client() as client:
        reply = client.call(leak)
    assert reply.status_code == 500
    digest = reply.json()["error"]["digest"]
    assert fields_of(only_event(site)) == expect(site, "leak", "error", 500, digest=digest)


def test_every_call_is_exactly_one_event(site: Site, client: ActionClient) -> None:
    """Five calls of mixed outcomes: five events, in order."""
    client.call("save", NOTE)
    client.call("save", NOTE, token=None)
    client.call("members", NOTE)
    client.call("save", {"text": 1})
    client.call("explode", NOTE)
    assert [e.outcome for e in site.events] == ["ok", "csrf", "unauthenticated", "invalid", "error"]


def test_sweep_of_every_outcome_holds_the_canary_nowhere(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A call for every outcome word (the limited action's first call is ok), each with
    the canary in its body and headers, plus a sign-in: one event and one audit line per
    call, and the canary in none of them."""
    h = CANARY_HEADERS
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        client.call("save", NOTE, headers=h)
        client.call("save", {"text": CANARY, "count": CANARY}, headers=h)
        client.call("members", NOTE, headers=h)
        client.call("save", NOTE, token=None, headers=h)
        client.call("limited", NOTE, headers=h)
        client.call("limited", NOTE, headers=h)
        client.call("small", {"text": CANARY * 20}, headers=h)
        client.call("explode", NOTE, headers=h)
        client.call("slow", NOTE, headers=h)
        client.post("/_actions/" + CANARY, json=NOTE, headers=h)
        sign_in(client, "ada")
        client.call("admin", NOTE, headers=h)
    outcomes = [e.outcome for e in site.events if e.action != "sign_in"]
    assert sorted(outcomes) == sorted(
        [
            "ok",
            "invalid",
            "unauthenticated",
            "csrf",
            "ok",
            "rate_limited",
            "too_large",
            "error",
            "timeout",
            "not_found",
            "forbidden",
        ]
    )
    assert_no_canary(site, caplog)
    audit_lines = [r for r in caplog.records if r.name == "bastion.audit"]
    assert len(audit_lines) == len(site.events) == 12


# --- the default sink: a JSON line on bastion.audit --------------------------------------


def test_log_sink_writes_the_event_as_one_json_line(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The line is the event's JSON, compact, fields in declaration order; the record
    also carries the event as a dict under ``audit``, at INFO."""
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        client.call("save", NOTE)
    [record] = [r for r in caplog.records if r.name == "bastion.audit"]
    event = site.events[0]
    assert record.levelno == logging.INFO
    assert record.getMessage() == event.as_json()
    assert record.audit == dataclasses.asdict(event)  # type: ignore[attr-defined]
    assert list(json.loads(record.getMessage())) == [
        "timestamp",
        "action",
        "action_id",
        "principal",
        "client",
        "outcome",
        "status",
        "duration_ms",
        "digest",
        "token_id",
    ]


def test_as_json_is_exact() -> None:
    """``as_json`` spells every field, compact."""
    event = AuditEvent(
        timestamp=1.5,
        action="save",
        action_id="abc",
        principal="7",
        client="192.0.2.1",
        outcome="ok",
        status=200,
        duration_ms=2.25,
    )
    assert event.as_json() == (
        '{"timestamp":1.5,"action":"save","action_id":"abc","principal":"7",'
        '"client":"192.0.2.1","outcome":"ok","status":200,"duration_ms":2.25,"digest":null,'
        '"token_id":null}'
    )


def test_default_sink_is_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Without ``audit_sinks``, each call writes its line on bastion.audit."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    @bastion.action(policy=public)
    def ping() -> None: ...

    app = Starlette()
    bastion.mount(app)
    with caplog.at_level(logging.INFO, logger="bastion.audit"), ActionClient(app, bastion) as c:
        c.call(ping)
    [record] = [r for r in caplog.records if r.name == "bastion.audit"]
    assert json.loads(record.getMessage())["outcome"] == "ok"


def test_no_sinks_means_no_events(caplog: pytest.LogCaptureFixture) -> None:
    """``audit_sinks=[]`` turns the trail off: no line is written."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), audit_sinks=[])

    @bastion.action(policy=public)
    def ping() -> None: ...

    app = Starlette()
    bastion.mount(app)
    with caplog.at_level(logging.INFO, logger="bastion.audit"), ActionClient(app, bastion) as c:
        assert c.call(ping).status_code == 200
    assert [r for r in caplog.records if r.name == "bastion.audit"] == []


# --- sinks ------------------------------------------------------------------------------


def test_async_sinks_are_awaited_in_order() -> None:
    """Sync and async sinks both receive the event, in the order given."""
    received: list[str] = []

    async def later(event: AuditEvent) -> None:
        await anyio.sleep(0)
        received.append(f"async:{event.outcome}")

    def now(event: AuditEvent) -> None:
        received.append(f"sync:{event.outcome}")

    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), audit_sinks=[later, now])

    @bastion.action(policy=public)
    def ping() -> None: ...

    app = Starlette()
    bastion.mount(app)
    with ActionClient(app, bastion) as c:
        c.call(ping)
    assert received == ["async:ok", "sync:ok"]


def test_a_failing_sink_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A sink that raises is logged on bastion; the call is still answered 200 and the
    sinks after it still receive the event."""
    received: list[AuditEvent] = []

    def broken(event: AuditEvent) -> None:
        raise ConnectionError("audit backend down")

    async def broken_async(event: AuditEvent) -> None:
        raise ConnectionError("async audit backend down")

    bastion = Bastion(
        secret_key=SECRET, store=MemoryStore(), audit_sinks=[broken, broken_async, received.append]
    )

    @bastion.action(policy=public)
    def ping() -> None: ...

    app = Starlette()
    bastion.mount(app)
    with caplog.at_level(logging.ERROR, logger="bastion"), ActionClient(app, bastion) as c:
        reply = c.call(ping)
    assert reply.status_code == 200
    assert len(received) == 1
    failures = [r for r in caplog.records if r.getMessage() == "bastion: an audit sink failed"]
    assert len(failures) == 2
    assert "ConnectionError: audit backend down" in caplog.text


def test_emit_with_no_sinks_does_nothing() -> None:
    """``emit`` over an empty tuple is a no-op."""
    event = AuditEvent(
        timestamp=0.0,
        action=None,
        action_id=None,
        principal=None,
        client=None,
        outcome="ok",
        status=200,
        duration_ms=0.0,
    )
    anyio.run(emit, (), event)


# --- outcome_of -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (BadRequest(), "invalid"),
        (BoundInvalid(), "invalid"),
        (ValidationFailed({"a": "b"}), "invalid"),
        (MethodNotAllowed(), "invalid"),
        (UnsupportedMediaType(), "invalid"),
        (ActionError("Taken.", code="taken", status=409), "invalid"),
        (Unauthorized(), "unauthenticated"),
        (ActionError("Sign in.", code="custom", status=401), "unauthenticated"),
        (Forbidden(), "forbidden"),
        (ActionError("No.", code="nope", status=403), "forbidden"),
        (CsrfFailed(), "csrf"),
        (CrossOrigin(), "csrf"),
        (NotFound(), "not_found"),
        (PayloadTooLarge(), "too_large"),
        (RateLimited(3), "rate_limited"),
        (INTERNAL, "error"),
        (ServiceUnavailable(), "error"),
        (ActionError("Bad gateway.", code="upstream", status=502), "error"),
        (Timeout(), "timeout"),
    ],
    ids=repr,
)
def test_outcome_of_every_refusal(error: ActionError | None, outcome: str) -> None:
    """Each refusal maps to one outcome word; the CSRF family is told apart from other
    403s, and every 5xx but the deadline is an error."""
    assert outcome_of(error) == outcome


def test_a_call_without_a_session_is_a_csrf_event() -> None:
    """A well-formed token with no live session (cookies off, or the session ended) is
    refused as no_session, and audited as the CSRF refusal it is."""
    from bastion.csrf import NoSession
    from bastion.events import outcome_of

    assert outcome_of(NoSession()) == "csrf"
