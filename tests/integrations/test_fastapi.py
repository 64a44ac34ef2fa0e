"""A FastAPI app with actions beside its own JSON routes: ``Depends(bastion.protect)``
and ``/docs`` under ``add_security_headers``.

The attack on a plain route is the one actions are built against: a page of another site
makes a signed-in visitor's browser post to ``/api/notes`` with their session cookie. A
protected route refuses it exactly as an action refuses the same call (status, code,
message, headers), and its handler never runs. ``/docs``, ``/redoc`` and
``/openapi.json`` keep working under the security headers, with a relaxed policy only on
the docs' paths (Chromium renders them in tests/e2e/test_fastapi.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx2 as httpx
import pytest
from conftest import ORIGIN, SECRET
from fastapi import Depends, FastAPI
from helpers import CROSS_ORIGIN, CSRF_FAILED, NO_SESSION, assert_reply
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from bastion import Bastion, public
from bastion.http.headers import default_csp
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

EVIL = "https://evil.example"
# The policies docs/guides/fastapi.md gives FastAPI's own docs pages (held to the guide
# below; tests/e2e/test_fastapi.py renders the pages under them in Chromium).
SWAGGER_CSP = (
    "default-src 'self'; "
    "script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
REDOC_CSP = (
    "default-src 'self'; "
    "script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Saved(BaseModel):
    id: int
    text: str


@dataclass
class Site:
    bastion: Bastion
    app: FastAPI
    ran: list[str] = field(default_factory=list)

    def client(self, **options: Any) -> ActionClient:
        return ActionClient(self.app, self.bastion, **options)


def build() -> Site:
    """The same note-taking written twice: an action, and a FastAPI route under protect;
    a GET route on the same protected router; a token route for a page's scripts."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    ran: list[str] = []

    @bastion.action(policy=public, rate=None)
    def add_note(data: Note) -> Saved:
        ran.append("action")
        return Saved(id=len(ran), text=data.text)

    app = FastAPI()
    bastion.mount(app)  # protect's refusals answered with the action's envelope too
    bastion.add_security_headers(app, csp_for={"/docs": SWAGGER_CSP, "/redoc": REDOC_CSP})

    @app.post("/api/notes", dependencies=[Depends(bastion.protect)])
    async def create_note(note: Note) -> Saved:
        ran.append("route")
        return Saved(id=len(ran), text=note.text)

    @app.get("/api/notes", dependencies=[Depends(bastion.protect)])
    async def list_notes() -> list[str]:
        ran.append("list")
        return []

    @app.get("/api/csrf")
    async def token(request: Request) -> dict[str, str]:
        return {"token": bastion.csrf_token(request)}

    return Site(bastion, app, ran)


@pytest.fixture
def site() -> Site:
    return build()


@pytest.fixture
def client(site: Site) -> Iterator[ActionClient]:
    with site.client() as test_client:
        yield test_client


def post_route(
    client: ActionClient,
    *,
    token: str | None,
    origin: str | None = ORIGIN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A script's call to the plain route: JSON, the token in X-CSRF-Token."""
    sent = {"Accept": "application/json", **(headers or {})}
    if token is not None:
        sent["X-CSRF-Token"] = token
    if origin is not None:
        sent["Origin"] = origin
    return client.post("/api/notes", json={"text": "hi"}, headers=sent)


def assert_same_refusal(route: httpx.Response, action: httpx.Response, envelope: Any) -> None:
    """The route refused exactly as the action did: status, body and the envelope's
    headers."""
    assert_reply(route, 403, envelope)
    assert_reply(action, 403, envelope)
    for name in ("content-type", "cache-control", "x-content-type-options"):
        assert route.headers[name] == action.headers[name]


# --- the refusals: exactly an action's ----------------------------------------------------------


def test_cross_origin_post_to_the_route_is_refused_as_the_action_is(
    site: Site, client: ActionClient
) -> None:
    """Attack: CSRF from another site. The visitor's browser posts to /api/notes with
    their cookie and (the page read it somehow) a valid token, but Origin is the attacker's.
    403 cross_origin, as the action answers; neither handler ran."""
    token = client.token()
    route = post_route(client, token=token, origin=EVIL)
    action = client.call("add_note", {"text": "hi"}, token=token, origin=EVIL)
    assert_same_refusal(route, action, CROSS_ORIGIN)
    assert site.ran == []


def test_cross_site_fetch_metadata_is_refused_as_the_action_is(
    site: Site, client: ActionClient
) -> None:
    """Attack: a sibling sub-domain posts (Sec-Fetch-Site: same-site, no Origin sent).
    403 cross_origin before the token is looked at; the handler did not run."""
    token = client.token()
    headers = {"Sec-Fetch-Site": "same-site"}
    route = post_route(client, token=token, origin=None, headers=headers)
    action = client.call("add_note", {"text": "hi"}, token=token, origin=None, headers=headers)
    assert_same_refusal(route, action, CROSS_ORIGIN)
    assert site.ran == []


def test_tokenless_post_to_the_route_is_refused_as_the_action_is(
    site: Site, client: ActionClient
) -> None:
    """Attack: CSRF where the browser sends no Origin (an old browser, a privacy proxy):
    the cookie rides along but the attacker cannot read a token. 403 csrf_failed, as the
    action answers; the handler did not run."""
    client.token()  # the visitor has a session
    route = post_route(client, token=None)
    action = client.call("add_note", {"text": "hi"}, token=None)
    assert_same_refusal(route, action, CSRF_FAILED)
    assert site.ran == []


def test_forged_token_is_refused_as_the_action_is(site: Site, client: ActionClient) -> None:
    """A made-up token of the right shape with the visitor's cookie: 403 csrf_failed."""
    client.token()
    forged = "A" * 86
    assert_same_refusal(
        post_route(client, token=forged),
        client.call("add_note", {"text": "hi"}, token=forged),
        CSRF_FAILED,
    )
    assert site.ran == []


def test_call_without_a_session_is_no_session_as_the_action_says(
    site: Site, client: ActionClient
) -> None:
    """A token but no cookie (a fetch without credentials, cookies off): 403 no_session,
    the action's words for it."""
    token = client.token()
    client.cookies.clear()
    assert_same_refusal(
        post_route(client, token=token),
        client.call("add_note", {"text": "hi"}, token=token),
        NO_SESSION,
    )
    assert site.ran == []


def test_refusal_leaves_the_security_log_line_naming_the_route(
    client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One bastion.security warning per refusal, naming the route as declared, never
    the token."""
    caplog.set_level(logging.WARNING, logger="bastion.security")
    token = client.token()
    post_route(client, token=None)
    post_route(client, token=token, origin=EVIL)
    assert [r.getMessage() for r in caplog.records if r.name == "bastion.security"] == [
        "refused route POST /api/notes: CSRF token missing",
        "refused route POST /api/notes: origin not allowed",
    ]
    assert all(token not in r.getMessage() + repr(r.__dict__) for r in caplog.records)


# --- what passes ---------------------------------------------------------------------------


def test_valid_call_reaches_the_route(site: Site, client: ActionClient) -> None:
    """Same origin, the session's token in X-CSRF-Token: the route runs and answers its
    own JSON (FastAPI's, not an envelope)."""
    reply = post_route(client, token=client.token())
    assert reply.status_code == 200
    assert reply.json() == {"id": 1, "text": "hi"}
    assert site.ran == ["route"]


def test_one_token_serves_the_route_and_the_action(site: Site, client: ActionClient) -> None:
    """The token a script got from /api/csrf (bastion.csrf_token) is the action's too: one
    session, one token."""
    token = client.get("/api/csrf").json()["token"]
    assert post_route(client, token=token).status_code == 200
    assert client.call("add_note", {"text": "hi"}, token=token).json() == {
        "ok": True,
        "data": {"id": 2, "text": "hi"},
    }
    assert site.ran == ["route", "action"]


def test_safe_methods_of_a_protected_router_pass_unchecked(
    site: Site, client: ActionClient
) -> None:
    """GET under protect needs no token and no session: a protected router's reads stay
    plain reads (and must change nothing)."""
    reply = client.get("/api/notes", headers={"Origin": EVIL})
    assert reply.status_code == 200
    assert site.ran == ["list"]


def test_protect_without_mount_is_an_error_not_a_pass() -> None:
    """No bastion session middleware: protect cannot check a token, so the call fails
    (a RuntimeError naming bastion.mount), and the handler does not run."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    app = FastAPI()
    ran: list[str] = []

    @app.post("/api/notes", dependencies=[Depends(bastion.protect)])
    async def create_note() -> None:
        ran.append("route")

    with ActionClient(app, bastion) as client, pytest.raises(RuntimeError, match="mount"):
        client.post("/api/notes", headers={"Origin": ORIGIN})
    assert ran == []


def test_protect_adds_nothing_to_the_openapi_schema(client: ActionClient) -> None:
    """protect's Request parameter is FastAPI's own: the route documents only its body."""
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/notes"]["post"]
    assert "parameters" not in operation
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Note"
    }


# --- /docs under the security headers ---------------------------------------------------------


def policy(reply: httpx.Response) -> str:
    return reply.headers["content-security-policy"]


def test_docs_get_their_relaxed_policy_and_everything_else_the_strict_one(
    client: ActionClient,
) -> None:
    """/docs (and the oauth2 redirect below it) and /redoc get the policies the app named
    for them; /openapi.json, the app's routes and bastion's replies keep the strict,
    nonce-based default. Framing stays refused everywhere."""
    for path in ("/docs", "/docs/oauth2-redirect"):
        reply = client.get(path)
        assert reply.status_code == 200
        assert policy(reply) == SWAGGER_CSP
    assert client.get("/docs").text.count("SwaggerUIBundle(") == 1
    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    assert policy(redoc) == REDOC_CSP
    openapi = client.get("/openapi.json")
    assert openapi.status_code == 200
    assert openapi.json()["openapi"].startswith("3.")
    strict = [openapi, client.get("/api/notes"), client.call("add_note", {"text": "x"})]
    for reply in strict:
        nonce = policy(reply).split("'nonce-", 1)[1].split("'", 1)[0]
        assert policy(reply) == default_csp(nonce)
    for reply in [redoc, *strict]:
        assert reply.headers["x-frame-options"] == "DENY"


def test_these_are_the_guides_policies() -> None:
    """The policies checked here are the ones docs/guides/fastapi.md tells readers to use."""
    from e2e import docs_policies

    assert (docs_policies.SWAGGER_CSP, docs_policies.REDOC_CSP) == (SWAGGER_CSP, REDOC_CSP)


def test_refusal_comes_before_fastapi_validates_the_body(site: Site, client: ActionClient) -> None:
    """A cross-site call with a body the model refuses: 403 cross_origin, not FastAPI's
    422 listing the model's fields (protect runs before validation)."""
    client.token()
    reply = client.post(
        "/api/notes", json={"unexpected": 1}, headers={"Origin": EVIL, "Accept": "application/json"}
    )
    assert_reply(reply, 403, CROSS_ORIGIN)
    assert site.ran == []


def test_a_body_that_is_not_json_is_fastapis_422_before_protect(
    site: Site, client: ActionClient
) -> None:
    """FastAPI decodes the body before any dependency runs: an undecodable one is its own
    422 (json_invalid), as documented; the handler does not run either way."""
    reply = client.post(
        "/api/notes",
        content=b"{not json",
        headers={"Origin": EVIL, "Content-Type": "application/json"},
    )
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["type"] == "json_invalid"
    assert site.ran == []


def test_the_apps_own_words_for_a_refusal_are_the_routes_too() -> None:
    """Bastion(messages=...) rewords a refusal: the protected route says what the action
    says, in the app's words."""
    from bastion.messages import Messages

    words = Messages(overrides={"csrf_failed": "Please reload this page."})
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), messages=words)

    @bastion.action(policy=public, rate=None)
    def ping() -> None: ...

    app = FastAPI()
    bastion.mount(app)

    @app.post("/api/ping", dependencies=[Depends(bastion.protect)])
    async def route_ping() -> None: ...

    with ActionClient(app, bastion) as client:
        client.token()
        route = client.post("/api/ping", headers={"Origin": ORIGIN})
        action = client.call("ping", token=None)
    reworded = {
        "ok": False,
        "error": {"code": "csrf_failed", "message": "Please reload this page."},
    }
    assert_reply(action, 403, reworded)
    assert_reply(route, 403, reworded)


def get_settings() -> dict[str, str]:
    """A FastAPI dependency, as an app's routes would use it."""
    return {"currency": "EUR"}


def test_fastapis_own_depends_works_in_an_action() -> None:
    """One ``get_settings`` for a FastAPI app's routes and its actions alike."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    @bastion.action(policy=public)
    def currency(settings: Annotated[dict[str, str], Depends(get_settings)]) -> str:
        return settings["currency"]

    app = FastAPI()
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        reply = client.call(currency, {})
    assert_reply(reply, 200, {"ok": True, "data": "EUR"})
