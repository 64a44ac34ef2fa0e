"""``Bastion`` as an ASGI app: mounting, routing under the prefix, the script, debug mode."""

import logging
import re
from importlib import resources
from typing import Any

import pytest
from conftest import SECRET, mounted
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bastion import Bastion, ConfigurationError, public
from bastion.testing import ActionClient

NOT_FOUND = {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
SECURITY_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
DIGEST = re.compile(r"[0-9a-f]{16}")


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Reply(BaseModel):
    message: str


def register_greet(bastion: Bastion) -> Any:
    @bastion.action(policy=public)
    async def greet(data: Greeting) -> Reply:
        return Reply(message=f"Hello, {data.name}!")

    return greet


def register_boom(bastion: Bastion) -> Any:
    @bastion.action(policy=public)
    def boom() -> None:
        raise RuntimeError("db password=hunter2 lost")

    return boom


def headers_of(reply: Any, *names: str) -> dict[str, str]:
    return {name: reply.headers.get(name) for name in names}


# --- mounting -------------------------------------------------------------------------


def test_mount_on_starlette_serves_actions(bastion: Bastion) -> None:
    """bastion.mount(app) on a Starlette app: the action answers at url_for."""
    greet = register_greet(bastion)
    app = Starlette()
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        reply = client.call(greet, {"name": "Ada"})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
    assert headers_of(reply, "content-type", *SECURITY_HEADERS) == {
        "content-type": "application/json",
        **SECURITY_HEADERS,
    }


def test_mount_on_fastapi_serves_actions_and_keeps_routes(bastion: Bastion) -> None:
    """bastion.mount(app) on a FastAPI app: actions work, FastAPI routes too."""
    greet = register_greet(bastion)
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        reply = client.call(greet, {"name": "Ada"})
        assert reply.status_code == 200
        assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
        assert client.get("/hello").json() == {"hello": "world"}
        unknown = client.post("/_actions/nope", json={})
        assert unknown.status_code == 404
        assert unknown.json() == NOT_FOUND
        assert list(client.get("/openapi.json").json()["paths"]) == ["/hello"]


def test_mount_leaves_other_routes_alone(bastion: Bastion) -> None:
    """The app's own routes, before and after the prefix, answer as before."""
    greet = register_greet(bastion)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"got": (await request.body()).decode()})

    app = Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST"])])
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        assert client.get("/").text == "home"
        assert client.post("/echo", content=b"x").json() == {"got": "x"}
        assert client.get("/_actionsX").status_code == 404
        assert client.get("/_actionsX").text == "Not Found"  # Starlette's own 404
        assert client.call(greet, {"name": "Bo"}).json() == {
            "ok": True,
            "data": {"message": "Hello, Bo!"},
        }


def test_a_catch_all_route_of_the_app_does_not_take_action_calls(bastion: Bastion) -> None:
    """An app serving a single-page front end has a catch-all route (``/{path:path}``),
    declared before ``mount``: action calls still reach the actions (matched first), and
    every other path still reaches the catch-all."""
    greet = register_greet(bastion)

    async def spa(request: Request) -> PlainTextResponse:
        return PlainTextResponse("spa " + request.path_params["path"])

    app = Starlette(routes=[Route("/{path:path}", spa, methods=["GET", "POST"])])
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        assert client.call(greet, {"name": "Bo"}).json() == {
            "ok": True,
            "data": {"message": "Hello, Bo!"},
        }
        assert (
            client.get("/_actions/bastion.js").headers["content-type"].startswith("text/javascript")
        )
        assert client.get("/board/7").text == "spa board/7"
        assert client.get("/_actionsX").text == "spa _actionsX"


def test_mount_names_the_route_bastion(bastion: Bastion) -> None:
    """The mount is named "bastion", so the app can url_path_for it."""
    app = mounted(bastion)
    assert app.url_path_for("bastion", path="/bastion.js") == "/_actions/bastion.js"


def test_custom_prefix(bastion: Bastion) -> None:
    """With prefix="/api/rpc" actions and the script live there, and not at /_actions."""
    custom = Bastion(secret_key=SECRET, prefix="/api/rpc")
    greet = register_greet(custom)
    with ActionClient(mounted(custom), custom) as client:
        url = client.url(greet)
        assert url.startswith("/api/rpc/")
        reply = client.post(url, json={"name": "Ada"}, headers={"Accept": "application/json"})
        assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
        assert client.get("/api/rpc/bastion.js").status_code == 200
        moved = client.post("/_actions/" + url.rsplit("/", 1)[1], json={"name": "Ada"})
        assert moved.status_code == 404
        assert moved.text == "Not Found"  # nothing is mounted there


def test_served_directly_without_mounting(bastion: Bastion) -> None:
    """Bastion is itself an ASGI app: served alone, it answers under its prefix only."""
    greet = register_greet(bastion)
    with ActionClient(bastion, bastion) as client:
        assert client.call(greet, {"name": "Ada"}).json() == {
            "ok": True,
            "data": {"message": "Hello, Ada!"},
        }
        action_id = client.url(greet).rsplit("/", 1)[1]
        for outside in (f"/{action_id}", "/bastion.js", "/elsewhere"):
            reply = client.post(outside, json={"name": "Ada"})
            assert reply.status_code == 404, outside
            assert reply.json() == NOT_FOUND
        assert client.get("/_actions/bastion.js").status_code == 200


def test_served_directly_answers_lifespan(bastion: Bastion) -> None:
    """Served alone, Bastion completes the lifespan startup and shutdown handshake."""
    with TestClient(bastion, base_url="http://127.0.0.1") as client:
        assert client.post("/_actions/x", json={}).status_code == 404


def test_websocket_is_refused(client: ActionClient) -> None:
    """Actions are HTTP only: a websocket is closed with 1008 (policy violation)."""
    with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect("/_actions/x"):
        pass
    assert caught.value.code == 1008


# --- paths under the prefix -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/_actions/", "/_actions/a/b", "/_actions/unknown", "/_actions/bastion.js/x", "/_actions//"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paths_that_are_no_action_answer_404_envelope(
    client: ActionClient, path: str, method: str
) -> None:
    """Anything under the prefix that is not an action is a bare 404 envelope."""
    reply = client.request(method, path)
    assert reply.status_code == 404
    assert reply.json() == NOT_FOUND
    assert headers_of(reply, *SECURITY_HEADERS) == SECURITY_HEADERS


def test_known_action_with_get_is_405(bastion: Bastion, client: ActionClient) -> None:
    """A known action with GET answers 405 and Allow: POST."""
    greet = register_greet(bastion)
    reply = client.get(client.url(greet))
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json() == {
        "ok": False,
        "error": {"code": "method_not_allowed", "message": "Actions are called with POST."},
    }


def test_script_is_served_as_javascript_with_nosniff(
    bastion: Bastion, client: ActionClient
) -> None:
    """GET {prefix}/bastion.js: the packaged script, as JavaScript, nosniff, cached an hour."""
    reply = client.get(bastion.script_url)
    assert bastion.script_url == "/_actions/bastion.js"
    assert reply.status_code == 200
    assert reply.content == resources.files("bastion").joinpath("static/bastion.js").read_bytes()
    assert headers_of(reply, "content-type", "x-content-type-options", "cache-control") == {
        "content-type": "text/javascript; charset=utf-8",
        "x-content-type-options": "nosniff",
        "cache-control": "public, max-age=3600",
    }


def test_script_answers_head(bastion: Bastion, client: ActionClient) -> None:
    """HEAD {prefix}/bastion.js answers like GET, without the body."""
    reply = client.head(bastion.script_url)
    assert reply.status_code == 200
    assert reply.content == b""
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"


def test_post_to_script_is_404(bastion: Bastion, client: ActionClient) -> None:
    """POST {prefix}/bastion.js is no action: 404 envelope."""
    reply = client.post(bastion.script_url, json={})
    assert reply.status_code == 404
    assert reply.json() == NOT_FOUND


# --- errors and debug mode ------------------------------------------------------------


def test_unexpected_exception_is_a_generic_500_without_debug(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Without debug a 500 says nothing but a digest; the log has it with the traceback."""
    boom = register_boom(bastion)
    with caplog.at_level(logging.ERROR, logger="bastion"):
        reply = client.call(boom)
    assert reply.status_code == 500
    body = reply.json()
    digest = body["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    assert body == {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
    }
    assert "hunter2" not in reply.text
    [record] = caplog.records
    assert record.getMessage() == f"action boom failed [digest {digest}]"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_debug_500_on_loopback_includes_type_and_message() -> None:
    """debug=True on 127.0.0.1: the 500 adds the exception's type and message under "debug"."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    boom = register_boom(bastion)
    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.call(boom)
    assert reply.status_code == 500
    body = reply.json()
    digest = body["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    assert body == {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
        "debug": {"type": "RuntimeError", "message": "db password=hunter2 lost"},
    }


def test_debug_on_loopback_serves_normal_calls() -> None:
    """debug=True on a loopback address changes nothing for successful calls."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    greet = register_greet(bastion)
    with ActionClient(mounted(bastion), bastion) as client:
        assert client.call(greet, {"name": "Ada"}).json() == {
            "ok": True,
            "data": {"message": "Hello, Ada!"},
        }


@pytest.fixture
def no_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debug mode as it is meant to be used: no allowed origins (hence no host list), so
    that only the listening address decides."""
    monkeypatch.delenv("BASTION_ALLOWED_ORIGINS")


@pytest.mark.usefixtures("no_origins")
@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1", "http://127.0.0.2", "http://localhost", "http://[::1]"]
)
def test_debug_allowed_on_every_loopback_address(base_url: str) -> None:
    """Any loopback address (127.0.0.0/8, ::1, localhost) allows debug mode."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    with TestClient(mounted(bastion), base_url=base_url) as client:
        assert client.post("/_actions/x", json={}).json() == NOT_FOUND


@pytest.mark.usefixtures("no_origins")
@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("http://testserver", "testserver"),
        ("http://0.0.0.0", "0.0.0.0"),
        ("http://192.168.1.10", "192.168.1.10"),
        ("http://[::]", "::"),
        ("http://board.example", "board.example"),
    ],
)
def test_debug_refused_off_loopback(
    base_url: str, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    """debug=True served on a non-loopback address raises ConfigurationError and logs it."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    greet = register_greet(bastion)
    with (
        caplog.at_level(logging.CRITICAL, logger="bastion"),
        TestClient(mounted(bastion), base_url=base_url) as client,
        pytest.raises(ConfigurationError) as caught,
    ):
        client.post(bastion.url_for(greet), json={"name": "Ada"})
    assert str(caught.value) == (
        f"debug=True is only allowed on a loopback address, not on {host!r}"
    )
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.CRITICAL, f"bastion: debug mode refused: the server listens on {host!r}")
    ]


@pytest.mark.usefixtures("no_origins")
def test_debug_refusal_covers_the_script_too() -> None:
    """Off loopback in debug mode, even GET bastion.js is refused."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    with (
        TestClient(mounted(bastion), base_url="http://testserver") as client,
        pytest.raises(ConfigurationError, match=r"not on 'testserver'$"),
    ):
        client.get(bastion.script_url)


@pytest.mark.usefixtures("no_origins")
def test_debug_refusal_covers_the_apps_own_pages() -> None:
    """Off loopback in debug mode, the app's own pages are refused too, not only
    bastion's routes (found in review: a page's error could still show debug detail)."""
    bastion = Bastion(secret_key=SECRET, debug=True)

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("page")

    app = Starlette(routes=[Route("/page", page)])
    bastion.mount(app)
    with (
        TestClient(app, base_url="http://testserver") as client,
        pytest.raises(ConfigurationError, match=r"not on 'testserver'$"),
    ):
        client.get("/page")
    with TestClient(app, base_url="http://127.0.0.1") as local:
        assert local.get("/page").text == "page"


@pytest.mark.usefixtures("no_origins")
def test_debug_refusal_is_not_cached_as_allowed() -> None:
    """A refused server stays refused; a loopback one is allowed beside it."""
    bastion = Bastion(secret_key=SECRET, debug=True)
    app = mounted(bastion)
    with TestClient(app, base_url="http://testserver") as remote:
        for _ in range(2):
            with pytest.raises(ConfigurationError):
                remote.post("/_actions/x", json={})
    with ActionClient(app, bastion) as local:
        assert local.post("/_actions/x", json={}).status_code == 404


def test_without_debug_any_host_is_served() -> None:
    """Without debug the listening address is not checked (here any Host is trusted)."""
    bastion = Bastion(secret_key=SECRET, trusted_hosts=["*"])
    greet = register_greet(bastion)
    app = mounted(bastion)
    # A page's session and token (made over loopback), then the call to "testserver".
    with ActionClient(app, bastion) as page:
        token = page.token()
        session = page.session_id
    with TestClient(app, base_url="http://testserver") as client:
        reply = client.post(
            bastion.url_for(greet),
            json={"name": "Ada"},
            headers={
                "Accept": "application/json",
                "Origin": "http://127.0.0.1",
                "Cookie": f"bastion_session={session}",
                "X-CSRF-Token": token,
            },
        )
    assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}


# --- bastion.testing.ActionClient -----------------------------------------------------


def test_action_client_talks_to_loopback_and_does_not_follow_redirects(
    bastion: Bastion,
) -> None:
    """ActionClient's defaults: base URL http://127.0.0.1, redirects not followed."""
    client = ActionClient(mounted(bastion), bastion)
    assert str(client.base_url) == "http://127.0.0.1"
    assert client.follow_redirects is False
    assert client.bastion is bastion


def test_action_client_keeps_explicit_options(bastion: Bastion) -> None:
    """Options passed to ActionClient override its defaults."""
    client = ActionClient(
        mounted(bastion), bastion, base_url="http://localhost", follow_redirects=True
    )
    assert str(client.base_url) == "http://localhost"
    assert client.follow_redirects is True


def test_action_client_call_by_function_or_name(bastion: Bastion, client: ActionClient) -> None:
    """call() finds the action by function or by name and posts JSON asking for JSON."""
    greet = register_greet(bastion)
    assert client.url(greet) == client.url("greet") == bastion.url_for(greet)
    by_name = client.call("greet", {"name": "Ada"})
    assert by_name.request.headers["accept"] == "application/json"
    assert by_name.request.headers["content-type"] == "application/json"
    assert by_name.json() == client.call(greet, {"name": "Ada"}).json()


def test_action_client_submit_posts_a_plain_form(bastion: Bastion, client: ActionClient) -> None:
    """submit() posts a urlencoded form as a browser without JS: a 303 to _next."""
    greet = register_greet(bastion)
    reply = client.submit(greet, {"name": "Ada", "_next": "/thanks"})
    assert reply.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert reply.status_code == 303
    assert headers_of(reply, "location", *SECURITY_HEADERS) == {
        "location": "/thanks",
        **SECURITY_HEADERS,
    }
