"""Jinja helpers: ``action_url``, ``bastion_fields`` and ``bastion_script``."""

import functools
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
from conftest import SECRET, mounted
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, public
from bastion.sessions import SCOPE_KEY, Session
from bastion.testing import ActionClient

CSRF_INPUT = r'<input type="hidden" name="_csrf" value="[A-Za-z0-9_-]{86}">'
"""The hidden token input: its value is masked afresh at every render."""

FORM = """\
<form method="post" action="{{ action_url('greet') }}" data-bastion>
{{ bastion_fields(next='/thanks') }}
</form>
{{ bastion_script() }}"""


def register_greet(bastion: Bastion) -> Any:
    @bastion.action(policy=public)
    def greet() -> None: ...

    return greet


def environment(bastion: Bastion, **options: Any) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, **options)  # autoescape is on
    bastion.templates(env)
    return env


def page_request(session: Session | None = None) -> Request:
    """The ``request`` a page's template gets, with the session bastion's middleware
    would have put in its scope."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    return Request({**scope, SCOPE_KEY: session if session is not None else Session()})


def render(env: jinja2.Environment, source: str, **context: Any) -> str:
    """Render with a page's ``request`` in the context, as a ``TemplateResponse`` does."""
    return env.from_string(source).render({"request": page_request(), **context})


def helper(env: jinja2.Environment, name: str) -> Any:
    """A context helper as Python code calls it, given the context Jinja would pass."""
    context = env.from_string("").new_context({"request": page_request()})
    return functools.partial(env.globals[name], context)


# --- installing -------------------------------------------------------------------------


def test_templates_installs_its_globals_on_an_environment(bastion: Bastion) -> None:
    """bastion.templates(env) adds exactly action_url, action_form, bastion_fields,
    bastion_script, bound_input, csp_nonce, csrf_input, csrf_meta, flash and htmx_config."""
    env = jinja2.Environment(autoescape=True)
    before = set(env.globals)
    assert bastion.templates(env) is None
    assert set(env.globals) - before == {
        "action_url",
        "action_form",
        "bastion_fields",
        "bastion_script",
        "bound_input",
        "csp_nonce",
        "csrf_input",
        "csrf_meta",
        "flash",
        "htmx_config",
        "idempotency_input",
    }


def test_plain_environment_renders_a_form(bastion: Bastion) -> None:
    """A jinja2.Environment renders the whole form snippet exactly."""
    greet = register_greet(bastion)
    html = render(environment(bastion), FORM)
    assert re.fullmatch(
        re.escape(f'<form method="post" action="{bastion.url_for(greet)}" data-bastion>\n')
        + CSRF_INPUT
        + re.escape(
            '<input type="hidden" name="_next" value="/thanks">\n'
            "</form>\n"
            '<script src="/_actions/bastion.js" defer></script>'
        ),
        html,
    )


def test_context_helpers_need_the_request(bastion: Bastion) -> None:
    """Without ``request`` in the context there is no session for a token: the render
    fails with a RuntimeError saying so, instead of a form that can never be posted."""
    env = environment(bastion)
    for source in ("{{ csrf_input() }}", "{{ csrf_meta() }}", "{{ bastion_fields() }}"):
        with pytest.raises(RuntimeError, match=r"need `request` in the template context$"):
            env.from_string(source).render()


def test_starlette_jinja2templates_renders_a_page(bastion: Bastion, tmp_path: Path) -> None:
    """A Starlette Jinja2Templates gets the helpers on its env; a real page renders them."""
    greet = register_greet(bastion)
    (tmp_path / "page.html").write_text(FORM)
    templates = Jinja2Templates(directory=tmp_path)
    bastion.templates(templates)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html")

    app = mounted(bastion)
    app.router.routes.append(Route("/", page))
    with ActionClient(app, bastion) as client:
        reply = client.get("/")
        token = re.search(r'name="_csrf" value="([^"]*)"', reply.text)
        # The page's token is bound to the session its reply set: the form can be posted.
        posted = client.submit(
            greet,
            {"_csrf": token.group(1) if token else ""},
            headers={"Accept": "application/json"},
        )
    assert reply.status_code == 200
    assert re.fullmatch(
        re.escape(f'<form method="post" action="{bastion.url_for(greet)}" data-bastion>\n')
        + CSRF_INPUT
        + re.escape(
            '<input type="hidden" name="_next" value="/thanks">\n'
            "</form>\n"
            '<script src="/_actions/bastion.js" defer></script>'
        ),
        reply.text,
    )
    assert posted.json() == {"ok": True, "data": None}


def test_jinja2templates_built_from_an_env_uses_that_env(bastion: Bastion) -> None:
    """Jinja2Templates(env=...) shares the env: helpers land on the one passed."""
    env = jinja2.Environment(autoescape=True)
    templates = Jinja2Templates(env=env)
    bastion.templates(templates)
    assert templates.env is env
    assert helper(env, "bastion_script")() == '<script src="/_actions/bastion.js" defer></script>'


# --- csrf_meta --------------------------------------------------------------------------


def test_csrf_meta_renders_the_token_tag_masked_afresh(bastion: Bastion) -> None:
    """{{ csrf_meta() }} is exactly <meta name="csrf-token" content="…"> with an
    86-character token, a new mask at every render, each valid for the page's session."""
    env = environment(bastion)
    session = Session()
    request = page_request(session)
    template = env.from_string("{{ csrf_meta() }}")
    tags = [template.render(request=request) for _ in range(3)]
    for tag in tags:
        assert re.fullmatch(r'<meta name="csrf-token" content="[A-Za-z0-9_-]{86}">', tag)
    assert len(set(tags)) == 3
    assert session.exists  # the token is bound to it: rendering one makes the session


# --- action_url -------------------------------------------------------------------------


def test_action_url_equals_url_for(bastion: Bastion) -> None:
    """action_url('greet') renders what bastion.url_for gives, by name or function."""
    greet = register_greet(bastion)
    env = environment(bastion)
    assert render(env, "{{ action_url('greet') }}") == bastion.url_for(greet)
    assert render(env, "{{ action_url(fn) }}", fn=greet) == bastion.url_for("greet")


def test_action_url_of_unknown_action_raises(bastion: Bastion) -> None:
    """An unknown name is a LookupError at render time, not a broken link."""
    with pytest.raises(LookupError, match=r"^'nope' is not a registered action$"):
        render(environment(bastion), "{{ action_url('nope') }}")


def test_action_url_follows_the_prefix() -> None:
    """With a custom prefix, action_url and bastion_script live under it."""
    bastion = Bastion(secret_key=SECRET, prefix="/api/rpc")
    greet = register_greet(bastion)
    env = environment(bastion)
    assert render(env, "{{ action_url('greet') }}") == bastion.url_for(greet)
    assert bastion.url_for(greet).startswith("/api/rpc/")
    assert render(env, "{{ bastion_script() }}") == (
        '<script src="/api/rpc/bastion.js" defer></script>'
    )


# --- bastion_fields -----------------------------------------------------------------------


def test_bastion_fields_renders_the_next_input(bastion: Bastion) -> None:
    """next='/x' renders the token, then exactly one hidden _next input."""
    html = render(environment(bastion), "{{ bastion_fields(next='/x') }}")
    assert re.fullmatch(
        CSRF_INPUT + re.escape('<input type="hidden" name="_next" value="/x">'), html
    )


def test_bastion_fields_without_next_is_the_token_only(bastion: Bastion) -> None:
    """No next: the hidden token input alone."""
    env = environment(bastion)
    assert re.fullmatch(CSRF_INPUT, render(env, "{{ bastion_fields() }}"))
    assert re.fullmatch(CSRF_INPUT, render(env, "{{ bastion_fields(next=None) }}"))


def test_bastion_fields_returns_markup(bastion: Bastion) -> None:
    """The helper returns Markup, so autoescaping does not escape it a second time."""
    fields = helper(environment(bastion), "bastion_fields")
    result = fields(next="/x")
    assert isinstance(result, Markup)
    assert re.fullmatch(
        CSRF_INPUT + re.escape('<input type="hidden" name="_next" value="/x">'), result
    )


@pytest.mark.parametrize(
    "unsafe",
    [
        "//evil",
        "//evil.example/path",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
        "evil",
        "",
        "/x\r\nSet-Cookie: a=b",
        "/" + "a" * 2048,
    ],
)
def test_bastion_fields_refuses_unsafe_next(bastion: Bastion, unsafe: str) -> None:
    """Anything but a same-origin relative path is a ValueError naming the value."""
    fields = helper(environment(bastion), "bastion_fields")
    with pytest.raises(ValueError, match=r"is not a same-origin relative path$") as caught:
        fields(next=unsafe)
    assert str(caught.value) == f"next={unsafe!r} is not a same-origin relative path"


def test_bastion_fields_refusal_surfaces_at_render(bastion: Bastion) -> None:
    """In a template, next='//evil' fails the render with the same ValueError."""
    with pytest.raises(ValueError, match=r"^next='//evil' is not a same-origin relative path$"):
        render(environment(bastion), "{{ bastion_fields(next='//evil') }}")


def test_bastion_fields_escapes_attribute_values(bastion: Bastion) -> None:
    """Quotes, ampersands and angle brackets cannot break out of the value attribute."""
    env = environment(bastion)
    source = "{{ bastion_fields(next=target) }}"
    assert re.fullmatch(
        CSRF_INPUT
        + re.escape('<input type="hidden" name="_next" value="/a?x=1&amp;y=&#39;z&#39;">'),
        render(env, source, target="/a?x=1&y='z'"),
    )
    assert re.fullmatch(
        CSRF_INPUT
        + re.escape(
            '<input type="hidden" name="_next" value="/a%22%3E%3Cscript%3Ealert(1)%3C/script%3E">'
        ),
        render(env, source, target='/a"><script>alert(1)</script>'),
    )


def test_bastion_fields_percent_encodes_spaces_and_non_ascii(bastion: Bastion) -> None:
    """A path with spaces or non-ASCII is percent-encoded, as a Location header needs."""
    html = render(environment(bastion), "{{ bastion_fields(next='/café menu') }}")
    assert re.fullmatch(
        CSRF_INPUT + re.escape('<input type="hidden" name="_next" value="/caf%C3%A9%20menu">'),
        html,
    )


def test_helpers_are_safe_without_autoescape(bastion: Bastion) -> None:
    """An environment without autoescape renders the same escaped HTML."""
    env = jinja2.Environment()  # noqa: S701  # the helpers escape on their own
    bastion.templates(env)
    html = render(env, "{{ bastion_fields(next=target) }}", target="/a?x=1&y='z'")
    assert re.fullmatch(
        CSRF_INPUT
        + re.escape('<input type="hidden" name="_next" value="/a?x=1&amp;y=&#39;z&#39;">'),
        html,
    )


# --- bastion_script -----------------------------------------------------------------------


def test_bastion_script_renders_the_script_tag(bastion: Bastion) -> None:
    """bastion_script() is a deferred script tag pointing at the served bastion.js."""
    html = render(environment(bastion), "{{ bastion_script() }}")
    assert html == '<script src="/_actions/bastion.js" defer></script>'
    assert bastion.script_url == "/_actions/bastion.js"


def test_bastion_script_points_at_the_served_script(bastion: Bastion) -> None:
    """The src in the tag is a URL the mounted app serves as JavaScript."""
    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.get(bastion.script_url)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
