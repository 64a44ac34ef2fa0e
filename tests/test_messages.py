"""One catalog of bastion's words (bastion.messages): replaced by code, translated with a
gettext-style function, everywhere a refusal is told — JSON, htmx, a plain form's flash,
field messages, the host guard — and never an app's own words."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import jinja2
import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion as bastion_package
from bastion import ActionError, Bastion, Forbidden, MemoryStore, Messages, public
from bastion.messages import CATALOG
from bastion.testing import ActionClient

GERMAN = {
    "You are not allowed to do that.": "Das dürfen Sie nicht.",
    "Some fields are invalid.": "Einige Felder sind ungültig.",
    "Should have at least {limit} {unit}.": "Mindestens {limit} {unit}.",
    "characters": "Zeichen",
    "This form has expired. Reload the page and try again.": "Formular abgelaufen.",
    "Invalid host header": "Ungültiger Host",
}


def gettext(message: str) -> str:
    """A gettext as an app gets it from gettext.translation(...).gettext or Babel."""
    return GERMAN.get(message, message)


class Name(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=3)
    pin: SecretStr | None = Field(default=None, min_length=4)


def app(messages: Messages, tmp_path: Path) -> tuple[Bastion, ActionClient]:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), messages=messages)
    bastion.templates(jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True))

    @bastion.action(policy=public)
    def denied(data: Name) -> None:
        raise Forbidden()

    @bastion.action(policy=public)
    def own_words(data: Name) -> None:
        raise ActionError("Dieser Titel ist vergeben.", code="title_taken", status=409)

    return bastion, ActionClient(mounted(bastion), bastion)


def test_translate_reaches_every_way_a_refusal_is_told(tmp_path: Path) -> None:
    _, client = app(Messages(translate=gettext), tmp_path)
    forbidden = {"ok": False, "error": {"code": "forbidden", "message": "Das dürfen Sie nicht."}}
    assert_reply(client.call("denied", {"name": "Ada"}), 403, forbidden)
    htmx = client.submit("denied", {"name": "Ada"}, headers={"HX-Request": "true"})
    assert htmx.text == '<p class="bastion-error" role="alert">Das dürfen Sie nicht.</p>'
    client.submit("denied", {"name": "Ada"})
    flash = client.flash()
    assert flash is not None
    assert flash.message == "Das dürfen Sie nicht."
    # Field messages: bastion's template translated before it is filled in; pydantic's
    # own go through translate as they are (this catalog has no German for them).
    invalid = client.call("denied", {"name": "A", "pin": "12"})
    assert_reply(
        invalid,
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Einige Felder sind ungültig.",
                "fields": {
                    "name": "String should have at least 3 characters",
                    "pin": "Mindestens 4 Zeichen.",
                },
            },
        },
    )
    token_missing = client.call("denied", {"name": "Ada"}, token="x" * 86)
    assert token_missing.json()["error"]["message"] == "Formular abgelaufen."


def test_the_host_guard_speaks_the_catalog_too(tmp_path: Path) -> None:
    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        messages=Messages(translate=gettext),
        trusted_hosts=["app.example"],
    )

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("home")

    site = Starlette(routes=[Route("/", home)])
    bastion.mount(site)
    with ActionClient(site, bastion, base_url="http://evil.example") as client:
        page = client.get("/")
    assert (page.status_code, page.text) == (400, "Ungültiger Host")


def test_overrides_by_code_and_an_apps_own_words_untouched(tmp_path: Path) -> None:
    messages = Messages(overrides={"forbidden": "Only the author may do that."})
    _, client = app(messages, tmp_path)
    assert client.call("denied", {"name": "Ada"}).json()["error"]["message"] == (
        "Only the author may do that."
    )
    assert_reply(
        client.call("own_words", {"name": "Ada"}),
        409,
        {"ok": False, "error": {"code": "title_taken", "message": "Dieser Titel ist vergeben."}},
    )


def test_a_misspelt_code_is_refused() -> None:
    with pytest.raises(ValueError, match="no such message codes: forbiden"):
        Messages(overrides={"forbiden": "x"})


def test_every_refusal_bastion_defines_takes_its_words_from_the_catalog() -> None:
    """Each ActionError subclass in the package: its code is in CATALOG, and its message
    is CATALOG's — so the catalog is the one list of what bastion says."""
    for info in pkgutil.walk_packages(bastion_package.__path__, "bastion."):
        if not info.name.startswith(("bastion.probe", "bastion.testing", "bastion.cli")):
            importlib.import_module(info.name)
    found: dict[str, str] = {}
    stack = [ActionError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("bastion."):
            found[cls.code] = cls.message
    assert len(found) >= 19
    assert {code: CATALOG[code] for code in found} == found
