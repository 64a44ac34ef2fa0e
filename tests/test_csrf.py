"""Stages 2 and 4 together, over the real stack: the CSRF/origin matrix.

Every row is one request a browser, a script or an attacker could send to an action
of an app served from ``https://app.example``: its status, its whole JSON envelope,
whether the handler ran, and the security event it leaves on ``bastion.security``
(never with the token in it). Below the matrix, the token itself: its shape, that it
is masked per render, bound to one session, and kept across a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import OTHER_SECRET, SECRET, mounted
from helpers import CROSS_ORIGIN, CSRF_FAILED, NO_SESSION
from pydantic import BaseModel
from starlette.datastructures import Headers

from bastion import Bastion, Context, public
from bastion.crypto.keys import KeyRing, Secret
from bastion.csrf import CsrfFailed, issue, verify
from bastion.sessions import Session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

APP = "https://app.example"
TOKEN = re.compile(r"[A-Za-z0-9_-]{86}")
SECURITY_HEADERS = {
    "content-type": "application/json",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


class Moved(BaseModel):
    transfers: int


@dataclass
class App:
    bastion: Bastion
    calls: list[str]


def build(store: MemoryStore | None = None, **options: Any) -> App:
    """An app on https://app.example with a state-changing action and a login."""
    options.setdefault("secret_key", SECRET)
    bastion = Bastion(
        store=MemoryStore() if store is None else store, allowed_origins=[APP], **options
    )
    calls: list[str] = []

    @bastion.action(policy=public)
    def transfer() -> Moved:
        """Changes server state: what a cross-site page would like to make you do."""
        calls.append("transfer")
        return Moved(transfers=len(calls))

    @bastion.action(policy=public)
    def login(ctx: Context) -> None:
        ctx.session.rotate()

    return App(bastion, calls)


@pytest.fixture
def app() -> App:
    return build()


@pytest.fixture
def client(app: App) -> Iterator[ActionClient]:
    with ActionClient(mounted(app.bastion), app.bastion, base_url=APP, origin=APP) as c:
        yield c


def security_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bastion.security"]


def assert_json(reply: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert reply.status_code == status
    assert reply.json() == envelope
    assert {k: reply.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS


# --- the matrix -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request. ``token`` names a kind of token (see ``make_token``); ``via`` where
    it travels; ``headers`` are sent as given (a name twice in different case is sent
    twice, as a repeated header)."""

    id: str
    status: int
    log: str | None = None
    """The security event's message; None when the call passes."""
    origin: str | None = APP
    headers: tuple[tuple[str, str], ...] = ()
    token: str | None = "valid"
    via: str = "header"
    cookie: bool = True


OK_ = 200
NO = 403
ORIGIN_LOG = "refused transfer: origin not allowed"

CASES = [
    # Sec-Fetch-Site: browsers set it; pages cannot forge it.
    Case("sec-fetch-site missing passes", OK_),
    Case("sec-fetch-site same-origin", OK_, headers=(("Sec-Fetch-Site", "same-origin"),)),
    Case(
        "sec-fetch-site same-site (a sibling sub-domain posts)",
        NO,
        "refused transfer: sec-fetch-site same-site",
        headers=(("Sec-Fetch-Site", "same-site"),),
    ),
    Case(
        "sec-fetch-site cross-site (another site posts)",
        NO,
        "refused transfer: sec-fetch-site cross-site",
        origin="https://evil.example",
        headers=(("Sec-Fetch-Site", "cross-site"),),
    ),
    Case(
        "sec-fetch-site none (typed or bookmarked, never a page's form)",
        NO,
        "refused transfer: sec-fetch-site none",
        headers=(("Sec-Fetch-Site", "none"),),
    ),
    Case(
        "sec-fetch-site cross-site with an allowed origin",
        NO,
        "refused transfer: sec-fetch-site cross-site",
        headers=(("Sec-Fetch-Site", "cross-site"),),
    ),
    # Origin
    Case("origin missing passes this stage (the token decides)", OK_, origin=None),
    Case("origin matching", OK_),
    Case("origin matching with its default port written", OK_, origin=f"{APP}:443"),
    Case("origin of another host", NO, ORIGIN_LOG, origin="https://evil.example"),
    Case("origin of a sub-domain", NO, ORIGIN_LOG, origin="https://evil.app.example"),
    Case("origin of a look-alike suffix", NO, ORIGIN_LOG, origin="https://app.example.evil"),
    Case("origin with http instead of https", NO, ORIGIN_LOG, origin="http://app.example"),
    Case("origin on another port", NO, ORIGIN_LOG, origin="https://app.example:8443"),
    Case(
        "origin null (sandboxed frame, data: URL)",
        NO,
        "refused transfer: origin null",
        origin="null",
    ),
    Case("origin empty", NO, ORIGIN_LOG, origin=""),
    Case("origin malformed: scheme only", NO, ORIGIN_LOG, origin="http://"),
    Case("origin malformed: no scheme", NO, ORIGIN_LOG, origin="app.example"),
    Case("origin malformed: trailing slash", NO, ORIGIN_LOG, origin="https://app.example/"),
    Case("origin malformed: user info", NO, ORIGIN_LOG, origin="https://user@app.example"),
    Case("origin malformed: open IPv6 bracket", NO, ORIGIN_LOG, origin="http://[::1"),
    Case("origin malformed: port out of range", NO, ORIGIN_LOG, origin="https://app.example:0"),
    Case("origin malformed: a list of two", NO, ORIGIN_LOG, origin=f"{APP}, https://evil.example"),
    Case(
        "origin repeated, both allowed",
        NO,
        "refused transfer: origin repeated",
        origin=None,
        headers=(("Origin", APP), ("origin", APP)),
    ),
    Case(
        "origin repeated, one foreign",
        NO,
        "refused transfer: origin repeated",
        origin=None,
        headers=(("Origin", APP), ("origin", "https://evil.example")),
    ),
    # Referer, when there is no Origin
    Case("referer allowed, no origin", OK_, origin=None, headers=(("Referer", f"{APP}/page"),)),
    Case(
        "referer foreign, no origin",
        NO,
        "refused transfer: referer not allowed",
        origin=None,
        headers=(("Referer", "https://evil.example/page"),),
    ),
    Case(
        "referer malformed, no origin",
        NO,
        "refused transfer: referer not allowed",
        origin=None,
        headers=(("Referer", "http://[::1"),),
    ),
    Case(
        "referer with user info, no origin",
        NO,
        "refused transfer: referer not allowed",
        origin=None,
        headers=(("Referer", "https://user@app.example/"),),
    ),
    Case(
        "referer of another scheme, no origin",
        NO,
        "refused transfer: referer not allowed",
        origin=None,
        headers=(("Referer", "http://app.example/page"),),
    ),
    Case(
        "origin allowed decides over a foreign referer",
        OK_,
        headers=(("Referer", "https://evil.example/"),),
    ),
    Case(
        "origin foreign is refused whatever the referer",
        NO,
        ORIGIN_LOG,
        origin="https://evil.example",
        headers=(("Referer", f"{APP}/page"),),
    ),
    # X-Forwarded-* decide nothing (a forged Host is refused before: test_sessions.py, and
    # decides nothing either where every host is trusted: test_origin.py)
    Case(
        "foreign origin with X-Forwarded-Host forged to match",
        NO,
        ORIGIN_LOG,
        origin="https://evil.example",
        headers=(("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https")),
    ),
    # The token: always required
    Case("token valid in the X-CSRF-Token header", OK_),
    Case("token valid in the _csrf form field", OK_, via="form"),
    Case("token valid, no origin, no referer", OK_, origin=None),
    Case("token missing", NO, "refused transfer: CSRF token missing", token=None),
    Case(
        "token missing from a form",
        NO,
        "refused transfer: CSRF token missing",
        token=None,
        via="form",
    ),
    Case("token empty", NO, "refused transfer: CSRF token missing", token="empty"),
    Case(
        "token missing and no origin",
        NO,
        "refused transfer: CSRF token missing",
        origin=None,
        token=None,
    ),
    Case("token one character short", NO, "refused transfer: CSRF token malformed", token="short"),
    Case("token one character long", NO, "refused transfer: CSRF token malformed", token="long"),
    Case("token not base64", NO, "refused transfer: CSRF token malformed", token="not_base64"),
    Case("token with padding", NO, "refused transfer: CSRF token malformed", token="padded"),
    Case(
        "token not ASCII (form)",
        NO,
        "refused transfer: CSRF token malformed",
        token="non_ascii",
        via="form",
    ),
    Case(
        "token forged: 86 random base64url characters",
        NO,
        "refused transfer: CSRF token mismatch",
        token="forged",
    ),
    Case(
        "token of another session",
        NO,
        "refused transfer: CSRF token mismatch",
        token="other_session",
    ),
    Case(
        "token from before session.rotate()",
        NO,
        "refused transfer: CSRF token mismatch",
        token="pre_rotate",
    ),
    Case(
        "token made with another app's key",
        NO,
        "refused transfer: CSRF token mismatch",
        token="other_key",
    ),
    Case(
        "token valid but no session cookie",
        NO,
        "refused transfer: CSRF token no session",
        cookie=False,
    ),
    Case(
        "token missing and no session cookie: the missing token decides",
        NO,
        "refused transfer: CSRF token missing",
        token=None,
        cookie=False,
    ),
    Case(
        "token forged and no session cookie",
        NO,
        "refused transfer: CSRF token no session",
        token="forged",
        cookie=False,
    ),
    Case(
        "token valid but sent twice",
        NO,
        "refused transfer: CSRF token repeated",
        token="twice",
    ),
    Case(
        "token valid in a JSON body does not count",
        NO,
        "refused transfer: CSRF token missing",
        via="json_body",
    ),
    Case(
        "a forged header token is not excused by a valid form token",
        NO,
        "refused transfer: CSRF token mismatch",
        via="form_and_forged_header",
    ),
    # Order: the origin is judged first, the token after
    Case("foreign origin and valid token", NO, ORIGIN_LOG, origin="https://evil.example"),
    Case("foreign origin and no token", NO, ORIGIN_LOG, origin="https://evil.example", token=None),
]


def make_token(kind: str | None, client: ActionClient, app: App) -> str | None:
    """The token a case sends (obtaining one may create the client's session)."""
    if kind is None:
        return None
    if kind == "empty":
        return ""
    if kind == "forged":
        return secrets.token_urlsafe(64)
    if kind == "not_base64":
        return "!" * 86
    if kind == "non_ascii":
        return "é" * 86
    if kind == "other_session":
        with ActionClient(mounted(app.bastion), app.bastion, base_url=APP, origin=APP) as other:
            return other.token()
    if kind == "pre_rotate":
        before = client.token()
        assert client.call("login").status_code == 200
        return before
    if kind == "other_key":
        session = anyio.run(app.bastion.session_manager.load, client.session_id)
        return issue(session, KeyRing(Secret(OTHER_SECRET.encode())))
    valid = client.token()
    return {
        "valid": valid,
        "twice": valid,
        "short": valid[:-1],
        "long": valid + "A",
        "padded": valid[:-2] + "==",
    }[kind]


def send(case: Case, client: ActionClient, token: str | None) -> httpx.Response:
    extra = dict(case.headers)
    if case.via == "header":
        if case.token == "twice":
            # Two header names differing in case are sent as a repeated header.
            extra.update({"X-CSRF-Token": token or "", "x-csrf-token": token or ""})
            return client.call("transfer", token=None, origin=case.origin, headers=extra)
        return client.call("transfer", token=token, origin=case.origin, headers=extra)
    if case.via == "json_body":
        return client.call("transfer", {"_csrf": token}, token=None, origin=case.origin)
    json_reply = {"Accept": "application/json", **extra}
    if case.via == "form_and_forged_header":
        json_reply["X-CSRF-Token"] = secrets.token_urlsafe(64)
    return client.submit("transfer", token=token, origin=case.origin, headers=json_reply)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_origin_and_token_matrix(
    case: Case, app: App, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each row: the exact status and envelope; the handler runs only when it passes;
    a refusal leaves one bastion.security warning, which never holds the token."""
    caplog.set_level(logging.INFO, logger="bastion.security")
    client.token()  # the visitor has loaded a page of the app: a session exists
    token = make_token(case.token, client, app)
    if not case.cookie:
        client.cookies.clear()
    caplog.clear()

    reply = send(case, client, token)

    if case.status == OK_:
        assert_json(reply, 200, {"ok": True, "data": {"transfers": 1}})
        assert app.calls == ["transfer"]
    else:
        envelope = (
            CROSS_ORIGIN
            if case.log and "CSRF" not in case.log
            else NO_SESSION
            if case.log and case.log.endswith("no session")
            else CSRF_FAILED
        )
        assert_json(reply, 403, envelope)
        assert app.calls == []
    records = security_records(caplog)
    assert [r.getMessage() for r in records] == ([case.log] if case.log else [])
    assert all(r.levelno == logging.WARNING for r in records)
    for record in records:
        logged = record.getMessage() + repr(record.__dict__)
        if token:
            assert token not in logged
        if case.origin and case.origin not in ("null", ""):
            assert case.origin not in logged


def test_matrix_has_enough_rows() -> None:
    """The matrix covers at least 24 distinct requests, each named once."""
    assert len(CASES) >= 24
    assert len({case.id for case in CASES}) == len(CASES)


# --- anonymous visitors and the order of checks -------------------------------------------


def test_public_action_for_an_anonymous_visitor_still_needs_a_token(app: App) -> None:
    """Attack: login CSRF / anonymous state change. A public action called by a visitor
    with no session and no token: 403 csrf_failed, no handler, no session created."""
    with ActionClient(mounted(app.bastion), app.bastion, base_url=APP, origin=APP) as fresh:
        reply = fresh.call("transfer", token=None)
        assert_json(reply, 403, CSRF_FAILED)
        assert "set-cookie" not in reply.headers
        assert fresh.session_id is None
    assert app.calls == []
    assert isinstance(app.bastion.store, MemoryStore)
    assert len(app.bastion.store) == 0


def test_anonymous_visitor_with_a_made_up_token_is_refused(app: App) -> None:
    """A well-formed token without any session behind it: 403 no_session, nothing
    stored."""
    with ActionClient(mounted(app.bastion), app.bastion, base_url=APP, origin=APP) as fresh:
        reply = fresh.call("transfer", token=secrets.token_urlsafe(64))
        assert_json(reply, 403, NO_SESSION)
        assert "set-cookie" not in reply.headers
    assert app.calls == []
    assert isinstance(app.bastion.store, MemoryStore)
    assert len(app.bastion.store) == 0


def test_anonymous_visitor_with_a_token_from_a_page_succeeds(app: App) -> None:
    """The way in for anyone: a page renders a token (creating the session); the call
    with that token and cookie passes."""
    with ActionClient(mounted(app.bastion), app.bastion, base_url=APP, origin=APP) as fresh:
        assert fresh.session_id is None
        assert_json(fresh.call("transfer"), 200, {"ok": True, "data": {"transfers": 1}})
    assert app.calls == ["transfer"]


def test_token_reused_many_times_within_its_session(app: App, client: ActionClient) -> None:
    """A token is bound to the session, not single-use: a page's form can post again."""
    token = client.token()
    for n in (1, 2, 3):
        assert_json(
            client.call("transfer", token=token), 200, {"ok": True, "data": {"transfers": n}}
        )


def test_csrf_field_sent_twice_is_malformed(app: App, client: ActionClient) -> None:
    """Two _csrf fields in one form (a planted one beside the page's): 400, no handler."""
    token = client.token()
    reply = client.post(
        app.bastion.url_for("transfer"),
        data={"_csrf": [token, token]},
        headers={"Accept": "application/json"},
    )
    assert_json(
        reply,
        400,
        {
            "ok": False,
            "error": {
                "code": "malformed",
                "message": "The form field _csrf must be sent once, as text.",
            },
        },
    )
    assert app.calls == []


# --- the token itself ---------------------------------------------------------------------


def test_issued_token_is_86_urlsafe_characters_and_masked_each_time() -> None:
    """Each render gives a different 86-character base64url token (a fresh mask:
    nothing stable for BREACH to find), and every one of them verifies."""
    keys = KeyRing(Secret(SECRET.encode()))
    session = Session()
    tokens = [issue(session, keys) for _ in range(20)]
    assert all(TOKEN.fullmatch(t) for t in tokens)
    assert len(set(tokens)) == 20
    for t in tokens:
        verify(session.id, Headers({"x-csrf-token": t}), None, keys, "a")  # no CsrfFailed


def test_issue_creates_the_session() -> None:
    """Rendering a token makes the session exist (it is what the token is bound to)."""
    session = Session()
    assert not session.exists
    issue(session, KeyRing(Secret(SECRET.encode())))
    assert session.exists
    assert session.cookie_changed


def test_token_does_not_carry_the_session_id_or_its_storage_key() -> None:
    """Unmasked, a token is an HMAC of the session ID under the CSRF key: the ID (the
    cookie, a bearer credential) appears nowhere in it, nor does the key the store keeps
    the session under (an HMAC of the ID under the session key), nor the session's other
    secret."""
    keys = KeyRing(Secret(SECRET.encode()))
    session = Session()
    token = issue(session, keys)
    blob = base64.urlsafe_b64decode(token + "==")
    raw = bytes(a ^ b for a, b in zip(blob[32:], blob[:32], strict=True))
    assert session.id is not None
    assert session.id not in token
    assert session.id.encode() not in blob
    assert session.id.encode() not in raw
    stored_under = hmac.new(keys.current("session"), session.id.encode(), hashlib.sha256)
    assert raw != stored_under.digest()
    assert raw == hmac.new(keys.current("csrf"), session.id.encode(), hashlib.sha256).digest()
    assert session.csrf_secret not in blob


def test_form_token_is_used_when_no_header_is_sent() -> None:
    """verify() takes the _csrf field's token when the header is absent."""
    keys = KeyRing(Secret(SECRET.encode()))
    session = Session()
    token = issue(session, keys)
    verify(session.id, Headers({}), token, keys, "a")  # no CsrfFailed


def test_token_for_one_key_purpose_does_not_verify() -> None:
    """The attack: a copy of the store holds every session under HMAC(session key, ID).
    Sent as a token (unmasked: a zero mask), that HMAC is refused: the token's is made
    with the CSRF key, and HKDF purposes keep the keys apart. The real token passes."""
    keys = KeyRing(Secret(SECRET.encode()))
    session = Session()
    issue(session, keys)
    assert session.id is not None
    raw = hmac.new(keys.current("session"), session.id.encode(), hashlib.sha256).digest()
    forged = base64.urlsafe_b64encode(bytes(32) + raw).rstrip(b"=").decode()
    with pytest.raises(CsrfFailed):
        verify(session.id, Headers({"x-csrf-token": forged}), None, keys, "a")
    verify(session.id, Headers({"x-csrf-token": issue(session, keys)}), None, keys, "a")


def test_token_survives_key_rotation_through_fallbacks() -> None:
    """After rotating secret_key (old key in secret_key_fallbacks), a form rendered
    before the rotation still posts; without the fallback it is refused."""
    store = MemoryStore()
    old = build(store, secret_key=SECRET)
    with ActionClient(mounted(old.bastion), old.bastion, base_url=APP, origin=APP) as before:
        token = before.token()
        sid = before.session_id
    assert sid is not None

    rotated = build(store, secret_key=OTHER_SECRET, secret_key_fallbacks=[SECRET])
    with ActionClient(mounted(rotated.bastion), rotated.bastion, base_url=APP, origin=APP) as c:
        c.cookies.set("__Host-bastion_session", sid, domain="app.example")
        assert_json(c.call("transfer", token=token), 200, {"ok": True, "data": {"transfers": 1}})
    assert rotated.calls == ["transfer"]

    dropped = build(store, secret_key=OTHER_SECRET)
    with ActionClient(mounted(dropped.bastion), dropped.bastion, base_url=APP, origin=APP) as c:
        c.cookies.set("__Host-bastion_session", sid, domain="app.example")
        assert_json(c.call("transfer", token=token), 403, CSRF_FAILED)
    assert dropped.calls == []
