"""htmx requests (HX-Request: true) get HTML: the action's fragment, HX-Redirect or an
empty swap, and refusals as a small alert with their own status."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict, Field

from bastion import Bastion, MemoryStore, public
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
