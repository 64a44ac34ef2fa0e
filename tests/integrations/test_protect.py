"""``bastion.protected``: a Starlette endpoint behind an action's origin and CSRF checks,
and the pieces ``protect`` (FastAPI) is made of.

The attack is CSRF on a plain JSON route sharing the actions' session cookie: a page of
another site posts to it from the visitor's browser. Each refusal is asserted exactly
(the action's status and envelope), and the endpoint never runs for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from conftest import ORIGIN, SECRET
from helpers import CROSS_ORIGIN, CSRF_FAILED, NO_SESSION, assert_reply
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion import Bastion
from bastion.csrf import CsrfFailed
from bastion.integrations import protect
from bastion.stores import MemoryStore
from bastion.testing import ActionClient


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    ran: list[str] = field(default_factory=list)

    def client(self) -> ActionClient:
        return ActionClient(self.app, self.bastion)


@pytest.fixture
def site() -> Site:
    """An async endpoint under the decorator, a sync one, one with a path parameter, and
    one that accepts GET as well."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    ran: list[str] = []

    @bastion.protected
    async def add(request: Request) -> Response:
        ran.append("add")
        return JSONResponse(await request.json())

    def add_sync(request: Request) -> Response:
        ran.append("add_sync")
        return PlainTextResponse("sync")

    @bastion.protected
    async def item(request: Request) -> Response:
        ran.append(f"item {request.path_params['id']}")
        return PlainTextResponse("ok")

    @bastion.protected
    async def both(request: Request) -> Response:
        ran.append(request.method)
        return PlainTextResponse(request.method)

    app = Starlette(
        routes=[
            Route("/api/add", add, methods=["POST"]),
            Route("/api/sync", bastion.protected(add_sync), methods=["POST"]),
            Route("/api/items/{id}", item, methods=["POST"]),
            Route("/api/both", both, methods=["GET", "POST"]),
        ]
    )
    bastion.mount(app)
    return Site(bastion, app, ran)


def test_valid_call_runs_the_endpoint(site: Site) -> None:
    """Same origin and the session's token: the endpoint runs and its reply is sent."""
    with site.client() as client:
        reply = client.post(
            "/api/add", json={"a": 1}, headers={"Origin": ORIGIN, "X-CSRF-Token": client.token()}
        )
    assert reply.status_code == 200
    assert reply.json() == {"a": 1}
    assert site.ran == ["add"]


def test_sync_endpoint_runs_in_the_thread_pool(site: Site) -> None:
    """A sync endpoint works under the decorator, as Starlette would run it."""
    with site.client() as client:
        reply = client.post("/api/sync", headers={"Origin": ORIGIN, "X-CSRF-Token": client.token()})
    assert (reply.status_code, reply.text) == (200, "sync")
    assert site.ran == ["add_sync"]


@pytest.mark.parametrize("path", ["/api/add", "/api/sync"])
def test_cross_origin_post_is_refused(site: Site, path: str) -> None:
    """Attack: another site's page posts with the visitor's cookie and token. 403
    cross_origin in the action's envelope; the endpoint did not run."""
    with site.client() as client:
        token = client.token()
        reply = client.post(
            path, json={}, headers={"Origin": "https://evil.example", "X-CSRF-Token": token}
        )
    assert_reply(reply, 403, CROSS_ORIGIN)
    assert site.ran == []


def test_tokenless_post_is_refused(site: Site) -> None:
    """Attack: a same-origin-looking post without the token (the attacker cannot read
    it): 403 csrf_failed; the endpoint did not run."""
    with site.client() as client:
        client.token()
        reply = client.post("/api/add", json={}, headers={"Origin": ORIGIN})
    assert_reply(reply, 403, CSRF_FAILED)
    assert site.ran == []


def test_token_in_the_body_does_not_count(site: Site) -> None:
    """Only X-CSRF-Token is read: a token in the JSON body (or a form field) is not, and
    the body is never parsed before the checks."""
    with site.client() as client:
        token = client.token()
        reply = client.post("/api/add", json={"_csrf": token}, headers={"Origin": ORIGIN})
    assert_reply(reply, 403, CSRF_FAILED)
    assert site.ran == []


def test_post_without_a_session_is_no_session(site: Site) -> None:
    """A token but no cookie: 403 no_session; the endpoint did not run."""
    with site.client() as client:
        token = client.token()
        client.cookies.clear()
        reply = client.post("/api/add", json={}, headers={"Origin": ORIGIN, "X-CSRF-Token": token})
    assert_reply(reply, 403, NO_SESSION)
    assert site.ran == []


def test_get_passes_and_post_is_checked_on_one_endpoint(site: Site) -> None:
    """Safe methods pass unchecked; the same endpoint's POST is checked."""
    with site.client() as client:
        assert client.get("/api/both", headers={"Origin": "https://evil.example"}).text == "GET"
        client.token()
        assert_reply(client.post("/api/both", headers={"Origin": ORIGIN}), 403, CSRF_FAILED)
    assert site.ran == ["GET"]


def test_the_log_names_the_declared_path_not_the_requested_one(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Log injection: the path the client sends is theirs to fill (a newline, a fake
    entry); the security log names the route's declared path instead."""
    caplog.set_level(logging.WARNING, logger="bastion.security")
    with site.client() as client:
        client.token()
        reply = client.post("/api/items/x%0Arefused%20admin", headers={"Origin": ORIGIN})
    assert_reply(reply, 403, CSRF_FAILED)
    assert [r.getMessage() for r in caplog.records if r.name == "bastion.security"] == [
        "refused route POST /api/items/{id}: CSRF token missing"
    ]
    assert site.ran == []


def test_refused_is_an_http_exception_carrying_the_refusal() -> None:
    """Raised by FastAPI's dependency, Refused is an HTTPException with the refusal's
    status and public message: an app without bastion's handler still answers 403."""
    refused = protect.Refused(CsrfFailed())
    assert isinstance(refused, HTTPException)
    assert (refused.status_code, refused.detail) == (403, CSRF_FAILED["error"]["message"])
    assert isinstance(refused.error, CsrfFailed)


def test_a_starlette_endpoint_calling_protect_refuses_with_the_envelope() -> None:
    """protect awaited inside a plain Starlette endpoint: the Refused it raises is
    answered with the action's envelope, by the handler mount() registers."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    ran: list[str] = []

    async def guarded(request: Request) -> Response:
        await bastion.protect(request)
        ran.append("endpoint")
        return PlainTextResponse("ran")

    app = Starlette(routes=[Route("/x", guarded, methods=["POST"])])
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        client.token()
        reply = client.post("/x", headers={"Origin": ORIGIN})
    assert_reply(reply, 403, CSRF_FAILED)
    assert ran == []


def test_the_decorator_answers_in_the_apps_own_words() -> None:
    """Bastion(messages=...) rewords the decorator's refusals as it does an action's."""
    from bastion.messages import Messages

    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        messages=Messages(overrides={"cross_origin": "Not from here."}),
    )

    @bastion.protected
    async def add(request: Request) -> Response:
        return PlainTextResponse("ran")

    app = Starlette(routes=[Route("/api/add", add, methods=["POST"])])
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        reply = client.post("/api/add", headers={"Origin": "https://evil.example"})
    assert_reply(
        reply, 403, {"ok": False, "error": {"code": "cross_origin", "message": "Not from here."}}
    )
