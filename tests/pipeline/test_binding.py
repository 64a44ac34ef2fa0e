"""Stage 8, sealed bound arguments: what a page puts into a form comes back unchanged.

A page that renders "edit post 42" seals ``{"post_id": 42}`` into the form's ``_bound``
field; the action gets it back as its ``Annotated[PostRef, Bound]`` parameter. The
attacks are the ones a visitor can try on a hidden field: edit it (a bit flipped
anywhere, characters added or cut), move it (to another action, to another user's
session), keep it (past its expiry), or forge it (under a key the app does not hold).
Every one answers the same 400 envelope, the handler never runs, and only the server
log says which check failed.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any

import httpx2 as httpx
import jinja2
import pytest
from conftest import OTHER_SECRET, SECRET
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import Bastion, Bound, ConfigurationError, Context, User, public
from bastion.csrf import issue
from bastion.pipeline.stages import binding as binding_module
from bastion.pipeline.stages.binding import BoundInvalid, open_bound
from bastion.sessions import Session, get_session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

BOUND_INVALID = {
    "ok": False,
    "error": {
        "code": "bound_invalid",
        "message": "This form is no longer valid. Reload the page and try again.",
    },
}
SEALED = re.compile(r"[A-Za-z0-9_-]+")
NOT_SEALED = "not sealed by this app (tampered, truncated or an unknown key)"
NOW = 1_800_000_000.0


class PostRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    post_id: int = Field(ge=1)


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=100)


class Edited(BaseModel):
    post_id: int
    title: str


class OldRef(BaseModel):
    """The bound model edit_post had before a (pretend) deploy."""

    model_config = ConfigDict(extra="forbid")
    post_id: str


class Loose(BaseModel):
    post_id: int


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


PAGES = {
    "edit": """\
{% call action_form('edit_post', bind={'post_id': post_id}) %}\
<input name="title"><button>Save</button>{% endcall %}""",
    "flash": "{% set f = flash('edit_post') %}{{ {'code': f.code, 'message': f.message}|tojson }}",
}


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def client(self, **options: Any) -> ActionClient:
        return ActionClient(self.app, self.bastion, **options)


def build(secret_key: str = SECRET, fallbacks: tuple[str, ...] = ()) -> Site:
    """A blog: a page renders the edit form of one post with its ID sealed in; an action
    without bound values; and sign in/out, to test the session tie."""
    bastion = Bastion(
        secret_key=secret_key,
        secret_key_fallbacks=fallbacks,
        store=MemoryStore(),
        load_user=lambda user_id: User(id=user_id),
    )
    calls: list[tuple[str, Any]] = []

    @bastion.action(policy=public, rate=None)
    def edit_post(ctx: Context, data: Edit, ref: Annotated[PostRef, Bound]) -> Edited:
        assert ctx.bound is ref
        calls.append(("edit_post", ref))
        return Edited(post_id=ref.post_id, title=data.title)

    @bastion.action(policy=public, rate=None)
    def delete_post(ref: Annotated[PostRef, Bound]) -> None:
        calls.append(("delete_post", ref))

    @bastion.action(policy=public, rate=None)
    def publish(data: Edit) -> None:
        calls.append(("publish", data))

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context, data: SignIn) -> None:
        await ctx.login(User(id=data.user))

    @bastion.action(policy=public, rate=None)
    def sign_out(ctx: Context) -> None:
        ctx.logout()

    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.DictLoader(PAGES), autoescape=True)
    )
    bastion.templates(templates)

    async def edit_page(request: Request) -> Response:
        post_id = int(request.path_params["post_id"])
        return templates.TemplateResponse(request, "edit", {"post_id": post_id})

    async def flash_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "flash")

    async def seal_page(request: Request) -> Response:
        """What an app's own route does with ``bastion.seal``: here, for tests, with the
        ttl and the session tie taken from the query."""
        query = request.query_params
        sealed = bastion.seal(
            query.get("action", "edit_post"),
            {"post_id": int(query.get("post_id", "42"))},
            session=bastion_session(request),
            ttl=float(query.get("ttl", "86400")),
            bind_session=True if query.get("tie") == "1" else None,
        )
        return PlainTextResponse(sealed)

    app = Starlette(
        routes=[
            Route("/posts/{post_id}/edit", edit_page),
            Route("/flash", flash_page),
            Route("/seal", seal_page),
        ]
    )
    bastion.mount(app)
    return Site(bastion, app, calls)


def bastion_session(request: Request) -> Session:
    return get_session(request.scope)


@pytest.fixture
def site() -> Site:
    return build()


@pytest.fixture
def client(site: Site) -> Iterator[ActionClient]:
    with site.client() as c:
        yield c


def form_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a rendered form, by name."""
    return dict(re.findall(r'<input type="hidden" name="(_\w+)" value="([^"]*)">', html))


def page_seal(client: ActionClient, post_id: int = 42) -> str:
    """The ``_bound`` value of the edit page of ``post_id``, as this visitor sees it."""
    page = client.get(f"/posts/{post_id}/edit")
    assert page.status_code == 200
    return form_fields(page.text)["_bound"]


def edit(client: ActionClient, sealed: str | None, title: str = "New title") -> httpx.Response:
    """A script's call to edit_post, the sealed value in the JSON body (or none)."""
    body: dict[str, Any] = {"title": title}
    if sealed is not None:
        body["_bound"] = sealed
    return client.call("edit_post", body)


def sign_in(client: ActionClient, user: str) -> None:
    reply = client.call("sign_in", {"user": user})
    assert reply.status_code == 200


def assert_refused(reply: httpx.Response) -> None:
    assert reply.status_code == 400
    assert reply.json() == BOUND_INVALID
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"


def refusal_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.reason  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "bastion.security" and getattr(r, "event", None) == "bound_refused"
    ]


def unseal(bastion: Bastion, sealed: str) -> dict[str, Any]:
    """White box: the payload inside a sealed value, opened with the app's bound key."""
    blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    plain = AESGCM(bastion.keys.current("bound")).decrypt(blob[:12], blob[12:], b"bastion/bound/v1")
    payload: dict[str, Any] = json.loads(plain)
    return payload


def flip_bit(sealed: str, bit: int) -> str:
    """``sealed`` with one bit of its bytes flipped (negative: from the end), spelled as
    seal() spells tokens."""
    blob = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    bit %= len(blob) * 8
    blob[bit // 8] ^= 1 << (bit % 8)
    return base64.urlsafe_b64encode(bytes(blob)).rstrip(b"=").decode()


# --- the round trip ---------------------------------------------------------------------


def test_rendered_form_posts_back_its_bound_values(site: Site, client: ActionClient) -> None:
    """action_form(bind=...) renders a form whose fields, posted as they are, give the
    handler the sealed post ID and the typed title."""
    page = client.get("/posts/42/edit")
    fields = form_fields(page.text)
    assert set(fields) == {"_csrf", "_bound"}
    reply = client.post(
        client.url("edit_post"),
        data={**fields, "title": "Hello"},
        headers={"Accept": "application/json"},
    )
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"post_id": 42, "title": "Hello"}}
    assert site.calls == [("edit_post", PostRef(post_id=42))]


def test_action_form_with_bind_renders_the_sealed_input_after_the_token(
    site: Site, client: ActionClient
) -> None:
    """The form is the usual one plus one hidden ``_bound`` input, before the caller's
    own fields; the sealed text is URL-safe base64 (nothing to escape)."""
    html = client.get("/posts/7/edit").text
    url = site.bastion.url_for("edit_post")
    match = re.fullmatch(
        re.escape(f'<form method="post" action="{url}" data-bastion>')
        + r'<input type="hidden" name="_csrf" value="[A-Za-z0-9_-]{86}">'
        + r'<input type="hidden" name="_bound" value="([A-Za-z0-9_-]+)">'
        + re.escape('<input name="title"><button>Save</button></form>'),
        html,
    )
    assert match is not None
    assert unseal(site.bastion, match.group(1))["v"] == {"post_id": 7}


def test_plain_form_post_with_bound_values_redirects_with_the_result(
    site: Site, client: ActionClient
) -> None:
    """Without JavaScript: the sealed field travels as a form field, the reply is 303."""
    fields = form_fields(client.get("/posts/5/edit").text)
    reply = client.post(client.url("edit_post"), data={**fields, "title": "Plain"})
    assert reply.status_code == 303
    assert site.calls == [("edit_post", PostRef(post_id=5))]


def test_json_call_sends_bound_values_in_the_body(site: Site, client: ActionClient) -> None:
    """A script sends the ``_bound`` text it was given as a key of its JSON object; the
    key is bastion's, never a field of the input model."""
    reply = edit(client, page_seal(client, 9), "From a script")
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"post_id": 9, "title": "From a script"}}
    assert site.calls == [("edit_post", PostRef(post_id=9))]


def test_bound_only_action_takes_just_the_sealed_values(site: Site, client: ActionClient) -> None:
    """An action whose only input is sealed (delete this post) needs no other field."""
    sealed = site.bastion.seal("delete_post", {"post_id": 3})
    reply = client.call("delete_post", {"_bound": sealed})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": None}
    assert site.calls == [("delete_post", PostRef(post_id=3))]


def test_check_sees_the_opened_bound_values_before_the_handler() -> None:
    """``ctx.bound`` is set before the action's own check runs: an object-level check
    can decide on the sealed post ID (403), and the handler then does not run."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    calls: list[int] = []

    def owns(ctx: Context, data: Edit) -> bool:
        return bool(ctx.bound.post_id == 1)

    @bastion.action(policy=public, check=owns)
    def rename(data: Edit, ref: Annotated[PostRef, Bound]) -> None:
        calls.append(ref.post_id)

    app = Starlette()
    bastion.mount(app)
    with ActionClient(app, bastion) as client:
        mine = client.call(rename, {"title": "t", "_bound": bastion.seal(rename, {"post_id": 1})})
        theirs = client.call(rename, {"title": "t", "_bound": bastion.seal(rename, {"post_id": 2})})
    assert mine.status_code == 200
    assert theirs.status_code == 403
    assert theirs.json() == {
        "ok": False,
        "error": {"code": "forbidden", "message": "You are not allowed to do that."},
    }
    assert calls == [1]


def test_each_seal_of_the_same_values_differs(site: Site) -> None:
    """A fresh nonce per seal: two forms for the same post do not share a ciphertext."""
    first = site.bastion.seal("edit_post", {"post_id": 42})
    second = site.bastion.seal("edit_post", {"post_id": 42})
    assert first != second
    assert SEALED.fullmatch(first)
    assert unseal(site.bastion, first)["v"] == unseal(site.bastion, second)["v"]


def test_sealed_payload_names_action_and_expiry_and_no_session_secret(
    site: Site, client: ActionClient
) -> None:
    """Inside the seal: the action's name, the values, the expiry and, for a signed-in
    visitor, a tag of the session; never the session ID or its CSRF secret."""
    sign_in(client, "ada")
    sealed = page_seal(client, 42)
    payload = unseal(site.bastion, sealed)
    assert set(payload) == {"a", "v", "e", "s"}
    assert payload["a"] == "edit_post"
    assert payload["v"] == {"post_id": 42}
    assert re.fullmatch(r"[0-9a-f]{32}", payload["s"])
    session_id = client.session_id
    assert session_id is not None
    assert session_id not in json.dumps(payload)


def test_default_lifetime_is_one_day(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealed at ``NOW`` without a ttl: it expires at ``NOW`` + 24 h exactly."""
    monkeypatch.setattr(binding_module, "time", SimpleNamespace(time=lambda: NOW))
    payload = unseal(site.bastion, site.bastion.seal("edit_post", {"post_id": 1}))
    assert payload["e"] == NOW + 24 * 3600
    assert payload["s"] is None


# --- the tamper matrix ------------------------------------------------------------------


Make = Callable[[Site], str]


def sealed_by(secret_key: str, name: str = "edit_post", **options: Any) -> Make:
    """A value sealed by another app with the same action names, under ``secret_key``."""

    def make(site: Site) -> str:
        return build(secret_key).bastion.seal(name, {"post_id": 42}, **options)

    return make


def tampered(change: Callable[[str], str]) -> Make:
    def make(site: Site) -> str:
        return change(site.bastion.seal("edit_post", {"post_id": 42}))

    return make


def foreign_model(site: Site) -> str:
    """Sealed under the same key for an ``edit_post`` whose bound model was different
    (a form rendered before a deploy changed the model): the values no longer fit."""

    other = Bastion(secret_key=SECRET, store=MemoryStore())

    @other.action(policy=public)
    def edit_post(ref: Annotated[OldRef, Bound]) -> None: ...

    return other.seal(edit_post, {"post_id": "forty-two"})


def csrf_token_as_bound(site: Site) -> str:
    """A valid CSRF token of the app: text from the same secret, for another purpose."""
    return issue(Session(), site.bastion.keys)


TAMPER = {
    # attack: edit the hidden field
    "bit-flip-in-nonce": (tampered(lambda s: flip_bit(s, 0)), NOT_SEALED),
    "bit-flip-in-ciphertext": (tampered(lambda s: flip_bit(s, 8 * 20 + 3)), NOT_SEALED),
    "bit-flip-in-tag": (tampered(lambda s: flip_bit(s, -1)), NOT_SEALED),
    "last-character-respelled": (
        tampered(lambda s: s[:-1] + ("A" if s[-1] != "A" else "B")),
        None,  # malformed or not sealed, depending on the character's spare bits
    ),
    "junk-character-inserted": (tampered(lambda s: s[:10] + "!" + s[10:]), "malformed"),
    "padding-added": (tampered(lambda s: s + "=="), "malformed"),
    "standard-base64-alphabet": (
        tampered(lambda s: s.replace("-", "+").replace("_", "/") + "/+"),
        "malformed",
    ),
    "non-ascii": (tampered(lambda s: s[:-1] + "é"), "malformed"),
    "whitespace-around": (tampered(lambda s: f" {s} "), "malformed"),
    # attack: cut the hidden field
    "truncated-by-one-character": (tampered(lambda s: s[:-1]), None),
    # (malformed or not sealed: the length of a sealed value varies with its expiry)
    "truncated-by-four-characters": (tampered(lambda s: s[:-4]), None),
    "truncated-to-half": (tampered(lambda s: s[: len(s) // 2]), None),
    "nonce-only": (tampered(lambda s: s[:16]), "malformed"),
    "one-character": (tampered(lambda s: s[:1]), "malformed"),
    "empty": (lambda site: "", "missing"),
    "oversized": (lambda site: "A" * 8193, "malformed"),
    # attack: move or keep it
    "sealed-for-another-action": (
        lambda site: site.bastion.seal("delete_post", {"post_id": 42}),
        "for another action",
    ),
    "expired": (
        lambda site: site.bastion.seal("edit_post", {"post_id": 42}, ttl=-1),
        "expired",
    ),
    "values-no-longer-fit-the-model": (foreign_model, "values do not fit the bound model"),
    # attack: forge it
    "unknown-key": (sealed_by(OTHER_SECRET), NOT_SEALED),
    "csrf-token-of-the-same-app": (csrf_token_as_bound, None),
}


@pytest.mark.parametrize(("make", "reason"), TAMPER.values(), ids=TAMPER.keys())
def test_tampered_bound_value_is_400_and_the_handler_does_not_run(
    site: Site,
    client: ActionClient,
    caplog: pytest.LogCaptureFixture,
    make: Make,
    reason: str | None,
) -> None:
    """Attack: change, cut, move, keep or forge the ``_bound`` field. Every one is the
    same generic 400, the handler does not run, and the server log alone names the check
    that failed (never the value)."""
    sealed = make(site)
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        reply = edit(client, sealed)
    assert_refused(reply)
    assert site.calls == []
    reasons = refusal_reasons(caplog)
    assert len(reasons) == 1
    if reason is None:
        assert reasons[0] in ("malformed", NOT_SEALED)
    else:
        assert reasons[0] == reason
    if len(sealed) > 8:
        assert all(sealed not in r.getMessage() for r in caplog.records)


def test_every_single_bit_flip_of_the_sealed_bytes_is_refused(site: Site) -> None:
    """Attack: flip any one bit of the sealed value (nonce, ciphertext or tag). AES-GCM
    authenticates all of it: not one of the flips opens."""
    spec = site.bastion.registry.get("edit_post")
    sealed = site.bastion.seal("edit_post", {"post_id": 42})
    bits = len(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))) * 8
    opened = []
    for bit in range(bits):
        try:
            open_bound(site.bastion.keys, spec, flip_bit(sealed, bit), Session())
        except BoundInvalid:
            continue
        opened.append(bit)
    assert opened == []


def test_every_single_bit_flip_of_the_sealed_text_is_refused(site: Site) -> None:
    """Attack: flip any one bit of any character of the ``_bound`` text. None opens,
    not even where base64's decoder would ignore it (a last character's spare bits, a
    character outside the alphabet): a sealed value has exactly one spelling."""
    spec = site.bastion.registry.get("edit_post")
    for _ in range(4):  # lengths vary with the values' size: several final characters
        sealed = site.bastion.seal("edit_post", {"post_id": 42})
        opened = []
        for i, char in enumerate(sealed):
            for bit in range(8):
                changed = sealed[:i] + chr(ord(char) ^ (1 << bit)) + sealed[i + 1 :]
                try:
                    open_bound(site.bastion.keys, spec, changed, Session())
                except BoundInvalid:
                    continue
                opened.append((i, bit))
        assert opened == []
        assert open_bound(site.bastion.keys, spec, sealed, Session()) == PostRef(post_id=42)


def test_bound_value_signed_in_user_a_rendered_is_refused_for_user_b(site: Site) -> None:
    """Attack: user B replays the form user A was given (copied from A's page). The seal
    is tied to A's session: B gets 400, A's own post goes through."""
    with site.client() as alice, site.client() as bob:
        sign_in(alice, "alice")
        sign_in(bob, "bob")
        sealed = page_seal(alice, 42)
        stolen = edit(bob, sealed)
        own = edit(alice, sealed)
    assert_refused(stolen)
    assert own.status_code == 200
    assert site.calls == [("edit_post", PostRef(post_id=42))]


def test_signed_in_users_bound_value_is_refused_for_an_anonymous_visitor(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: a signed-in user's sealed form posted by someone who is not signed in
    (with a session of their own, or none): 400, "for another session" in the log."""
    with site.client() as alice, site.client() as stranger:
        sign_in(alice, "alice")
        sealed = page_seal(alice, 42)
        with caplog.at_level(logging.WARNING, logger="bastion.security"):
            reply = edit(stranger, sealed)
    assert_refused(reply)
    assert refusal_reasons(caplog) == ["for another session"]
    assert site.calls == []


def test_bound_value_dies_with_the_session_it_was_rendered_in(site: Site) -> None:
    """Attack: keep a form from before signing out. After sign-out and sign-in as the
    same user, the session is a new one: the old form is refused."""
    with site.client() as alice:
        sign_in(alice, "alice")
        sealed = page_seal(alice, 42)
        assert client_call_ok(alice, "sign_out")
        sign_in(alice, "alice")
        reply = edit(alice, sealed)
    assert_refused(reply)
    assert site.calls == []


def client_call_ok(client: ActionClient, action: str) -> bool:
    return client.call(action).status_code == 200


def test_anonymous_bound_value_is_not_tied_to_a_session_by_default(site: Site) -> None:
    """A form rendered for an anonymous visitor is not tied to their session (there may
    be none yet): another anonymous visitor may post it. The action and expiry still
    hold; ``bind_session=True`` ties it (next test)."""
    with site.client() as first, site.client() as second:
        sealed = page_seal(first, 42)
        reply = edit(second, sealed)
    assert reply.status_code == 200
    assert unseal(site.bastion, sealed)["s"] is None


def test_bind_session_true_ties_an_anonymous_visitors_form(site: Site) -> None:
    """Attack: another visitor replays an anonymous form sealed with ``bind_session=True``:
    400; the visitor it was sealed for gets through."""
    with site.client() as owner, site.client() as other:
        owner.token()  # the visitor has a session, as after any page with a form
        sealed = owner.get("/seal?tie=1").text
        stolen = edit(other, sealed)
        own = edit(owner, sealed)
    assert_refused(stolen)
    assert own.status_code == 200


def test_sealed_value_opens_until_its_expiry_and_not_after(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: replay a form after its lifetime. With a clock in the binding stage only:
    sealed at NOW with ttl=60, it opens at NOW + 60 and is refused at NOW + 60.001."""
    clock = SimpleNamespace(time=lambda: NOW)
    monkeypatch.setattr(binding_module, "time", clock)
    spec = site.bastion.registry.get("edit_post")
    sealed = site.bastion.seal("edit_post", {"post_id": 42}, ttl=60)
    clock.time = lambda: NOW + 60
    assert open_bound(site.bastion.keys, spec, sealed, Session()) == PostRef(post_id=42)
    clock.time = lambda: NOW + 60.001
    with pytest.raises(BoundInvalid):
        open_bound(site.bastion.keys, spec, sealed, Session())


def test_value_sealed_under_an_old_key_opens_after_rotation() -> None:
    """Key rotation: a form rendered before the secret changed (sealed under OLD) still
    posts once OLD is in ``secret_key_fallbacks``."""
    old = build(OTHER_SECRET)
    sealed = old.bastion.seal("edit_post", {"post_id": 42})
    rotated = build(SECRET, fallbacks=(OTHER_SECRET,))
    with rotated.client() as client:
        reply = edit(client, sealed)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"post_id": 42, "title": "New title"}}


def test_value_sealed_under_a_retired_key_is_refused() -> None:
    """Once the old key leaves the fallbacks, its forms are refused like forgeries."""
    sealed = build(OTHER_SECRET).bastion.seal("edit_post", {"post_id": 42})
    site = build(SECRET)
    with site.client() as client:
        reply = edit(client, sealed)
    assert_refused(reply)
    assert site.calls == []


def test_new_seals_use_the_current_key_not_a_fallback() -> None:
    """After rotation, what is sealed now opens under the new key alone."""
    rotated = build(SECRET, fallbacks=(OTHER_SECRET,))
    sealed = rotated.bastion.seal("edit_post", {"post_id": 42})
    with build(SECRET).client() as client:
        assert edit(client, sealed).status_code == 200
    with build(OTHER_SECRET).client() as client:
        assert_refused(edit(client, sealed))


# --- missing, misplaced, malformed ------------------------------------------------------


def test_missing_bound_field_is_400(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An action with a bound parameter called without ``_bound``: 400, no handler."""
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        reply = edit(client, None)
    assert_refused(reply)
    assert refusal_reasons(caplog) == ["missing"]
    assert site.calls == []


def test_missing_bound_field_in_a_form_is_400(site: Site, client: ActionClient) -> None:
    """The same from a form: the ``_bound`` field left out."""
    reply = client.submit("edit_post", {"title": "x"}, headers={"Accept": "application/json"})
    assert_refused(reply)
    assert site.calls == []


def test_json_null_bound_counts_as_missing(site: Site, client: ActionClient) -> None:
    """``"_bound": null`` is no sealed value at all: the same 400."""
    reply = client.call("edit_post", {"title": "x", "_bound": None})
    assert_refused(reply)
    assert site.calls == []


@pytest.mark.parametrize("via", ["json", "form"])
def test_bound_field_sent_to_an_action_without_bound_values_is_400(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture, via: str
) -> None:
    """Attack: add ``_bound`` to a call of an action that declares no bound parameter
    (hoping it reaches the model or the handler): 400, the handler does not run."""
    sealed = site.bastion.seal("edit_post", {"post_id": 42})
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        if via == "json":
            reply = client.call("publish", {"title": "x", "_bound": sealed})
        else:
            reply = client.submit(
                "publish", {"title": "x", "_bound": sealed}, headers={"Accept": "application/json"}
            )
    assert_refused(reply)
    assert refusal_reasons(caplog) == ["sent to an action without bound values"]
    assert site.calls == []


def test_empty_bound_field_to_an_action_without_bound_values_is_400(
    site: Site, client: ActionClient
) -> None:
    """Even empty, a ``_bound`` field where none belongs is refused."""
    reply = client.call("publish", {"title": "x", "_bound": ""})
    assert_refused(reply)
    assert site.calls == []


@pytest.mark.parametrize("value", [42, ["a"], {"post_id": 42}, True])
def test_json_bound_that_is_not_text_is_400_malformed(
    site: Site, client: ActionClient, value: Any
) -> None:
    """Attack: send the bound values as plain JSON instead of sealed text. The body is
    refused as malformed before any check of the seal; the handler does not run."""
    reply = client.call("edit_post", {"title": "x", "_bound": value})
    assert reply.status_code == 400
    assert reply.json() == {
        "ok": False,
        "error": {"code": "malformed", "message": "The _bound field must be text."},
    }
    assert site.calls == []


def test_bound_form_field_sent_twice_is_400_malformed(site: Site, client: ActionClient) -> None:
    """Attack: two ``_bound`` fields, hoping one check reads the first and another the
    second. Refused as malformed; the handler does not run."""
    sealed = page_seal(client, 42)
    reply = client.post(
        client.url("edit_post"),
        content=f"title=x&_bound={sealed}&_bound={sealed}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    assert reply.status_code == 400
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "malformed",
            "message": "The form field _bound must be sent once, as text.",
        },
    }
    assert site.calls == []


def test_bound_values_cannot_be_overridden_by_a_plain_field(
    site: Site, client: ActionClient
) -> None:
    """Attack: send ``post_id=43`` beside a seal for 42. The input model forbids unknown
    fields (422) and the sealed values are the only ones the bound parameter sees."""
    sealed = page_seal(client, 42)
    reply = client.call("edit_post", {"title": "x", "post_id": 43, "_bound": sealed})
    assert reply.status_code == 422
    assert reply.json()["error"]["fields"] == {"post_id": "Extra inputs are not permitted"}
    assert site.calls == []


def test_invalid_input_is_422_before_the_seal_is_opened(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Validation (stage 7) comes before bound values (stage 8): an invalid title with a
    tampered seal is 422, and no seal refusal is logged."""
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        reply = client.call("edit_post", {"title": "", "_bound": "tampered"})
    assert reply.status_code == 422
    assert refusal_reasons(caplog) == []
    assert site.calls == []


def test_refused_plain_form_redirects_back_with_the_generic_message(
    site: Site, client: ActionClient
) -> None:
    """A browser posting a stale form lands back on the page (303) whose flash says the
    form is no longer valid: the same words as the JSON envelope."""
    sealed = site.bastion.seal("edit_post", {"post_id": 42}, ttl=-1)
    reply = client.submit(
        "edit_post",
        {"title": "x", "_bound": sealed},
        headers={"Referer": "http://127.0.0.1/posts/42/edit"},
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/posts/42/edit"
    shown = client.get("/flash", headers={"Accept": "text/html"})
    assert json.loads(shown.text) == BOUND_INVALID["error"]
    assert site.calls == []


# --- sealing: mistakes of the page are the page's bug, said at once ---------------------


def test_seal_refuses_values_that_do_not_fit_the_model(site: Site) -> None:
    """Sealing ``post_id=0`` (the model wants ≥ 1) raises at render time."""
    with pytest.raises(ValidationError):
        site.bastion.seal("edit_post", {"post_id": 0})
    with pytest.raises(ValidationError):
        site.bastion.seal("edit_post", {"post_id": 1, "extra": 2})


def test_seal_refuses_an_action_without_a_bound_parameter(site: Site) -> None:
    """There is nothing to seal for ``publish``: TypeError naming the action."""
    with pytest.raises(TypeError, match=r"^action 'publish' declares no bound parameter$"):
        site.bastion.seal("publish", {"post_id": 1})


def test_seal_with_bind_session_needs_a_session(site: Site) -> None:
    """``bind_session=True`` without the visitor's session cannot tie anything: TypeError."""
    with pytest.raises(TypeError, match=r"^bind_session=True needs the visitor's session$"):
        site.bastion.seal("edit_post", {"post_id": 1}, bind_session=True)


def test_seal_of_an_unknown_action_is_a_lookup_error(site: Site) -> None:
    """Sealing for a name nobody registered fails like url_for does."""
    with pytest.raises(LookupError, match=r"^'nope' is not a registered action$"):
        site.bastion.seal("nope", {"post_id": 1})


def test_bind_session_false_leaves_a_signed_in_form_untied(site: Site) -> None:
    """``bind_session=False``: the page opts out of the tie (a form meant to be shared)."""
    session = Session()
    session.login("ada")
    sealed = site.bastion.seal("edit_post", {"post_id": 1}, session=session, bind_session=False)
    assert unseal(site.bastion, sealed)["s"] is None
    tied = site.bastion.seal("edit_post", {"post_id": 1}, session=session)
    assert unseal(site.bastion, tied)["s"] is not None


# --- declaring a bound parameter --------------------------------------------------------


def test_bound_parameter_is_recorded_on_the_spec(site: Site) -> None:
    """The spec knows the bound model and the parameter that receives it."""
    spec = site.bastion.registry.get("edit_post")
    assert spec.bound is PostRef
    assert spec.bound_param == "ref"
    assert site.bastion.registry.get("publish").bound is None


def test_bound_needs_a_pydantic_model(bastion: Bastion) -> None:
    """``Annotated[int, Bound]`` is refused at import time."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def handler(ref: Annotated[int, Bound]) -> None: ...

    assert str(caught.value) == "Annotated[..., Bound] takes a pydantic model, not <class 'int'>"


def test_bound_model_must_forbid_unknown_fields(bastion: Bastion) -> None:
    """A bound model is input like any other: it must forbid unknown fields."""

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def handler(ref: Annotated[Loose, Bound]) -> None: ...

    assert str(caught.value) == (
        "action 'handler': input type Loose must forbid unknown fields: "
        'add model_config = ConfigDict(extra="forbid")'
    )


def test_two_bound_parameters_are_refused(bastion: Bastion) -> None:
    """One bound parameter at most; the second is named in the error."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def handler(a: Annotated[PostRef, Bound], b: Annotated[PostRef, Bound]) -> None: ...

    assert str(caught.value) == (
        "action 'handler': parameter 'b' must be annotated with Context, a pydantic "
        "model, Annotated[Model, Bound] (one of each at most) or Annotated[T, Depends(...)]"
    )


def test_bound_marker_repr() -> None:
    """The marker prints as the name users write."""
    assert repr(Bound) == "Bound"
