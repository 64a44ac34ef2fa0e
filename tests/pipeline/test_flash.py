"""Plain form posts (no JavaScript) and the flash: a 303 back to a page that shows the
outcome once, with the typed values except secrets; and the form helpers that render
those forms (``action_form``, ``csrf_input``, ``bastion_fields``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2 as httpx
import jinja2
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, Upload, public
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

TOKEN = r"[A-Za-z0-9_-]{86}"
DIGEST = re.compile(r"[0-9a-f]{16}")
HTML = {"Accept": "text/html"}
REFERER = {"Referer": "http://127.0.0.1/flash/signup?step=2"}

# The flash as a page sees it, every attribute spelled out (works on any mapping or object).
FLASH_PAGE = """\
{%- set f = flash(action) -%}
{%- if f -%}
{{ {"action": f.action, "ok": f.ok, "data": f.data, "code": f.code, "message": f.message,
    "fields": f.fields, "values": f.values, "digest": f.digest} | tojson }}
{%- else -%}
no flash
{%- endif -%}"""

PAGES = {
    "flash": FLASH_PAGE,
    "form": """\
{% call action_form('signup', next='/done', class_='stack', data_step='1') %}\
<button>Sign up</button>{% endcall %}""",
    "bare": "{{ action_form('explode') }}",
    "upload": "{{ action_form('avatar') }}",
    "twice": "{{ csrf_input() }}\n{{ csrf_input() }}",
    "evil-next": "{{ bastion_fields(next=target) }}",
    "unknown": "{{ action_form('nope') }}",
}


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=20)
    age: int
    password: SecretStr = Field(min_length=12)
    api_token: str
    recovery: SecretStr | None = None
    tags: list[str] = []


class Welcome(BaseModel):
    welcome: str


class Avatar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    picture: Upload
    caption: str = ""


@dataclass
class App:
    bastion: Bastion
    app: Starlette
    calls: list[str]

    def client(self, **options: Any) -> ActionClient:
        return ActionClient(self.app, self.bastion, **options)


@pytest.fixture
def site() -> App:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    calls: list[str] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> Welcome:
        calls.append("signup")
        return Welcome(welcome=data.name)

    @bastion.action(policy=public)
    def explode() -> None:
        calls.append("explode")
        raise RuntimeError("db password=hunter2 at 10.0.0.7")

    @bastion.action(policy=public)
    def avatar(data: Avatar) -> None:
        calls.append("avatar")

    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.DictLoader(PAGES), autoescape=True)
    )
    bastion.templates(templates)

    async def flash_page(request: Request) -> Response:
        action = request.path_params["action"]
        return templates.TemplateResponse(request, "flash", {"action": action})

    async def page(request: Request) -> Response:
        target = request.query_params.get("next")
        return templates.TemplateResponse(request, request.path_params["name"], {"target": target})

    app = Starlette(routes=[Route("/flash/{action}", flash_page), Route("/page/{name}", page)])
    bastion.mount(app)
    return App(bastion, app, calls)


@pytest.fixture
def client(site: App) -> Iterator[ActionClient]:
    with site.client() as c:
        yield c


def shown(client: ActionClient, action: str) -> dict[str, Any] | None:
    """What the page /flash/{action} shows, loaded as a browser does after a 303."""
    page = client.get(f"/flash/{action}", headers=HTML)
    assert page.status_code == 200
    return None if page.text == "no flash" else dict(json.loads(page.text))


def assert_see_other(reply: httpx.Response, location: str) -> None:
    assert reply.status_code == 303
    assert reply.headers["location"] == location
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.content == b""


def stored_session(site: App, client: ActionClient) -> bytes:
    """The raw bytes the store holds for the client's session."""
    assert client.session_id is not None
    key = site.bastion.session_manager.store_keys(client.session_id)[0]
    raw = anyio.run(site.bastion.store.get, key)
    assert raw is not None
    return raw


INVALID_SIGNUP = {
    "name": "A",
    "age": "old",
    "password": "hunter2",
    "api_token": "tok-live-123456",
    "recovery": "plover xyzzy",
    "tags": ["x", "y"],
}


# --- a refusal: back to the form, with its messages ----------------------------------------


def test_invalid_plain_form_redirects_to_the_referring_page(
    site: App, client: ActionClient
) -> None:
    """A plain form failing validation: 303 to the Referer's path (its host is never
    used), the handler not run."""
    reply = client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    assert_see_other(reply, "/flash/signup?step=2")
    assert site.calls == []


def test_next_page_shows_message_fields_and_typed_values_but_no_secret(
    site: App, client: ActionClient
) -> None:
    """The page after the 303 gets the message, each field's error, and what was typed,
    except secrets: SecretStr fields (password, recovery) and a field named like a
    token (api_token) are never kept, not even in the session."""
    client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    raw = stored_session(site, client)
    assert shown(client, "signup") == {
        "action": "signup",
        "ok": False,
        "data": None,
        "code": "invalid",
        "message": "Some fields are invalid.",
        "fields": {
            "name": "String should have at least 2 characters",
            "age": "Input should be a valid integer, unable to parse string as an integer",
            "password": "Should have at least 12 characters.",
        },
        "values": {"name": "A", "age": "old", "tags": ["x", "y"]},
        "digest": None,
    }
    assert b"hunter2" not in raw
    assert b"tok-live" not in raw
    assert b"plover" not in raw


def test_flash_is_shown_once(client: ActionClient) -> None:
    """The second page load shows nothing: the flash moved from the session to the page."""
    client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    assert shown(client, "signup") is not None
    assert shown(client, "signup") is None


def test_flash_waits_for_an_html_page(client: ActionClient) -> None:
    """A GET that does not ask for HTML (a script's fetch, an image) leaves the flash
    for the page the browser loads."""
    client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    assert client.get("/flash/signup", headers={"Accept": "application/json"}).text == "no flash"
    assert client.get("/flash/signup", headers={"Accept": "*/*"}).text == "no flash"
    flash = shown(client, "signup")
    assert flash is not None
    assert flash["code"] == "invalid"


def test_flash_of_another_action_is_not_shown(client: ActionClient) -> None:
    """flash('explode') does not show the outcome of signup."""
    client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    assert shown(client, "explode") is None


def test_flash_belongs_to_one_visitor(site: App, client: ActionClient) -> None:
    """Another visitor's page shows nothing of this visitor's outcome."""
    client.submit("signup", INVALID_SIGNUP, headers=REFERER)
    with site.client() as other:
        assert shown(other, "signup") is None
    assert shown(client, "signup") is not None


def test_refused_form_without_referer_goes_home(client: ActionClient) -> None:
    """No Referer (privacy settings): back to "/"."""
    assert_see_other(client.submit("signup", INVALID_SIGNUP), "/")


def test_foreign_referer_path_only_is_used(client: ActionClient) -> None:
    """The redirect keeps the Referer's path, never its host (no open redirect)."""
    reply = client.submit(
        "signup", INVALID_SIGNUP, headers={"Referer": "http://127.0.0.1//evil.example/x"}
    )
    assert_see_other(reply, "/")


def test_csrf_refusal_of_a_same_origin_form_is_a_flash(site: App, client: ActionClient) -> None:
    """A same-origin form whose token expired lands back on its page with the message."""
    reply = client.submit("signup", {"name": "Ada"}, token=None, headers=REFERER)
    assert_see_other(reply, "/flash/signup?step=2")
    flash = shown(client, "signup")
    assert flash is not None
    assert (flash["code"], flash["message"]) == (
        "csrf_failed",
        "This form has expired. Reload the page and try again.",
    )
    assert site.calls == []


# --- success ------------------------------------------------------------------------------


def test_success_flash_holds_the_data(site: App, client: ActionClient) -> None:
    """A valid plain form: the handler runs once, 303 to _next, and the page shows the
    action's result (through its return model)."""
    fields = {**INVALID_SIGNUP, "name": "Ada", "age": "36", "password": "correct horse battery"}
    reply = client.submit("signup", {**fields, "_next": "/flash/signup"}, headers=REFERER)
    assert_see_other(reply, "/flash/signup")
    assert site.calls == ["signup"]
    assert shown(client, "signup") == {
        "action": "signup",
        "ok": True,
        "data": {"welcome": "Ada"},
        "code": None,
        "message": None,
        "fields": {},
        "values": {},
        "digest": None,
    }


def test_success_without_next_goes_back_to_the_referer(site: App, client: ActionClient) -> None:
    """No _next: back to the page the form was posted from."""
    fields = {"name": "Ada", "age": "36", "password": "correct horse battery", "api_token": "t"}
    assert_see_other(client.submit("signup", fields, headers=REFERER), "/flash/signup?step=2")
    assert site.calls == ["signup"]


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/", "/\\evil.example"])
def test_success_with_an_unsafe_next_ignores_it(
    site: App, client: ActionClient, target: str
) -> None:
    """Attack: open redirect through _next. Only same-origin paths are followed."""
    fields = {"name": "Ada", "age": "36", "password": "correct horse battery", "api_token": "t"}
    reply = client.submit("signup", {**fields, "_next": target}, headers=REFERER)
    assert_see_other(reply, "/flash/signup?step=2")


# --- an internal error ------------------------------------------------------------------


def test_internal_error_flash_holds_the_digest_and_generic_message_only(
    site: App, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's exception on a plain form: the page shows the generic message and a
    digest, the same one as the server log's traceback; the exception's text is in
    neither the page nor the session."""
    caplog.set_level(logging.ERROR, logger="bastion")
    reply = client.submit("explode", headers={"Referer": "http://127.0.0.1/flash/explode"})
    assert_see_other(reply, "/flash/explode")
    assert site.calls == ["explode"]
    raw = stored_session(site, client)
    flash = shown(client, "explode")
    assert flash is not None
    digest = flash.pop("digest")
    assert DIGEST.fullmatch(digest)
    assert flash == {
        "action": "explode",
        "ok": False,
        "data": None,
        "code": "internal",
        "message": "Something went wrong.",
        "fields": {},
        "values": {},
    }
    assert b"hunter2" not in raw
    assert b"10.0.0.7" not in raw
    [record] = [r for r in caplog.records if r.name == "bastion"]
    assert record.getMessage() == f"action explode failed [digest {digest}]"
    assert record.exc_info is not None


# --- cross-origin plain forms ---------------------------------------------------------------


def test_cross_origin_plain_form_gets_json_403_and_no_session(site: App) -> None:
    """Attack: a form on another site posts here. The answer is a JSON 403, never a
    redirect (nothing navigable), no cookie is set and no session or flash created."""
    with site.client() as visitor:
        reply = visitor.submit(
            "signup",
            INVALID_SIGNUP,
            token=None,
            origin="http://evil.example",
            headers={"Referer": "http://evil.example/attack", "Sec-Fetch-Site": "cross-site"},
        )
        assert reply.status_code == 403
        assert reply.json() == {
            "ok": False,
            "error": {
                "code": "cross_origin",
                "message": "This request did not come from an allowed origin.",
            },
        }
        assert reply.headers["content-type"] == "application/json"
        assert "location" not in reply.headers
        assert "set-cookie" not in reply.headers
        assert visitor.session_id is None
    assert site.calls == []
    assert isinstance(site.bastion.store, MemoryStore)
    assert len(site.bastion.store) == 0


def test_cross_origin_plain_form_leaves_the_victims_session_alone(
    site: App, client: ActionClient
) -> None:
    """A visitor with a session: the cross-origin post changes nothing in it (no flash
    planted for the next page, same cookie)."""
    client.get("/page/form", headers=HTML)
    sid = client.session_id
    reply = client.submit(
        "signup", INVALID_SIGNUP, token=None, origin="https://evil.example", headers=REFERER
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "cross_origin")
    assert "location" not in reply.headers
    assert "set-cookie" not in reply.headers
    assert client.session_id == sid
    assert shown(client, "signup") is None
    assert site.calls == []


# --- the form helpers --------------------------------------------------------------------


def test_action_form_renders_the_whole_form(site: App, client: ActionClient) -> None:
    """action_form: method post, the action's URL, extra attributes (class_, data_step),
    the hidden _csrf token (86 characters) and _next, then the call block's body."""
    page = client.get("/page/form", headers=HTML)
    url = re.escape(site.bastion.url_for("signup"))
    assert re.fullmatch(
        rf'<form method="post" action="{url}" class="stack" data-step="1" data-bastion>'
        rf'<input type="hidden" name="_csrf" value="{TOKEN}">'
        r'<input type="hidden" name="_next" value="/done">'
        r"<button>Sign up</button></form>",
        page.text,
    ), page.text


def test_action_form_without_next_or_body(site: App, client: ActionClient) -> None:
    """No next, no call block: the form and its token only."""
    page = client.get("/page/bare", headers=HTML)
    url = re.escape(site.bastion.url_for("explode"))
    assert re.fullmatch(
        rf'<form method="post" action="{url}" data-bastion>'
        rf'<input type="hidden" name="_csrf" value="{TOKEN}"></form>',
        page.text,
    ), page.text


def test_action_form_of_an_upload_action_is_multipart(site: App, client: ActionClient) -> None:
    """An action whose input declares an Upload gets enctype="multipart/form-data"."""
    page = client.get("/page/upload", headers=HTML)
    url = re.escape(site.bastion.url_for("avatar"))
    assert re.fullmatch(
        rf'<form method="post" action="{url}" enctype="multipart/form-data" data-bastion>'
        rf'<input type="hidden" name="_csrf" value="{TOKEN}"></form>',
        page.text,
    ), page.text


def test_token_differs_on_every_render_and_each_one_posts(site: App, client: ActionClient) -> None:
    """Masked per render: two inputs on one page, and two page loads, all differ; every
    one of them is accepted for this session."""
    first = re.findall(rf'name="_csrf" value="({TOKEN})"', client.get("/page/twice").text)
    second = re.findall(rf'name="_csrf" value="({TOKEN})"', client.get("/page/twice").text)
    tokens = first + second
    assert len(tokens) == 4
    assert len(set(tokens)) == 4
    fields = {"name": "Ada", "age": "36", "password": "correct horse battery", "api_token": "t"}
    for token in tokens:
        reply = client.submit("signup", fields, token=token, headers=REFERER)
        assert_see_other(reply, "/flash/signup?step=2")
    assert site.calls == ["signup"] * 4


def test_rendered_form_posts_without_javascript(site: App, client: ActionClient) -> None:
    """The form as rendered (its URL, token and _next) is all a browser needs."""
    page = client.get("/page/form", headers=HTML).text
    action = re.search(r'action="([^"]+)"', page)
    token = re.search(rf'name="_csrf" value="({TOKEN})"', page)
    assert action is not None
    assert token is not None
    fields = {"name": "Ada", "age": "36", "password": "correct horse battery", "api_token": "t"}
    reply = client.post(
        action.group(1),
        data={**fields, "_csrf": token.group(1), "_next": "/done"},
        headers={"Referer": "http://127.0.0.1/page/form"},
    )
    assert_see_other(reply, "/done")
    assert site.calls == ["signup"]


@pytest.mark.parametrize(
    "target", ["//evil", "https://evil.example/", "/\\evil", "javascript:alert(1)", "relative"]
)
def test_bastion_fields_refuses_an_unsafe_next(client: ActionClient, target: str) -> None:
    """bastion_fields(next=...) raises ValueError for anything but a same-origin path:
    the mistake is the template's, found when it renders."""
    with pytest.raises(ValueError, match=r"is not a same-origin relative path$"):
        client.get("/page/evil-next", params={"next": target})


def test_action_form_of_an_unknown_action_raises(client: ActionClient) -> None:
    """A typo in a template is an error at render time, not a form posting nowhere."""
    with pytest.raises(LookupError, match=r"^'nope' is not a registered action$"):
        client.get("/page/unknown")
