"""What a handler chooses: where the caller goes next (``-> Redirect``), and what an
htmx fragment is rendered with (the output model, the user and the request)."""

import logging
from decimal import Decimal
from enum import Enum
from pathlib import Path

import jinja2
import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict

from bastion import (
    Bastion,
    ConfigurationError,
    Context,
    Fragment,
    MemoryStore,
    Redirect,
    User,
    public,
)
from bastion.testing import ActionClient

HX = {"HX-Request": "true"}


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str


class Currency(Enum):
    EUR = "EUR"


class Expense(BaseModel):
    amount: Decimal
    currency: Currency
    note: str


def checkout_app() -> tuple[Bastion, ActionClient]:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    @bastion.action(policy=public)
    def place(data: Order) -> Redirect:
        # A path the handler computes: the new order's page.
        return Redirect(f"/orders/{data.item}?new=1")

    @bastion.action(policy=public)
    def bounce(data: Order) -> Redirect:
        return Redirect(data.item)  # from input: must never leave the site

    @bastion.action(policy=public)
    def liar(data: Order) -> Redirect:
        return "/somewhere"  # type: ignore[return-value]  # the bug under test

    return bastion, ActionClient(mounted(bastion), bastion)


def test_a_plain_form_lands_where_the_handler_chose() -> None:
    """303 to the handler's path, over the form's own ``_next``, with the success flash."""
    _, client = checkout_app()
    reply = client.submit("place", {"item": "tea", "_next": "/elsewhere"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/orders/tea?new=1"
    flash = client.flash()
    assert flash is not None
    assert flash.ok


def test_a_script_is_told_the_path() -> None:
    _, client = checkout_app()
    reply = client.call("place", {"item": "tea"})
    assert_reply(reply, 200, {"ok": True, "data": None, "redirect": "/orders/tea?new=1"})


def test_htmx_navigates_with_hx_redirect() -> None:
    _, client = checkout_app()
    reply = client.submit("place", {"item": "tea"}, headers=HX)
    assert (reply.status_code, reply.text) == (200, "")
    assert reply.headers["hx-redirect"] == "/orders/tea?new=1"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"],
    ids=["absolute", "scheme-relative", "backslash", "scheme"],
)
def test_attack_a_redirect_built_from_input_never_leaves_the_site(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Open redirect: the handler returns whatever the visitor sent; the caller goes to
    ``/`` instead, and the security log says so."""
    _, client = checkout_app()
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        form = client.submit("bounce", {"item": target})
        script = client.call("bounce", {"item": target})
    assert (form.status_code, form.headers["location"]) == (303, "/")
    assert_reply(script, 200, {"ok": True, "data": None, "redirect": "/"})
    events = [r for r in caplog.records if getattr(r, "event", None) == "redirect_refused"]
    assert len(events) == 2
    assert all(target not in r.getMessage() for r in events)


def test_a_handler_declared_redirect_that_returns_something_else_is_a_500() -> None:
    _, client = checkout_app()
    reply = client.call("liar", {"item": "x"})
    assert reply.status_code == 500
    assert reply.json()["error"]["code"] == "internal"
    assert "somewhere" not in reply.text


def test_redirect_is_checked_at_registration_like_any_return_type() -> None:
    """``-> Redirect | Order`` would send the Redirect as data, never follow it: refused."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    def mixed(data: Order) -> Redirect | Order:
        return data

    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(mixed)
    assert str(caught.value) == (
        "action 'mixed': Redirect is a whole return type (-> Redirect), not part of one"
    )


# --- htmx fragments: the model, the user and the request --------------------------------


def test_the_fragment_gets_the_output_model_the_user_and_the_request(tmp_path: Path) -> None:
    """``data`` is the result as the return type reads it — Decimal and enum as they
    are, not their JSON — and ``user`` the signed-in user, under a public policy too."""
    (tmp_path / "expense.html").write_text(
        "{{ data.amount + 1 }} {{ data.currency.name }} {{ data.note }}"
        " by {{ user.id if user else 'nobody' }} on {{ request.url.path.split('/')[1] }}"
    )
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=lambda i: User(i))
    bastion.templates(jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True))

    class Row:
        """An ORM-like row: what the template may see is what Expense declares."""

        amount = Decimal("41.10")
        currency = Currency.EUR
        note = "<lunch>"
        password_hash = "argon2-secret"

    @bastion.action(policy=public, fragment="expense.html")
    def add(ctx: Context, data: Order) -> Expense:
        return Row()  # type: ignore[return-value]  # read through Expense's fields

    @bastion.action(policy=public)
    async def sign_in(ctx: Context, data: Order) -> None:
        await ctx.login(User(data.item))

    with ActionClient(mounted(bastion), bastion) as client:
        anonymous = client.submit("add", {"item": "x"}, headers=HX)
        client.call("sign_in", {"item": "ada"})
        signed_in = client.submit("add", {"item": "x"}, headers=HX)
    assert anonymous.text == "42.10 EUR &lt;lunch&gt; by nobody on _actions"
    assert signed_in.text == "42.10 EUR &lt;lunch&gt; by ada on _actions"
    assert "argon2" not in signed_in.text


# --- -> Fragment: the handler chooses the template htmx gets ----------------------------


def fragment_app(tmp_path: Path) -> tuple[Bastion, ActionClient]:
    (tmp_path / "found.html").write_text(
        "{% for row in rows %}<li>{{ row }}</li>{% endfor %} of {{ total }}"
        " for {{ user.id if user else 'nobody' }}"
    )
    (tmp_path / "none.html").write_text("<p>No match for {{ query }}</p>")
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    bastion.templates(jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True))
    secret_rows = ["<tea>", "toast"]

    @bastion.action(policy=public)
    def search(data: Order) -> Fragment:
        found = [r for r in secret_rows if data.item in r]
        if not found:
            return Fragment("none.html", query=data.item)
        return Fragment("found.html", rows=found, total=len(secret_rows))

    return bastion, ActionClient(mounted(bastion), bastion)


def test_htmx_gets_the_template_the_handler_chose(tmp_path: Path) -> None:
    _, client = fragment_app(tmp_path)
    found = client.submit("search", {"item": "t"}, headers=HX)
    missing = client.submit("search", {"item": "<x>"}, headers=HX)
    assert (found.status_code, found.text) == (
        200,
        "<li>&lt;tea&gt;</li><li>toast</li> of 2 for nobody",
    )
    assert missing.text == "<p>No match for &lt;x&gt;</p>"


def test_a_script_gets_none_of_a_fragments_values(tmp_path: Path) -> None:
    """Only htmx asked for HTML: a script's reply is the envelope of ``-> None``; the
    values the handler gave its template never reach the JSON."""
    _, client = fragment_app(tmp_path)
    reply = client.call("search", {"item": "t"})
    assert_reply(reply, 200, {"ok": True, "data": None})
    assert "toast" not in reply.text


def test_fragment_is_a_whole_return_type_and_not_beside_fragment_option() -> None:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())

    def both(data: Order) -> Fragment:
        return Fragment("x.html")

    def mixed(data: Order) -> Fragment | None:
        return None

    with pytest.raises(ConfigurationError) as named:
        bastion.action(policy=public, fragment="y.html")(both)
    with pytest.raises(ConfigurationError) as union:
        bastion.action(policy=public)(mixed)
    assert str(named.value) == (
        "action 'both': -> Fragment chooses its template; fragment= would never be used"
    )
    assert str(union.value) == (
        "action 'mixed': Fragment is a whole return type (-> Fragment), not part of one"
    )
