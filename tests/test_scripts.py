"""What a page's own scripts need from the server: a token (``bastion.csrf_token`` and the
``csrf_meta()`` tag), sealed values tied to the visitor (``bastion.seal(..., request=)``),
and a refusal that says what is wrong when the call came with no session (``no_session``).

The attacks: a sealed value lifted from one visitor's page and replayed by another, and a
call made with no session cookie at all. Each asserts the exact reply.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Annotated

import jinja2
import pytest
from conftest import SECRET
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

import bastion as bastion_package
from bastion import Bastion, Bound, Context, User, csrf, public
from bastion.sessions import Session, get_session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

TOKEN = re.compile(r"[A-Za-z0-9_-]{86}")
NO_SESSION = {
    "ok": False,
    "error": {
        "code": "no_session",
        "message": "Your session has ended or cookies are off. Reload the page and try again.",
    },
}
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
BOUND_INVALID = {
    "ok": False,
    "error": {
        "code": "bound_invalid",
        "message": "This form is no longer valid. Reload the page and try again.",
    },
}
PAGE = "<head>{{ csrf_meta() }}</head>"


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class PostRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    post_id: int


class Edited(BaseModel):
    post_id: int
    text: str


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    calls: list[str] = field(default_factory=list)

    def client(self) -> ActionClient:
        return ActionClient(self.app, self.bastion)


@pytest.fixture
def site() -> Site:
    """A page that hands its scripts a token, a page that seals a post's ID for its
    visitor, an action that takes it, and sign-in (the seal is tied to a signed-in
    visitor's session)."""
    bastion = Bastion(
        secret_key=SECRET, store=MemoryStore(), load_user=lambda user_id: User(id=user_id)
    )
    calls: list[str] = []

    @bastion.action(policy=public, rate=None)
    def note(data: Note) -> Note:
        calls.append("note")
        return data

    @bastion.action(policy=public, rate=None)
    def edit(data: Note, ref: Annotated[PostRef, Bound]) -> Edited:
        calls.append("edit")
        return Edited(post_id=ref.post_id, text=data.text)

    @bastion.action(policy=public, rate=None)
    def sign_in(ctx: Context) -> None:
        ctx.session.login("ada")

    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.DictLoader({"page": PAGE}), autoescape=True)
    )
    bastion.templates(templates)

    async def token(request: Request) -> Response:
        return JSONResponse({"token": bastion.csrf_token(request)})

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page")

    async def sealed(request: Request) -> Response:
        bind = request.query_params.get("bind")
        chosen = None if bind is None else bind == "yes"
        return JSONResponse(
            {"bound": bastion.seal(edit, {"post_id": 7}, request=request, bind_session=chosen)}
        )

    app = Starlette(routes=[Route("/token", token), Route("/page", page), Route("/sealed", sealed)])
    bastion.mount(app)
    return Site(bastion, app, calls)


# --- csrf_token and csrf_meta --------------------------------------------------------------


def test_csrf_token_is_a_token_for_the_requests_session(site: Site) -> None:
    """bastion.csrf_token(request) creates the visitor's session (its cookie is on the
    reply) and gives a token bound to it: a script sends it as X-CSRF-Token and passes."""
    with site.client() as client:
        reply = client.get("/token")
        token = reply.json()["token"]
        assert TOKEN.fullmatch(token)
        assert "set-cookie" in reply.headers
        assert client.session_id is not None
        assert_reply(
            client.call("note", {"text": "hi"}, token=token),
            200,
            {
                "ok": True,
                "data": {"text": "hi"},
            },
        )
    assert site.calls == ["note"]


def test_csrf_token_is_masked_afresh_and_every_one_verifies(site: Site) -> None:
    """Two calls give two different strings (nothing stable for BREACH), both valid for
    the one session."""
    with site.client() as client:
        first = client.get("/token").json()["token"]
        second = client.get("/token").json()["token"]
        assert first != second
        for token in (first, second):
            assert client.call("note", {"text": "x"}, token=token).status_code == 200


def test_csrf_token_of_one_visitor_is_refused_for_another(site: Site) -> None:
    """Attack: a token read from one visitor's page, sent with another visitor's cookie.
    403 csrf_failed, the handler does not run."""
    with site.client() as ada, site.client() as mallory:
        adas = ada.get("/token").json()["token"]
        mallory.get("/token")
        assert_reply(mallory.call("note", {"text": "x"}, token=adas), 403, CSRF_FAILED)
    assert site.calls == []


def test_csrf_meta_renders_the_meta_tag_and_its_token_posts(site: Site) -> None:
    """{{ csrf_meta() }} renders exactly <meta name="csrf-token" content="…">; the token
    in it is what a script sends (bastion.call reads it there)."""
    with site.client() as client:
        html = client.get("/page").text
        found = re.fullmatch(
            r'<head><meta name="csrf-token" content="([A-Za-z0-9_-]{86})"></head>', html
        )
        assert found is not None
        reply = client.call("note", {"text": "from meta"}, token=found.group(1))
        assert reply.json() == {"ok": True, "data": {"text": "from meta"}}


# --- seal for the visitor ---------------------------------------------------------------------


def sign_in(client: ActionClient) -> None:
    assert client.call("sign_in").status_code == 200


def test_seal_with_the_request_ties_a_signed_in_visitors_values_to_their_session(
    site: Site,
) -> None:
    """Attack: Ada's page seals post 7 for her; Mallory lifts the sealed value and sends
    it from her own session. 400 bound_invalid, the handler does not run; Ada's own call
    passes."""
    with site.client() as ada, site.client() as mallory:
        sign_in(ada)
        sealed = ada.get("/sealed").json()["bound"]
        sign_in(mallory)
        assert_reply(mallory.call("edit", {"text": "mine"}, bound=sealed), 400, BOUND_INVALID)
        assert site.calls == []
        assert_reply(
            ada.call("edit", {"text": "ok"}, bound=sealed),
            200,
            {
                "ok": True,
                "data": {"post_id": 7, "text": "ok"},
            },
        )
    assert site.calls == ["edit"]


def test_seal_with_the_request_and_bind_session_ties_an_anonymous_visitor(site: Site) -> None:
    """bind_session=True with the request ties an anonymous visitor's values to their
    session (created for it): another visitor's copy is refused."""
    with site.client() as ada, site.client() as mallory:
        reply = ada.get("/sealed", params={"bind": "yes"})
        assert "set-cookie" in reply.headers  # the session the seal is tied to
        sealed = reply.json()["bound"]
        assert_reply(mallory.call("edit", {"text": "x"}, bound=sealed), 400, BOUND_INVALID)
        assert ada.call("edit", {"text": "x"}, bound=sealed).status_code == 200


def test_seal_for_an_anonymous_visitor_is_not_tied_by_default(site: Site) -> None:
    """Without a signed-in user nothing is tied unless asked: the value opens from any
    session (as before; bind_session=True ties it)."""
    with site.client() as ada, site.client() as other:
        sealed = ada.get("/sealed").json()["bound"]
        assert other.call("edit", {"text": "x"}, bound=sealed).status_code == 200


def test_seal_takes_the_request_or_the_session_not_both(site: Site) -> None:
    """Both given is a TypeError: which session binds must not be a guess."""
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(TypeError, match=r"^give seal\(\) the request or the session, not both$"):
        site.bastion.seal("edit", {"post_id": 1}, request=request, session=Session())


def test_seal_without_the_session_middleware_says_so(site: Site) -> None:
    """A request that bastion's middleware never saw has no session: a RuntimeError naming
    bastion.mount, never a value silently sealed for nobody."""
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(RuntimeError, match=r"bastion\.mount\(app\)"):
        site.bastion.seal("edit", {"post_id": 1}, request=request)


def test_get_session_is_public() -> None:
    """bastion.get_session is the session module's, so plain routes reach the session."""
    assert bastion_package.get_session is get_session


# --- no session at all -----------------------------------------------------------------------


def test_script_call_without_a_cookie_is_no_session(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack or accident: a fetch carrying a page's token but no cookie (cookies off,
    credentials omitted, the session ended). 403 no_session with its own message, the
    handler does not run, nothing is stored, and the security log says why."""
    caplog.set_level(logging.WARNING, logger="bastion.security")
    with site.client() as client:
        token = client.get("/token").json()["token"]
        client.cookies.clear()
        reply = client.call("note", {"text": "x"}, token=token)
        assert_reply(reply, 403, NO_SESSION)
        assert "set-cookie" not in reply.headers
    assert site.calls == []
    assert [r.getMessage() for r in caplog.records if r.name == "bastion.security"] == [
        "refused note: CSRF token no session"
    ]


def test_call_without_a_token_or_a_cookie_is_csrf_failed(site: Site) -> None:
    """With neither, the missing token decides (csrf_failed): no_session is the answer
    for a page's token that came without its session."""
    with site.client() as client:
        assert_reply(client.call("note", {"text": "x"}, token=None), 403, CSRF_FAILED)
    assert site.calls == []


def test_call_with_an_ended_session_is_no_session(site: Site) -> None:
    """A cookie for a session the store no longer has (ended, expired), with the token
    made for it, is no session; with the token of another session, a forged token."""
    with site.client() as client:
        token = client.get("/token").json()["token"]
        client.cookies.clear()
        sid = "A" * 43  # well-formed, never stored
        client.cookies.set("bastion_session", sid)
        assert_reply(client.call("note", {"text": "x"}, token=token), 403, CSRF_FAILED)
        own = csrf.issue(Session(sid), site.bastion.keys)
        assert_reply(client.call("note", {"text": "x"}, token=own), 403, NO_SESSION)
    assert site.calls == []


def test_htmx_call_without_a_cookie_shows_the_no_session_message(site: Site) -> None:
    """htmx swaps HTML: it gets the same status and message as a small alert."""
    with site.client() as client:
        token = client.get("/token").json()["token"]
        client.cookies.clear()
        reply = client.call("note", {"text": "x"}, token=token, headers={"HX-Request": "true"})
    assert reply.status_code == 403
    assert reply.text == (
        '<p class="bastion-error" role="alert">Your session has ended or cookies are off. '
        "Reload the page and try again.</p>"
    )


def test_plain_form_without_a_cookie_goes_back_with_the_no_session_flash(site: Site) -> None:
    """A browser's plain post with no cookie lands back on its page (303) with the
    no_session message as its flash, as every refusal of a plain form does."""
    with site.client() as client:
        token = client.get("/token").json()["token"]
        client.cookies.clear()
        reply = client.submit("note", {"text": "x"}, token=token, referer="/page")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/page"
        shown = client.flash("note")
    assert shown is not None
    assert (shown.code, shown.message) == ("no_session", NO_SESSION["error"]["message"])
    assert site.calls == []


# --- bastion.js ---------------------------------------------------------------------------


def test_bastion_js_stays_csp_safe_and_defines_call() -> None:
    """Under the strict CSP a script may not eval or build code from strings, and a reply
    must never become markup: bastion.js has none of those, and it defines bastion.call."""
    from importlib import resources

    source = resources.files("bastion").joinpath("static/bastion.js").read_text()
    for forbidden in ("eval(", "new Function", "innerHTML", "outerHTML", "document.write"):
        assert forbidden not in source, forbidden
    assert re.search(r"setTimeout\(\s*[\"']", source) is None  # no code in a string
    assert "window.bastion.call = call;" in source
