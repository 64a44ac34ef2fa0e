"""Jinja helpers: ``action_url``, ``bastion_fields`` and ``bastion_script``."""

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
from bastion.testing import ActionClient

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


def render(env: jinja2.Environment, source: str, **context: Any) -> str:
    return env.from_string(source).render(**context)


# --- installing -------------------------------------------------------------------------


def test_templates_installs_three_globals_on_an_environment(bastion: Bastion) -> None:
    """bastion.templates(env) adds exactly action_url, bastion_fields and bastion_script."""
    env = jinja2.Environment(autoescape=True)
    before = set(env.globals)
    assert bastion.templates(env) is None
    assert set(env.globals) - before == {"action_url", "bastion_fields", "bastion_script"}


def test_plain_environment_renders_a_form(bastion: Bastion) -> None:
    """A jinja2.Environment renders the whole form snippet exactly."""
    greet = register_greet(bastion)
    html = render(environment(bastion), FORM)
    assert html == (
        f'<form method="post" action="{bastion.url_for(greet)}" data-bastion>\n'
        '<input type="hidden" name="_next" value="/thanks">\n'
        "</form>\n"
        '<script src="/_actions/bastion.js" defer></script>'
    )


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
    assert reply.status_code == 200
    assert reply.text == (
        f'<form method="post" action="{bastion.url_for(greet)}" data-bastion>\n'
        '<input type="hidden" name="_next" value="/thanks">\n'
        "</form>\n"
        '<script src="/_actions/bastion.js" defer></script>'
    )


def test_jinja2templates_built_from_an_env_uses_that_env(bastion: Bastion) -> None:
    """Jinja2Templates(env=...) shares the env: helpers land on the one passed."""
    env = jinja2.Environment(autoescape=True)
    templates = Jinja2Templates(env=env)
    bastion.templates(templates)
    assert templates.env is env
    assert env.globals["bastion_script"]() == '<script src="/_actions/bastion.js" defer></script>'


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
    """next='/x' renders exactly one hidden _next input."""
    html = render(environment(bastion), "{{ bastion_fields(next='/x') }}")
    assert html == '<input type="hidden" name="_next" value="/x">'


def test_bastion_fields_without_next_is_empty(bastion: Bastion) -> None:
    """No next: nothing to render."""
    env = environment(bastion)
    assert render(env, "{{ bastion_fields() }}") == ""
    assert render(env, "{{ bastion_fields(next=None) }}") == ""


def test_bastion_fields_returns_markup(bastion: Bastion) -> None:
    """The helper returns Markup, so autoescaping does not escape it a second time."""
    fields = environment(bastion).globals["bastion_fields"]
    result = fields(next="/x")
    assert isinstance(result, Markup)
    assert result == Markup('<input type="hidden" name="_next" value="/x">')


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
    fields = environment(bastion).globals["bastion_fields"]
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
    assert render(env, source, target="/a?x=1&y='z'") == (
        '<input type="hidden" name="_next" value="/a?x=1&amp;y=&#39;z&#39;">'
    )
    assert render(env, source, target='/a"><script>alert(1)</script>') == (
        '<input type="hidden" name="_next" value="/a%22%3E%3Cscript%3Ealert(1)%3C/script%3E">'
    )


def test_bastion_fields_percent_encodes_spaces_and_non_ascii(bastion: Bastion) -> None:
    """A path with spaces or non-ASCII is percent-encoded, as a Location header needs."""
    html = render(environment(bastion), "{{ bastion_fields(next='/café menu') }}")
    assert html == '<input type="hidden" name="_next" value="/caf%C3%A9%20menu">'


def test_helpers_are_safe_without_autoescape(bastion: Bastion) -> None:
    """An environment without autoescape renders the same escaped HTML."""
    env = jinja2.Environment()  # noqa: S701  # the helpers escape on their own
    bastion.templates(env)
    html = render(env, "{{ bastion_fields(next=target) }}", target="/a?x=1&y='z'")
    assert html == '<input type="hidden" name="_next" value="/a?x=1&amp;y=&#39;z&#39;">'


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
