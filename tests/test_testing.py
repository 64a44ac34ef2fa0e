"""``bastion.testing.ActionClient``: what it sends by default, how each default is left
out or replaced to test a refusal, and its session helpers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion import Bastion, Context, public
from bastion.csrf import issue
from bastion.sessions import get_session
from bastion.stores import MemoryStore
from bastion.testing import AUTO, ActionClient

TOKEN = re.compile(r"[A-Za-z0-9_-]{86}")
SID = re.compile(r"[A-Za-z0-9_-]{43}")
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
CROSS_ORIGIN = {
    "ok": False,
    "error": {
        "code": "cross_origin",
        "message": "This request did not come from an allowed origin.",
    },
}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Echo(BaseModel):
    text: str


@dataclass
class App:
    bastion: Bastion
    app: Starlette
    calls: list[str]


def build(**options: Any) -> App:
    options.setdefault("secret_key", SECRET)
    options.setdefault("store", MemoryStore())
    bastion = Bastion(**options)
    calls: list[str] = []

    @bastion.action(policy=public)
    def note(ctx: Context, data: Note) -> Echo:
        calls.append("note")
        ctx.session["note"] = data.text
        return Echo(text=data.text)

    @bastion.action(policy=public)
    def login(ctx: Context) -> None:
        calls.append("login")
        ctx.session.rotate()

    async def headers(request: Request) -> Response:
        return JSONResponse(
            {k: v for k, v in request.headers.items() if k in ("origin", "x-csrf-token")}
        )

    async def form(request: Request) -> Response:
        return PlainTextResponse(issue(get_session(request.scope), bastion.keys))

    app = Starlette(
        routes=[Route("/headers", headers, methods=["GET", "POST"]), Route("/form", form)]
    )
    bastion.mount(app)
    return App(bastion, app, calls)


@pytest.fixture
def site() -> App:
    return build()


@pytest.fixture
def client(site: App) -> Iterator[ActionClient]:
    with ActionClient(site.app, site.bastion) as c:
        yield c


def assert_json(reply: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == envelope


# --- defaults ---------------------------------------------------------------------------


def test_defaults(site: App, client: ActionClient) -> None:
    """Base URL http://127.0.0.1, Origin http://127.0.0.1, redirects not followed, and
    url() is the action's path."""
    assert str(client.base_url) == "http://127.0.0.1"
    assert client.origin == "http://127.0.0.1"
    assert client.follow_redirects is False
    assert client.url("note") == site.bastion.url_for("note")
    assert repr(AUTO) == "AUTO"


def test_call_succeeds_by_default_and_sends_what_a_page_would(
    site: App, client: ActionClient
) -> None:
    """call(): a JSON body, Accept JSON, Origin, a valid X-CSRF-Token and the session
    cookie; the handler runs."""
    reply = client.call("note", {"text": "hi"})
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})
    sent = reply.request.headers
    assert sent["content-type"] == "application/json"
    assert sent["accept"] == "application/json"
    assert sent["origin"] == "http://127.0.0.1"
    assert TOKEN.fullmatch(sent["x-csrf-token"])
    assert sent["cookie"] == f"bastion_session={client.session_id}"
    assert reply.request.content == b'{"text": "hi"}'
    assert site.calls == ["note"]


def test_submit_succeeds_by_default_as_a_plain_form(site: App, client: ActionClient) -> None:
    """submit(): a urlencoded form with the token in _csrf (no header), Origin, and a
    303 back (redirects are not followed)."""
    reply = client.submit("note", {"text": "hi", "_next": "/done"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/done"
    sent = reply.request
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["origin"] == "http://127.0.0.1"
    assert "x-csrf-token" not in sent.headers
    assert re.fullmatch(rb"text=hi&_next=%2Fdone&_csrf=[A-Za-z0-9_-]{86}", sent.content)
    assert site.calls == ["note"]


# --- overriding each default to test refusals ---------------------------------------------


def test_call_with_token_none_sends_no_token(site: App, client: ActionClient) -> None:
    """token=None: no X-CSRF-Token header; the refusal is 403 csrf_failed."""
    reply = client.call("note", {"text": "hi"}, token=None)
    assert_json(reply, 403, CSRF_FAILED)
    assert "x-csrf-token" not in reply.request.headers
    assert site.calls == []


def test_call_with_a_forged_token_sends_it(site: App, client: ActionClient) -> None:
    """token="forged": exactly that header value; 403 csrf_failed."""
    reply = client.call("note", {"text": "hi"}, token="forged")
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.headers["x-csrf-token"] == "forged"
    assert site.calls == []


def test_submit_with_token_none_sends_no_csrf_field(site: App, client: ActionClient) -> None:
    """submit(token=None): no _csrf field; asking for JSON, the refusal is 403 csrf_failed."""
    reply = client.submit(
        "note", {"text": "hi"}, token=None, headers={"Accept": "application/json"}
    )
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.content == b"text=hi"
    assert site.calls == []


def test_submit_with_a_forged_token_sends_it(site: App, client: ActionClient) -> None:
    """submit(token="forged"): _csrf=forged; 403 csrf_failed."""
    reply = client.submit(
        "note", {"text": "hi"}, token="forged", headers={"Accept": "application/json"}
    )
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.content == b"text=hi&_csrf=forged"
    assert site.calls == []


def test_call_with_origin_none_sends_no_origin(site: App, client: ActionClient) -> None:
    """origin=None: no Origin header. With a valid token that passes (a missing Origin
    is not a refusal; the token is what is always required)..."""
    reply = client.call("note", {"text": "hi"}, origin=None)
    assert "origin" not in reply.request.headers
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})
    assert site.calls == ["note"]


def test_call_with_origin_none_and_no_token_is_refused(site: App, client: ActionClient) -> None:
    """...and without a token it is 403 csrf_failed."""
    reply = client.call("note", {"text": "hi"}, origin=None, token=None)
    assert "origin" not in reply.request.headers
    assert_json(reply, 403, CSRF_FAILED)
    assert site.calls == []


def test_call_from_another_origin_is_refused(site: App, client: ActionClient) -> None:
    """origin="http://evil.example": that Origin is sent; 403 cross_origin."""
    reply = client.call("note", {"text": "hi"}, origin="http://evil.example")
    assert reply.request.headers["origin"] == "http://evil.example"
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_submit_from_another_origin_is_refused_with_json(site: App, client: ActionClient) -> None:
    """submit(origin=...) from another site: JSON 403, even for a plain form."""
    reply = client.submit("note", {"text": "hi"}, origin="http://evil.example")
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_client_without_origin(site: App) -> None:
    """ActionClient(origin=None) sends no Origin on any call."""
    with ActionClient(site.app, site.bastion, origin=None) as client:
        reply = client.call("note", {"text": "hi"})
    assert "origin" not in reply.request.headers
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})


def test_explicit_headers_win(site: App, client: ActionClient) -> None:
    """headers= replaces what the client would send (here Origin)."""
    reply = client.call("note", {"text": "hi"}, headers={"Origin": "http://evil.example"})
    assert reply.request.headers.get_list("origin") == ["http://evil.example"]
    assert_json(reply, 403, CROSS_ORIGIN)


# --- the session helpers ------------------------------------------------------------------


def test_session_id_is_none_until_a_session_exists(client: ActionClient) -> None:
    """A new client holds no session cookie; session() of no session is empty and
    creates nothing."""
    assert client.session_id is None
    assert client.session() == {}
    assert client.session_id is None


def test_token_creates_the_session_once(site: App, client: ActionClient) -> None:
    """token() creates the session (and its cookie) on first use; later tokens are new
    masks for that same session, each valid."""
    first = client.token()
    sid = client.session_id
    assert sid is not None
    assert SID.fullmatch(sid)
    second = client.token()
    assert client.session_id == sid
    assert TOKEN.fullmatch(first)
    assert TOKEN.fullmatch(second)
    assert first != second
    for token in (first, second):
        assert client.call("note", {"text": "t"}, token=token).status_code == 200


def test_session_id_is_the_cookie_the_server_set(client: ActionClient) -> None:
    """After a page creates the session, session_id is the cookie from its reply."""
    reply = client.get("/form")
    match = re.match(r"bastion_session=([A-Za-z0-9_-]{43});", reply.headers["set-cookie"])
    assert match is not None
    assert client.session_id == match.group(1)


def test_session_shows_the_server_side_data(client: ActionClient) -> None:
    """session() is a copy of the data the handlers stored."""
    client.call("note", {"text": "kept"})
    data = client.session()
    assert data == {"note": "kept"}
    data["note"] = "changed here only"
    assert client.session() == {"note": "kept"}


def test_token_and_session_follow_a_rotation(site: App, client: ActionClient) -> None:
    """After rotate(), the client holds the new ID only, and new tokens are for it."""
    client.call("note", {"text": "kept"})
    old = client.session_id
    client.call("login")
    assert client.session_id not in (None, old)
    assert [c.name for c in client.cookies.jar] == ["bastion_session"]
    assert client.session() == {"note": "kept"}
    assert client.call("note", {"text": "again"}).status_code == 200


def test_token_after_the_session_expired_replaces_the_cookie() -> None:
    """On a host without a dot (http://localhost), a session that vanished server-side:
    token() makes a new one whose cookie replaces the old one in the jar (one cookie,
    no conflict), and later server cookies replace it too."""
    site = build(allowed_origins=["http://localhost"])
    with ActionClient(
        site.app, site.bastion, base_url="http://localhost", origin="http://localhost"
    ) as client:
        client.get("/form")
        old = client.session_id
        assert old is not None
        key = site.bastion.session_manager.store_keys(old)[0]
        anyio.run(site.bastion.store.delete, key)
        client.token()
        assert client.session_id not in (None, old)
        assert len(list(client.cookies.jar)) == 1
        assert client.call("login").status_code == 200
        assert len(list(client.cookies.jar)) == 1
        assert client.call("note", {"text": "x"}).status_code == 200


def test_https_client_uses_the_prefixed_cookie() -> None:
    """Over https the client reads and writes __Host-bastion_session, as the server does."""
    site = build(allowed_origins=["https://app.example"])
    with ActionClient(
        site.app, site.bastion, base_url="https://app.example", origin="https://app.example"
    ) as client:
        client.token()
        assert [c.name for c in client.cookies.jar] == ["__Host-bastion_session"]
        assert [c.secure for c in client.cookies.jar] == [True]
        assert client.call("note", {"text": "tls"}).status_code == 200
        assert client.session() == {"note": "tls"}


# --- plain post() to an action -------------------------------------------------------------


def test_raw_post_to_an_action_gets_origin_token_and_cookie(
    site: App, client: ActionClient
) -> None:
    """client.post(url, json=...) on a new client: the Origin, a token and the cookie
    of the session that token created are added; the call succeeds."""
    reply = client.post(
        client.url("note"), json={"text": "raw"}, headers={"Accept": "application/json"}
    )
    assert_json(reply, 200, {"ok": True, "data": {"text": "raw"}})
    sent = reply.request.headers
    assert sent["origin"] == "http://127.0.0.1"
    assert TOKEN.fullmatch(sent["x-csrf-token"])
    assert sent.get_list("cookie") == [f"bastion_session={client.session_id}"]


def test_raw_post_with_its_own_csrf_field_gets_no_header_token(
    site: App, client: ActionClient
) -> None:
    """A form body that already carries _csrf keeps it: no header token is added."""
    token = client.token()
    reply = client.post(client.url("note"), data={"text": "form", "_csrf": token})
    assert reply.status_code == 303
    assert "x-csrf-token" not in reply.request.headers
    assert site.calls == ["note"]


def test_raw_post_keeps_explicit_headers(site: App, client: ActionClient) -> None:
    """An explicit Origin or X-CSRF-Token on post() is sent as given, not replaced."""
    reply = client.post(
        client.url("note"),
        json={"text": "x"},
        headers={
            "Accept": "application/json",
            "Origin": "http://evil.example",
            "X-CSRF-Token": "mine",
        },
    )
    assert reply.request.headers.get_list("origin") == ["http://evil.example"]
    assert reply.request.headers.get_list("x-csrf-token") == ["mine"]
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_raw_json_post_mentioning_csrf_still_gets_the_token(
    site: App, client: ActionClient
) -> None:
    """Only a form's _csrf field counts: a JSON value that reads "_csrf" gets a token."""
    reply = client.post(
        client.url("note"), json={"text": "_csrf"}, headers={"Accept": "application/json"}
    )
    assert TOKEN.fullmatch(reply.request.headers["x-csrf-token"])
    assert_json(reply, 200, {"ok": True, "data": {"text": "_csrf"}})


def test_raw_form_post_with_a_forged_csrf_field_is_not_rescued(
    site: App, client: ActionClient
) -> None:
    """A urlencoded form carrying its own (forged) _csrf is sent as it is: 403."""
    client.token()
    reply = client.post(
        client.url("note"),
        data={"text": "x", "_csrf": "forged"},
        headers={"Accept": "application/json"},
    )
    assert "x-csrf-token" not in reply.request.headers
    assert_json(reply, 403, CSRF_FAILED)
    assert site.calls == []


def test_other_requests_are_left_alone(client: ActionClient) -> None:
    """POSTs outside the action prefix and GETs get no Origin and no token."""
    assert client.post("/headers").json() == {}
    assert client.get("/headers").json() == {}
    assert client.session_id is None
