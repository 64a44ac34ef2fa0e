"""Stage 3, sessions: the cookie, lazy creation, fixation, rotate/clear, timeouts,
restarts, key rotation, a failing store, and trusted hosts.

Timeouts are tested without waiting: a session's record is aged by writing it back
through the real store with older timestamps. Exact cookie lifetimes use a frozen
clock in ``bastion.sessions`` only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx2 as httpx
import jinja2
import pytest
from conftest import OTHER_SECRET, SECRET
from pydantic import BaseModel, ConfigDict
from services import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, Context, csrf, public
from bastion import sessions as sessions_module
from bastion.config import SessionConfig
from bastion.sessions import Session
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.testing import ActionClient

NOW = 1_800_000_000.0
WEEK = 7 * 24 * 3600
SID = r"[A-Za-z0-9_-]{43}"
QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
NO_SESSION = {
    "ok": False,
    "error": {
        "code": "no_session",
        "message": "Your session has ended or cookies are off. Reload the page and try again.",
    },
}
UNAVAILABLE = "The service is unavailable. Try again later."
PAGES = {"plain": "no token here", "form": "{{ csrf_input() }}"}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Recalled(BaseModel):
    note: str | None


@dataclass
class App:
    bastion: Bastion
    app: Starlette
    calls: list[str]

    def client(self, **options: Any) -> ActionClient:
        return ActionClient(self.app, self.bastion, **options)

    def record(self, sid: str) -> dict[str, Any] | None:
        """The session's record as stored under the current key (None if absent)."""
        raw = anyio.run(self.bastion.store.get, self.bastion.session_manager.store_keys(sid)[0])
        return None if raw is None else dict(json.loads(raw))

    def write(self, sid: str, record: dict[str, Any]) -> None:
        """Write a record back through the real store (to age it)."""
        key = self.bastion.session_manager.store_keys(sid)[0]
        anyio.run(self.bastion.store.set, key, json.dumps(record).encode(), 3600.0)


def build(**options: Any) -> App:
    """An app with pages (one renders a token, one does not) and four actions that
    use the session: remember, recall, login (rotate) and logout (clear)."""
    options.setdefault("secret_key", SECRET)
    if options.get("store") is None:
        options["store"] = MemoryStore()
    bastion = Bastion(**options)
    calls: list[str] = []

    @bastion.action(policy=public)
    def remember(ctx: Context, data: Note) -> None:
        calls.append("remember")
        ctx.session["note"] = data.text

    @bastion.action(policy=public)
    def recall(ctx: Context) -> Recalled:
        calls.append("recall")
        return Recalled(note=ctx.session.get("note"))

    @bastion.action(policy=public)
    def login(ctx: Context) -> None:
        calls.append("login")
        ctx.session.rotate()

    @bastion.action(policy=public)
    def logout(ctx: Context) -> None:
        calls.append("logout")
        ctx.session.clear()

    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.DictLoader(PAGES), autoescape=True)
    )
    bastion.templates(templates)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, request.path_params["name"])

    app = Starlette(routes=[Route("/{name}", page)])
    bastion.mount(app)
    return App(bastion, app, calls)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """bastion.sessions sees one fixed time (for exact Max-Age values only)."""
    monkeypatch.setattr(
        sessions_module, "time", SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic)
    )


def set_cookies(reply: httpx.Response) -> list[str]:
    return reply.headers.get_list("set-cookie")


def new_sid(reply: httpx.Response, name: str = "bastion_session") -> str:
    """The session ID of the one Set-Cookie header of a reply."""
    [header] = set_cookies(reply)
    match = re.match(rf"{re.escape(name)}=({SID});", header)
    assert match is not None, header
    return match.group(1)


# --- the cookie -----------------------------------------------------------------------


def test_cookie_attributes_over_http(frozen_clock: None) -> None:
    """Over http: bastion_session=<43 chars>; Max-Age=<absolute timeout>; Path=/;
    HttpOnly; SameSite=Lax. No Secure (the browser would drop it), no Domain."""
    app = build()
    with app.client() as client:
        reply = client.get("/form")
    [header] = set_cookies(reply)
    assert re.fullmatch(
        rf"bastion_session={SID}; Max-Age={WEEK}; Path=/; HttpOnly; SameSite=Lax", header
    ), header


def test_cookie_attributes_over_https_by_configuration(frozen_clock: None) -> None:
    """Bastion(https=True): the __Host- prefix and Secure, whatever the connection says."""
    app = build(https=True)
    with app.client() as client:
        reply = client.get("/form")
    [header] = set_cookies(reply)
    assert re.fullmatch(
        rf"__Host-bastion_session={SID}; Max-Age={WEEK}; Path=/; HttpOnly; SameSite=Lax; Secure",
        header,
    ), header


def test_cookie_attributes_over_an_https_connection(frozen_clock: None) -> None:
    """https unset: a connection whose own scheme is https gets __Host- and Secure, and
    the client keeps and sends that cookie."""
    app = build(allowed_origins=["https://app.example"])
    with app.client(base_url="https://app.example", origin="https://app.example") as client:
        reply = client.get("/form")
        [header] = set_cookies(reply)
        assert re.fullmatch(
            rf"__Host-bastion_session=({SID}); Max-Age={WEEK}; Path=/; HttpOnly; "
            "SameSite=Lax; Secure",
            header,
        ), header
        assert client.session_id == new_sid(reply, "__Host-bastion_session")
        assert client.call("remember", {"text": "over tls"}).status_code == 200
        assert client.session() == {"note": "over tls"}


def test_https_false_in_configuration_wins_over_the_scheme(frozen_clock: None) -> None:
    """Bastion(https=False) behind a TLS connection: the configuration decides."""
    app = build(https=False, allowed_origins=["https://app.example"])
    with app.client(base_url="https://app.example", origin="https://app.example") as client:
        reply = client.get("/form")
        [header] = set_cookies(reply)
        assert re.fullmatch(
            rf"bastion_session={SID}; Max-Age={WEEK}; Path=/; HttpOnly; SameSite=Lax", header
        ), header
        assert client.call("remember", {"text": "x"}).status_code == 200


def test_forwarded_proto_header_does_not_make_the_cookie_secure(frozen_clock: None) -> None:
    """X-Forwarded-Proto: https from the client is ignored: no __Host-, no Secure."""
    app = build()
    with app.client() as client:
        reply = client.get("/form", headers={"X-Forwarded-Proto": "https"})
    [header] = set_cookies(reply)
    assert header.startswith("bastion_session=")
    assert not header.endswith("Secure")


def test_cookie_name_and_lifetime_follow_the_session_config(frozen_clock: None) -> None:
    """SessionConfig(cookie_name, absolute_timeout) sets the name and the Max-Age."""
    app = build(sessions=SessionConfig(cookie_name="sid", absolute_timeout=3600))
    with app.client() as client:
        reply = client.get("/form")
    [header] = set_cookies(reply)
    assert re.fullmatch(rf"sid={SID}; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax", header)


def test_unprefixed_cookie_is_ignored_over_https() -> None:
    """Attack: cookie tossing. A sibling sub-domain can plant `bastion_session` but never
    a `__Host-` cookie; over https only the prefixed name is read, so the planted one
    is not adopted."""
    app = build(allowed_origins=["https://app.example"])
    with app.client(base_url="https://app.example", origin="https://app.example") as victim:
        victim.get("/form")
        sid = victim.session_id
    assert sid is not None
    with app.client(base_url="https://app.example", origin="https://app.example") as other:
        reply = other.get("/form", headers={"Cookie": f"bastion_session={sid}"})
    assert new_sid(reply, "__Host-bastion_session") != sid


# --- created only when needed ---------------------------------------------------------------


def test_page_without_a_token_sets_no_cookie() -> None:
    """Lazy creation: a page that renders no token makes no session and no cookie."""
    app = build()
    with app.client() as client:
        reply = client.get("/plain")
        assert (reply.status_code, reply.text) == (200, "no token here")
        assert set_cookies(reply) == []
        assert client.session_id is None
    assert isinstance(app.bastion.store, MemoryStore)
    assert len(app.bastion.store) == 0


def test_page_with_a_token_sets_a_cookie_once() -> None:
    """A page that renders a token creates the session (one cookie); the next render
    of the same session sets none, and one record is stored."""
    app = build()
    with app.client() as client:
        first = client.get("/form")
        sid = new_sid(first)
        second = client.get("/form")
        assert set_cookies(second) == []
        assert client.session_id == sid
    assert isinstance(app.bastion.store, MemoryStore)
    assert len(app.bastion.store) == 1
    assert app.record(sid) is not None


def test_session_is_stored_under_an_hmac_of_its_id() -> None:
    """A copy of the store holds no usable cookie: the key is an HMAC of the ID, and the
    record holds neither the ID nor anything but its data, times and CSRF secret."""
    app = build()
    with app.client() as client:
        client.call("remember", {"text": "hello"})
        sid = client.session_id
    assert sid is not None
    key = app.bastion.session_manager.store_keys(sid)[0]
    assert re.fullmatch(r"session:[0-9a-f]{64}", key)
    assert sid not in key
    record = app.record(sid)
    assert record is not None
    assert set(record) == {"data", "created", "seen", "csrf"}
    assert record["data"] == {"note": "hello"}
    assert sid not in json.dumps(record)


def test_session_repr_never_shows_the_id() -> None:
    """The ID is a bearer credential: repr() shows existence and keys only."""
    session = Session()
    session["user"] = 1
    assert session.id is not None
    assert repr(session) == "Session(exists=True, keys=['user'])"
    assert session.id not in repr(session)


# --- fixation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "Q" * 43,
        "attacker-chosen-id-of-43-characters-exactly",
        "x",
        "A" * 44,
        "../etc",
        "",
        "é" * 43,
    ],
)
def test_unknown_or_malformed_session_id_is_not_adopted(planted: str) -> None:
    """Attack: session fixation. A cookie the server never issued (well-formed or not)
    gets a fresh ID; nothing is stored under the planted one."""
    app = build()
    with app.client() as client:
        cookie = f"bastion_session={planted}".encode("latin-1")
        reply = client.get("/form", headers=[(b"cookie", cookie)])
    sid = new_sid(reply)
    assert sid != planted
    assert app.record(sid) is not None
    if re.fullmatch(SID, planted):
        assert app.record(planted) is None


def test_cookie_sent_twice_counts_as_none() -> None:
    """Attack: a planted duplicate cookie next to the victim's. Two values are no
    session: the call is refused (no handler) and a page issues a new ID."""
    app = build()
    with app.client() as victim:
        token = victim.token()
        sid = victim.session_id
    assert sid is not None
    twice = {"Cookie": f"bastion_session={sid}; bastion_session={sid}"}
    with app.client() as client:
        reply = client.call("recall", token=token, headers=twice)
        assert reply.status_code == 403
        assert reply.json() == NO_SESSION
        assert app.calls == []
        page = client.get("/form", headers=twice)
    assert new_sid(page) != sid


def test_cookie_in_two_headers_counts_as_none() -> None:
    """The same name in two Cookie header lines is also a duplicate: no session."""
    app = build()
    with app.client() as victim:
        token = victim.token()
        sid = victim.session_id
    with app.client() as client:
        reply = client.post(
            app.bastion.url_for("recall"),
            content=b"{}",
            headers=[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
                ("X-CSRF-Token", token),
                ("Cookie", f"bastion_session={sid}"),
                ("Cookie", f"bastion_session={sid}"),
            ],
        )
    assert (reply.status_code, reply.json()) == (403, NO_SESSION)
    assert app.calls == []


# --- rotate and clear -----------------------------------------------------------------------


def test_rotate_issues_a_new_id_keeps_data_and_kills_the_old_id() -> None:
    """Attack: fixation across login. rotate() sends a new ID (same data); the old ID's
    record is deleted, so its cookie is no session and its token is refused; the CSRF
    secret is new too."""
    app = build()
    with app.client() as client:
        assert client.call("remember", {"text": "cart"}).status_code == 200
        old_sid = client.session_id
        old_token = client.token()
        assert old_sid is not None
        old_record = app.record(old_sid)
        assert old_record is not None

        reply = client.call("login")
        assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": None})
        sid = new_sid(reply)
        assert sid != old_sid
        assert client.session_id == sid
        assert client.session() == {"note": "cart"}
        record = app.record(sid)
        assert record is not None
        assert record["csrf"] != old_record["csrf"]
        assert record["data"] == {"note": "cart"}
        assert app.record(old_sid) is None

        # The old token is refused in the new session...
        refused = client.call("recall", token=old_token)
        assert (refused.status_code, refused.json()) == (403, CSRF_FAILED)
    assert app.calls == ["remember", "login"]

    # ...and with the old cookie there is no session at all.
    with app.client() as thief:
        thief.cookies.set("bastion_session", old_sid, domain="127.0.0.1")
        stolen = thief.call("recall", token=old_token)
        assert (stolen.status_code, stolen.json()) == (403, NO_SESSION)
        page = thief.get("/form")
    assert new_sid(page) not in (old_sid, sid)
    assert app.calls == ["remember", "login"]


def test_clear_ends_the_session_and_expires_the_cookie() -> None:
    """clear() (logout): the record is deleted and the cookie is expired (Max-Age=0)."""
    app = build()
    with app.client() as client:
        client.call("remember", {"text": "secret plans"})
        sid = client.session_id
        token = client.token()
        assert sid is not None
        reply = client.call("logout")
        assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": None})
        assert set_cookies(reply) == ["bastion_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"]
        assert client.session_id is None
        assert app.record(sid) is None
        assert client.session() == {}
    with app.client() as replay:
        replay.cookies.set("bastion_session", sid, domain="127.0.0.1")
        again = replay.call("recall", token=token)
        assert (again.status_code, again.json()) == (403, NO_SESSION)
    assert app.calls == ["remember", "logout"]


def test_clear_over_https_expires_the_prefixed_cookie() -> None:
    """Over https the expiring cookie has the name and flags of the one it replaces."""
    app = build(allowed_origins=["https://app.example"])
    with app.client(base_url="https://app.example", origin="https://app.example") as client:
        client.call("remember", {"text": "x"})
        assert client.session_id is not None
        reply = client.call("logout")
        assert set_cookies(reply) == [
            "__Host-bastion_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
        ]
        assert client.session_id is None


# --- timeouts ---------------------------------------------------------------------------------


SHORT = SessionConfig(idle_timeout=60, absolute_timeout=3600)


def start(client: ActionClient) -> tuple[str, str]:
    """Give the client a session holding data; its ID and a token."""
    assert client.call("remember", {"text": "kept"}).status_code == 200
    sid = client.session_id
    assert sid is not None
    return sid, client.token()


def age(app: App, sid: str, *, created: float = 0, seen: float = 0) -> None:
    """Move the session's timestamps this many seconds into the past, in the store."""
    record = app.record(sid)
    assert record is not None
    record["created"] -= created
    record["seen"] -= seen
    app.write(sid, record)


def test_idle_timeout_expires_the_session() -> None:
    """No request for longer than idle_timeout: the session is gone (its token refused,
    the handler not run), and a page gets a new ID."""
    app = build(sessions=SHORT)
    with app.client() as client:
        sid, token = start(client)
        age(app, sid, created=61, seen=61)
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (403, NO_SESSION)
        assert app.calls == ["remember"]
        assert new_sid(client.get("/form")) != sid
        assert client.session() == {}


def test_session_within_idle_timeout_lives_and_is_touched() -> None:
    """A request before the idle timeout finds the data and records the activity."""
    app = build(sessions=SHORT)
    with app.client() as client:
        sid, token = start(client)
        age(app, sid, created=59, seen=59)
        before = time.time()
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": {"note": "kept"}})
        record = app.record(sid)
        assert record is not None
        assert record["seen"] >= before


def test_active_session_never_hits_a_short_idle_timeout() -> None:
    """idle_timeout=30 and a request every 20 s: each request records the activity, so
    the session lives on (activity is not only written once a minute)."""
    app = build(sessions=SessionConfig(idle_timeout=30, absolute_timeout=3600))
    with app.client() as client:
        sid, token = start(client)
        for _ in range(3):
            age(app, sid, created=20, seen=20)
            reply = client.call("recall", token=token)
            assert (reply.status_code, reply.json()) == (
                200,
                {"ok": True, "data": {"note": "kept"}},
            )


def test_absolute_timeout_expires_an_active_session() -> None:
    """Created longer ago than absolute_timeout: gone, however recent the last request."""
    app = build(sessions=SHORT)
    with app.client() as client:
        sid, token = start(client)
        age(app, sid, created=3601)
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (403, NO_SESSION)
        assert app.calls == ["remember"]


def test_session_within_absolute_timeout_lives() -> None:
    """Created just under absolute_timeout ago and active: still there."""
    app = build(sessions=SHORT)
    with app.client() as client:
        sid, token = start(client)
        age(app, sid, created=3599)
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": {"note": "kept"}})


class TtlRecordingStore(MemoryStore):
    """A real MemoryStore that also remembers the ttl of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.ttls: list[float] = []

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.ttls.append(ttl)
        await super().set(key, value, ttl)


def test_store_ttl_is_the_idle_timeout(frozen_clock: None) -> None:
    """The store drops a session by itself after idle_timeout (no sweeper needed)."""
    store = TtlRecordingStore()
    app = build(store=store, sessions=SHORT)
    with app.client() as client:
        client.get("/form")
    assert store.ttls == [60.0]


def test_store_ttl_never_outlives_the_absolute_timeout(frozen_clock: None) -> None:
    """Near its absolute end, the session's ttl is what remains of its life."""
    store = TtlRecordingStore()
    app = build(store=store, sessions=SessionConfig(idle_timeout=600, absolute_timeout=3600))
    with app.client() as client:
        client.call("remember", {"text": "x"})
        sid = client.session_id
        assert sid is not None
        record = app.record(sid)
        assert record is not None
        record["created"] -= 3500
        app.write(sid, record)
        store.ttls.clear()
        client.call("remember", {"text": "y"})
    assert store.ttls == [100.0]


# --- restarts -------------------------------------------------------------------------------


def test_session_survives_a_restart_with_sqlite(tmp_path: Path) -> None:
    """A fresh Bastion and app (same key, same SQLite directory) find the session: the
    same cookie carries the same data and its token still verifies."""
    first = build(store=SQLiteStore(tmp_path / "state"))
    with first.client() as client:
        assert client.call("remember", {"text": "survives"}).status_code == 200
        sid = client.session_id
        token = client.token()
    assert sid is not None
    anyio.run(first.bastion.store.close)
    del first

    second = build(store=SQLiteStore(tmp_path / "state"))
    with second.client() as client:
        client.cookies.set("bastion_session", sid, domain="127.0.0.1")
        assert client.session() == {"note": "survives"}
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (
            200,
            {"ok": True, "data": {"note": "survives"}},
        )
    assert second.calls == ["recall"]
    anyio.run(second.bastion.store.close)


@contextmanager
def quickstart_server(port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """examples/quickstart.py under uvicorn in its own process, until the block ends."""
    base = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(QUICKSTART.parent),
                "quickstart:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(300):
            if server.poll() is not None:
                pytest.fail(f"the quickstart exited:\n{log.read_text()}")
            try:
                # A path the app does not have: a 404 proves it serves, and makes no session.
                httpx.get(base + "/ready", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the quickstart did not start:\n{log.read_text()}")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_session_survives_a_real_server_restart(tmp_path: Path) -> None:
    """The quickstart under uvicorn: load the page (cookie and token), stop the server,
    start it again on the same port and data directory: a POST to `count` with the old
    cookie, the page's token and Origin succeeds."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": "restart-test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "BASTION_ALLOWED_ORIGINS": origin,
        "BASTION_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "uvicorn.log"
    with httpx.Client(base_url=origin, timeout=10.0) as browser:
        with quickstart_server(port, env, log):
            page = browser.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 200
            sid = browser.cookies.get("bastion_session")
            assert sid is not None
            assert re.fullmatch(SID, sid)
            count = re.search(
                r'<section id="count">.*?<form method="post" action="([^"]+)" data-bastion>'
                r'<input type="hidden" name="_csrf" value="([A-Za-z0-9_-]{86})">',
                page.text,
                flags=re.DOTALL,
            )
            assert count is not None
            url, token = count.groups()

        assert (tmp_path / "data" / "bastion.sqlite3").is_file()

        with quickstart_server(port, env, log):
            reply = browser.post(
                url,
                content=b"{}",
                headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "Origin": origin,
                    "X-CSRF-Token": token,
                },
            )
            assert reply.request.headers["cookie"] == f"bastion_session={sid}"
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"ok": True, "data": {"total": 1}}
            assert "set-cookie" not in reply.headers


# --- key rotation ---------------------------------------------------------------------------


def test_session_under_a_fallback_key_loads_and_moves_to_the_new_key() -> None:
    """secret_key rotated (old key in secret_key_fallbacks): the session stored under the
    old key still loads, with its data and token, and is re-stored under the new key."""
    store = MemoryStore()
    old = build(store=store)
    with old.client() as client:
        client.call("remember", {"text": "before rotation"})
        sid = client.session_id
        token = client.token()
    assert sid is not None
    old_key = old.bastion.session_manager.store_keys(sid)[0]

    new = build(store=store, secret_key=OTHER_SECRET, secret_key_fallbacks=[SECRET])
    new_key, fallback_key = new.bastion.session_manager.store_keys(sid)
    assert fallback_key == old_key
    assert new_key != old_key
    with new.client() as client:
        client.cookies.set("bastion_session", sid, domain="127.0.0.1")
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (
            200,
            {"ok": True, "data": {"note": "before rotation"}},
        )
        assert set_cookies(reply) == []  # same ID: the cookie does not change
    assert anyio.run(store.get, new_key) is not None
    assert anyio.run(store.get, old_key) is None


def test_session_under_a_dropped_key_is_gone() -> None:
    """Once the old key leaves the fallbacks, its sessions no longer load: a page of the
    old key's time posts a token of that key too, refused before any store read; a token
    of the new key for that cookie finds no session."""
    store = MemoryStore()
    old = build(store=store)
    with old.client() as client:
        client.call("remember", {"text": "x"})
        sid = client.session_id
        token = client.token()
    assert sid is not None
    new = build(store=store, secret_key=OTHER_SECRET)
    with new.client() as client:
        client.cookies.set("bastion_session", sid, domain="127.0.0.1")
        reply = client.call("recall", token=token)
        assert (reply.status_code, reply.json()) == (403, CSRF_FAILED)
        reply = client.call("recall", token=csrf.issue(Session(sid), new.bastion.keys))
        assert (reply.status_code, reply.json()) == (403, NO_SESSION)
    assert new.calls == []


# --- a failing store --------------------------------------------------------------------------


class DownStore:
    """A store whose server is unreachable: every call fails as a real client's would.
    (An outage simulated, not a mock of a store that runs here.)"""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("store at 10.0.0.7:6379: connection refused")

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        raise ConnectionError("store at 10.0.0.7:6379: connection refused")

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        raise ConnectionError("store at 10.0.0.7:6379: connection refused")

    async def delete(self, key: str) -> None:
        raise ConnectionError("store at 10.0.0.7:6379: connection refused")

    async def health(self) -> None:
        raise ConnectionError("store at 10.0.0.7:6379: connection refused")

    async def close(self) -> None:
        return None


class ReadOnlyStore(MemoryStore):
    """Reads work, writes fail (a full disk, a read-only replica)."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        raise OSError("disk full at /var/lib/bastion")


UNTRUSTED_HOST = {
    "ok": False,
    "error": {"code": "untrusted_host", "message": "Invalid host header"},
}


def assert_unavailable(reply: httpx.Response) -> None:
    """503 with the generic sentence: the JSON envelope for an action call (scripts and
    bastion.js read it), plain text for a page."""
    assert reply.status_code == 503
    if reply.request.url.path.startswith("/_actions/"):
        assert reply.json() == {
            "ok": False,
            "error": {"code": "unavailable", "message": UNAVAILABLE},
        }
        assert reply.headers["content-type"] == "application/json"
    else:
        assert reply.text == UNAVAILABLE
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "Traceback" not in reply.text
    assert "10.0.0.7" not in reply.text
    assert "/var/lib" not in reply.text
    assert set_cookies(reply) == []


def test_store_failure_on_load_is_503_and_the_handler_does_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail closed: the store cannot load the visitor's session → 503 plain text with no
    detail, the handler never runs, and the traceback goes to the server log only."""
    caplog.set_level(logging.ERROR, logger="bastion")
    down: Store = DownStore()
    assert isinstance(down, Store)
    app = build(store=down)
    with app.client() as client:
        sid = secrets.token_urlsafe(32)
        client.cookies.set("bastion_session", sid, domain="127.0.0.1")
        # The cookie's own token: the CSRF check (before any store read) passes.
        token = csrf.issue(Session(sid), app.bastion.keys)
        assert_unavailable(client.call("remember", {"text": "x"}, token=token))
        # A browser's plain form: the 503 itself, never a 303 to a page that could not
        # show why (its flash has no session to be kept in).
        assert_unavailable(client.submit("remember", {"text": "x"}, token=token))
        assert_unavailable(client.get("/form"))
    assert app.calls == []
    errors = [r for r in caplog.records if r.name == "bastion"]
    assert [r.getMessage() for r in errors] == [
        "bastion: the session store failed to load a session"
    ] * 3
    assert all(r.exc_info is not None for r in errors)


def test_store_failure_on_save_is_503(caplog: pytest.LogCaptureFixture) -> None:
    """A page that must create a session the store cannot save answers 503, not a page
    whose token would never verify."""
    caplog.set_level(logging.ERROR, logger="bastion")
    app = build(store=ReadOnlyStore())
    with app.client() as client:
        assert_unavailable(client.get("/form"))
    assert [r.getMessage() for r in caplog.records if r.name == "bastion"] == [
        "bastion: the session store failed to save a session"
    ]


def test_pages_needing_no_session_are_served_during_an_outage() -> None:
    """A visitor with no cookie and a page with no token never touch the store."""
    app = build(store=DownStore())
    with app.client() as client:
        reply = client.get("/plain")
    assert (reply.status_code, reply.text) == (200, "no token here")


# --- trusted hosts ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "127.0.0.2"])
def test_unlisted_host_is_400_and_nothing_runs(host: str) -> None:
    """Attack: Host-header poisoning. trusted_hosts set and Host not listed: 400 before
    any session or handler; plain text for a page, the JSON envelope for an action call."""
    app = build(trusted_hosts=["127.0.0.1", "app.example"])
    with app.client() as client:
        page = client.get("/form", headers={"Host": host})
        call = client.call("remember", {"text": "x"}, token="A" * 86, headers={"Host": host})
    assert (page.status_code, page.text) == (400, "Invalid host header")
    assert page.headers["content-type"] == "text/plain; charset=utf-8"
    assert (call.status_code, call.json()) == (400, UNTRUSTED_HOST)
    assert call.headers["content-type"] == "application/json"
    for reply in (page, call):
        assert set_cookies(reply) == []
        assert reply.headers["cache-control"] == "no-store"
    assert app.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "APP.example", "app.example:8443"])
def test_listed_host_is_served(host: str) -> None:
    """A listed host, in any case and with any port, is served."""
    app = build(trusted_hosts=["127.0.0.1", "app.example"])
    with app.client() as client:
        reply = client.get("/plain", headers={"Host": host})
    assert (reply.status_code, reply.text) == (200, "no token here")


def test_listed_host_reaches_the_action() -> None:
    """With trusted_hosts set, the normal call from a listed host succeeds."""
    app = build(trusted_hosts=["127.0.0.1"])
    with app.client() as client:
        reply = client.call("remember", {"text": "x"})
    assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": None})
    assert app.calls == ["remember"]


def test_trusted_hosts_default_to_the_allowed_origins_hosts() -> None:
    """Attack (issue 12, finding 8): Host: evil.example on an app that only gave
    allowed_origins. By default only the origins' hosts are served: 400 before anything
    runs, so no redirect the app builds can name another host."""
    app = build()  # allowed_origins http://127.0.0.1, from the environment
    assert app.bastion.config.trusted_hosts == ("127.0.0.1",)
    with app.client() as client:
        page = client.get("/plain", headers={"Host": "evil.example"})
        reply = client.call("remember", {"text": "x"}, headers={"Host": "evil.example"})
        served = client.get("/plain", headers={"Host": "127.0.0.1:8000"})
    assert (page.status_code, page.text) == (400, "Invalid host header")
    assert (reply.status_code, reply.json()) == (400, UNTRUSTED_HOST)
    assert (served.status_code, served.text) == (200, "no token here")
    assert app.calls == []


@pytest.mark.parametrize(
    ("trusted", "host", "status"),
    [
        (["*"], "evil.example", 200),
        (["*.app.example"], "eu.app.example", 200),
        (["*.app.example"], "a.b.app.example:8443", 200),
        (["*.app.example"], "app.example", 400),
        (["*.app.example"], "evilapp.example", 400),
    ],
)
def test_trusted_host_patterns(trusted: list[str], host: str, status: int) -> None:
    """``*`` trusts any host; ``*.app.example`` its subdomains only, not the bare name nor
    a name that merely ends the same."""
    app = build(trusted_hosts=trusted)
    with app.client() as client:
        assert client.get("/plain", headers={"Host": host}).status_code == status


def test_two_host_headers_are_refused() -> None:
    """Two Host headers (one listed, one not) leave it open which one a URL is built from:
    400."""
    app = build()
    with app.client() as client:
        reply = client.get("/plain", headers=[("Host", "127.0.0.1"), ("Host", "evil.example")])
    assert reply.status_code == 400
