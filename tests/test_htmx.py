"""htmx requests (HX-Request: true) get HTML: the action's fragment (with the model, the
user and the request), HX-Redirect or an empty swap, and refusals as a small alert with
their own status; ``{{ htmx_config() }}`` configures htmx for the response's CSP nonce and
for those refusals."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, Context, MemoryStore, Redirect, User, public
from bastion.testing import ActionClient

HX = {"HX-Request": "true"}
DIGEST = re.compile(r"[0-9a-f]{16}")


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=20)


class Saved(BaseModel):
    text: str


@pytest.fixture
def site(tmp_path: Path) -> tuple[Bastion, ActionClient]:
    (tmp_path / "note.html").write_text('<li class="note">{{ data.text }}</li>')
    (tmp_path / "broken.html").write_text("{{ data.text | no_such_filter }}")
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    bastion.templates(jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True))
    calls: list[str] = []

    @bastion.action(policy=public, fragment="note.html")
    async def save(data: Note) -> Saved:
        calls.append(data.text)
        return Saved(text=data.text)

    @bastion.action(policy=public)
    async def remove(data: Note) -> None:
        calls.append(data.text)

    @bastion.action(policy=public, fragment="broken.html", name="broken")
    async def broken_fragment(data: Note) -> Saved:
        return Saved(text=data.text)

    client = ActionClient(mounted(bastion), bastion)
    return bastion, client


def test_htmx_success_gets_the_fragment_rendered_and_escaped(
    site: tuple[Bastion, ActionClient],
) -> None:
    """The fragment template is rendered with the result, autoescaped."""
    _, client = site
    reply = client.submit("save", {"text": "<b>hi</b>"}, headers=HX)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.text == '<li class="note">&lt;b&gt;hi&lt;/b&gt;</li>'


def test_htmx_success_without_fragment_redirects_to_next(
    site: tuple[Bastion, ActionClient],
) -> None:
    """No fragment but a safe _next: HX-Redirect, never a 303 htmx would follow."""
    _, client = site
    reply = client.submit("remove", {"text": "x", "_next": "/done"}, headers=HX)
    assert (reply.status_code, reply.text, reply.headers["hx-redirect"]) == (200, "", "/done")


def test_htmx_success_without_fragment_or_next_is_an_empty_swap(
    site: tuple[Bastion, ActionClient],
) -> None:
    """Nothing to show: an empty 200, which removes the target in an outerHTML swap."""
    _, client = site
    reply = client.submit("remove", {"text": "x"}, headers=HX)
    assert (reply.status_code, reply.text) == (200, "")
    assert "hx-redirect" not in reply.headers


def test_htmx_refusal_is_an_alert_with_its_status(site: tuple[Bastion, ActionClient]) -> None:
    """Invalid input: 422 with the public message as a role=alert fragment."""
    _, client = site
    reply = client.submit("save", {"text": ""}, headers=HX)
    assert reply.status_code == 422
    assert reply.text == '<p class="bastion-error" role="alert">Some fields are invalid.</p>'


def test_htmx_without_token_is_refused_like_any_call(site: tuple[Bastion, ActionClient]) -> None:
    """HX-Request changes the reply's form, never which checks run."""
    _, client = site
    reply = client.submit("save", {"text": "x"}, token=None, headers=HX)
    assert reply.status_code == 403
    assert "expired" in reply.text


def test_broken_fragment_template_is_a_generic_500_with_a_digest(
    site: tuple[Bastion, ActionClient],
) -> None:
    """A template error is the app's bug: generic message, a digest, no template detail."""
    _, client = site
    reply = client.submit("broken", {"text": "x"}, headers=HX)
    assert reply.status_code == 500
    alert = (
        r'<p class="bastion-error" role="alert">Something went wrong\. \(reference (\w{16})\)</p>'
    )
    match = re.fullmatch(alert, reply.text)
    assert match is not None
    assert DIGEST.fullmatch(match.group(1))
    assert "no_such_filter" not in reply.text


# --- next= and Redirect -------------------------------------------------------------------


def test_htmx_fragment_wins_over_next(site: tuple[Bastion, ActionClient]) -> None:
    """An action with a fragment answers the fragment, never HX-Redirect: ``_next`` is for
    the same form posted without htmx."""
    _, client = site
    reply = client.submit("save", {"text": "x", "_next": "/done"}, headers=HX)
    assert (reply.status_code, reply.text) == (200, '<li class="note">x</li>')
    assert "hx-redirect" not in reply.headers


def test_htmx_without_fragment_goes_where_the_handler_redirects_not_to_next() -> None:
    """``-> Redirect`` decides over the form's ``_next``: HX-Redirect to the handler's path,
    an empty body, and nothing else of htmx's in the headers."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    @bastion.action(policy=public)
    async def leave() -> Redirect:
        return Redirect("/after")

    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.submit(leave, {"_next": "/ignored"}, headers=HX)
    assert (reply.status_code, reply.text) == (200, "")
    assert {k: v for k, v in reply.headers.items() if k.startswith("hx-")} == {
        "hx-redirect": "/after"
    }


def test_htmx_refusal_carries_no_htmx_headers(site: tuple[Bastion, ActionClient]) -> None:
    """A refusal is its status, the alert and the two headers every reply has: where it
    shows is the page's htmx_config(), not a header (HX-Retarget would override it)."""
    _, client = site
    reply = client.submit("save", {"text": "", "_next": "/done"}, headers=HX)
    assert reply.status_code == 422
    assert dict(reply.headers) == {
        "content-length": str(len(reply.content)),
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }


# --- what a fragment gets -----------------------------------------------------------------


@dataclass(frozen=True)
class Member(User):
    name: str = ""


MEMBERS = {7: Member(id=7, name="Ada <3")}


class Stamp(BaseModel):
    """An output with a type JSON has no word for: ``|tojson`` writes it as the action."""

    text: str
    tags: list[str]


@pytest.fixture
def members(tmp_path: Path) -> tuple[Bastion[Any], ActionClient]:
    """Actions with fragments that show what the template gets, and a sign-in."""
    (tmp_path / "who.html").write_text(
        "{{ data.__class__.__name__ }}|{{ data.text }}|{{ user.name if user else 'nobody' }}"
        "|{{ request.url.path }}|<i data-json='{{ data|tojson }}'></i>"
    )
    (tmp_path / "nothing.html").write_text("{{ data is none }}")
    bastion: Bastion[Any] = Bastion(
        secret_key=SECRET, store=MemoryStore(), load_user=lambda user_id: MEMBERS.get(user_id)
    )
    bastion.templates(jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True))

    @bastion.action(policy=public, fragment="who.html")
    async def stamp(data: Note) -> Stamp:
        return Stamp(text=data.text, tags=["a", "<b>"])

    @bastion.action(policy=public)
    async def sign_in(ctx: Context[Member]) -> None:
        await ctx.login(MEMBERS[7])

    @bastion.action(policy=public, fragment="nothing.html")
    async def away() -> Redirect:
        return Redirect("/away")

    return bastion, ActionClient(mounted(bastion), bastion)


def test_fragment_gets_the_model_no_user_and_the_request(
    members: tuple[Bastion[Any], ActionClient],
) -> None:
    """``data`` is the output model itself, ``user`` is None for a visitor signed out,
    ``request`` is the action's request; ``|tojson`` writes the model as JSON, escaped for
    a single-quoted attribute."""
    bastion, client = members
    reply = client.submit("stamp", {"text": "hi"}, headers=HX)
    assert reply.status_code == 200
    assert reply.text == (
        f"Stamp|hi|nobody|{bastion.url_for('stamp')}|"
        """<i data-json='{"tags": ["a", "\\u003cb\\u003e"], "text": "hi"}'></i>"""
    )


def test_fragment_gets_the_signed_in_user(members: tuple[Bastion[Any], ActionClient]) -> None:
    """``user`` is what load_user returned for the session's user, autoescaped as any value."""
    _, client = members
    with client:
        assert client.submit("sign_in", headers=HX).status_code == 200
        reply = client.submit("stamp", {"text": "hi"}, headers=HX)
    assert reply.text.split("|")[2] == "Ada &lt;3"


def test_a_fragment_wins_over_a_handlers_redirect(
    members: tuple[Bastion[Any], ActionClient],
) -> None:
    """An action with both: htmx gets the fragment (``data`` is None: a Redirect is no
    result), and no HX-Redirect; a plain post follows the Redirect."""
    _, client = members
    reply = client.submit("away", headers=HX)
    assert (reply.status_code, reply.text) == (200, "True")
    assert "hx-redirect" not in reply.headers
    assert client.submit("away").headers["location"] == "/away"


# --- htmx_config() ------------------------------------------------------------------------

NONCE = re.compile(r"'nonce-([A-Za-z0-9_-]{22})'")
TARGET = (
    "find [data-bastion-message], previous [data-bastion-message=page], "
    "next [data-bastion-message=page], previous meta[name=htmx-config]"
)
HANDLING = (
    '"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},'
    '{"code":"[45]..","swap":true,"error":true,"target":"' + TARGET + '",'
    '"swapOverride":"innerHTML"}]'
)


def page_with(source: str, *, headers: bool = True, **context: Any) -> tuple[str, str]:
    """``source`` rendered, with ``context``, as a page of an app (with
    ``add_security_headers`` unless told not): the page and the nonce of its CSP (``""``
    without)."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    loader = jinja2.DictLoader({"page.html": source})
    templates = Jinja2Templates(env=jinja2.Environment(loader=loader, autoescape=True))
    bastion.templates(templates)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", context)

    app = mounted(bastion)
    app.router.routes.append(Route("/", page))
    if headers:
        bastion.add_security_headers(app)
    with ActionClient(app, bastion) as client:
        reply = client.get("/")
    assert reply.status_code == 200
    found = NONCE.search(reply.headers.get("content-security-policy", ""))
    return reply.text, found.group(1) if found else ""


class _Meta(HTMLParser):
    """The content attribute of the page's htmx-config meta tag, as a browser reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.content: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "meta" and attributes.get("name") == "htmx-config":
            self.content = attributes.get("content")


def settings_of(html: str) -> Any:
    """What htmx reads: the meta tag's content as the browser unescapes it, then parsed."""
    parser = _Meta()
    parser.feed(html)
    assert parser.content is not None
    return json.loads(parser.content)


def test_htmx_config_is_exactly_the_meta_tag_for_the_responses_nonce() -> None:
    """The tag, with this response's CSP nonce as the indicator style's, eval and swapped
    scripts off, same-origin requests only, and 4xx/5xx swapped into the slots."""
    html, nonce = page_with("{{ htmx_config() }}")
    assert html == (
        """<meta name="htmx-config" content='{"allowEval":false,"allowScriptTags":false,"""
        f'"inlineStyleNonce":"{nonce}","selfRequestsOnly":true,{HANDLING}}}'
        "'>"
    )


def test_htmx_config_gives_htmx_no_script_nonce() -> None:
    """With the nonce htmx would run every <script> a swapped response holds, injected
    ones too: it gets only the style nonce."""
    html, nonce = page_with("{{ htmx_config() }}")
    settings = settings_of(html)
    assert "inlineScriptNonce" not in settings
    assert (settings["allowScriptTags"], settings["inlineStyleNonce"]) == (False, nonce)


def test_htmx_config_nonce_is_fresh_for_every_response() -> None:
    """Two renders, two nonces, each its own response's."""
    (first, one), (second, two) = page_with("{{ htmx_config() }}"), page_with("{{ htmx_config() }}")
    assert one != two
    assert settings_of(first)["inlineStyleNonce"] == one
    assert settings_of(second)["inlineStyleNonce"] == two


def test_htmx_config_without_security_headers_names_no_nonce() -> None:
    """No CSP, no nonce: the key is left out (htmx's own default, no nonce attribute)."""
    html, nonce = page_with("{{ htmx_config() }}", headers=False)
    assert nonce == ""
    assert html == (
        """<meta name="htmx-config" content='{"allowEval":false,"allowScriptTags":false,"""
        f'"selfRequestsOnly":true,{HANDLING}}}'
        "'>"
    )


def test_htmx_config_overrides_replace_in_place_and_add_at_the_end() -> None:
    """A keyword replaces htmx's setting of that name where it stands; a new one comes
    last."""
    html, _ = page_with('{{ htmx_config(allowEval=true, defaultSwapStyle="outerHTML") }}')
    settings = settings_of(html)
    assert list(settings) == [
        "allowEval",
        "allowScriptTags",
        "inlineStyleNonce",
        "selfRequestsOnly",
        "responseHandling",
        "defaultSwapStyle",
    ]
    assert (settings["allowEval"], settings["defaultSwapStyle"]) == (True, "outerHTML")


@pytest.mark.parametrize(
    "value",
    [
        "'><script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "&#39; &apos; &amp; </meta>",
        "\u0027 \\'",
    ],
)
def test_htmx_config_override_cannot_end_the_attribute(value: str) -> None:
    """Whatever an override holds stays a JSON string inside the attribute: the tag is the
    only tag, its content has no ' & < >, and htmx reads back exactly the value."""
    html, _ = page_with("{{ htmx_config(indicatorClass=value) }}", value=value)
    content = html.removeprefix("""<meta name="htmx-config" content='""").removesuffix("'>")
    assert not set("'&<>") & set(content)
    assert html.count("<") == 1
    assert settings_of(html)["indicatorClass"] == value


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ htmx_config(timeout=nan) }}", ValueError),
        ("{{ htmx_config(timeout=thing) }}", TypeError),
    ],
)
def test_htmx_config_refuses_what_is_not_json(source: str, error: type[Exception]) -> None:
    """NaN, or an object JSON cannot write, fails the render: htmx would drop a whole
    configuration it cannot parse, and run with its defaults (eval on)."""
    env = jinja2.Environment(autoescape=True)
    Bastion(secret_key=SECRET, store=MemoryStore()).templates(env)
    with pytest.raises(error):
        env.from_string(source).render(nan=float("nan"), thing=object(), request=None)
