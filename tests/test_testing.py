"""``bastion.testing``: what ActionClient sends by default, how each default is left out
or replaced to test a refusal, its session helpers, the address each client calls from,
resetting rate limits, the pending flash, the Referer of a form, sealed bound values, and
``fast_passwords()``."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpx2 as httpx
import pytest
import redis
from argon2 import PasswordHasher
from conftest import SECRET
from helpers import CROSS_ORIGIN, CSRF_FAILED
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion import (
    Bastion,
    Bound,
    Context,
    Flash,
    LoginThrottle,
    hash_password,
    needs_rehash,
    public,
    verify_password,
)
from bastion import passwords as passwords_module
from bastion.csrf import issue
from bastion.sessions import FLASH_KEY, get_session
from bastion.stores import MemoryStore
from bastion.testing import AUTO, ActionClient, fast_passwords

TOKEN = re.compile(r"[A-Za-z0-9_-]{86}")
SID = re.compile(r"[A-Za-z0-9_-]{43}")
RATE_LIMITED = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
BOUND_INVALID = {
    "ok": False,
    "error": {
        "code": "bound_invalid",
        "message": "This form is no longer valid. Reload the page and try again.",
    },
}
ARGON2ID = re.compile(
    r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}"
)
_ARGON2 = PasswordHasher()
DEFAULT_COSTS = (_ARGON2.memory_cost, _ARGON2.time_cost, _ARGON2.parallelism)
FAST_COSTS = (8, 1, 1)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Echo(BaseModel):
    text: str


class Seen(BaseModel):
    client: str | None


class PostRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    post_id: int = Field(ge=1)


class Title(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1)


class Edited(BaseModel):
    post_id: int
    title: str


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: str
    password: str


class Checked(BaseModel):
    ok: bool


@dataclass
class App:
    bastion: Bastion
    app: Starlette
    calls: list[str]


def build(**options: Any) -> App:
    options.setdefault("secret_key", SECRET)
    options.setdefault("store", MemoryStore())
    bastion = Bastion(**options)
    calls: list[str] = []

    @bastion.action(policy=public)
    def note(ctx: Context, data: Note) -> Echo:
        calls.append("note")
        ctx.session["note"] = data.text
        return Echo(text=data.text)

    @bastion.action(policy=public)
    def login(ctx: Context) -> None:
        calls.append("login")
        ctx.session.rotate()

    @bastion.action(policy=public, rate="1/minute")
    def once(ctx: Context) -> Seen:
        calls.append("once")
        return Seen(client=ctx.client)

    @bastion.action(policy=public, rate=None)
    def edit(data: Title, ref: Annotated[PostRef, Bound]) -> Edited:
        calls.append("edit")
        return Edited(post_id=ref.post_id, title=data.title)

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context, data: SignIn) -> Checked:
        stored = hash_password("right") if data.account == "ada" else None
        return Checked(ok=await ctx.check_password(data.account, data.password, stored))

    @bastion.action(policy=public, rate=None)
    def register(data: Note) -> Echo:
        # A sync handler: it runs in a worker thread, as a sign-up's hashing would.
        return Echo(text=hash_password(data.text))

    async def headers(request: Request) -> Response:
        return JSONResponse(
            {k: v for k, v in request.headers.items() if k in ("origin", "x-csrf-token")}
        )

    async def form(request: Request) -> Response:
        return PlainTextResponse(issue(get_session(request.scope), bastion.keys))

    async def page(request: Request) -> Response:
        """What a page showing the flash would read (it moves out of the session)."""
        shown = request.scope.get(FLASH_KEY)
        return JSONResponse(shown)

    app = Starlette(
        routes=[
            Route("/headers", headers, methods=["GET", "POST"]),
            Route("/form", form),
            Route("/page", page),
        ]
    )
    bastion.mount(app)
    return App(bastion, app, calls)


@pytest.fixture
def site() -> App:
    return build()


@pytest.fixture
def client(site: App) -> Iterator[ActionClient]:
    with ActionClient(site.app, site.bastion) as c:
        yield c


def assert_json(reply: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == envelope


# --- defaults ---------------------------------------------------------------------------


def test_defaults(site: App, client: ActionClient) -> None:
    """Base URL http://127.0.0.1, Origin http://127.0.0.1, a loopback address of its
    own that is not the server's, redirects not followed, and url() is the action's
    path."""
    assert str(client.base_url) == "http://127.0.0.1"
    assert client.origin == "http://127.0.0.1"
    assert ipaddress.ip_address(client.client_address) in ipaddress.ip_network("127.0.0.0/8")
    assert client.client_address != "127.0.0.1"
    assert client.follow_redirects is False
    assert client.url("note") == site.bastion.url_for("note")
    assert repr(AUTO) == "AUTO"


def test_call_succeeds_by_default_and_sends_what_a_page_would(
    site: App, client: ActionClient
) -> None:
    """call(): a JSON body, Accept JSON, Origin, a valid X-CSRF-Token and the session
    cookie; the handler runs."""
    reply = client.call("note", {"text": "hi"})
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})
    sent = reply.request.headers
    assert sent["content-type"] == "application/json"
    assert sent["accept"] == "application/json"
    assert sent["origin"] == "http://127.0.0.1"
    assert TOKEN.fullmatch(sent["x-csrf-token"])
    assert sent["cookie"] == f"bastion_session={client.session_id}"
    assert reply.request.content == b'{"text": "hi"}'
    assert site.calls == ["note"]


def test_submit_succeeds_by_default_as_a_plain_form(site: App, client: ActionClient) -> None:
    """submit(): a urlencoded form with the token in _csrf (no header), Origin, and a
    303 back (redirects are not followed)."""
    reply = client.submit("note", {"text": "hi", "_next": "/done"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/done"
    sent = reply.request
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["origin"] == "http://127.0.0.1"
    assert sent.headers["referer"] == "http://127.0.0.1/"
    assert "x-csrf-token" not in sent.headers
    assert re.fullmatch(rb"text=hi&_next=%2Fdone&_csrf=[A-Za-z0-9_-]{86}", sent.content)
    assert site.calls == ["note"]


# --- overriding each default to test refusals ---------------------------------------------


def test_call_with_token_none_sends_no_token(site: App, client: ActionClient) -> None:
    """token=None: no X-CSRF-Token header; the refusal is 403 csrf_failed."""
    client.token()  # a session, so that what is refused is the token
    reply = client.call("note", {"text": "hi"}, token=None)
    assert_json(reply, 403, CSRF_FAILED)
    assert "x-csrf-token" not in reply.request.headers
    assert site.calls == []


def test_call_with_a_forged_token_sends_it(site: App, client: ActionClient) -> None:
    """token="forged": exactly that header value; 403 csrf_failed."""
    client.token()  # a session, so that what is refused is the token
    reply = client.call("note", {"text": "hi"}, token="forged")
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.headers["x-csrf-token"] == "forged"
    assert site.calls == []


def test_submit_with_token_none_sends_no_csrf_field(site: App, client: ActionClient) -> None:
    """submit(token=None): no _csrf field; asking for JSON, the refusal is 403 csrf_failed."""
    client.token()  # a session, so that what is refused is the token
    reply = client.submit(
        "note", {"text": "hi"}, token=None, headers={"Accept": "application/json"}
    )
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.content == b"text=hi"
    assert site.calls == []


def test_submit_with_a_forged_token_sends_it(site: App, client: ActionClient) -> None:
    """submit(token="forged"): _csrf=forged; 403 csrf_failed."""
    client.token()  # a session, so that what is refused is the token
    reply = client.submit(
        "note", {"text": "hi"}, token="forged", headers={"Accept": "application/json"}
    )
    assert_json(reply, 403, CSRF_FAILED)
    assert reply.request.content == b"text=hi&_csrf=forged"
    assert site.calls == []


def test_call_with_origin_none_sends_no_origin(site: App, client: ActionClient) -> None:
    """origin=None: no Origin header. With a valid token that passes (a missing Origin
    is not a refusal; the token is what is always required)..."""
    reply = client.call("note", {"text": "hi"}, origin=None)
    assert "origin" not in reply.request.headers
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})
    assert site.calls == ["note"]


def test_call_with_origin_none_and_no_token_is_refused(site: App, client: ActionClient) -> None:
    """...and without a token it is 403 csrf_failed."""
    client.token()  # a session, so that what is refused is the token
    reply = client.call("note", {"text": "hi"}, origin=None, token=None)
    assert "origin" not in reply.request.headers
    assert_json(reply, 403, CSRF_FAILED)
    assert site.calls == []


def test_call_from_another_origin_is_refused(site: App, client: ActionClient) -> None:
    """origin="http://evil.example": that Origin is sent; 403 cross_origin."""
    reply = client.call("note", {"text": "hi"}, origin="http://evil.example")
    assert reply.request.headers["origin"] == "http://evil.example"
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_submit_from_another_origin_is_refused_with_json(site: App, client: ActionClient) -> None:
    """submit(origin=...) from another site: JSON 403, even for a plain form."""
    reply = client.submit("note", {"text": "hi"}, origin="http://evil.example")
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_client_without_origin(site: App) -> None:
    """ActionClient(origin=None) sends no Origin on any call."""
    with ActionClient(site.app, site.bastion, origin=None) as client:
        reply = client.call("note", {"text": "hi"})
    assert "origin" not in reply.request.headers
    assert_json(reply, 200, {"ok": True, "data": {"text": "hi"}})


def test_explicit_headers_win(site: App, client: ActionClient) -> None:
    """headers= replaces what the client would send (here Origin)."""
    reply = client.call("note", {"text": "hi"}, headers={"Origin": "http://evil.example"})
    assert reply.request.headers.get_list("origin") == ["http://evil.example"]
    assert_json(reply, 403, CROSS_ORIGIN)


# --- the session helpers ------------------------------------------------------------------


def test_session_id_is_none_until_a_session_exists(client: ActionClient) -> None:
    """A new client holds no session cookie; session() of no session is empty and
    creates nothing."""
    assert client.session_id is None
    assert client.session() == {}
    assert client.session_id is None


def test_token_creates_the_session_once(site: App, client: ActionClient) -> None:
    """token() creates the session (and its cookie) on first use; later tokens are new
    masks for that same session, each valid."""
    first = client.token()
    sid = client.session_id
    assert sid is not None
    assert SID.fullmatch(sid)
    second = client.token()
    assert client.session_id == sid
    assert TOKEN.fullmatch(first)
    assert TOKEN.fullmatch(second)
    assert first != second
    for token in (first, second):
        assert client.call("note", {"text": "t"}, token=token).status_code == 200


def test_session_id_is_the_cookie_the_server_set(client: ActionClient) -> None:
    """After a page creates the session, session_id is the cookie from its reply."""
    reply = client.get("/form")
    match = re.match(r"bastion_session=([A-Za-z0-9_-]{43});", reply.headers["set-cookie"])
    assert match is not None
    assert client.session_id == match.group(1)


def test_session_shows_the_server_side_data(client: ActionClient) -> None:
    """session() is a copy of the data the handlers stored."""
    client.call("note", {"text": "kept"})
    data = client.session()
    assert data == {"note": "kept"}
    data["note"] = "changed here only"
    assert client.session() == {"note": "kept"}


def test_token_and_session_follow_a_rotation(site: App, client: ActionClient) -> None:
    """After rotate(), the client holds the new ID only, and new tokens are for it."""
    client.call("note", {"text": "kept"})
    old = client.session_id
    client.call("login")
    assert client.session_id not in (None, old)
    assert [c.name for c in client.cookies.jar] == ["bastion_session"]
    assert client.session() == {"note": "kept"}
    assert client.call("note", {"text": "again"}).status_code == 200


def test_token_after_the_session_expired_replaces_the_cookie() -> None:
    """On a host without a dot (http://localhost), a session that vanished server-side:
    token() makes a new one whose cookie replaces the old one in the jar (one cookie,
    no conflict), and later server cookies replace it too."""
    site = build(allowed_origins=["http://localhost"])
    with ActionClient(
        site.app, site.bastion, base_url="http://localhost", origin="http://localhost"
    ) as client:
        client.get("/form")
        old = client.session_id
        assert old is not None
        key = site.bastion.session_manager.store_keys(old)[0]
        anyio.run(site.bastion.store.delete, key)
        client.token()
        assert client.session_id not in (None, old)
        assert len(list(client.cookies.jar)) == 1
        assert client.call("login").status_code == 200
        assert len(list(client.cookies.jar)) == 1
        assert client.call("note", {"text": "x"}).status_code == 200


def test_https_client_uses_the_prefixed_cookie() -> None:
    """Over https the client reads and writes __Host-bastion_session, as the server does."""
    site = build(allowed_origins=["https://app.example"])
    with ActionClient(
        site.app, site.bastion, base_url="https://app.example", origin="https://app.example"
    ) as client:
        client.token()
        assert [c.name for c in client.cookies.jar] == ["__Host-bastion_session"]
        assert [c.secure for c in client.cookies.jar] == [True]
        assert client.call("note", {"text": "tls"}).status_code == 200
        assert client.session() == {"note": "tls"}


# --- plain post() to an action -------------------------------------------------------------


def test_raw_post_to_an_action_gets_origin_token_and_cookie(
    site: App, client: ActionClient
) -> None:
    """client.post(url, json=...) on a new client: the Origin, a token and the cookie
    of the session that token created are added; the call succeeds."""
    reply = client.post(
        client.url("note"), json={"text": "raw"}, headers={"Accept": "application/json"}
    )
    assert_json(reply, 200, {"ok": True, "data": {"text": "raw"}})
    sent = reply.request.headers
    assert sent["origin"] == "http://127.0.0.1"
    assert TOKEN.fullmatch(sent["x-csrf-token"])
    assert sent.get_list("cookie") == [f"bastion_session={client.session_id}"]


def test_raw_post_with_its_own_csrf_field_gets_no_header_token(
    site: App, client: ActionClient
) -> None:
    """A form body that already carries _csrf keeps it: no header token is added."""
    token = client.token()
    reply = client.post(client.url("note"), data={"text": "form", "_csrf": token})
    assert reply.status_code == 303
    assert "x-csrf-token" not in reply.request.headers
    assert site.calls == ["note"]


def test_raw_post_keeps_explicit_headers(site: App, client: ActionClient) -> None:
    """An explicit Origin or X-CSRF-Token on post() is sent as given, not replaced."""
    reply = client.post(
        client.url("note"),
        json={"text": "x"},
        headers={
            "Accept": "application/json",
            "Origin": "http://evil.example",
            "X-CSRF-Token": "mine",
        },
    )
    assert reply.request.headers.get_list("origin") == ["http://evil.example"]
    assert reply.request.headers.get_list("x-csrf-token") == ["mine"]
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_raw_json_post_mentioning_csrf_still_gets_the_token(
    site: App, client: ActionClient
) -> None:
    """Only a form's _csrf field counts: a JSON value that reads "_csrf" gets a token."""
    reply = client.post(
        client.url("note"), json={"text": "_csrf"}, headers={"Accept": "application/json"}
    )
    assert TOKEN.fullmatch(reply.request.headers["x-csrf-token"])
    assert_json(reply, 200, {"ok": True, "data": {"text": "_csrf"}})


def test_raw_form_post_with_a_forged_csrf_field_is_not_rescued(
    site: App, client: ActionClient
) -> None:
    """A urlencoded form carrying its own (forged) _csrf is sent as it is: 403."""
    client.token()
    reply = client.post(
        client.url("note"),
        data={"text": "x", "_csrf": "forged"},
        headers={"Accept": "application/json"},
    )
    assert "x-csrf-token" not in reply.request.headers
    assert_json(reply, 403, CSRF_FAILED)
    assert site.calls == []


def test_other_requests_are_left_alone(client: ActionClient) -> None:
    """POSTs outside the action prefix and GETs get no Origin and no token."""
    assert client.post("/headers").json() == {}
    assert client.get("/headers").json() == {}
    assert client.session_id is None


# --- the address each client calls from ---------------------------------------------------


def test_each_client_calls_from_an_address_of_its_own(site: App) -> None:
    """Two clients: two loopback addresses, each the ctx.client of its calls; one client
    calls from the same address every time."""
    with (
        ActionClient(site.app, site.bastion) as first,
        ActionClient(site.app, site.bastion) as second,
    ):
        assert first.client_address != second.client_address
        for client in (first, second):
            assert ipaddress.ip_address(client.client_address).is_loopback
            assert_json(
                client.call("once"), 200, {"ok": True, "data": {"client": client.client_address}}
            )


def test_two_clients_are_two_visitors_to_a_rate_limit(site: App) -> None:
    """rate="1/minute": each of two clients gets its one call (200), the same client's
    second call is 429 with Retry-After; reset_limits() makes it 200 again."""
    with (
        ActionClient(site.app, site.bastion) as first,
        ActionClient(site.app, site.bastion) as second,
    ):
        assert first.call("once").status_code == 200
        assert second.call("once").status_code == 200
        refused = first.call("once")
        assert_json(refused, 429, RATE_LIMITED)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        first.reset_limits()
        assert_json(first.call("once"), 200, {"ok": True, "data": {"client": first.client_address}})
    assert site.calls == ["once", "once", "once"]


def test_reset_limits_clears_every_caller(site: App) -> None:
    """reset_limits() on one client forgets the other clients' counts too: the app's
    counters start over, as if it had just started."""
    with (
        ActionClient(site.app, site.bastion) as first,
        ActionClient(site.app, site.bastion) as second,
    ):
        for client in (first, second):
            assert client.call("once").status_code == 200
            assert client.call("once").status_code == 429
        first.reset_limits()
        assert second.call("once").status_code == 200
        assert first.call("once").status_code == 200


def test_reset_limits_clears_the_log_in_throttle() -> None:
    """LoginThrottle(per_account="1/15 minutes"): a wrong password answers ok=false, the
    next attempt 429; after reset_limits() the account may be tried again. Another client
    (another address) was never throttled for it."""
    site = build(login_throttle=LoginThrottle(per_account="1/15 minutes"))
    wrong = {"account": "ada", "password": "wrong"}
    with fast_passwords(), ActionClient(site.app, site.bastion) as client:
        assert_json(client.call("sign_in", wrong), 200, {"ok": True, "data": {"ok": False}})
        assert_json(client.call("sign_in", wrong), 429, RATE_LIMITED)
        with ActionClient(site.app, site.bastion) as other:
            assert_json(other.call("sign_in", wrong), 200, {"ok": True, "data": {"ok": False}})
        client.reset_limits()
        right = {"account": "ada", "password": "right"}
        assert_json(client.call("sign_in", right), 200, {"ok": True, "data": {"ok": True}})


def test_clients_given_one_address_share_its_limit(site: App) -> None:
    """client_address="203.0.113.9" on two clients: one visitor, one window (the second
    client's call is 429), and ctx.client is that address."""
    with (
        ActionClient(site.app, site.bastion, client_address="203.0.113.9") as first,
        ActionClient(site.app, site.bastion, client_address="203.0.113.9") as second,
    ):
        assert first.client_address == "203.0.113.9"
        assert_json(first.call("once"), 200, {"ok": True, "data": {"client": "203.0.113.9"}})
        assert_json(second.call("once"), 429, RATE_LIMITED)


@pytest.mark.parametrize(
    ("options", "address"),
    [
        pytest.param({"client_address": ("198.51.100.4", 4711)}, "198.51.100.4", id="pair"),
        pytest.param({"client": ("testclient", 50000)}, "testclient", id="starlette"),
    ],
)
def test_client_address_as_a_pair_or_starlettes_client(
    site: App, options: dict[str, Any], address: str
) -> None:
    """An (address, port) pair, or Starlette's own client=("testclient", 50000): that
    address is ctx.client and client_address."""
    with ActionClient(site.app, site.bastion, **options) as client:
        assert client.client_address == address
        assert_json(client.call("once"), 200, {"ok": True, "data": {"client": address}})


def test_client_address_and_client_together_are_refused(site: App) -> None:
    with pytest.raises(TypeError, match=r"^give client_address= or Starlette's client=, not both$"):
        ActionClient(site.app, site.bastion, client_address="192.0.2.1", client=("x", 1))


def test_debug_mode_serves_a_client_of_its_own_address() -> None:
    """Debug mode without allowed_origins: the server (127.0.0.1) is loopback, so calls
    are served whatever the client's address; Origin http://127.0.0.1 is allowed."""
    site = build(debug=True, allowed_origins=[])
    with ActionClient(site.app, site.bastion) as client:
        reply = client.call("once")
    assert_json(reply, 200, {"ok": True, "data": {"client": client.client_address}})


def close_counter(client: ActionClient) -> None:
    """Close the redis-py client under the app's limits storage, on the loop it was used
    on. Neither limits nor Bastion.shutdown() closes it: left to the garbage collector, it
    would warn (ResourceWarning) in whichever test came next."""
    assert client.portal is not None
    redis_client = client.bastion.counter.storage.bridge.storage  # type: ignore[union-attr]
    client.portal.call(redis_client.aclose)


def test_reset_limits_on_redis_deletes_every_limits_counter_of_that_database(
    redis_url: str,
) -> None:
    """On Redis, reset_limits() deletes every limits counter of the database, another
    app's sharing it included; keys of anything else stay. (Database 13, so no other
    test's counters are touched.)"""
    url = re.sub(r"/\d*$", "", redis_url) + "/13"
    direct = redis.Redis.from_url(url)
    try:
        direct.set("not-a-limit", b"kept")
        site, neighbour = build(rate_limit_storage=url), build(rate_limit_storage=url)
        with (
            ActionClient(site.app, site.bastion) as client,
            ActionClient(neighbour.app, neighbour.bastion) as other,
        ):
            client.reset_limits()  # counters left by an earlier run of this test
            assert client.call("once").status_code == 200
            assert client.call("once").status_code == 429
            assert other.call("once").status_code == 200
            assert direct.keys("LIMITS:*") != []
            client.reset_limits()
            assert direct.keys("LIMITS:*") == []
            assert direct.get("not-a-limit") == b"kept"
            assert client.call("once").status_code == 200
            assert other.call("once").status_code == 200
            close_counter(client)
            close_counter(other)
    finally:
        direct.delete("not-a-limit")
        for key in direct.scan_iter("LIMITS:*"):
            direct.delete(key)
        direct.close()


# --- the pending flash ----------------------------------------------------------------------


def test_flash_is_none_before_any_form_post(client: ActionClient) -> None:
    """No post yet: None, and looking creates no session."""
    assert client.flash() is None
    assert client.session_id is None


def test_flash_after_a_successful_submit_stays_pending_for_the_page(
    client: ActionClient,
) -> None:
    """After a plain form post: the Flash it left, read without a page; reading it twice
    gives it twice; the page asking for HTML then shows it, once, and it is gone."""
    assert client.submit("note", {"text": "hi"}).status_code == 303
    expected = Flash(action="note", ok=True, data={"text": "hi"})
    assert client.flash() == expected
    assert client.flash("note") == expected
    shown = client.get("/page", headers={"Accept": "text/html"})
    assert shown.json() == expected.to_dict()
    assert client.flash() is None
    assert client.get("/page", headers={"Accept": "text/html"}).json() is None


def test_flash_of_a_refused_submit(client: ActionClient) -> None:
    """A form refused as invalid: its code, message and field errors."""
    assert client.submit("note", {"txt": "hi"}).status_code == 303
    assert client.flash() == Flash(
        action="note",
        ok=False,
        code="invalid",
        message="Some fields are invalid.",
        fields={"text": "Field required", "txt": "Extra inputs are not permitted"},
    )


def test_flash_for_another_action_is_none(client: ActionClient) -> None:
    """flash("login") when the flash is note's: None (and it is still there for note)."""
    client.submit("note", {"text": "hi"})
    assert client.flash("login") is None
    assert client.flash("note") == Flash(action="note", ok=True, data={"text": "hi"})


def test_flash_of_an_unknown_action_is_an_error(client: ActionClient) -> None:
    """A misspelt action name fails the test instead of reading as "no flash"."""
    client.submit("note", {"text": "hi"})
    with pytest.raises(LookupError):
        client.flash("nope")


# --- the Referer of a form ------------------------------------------------------------------


def test_submit_referer_from_a_page_path(client: ActionClient) -> None:
    """referer="/contact": sent on the client's origin; a form without _next goes back
    there (303 /contact)."""
    reply = client.submit("note", {"text": "hi"}, referer="/contact")
    assert reply.request.headers["referer"] == "http://127.0.0.1/contact"
    assert reply.status_code == 303
    assert reply.headers["location"] == "/contact"


def test_submit_refused_goes_back_to_its_referer(client: ActionClient) -> None:
    """A refused form (no token) goes back to the page it was on, with its flash."""
    client.token()
    reply = client.submit("note", {"text": "hi"}, token=None, referer="/contact?step=2")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/contact?step=2"
    assert client.flash() == Flash(
        action="note",
        ok=False,
        code="csrf_failed",
        message="This form has expired. Reload the page and try again.",
        values={"text": "hi"},
    )


@pytest.mark.parametrize(
    ("options", "referer"),
    [
        pytest.param({"referer": "http://127.0.0.1/a?b=c"}, "http://127.0.0.1/a?b=c", id="url"),
        pytest.param({"origin": None}, "http://127.0.0.1/", id="no-origin"),
        pytest.param(
            {"origin": "http://evil.example", "referer": "/x"},
            "http://evil.example/x",
            id="other-origin",
        ),
        pytest.param(
            {"headers": {"Referer": "http://127.0.0.1/mine"}}, "http://127.0.0.1/mine", id="header"
        ),
    ],
)
def test_submit_referer_as_a_browser_sends_it(
    client: ActionClient, options: dict[str, Any], referer: str
) -> None:
    """A whole URL is kept; without Origin, the page is still on the client's origin; a
    call from another origin comes from a page there; an explicit header wins."""
    reply = client.submit("note", {"text": "hi"}, **options)
    assert reply.request.headers.get_list("referer") == [referer]


def test_submit_without_referer(site: App, client: ActionClient) -> None:
    """referer=None: no Referer; the form goes back to "/"."""
    reply = client.submit("note", {"text": "hi"}, referer=None)
    assert "referer" not in reply.request.headers
    assert reply.headers["location"] == "/"
    assert site.calls == ["note"]


def test_submit_without_origin_is_judged_by_its_referer(site: App, client: ActionClient) -> None:
    """origin=None with a page on another site: the Referer decides, 403 cross_origin."""
    reply = client.submit("note", {"text": "hi"}, origin=None, referer="http://evil.example/page")
    assert "origin" not in reply.request.headers
    assert_json(reply, 403, CROSS_ORIGIN)
    assert site.calls == []


def test_call_sends_no_referer(client: ActionClient) -> None:
    """call() is a script's call: Origin, no Referer (as before)."""
    assert "referer" not in client.call("note", {"text": "hi"}).request.headers


# --- sealed bound values --------------------------------------------------------------------


def test_submit_with_bound_values_to_seal(site: App, client: ActionClient) -> None:
    """submit(bound={...}): sealed for this client's session and sent as _bound; the
    action gets them (its flash shows the result)."""
    reply = client.submit("edit", {"title": "New"}, bound={"post_id": 42})
    assert reply.status_code == 303
    assert re.search(rb"&_bound=[A-Za-z0-9_-]+(&|$)", reply.request.content)
    assert client.flash() == Flash(action="edit", ok=True, data={"post_id": 42, "title": "New"})
    assert site.calls == ["edit"]


def test_call_with_a_sealed_value(client: ActionClient) -> None:
    """call(bound=client.bound(...)): the value goes in the JSON body as _bound."""
    sealed = client.bound("edit", {"post_id": 7})
    assert re.fullmatch(r"[A-Za-z0-9_-]+", sealed)
    reply = client.call("edit", {"title": "T"}, bound=sealed)
    assert_json(reply, 200, {"ok": True, "data": {"post_id": 7, "title": "T"}})
    assert f'"_bound": "{sealed}"'.encode() in reply.request.content


def test_bound_to_the_session_serves_that_client_only(site: App) -> None:
    """bind_session=True creates this client's session and ties the seal to it: it is
    accepted from this client and refused (400 bound_invalid) from another."""
    with (
        ActionClient(site.app, site.bastion) as owner,
        ActionClient(site.app, site.bastion) as other,
    ):
        sealed = owner.bound("edit", {"post_id": 3}, bind_session=True)
        assert owner.session_id is not None
        assert_json(other.call("edit", {"title": "T"}, bound=sealed), 400, BOUND_INVALID)
        assert_json(
            owner.call("edit", {"title": "T"}, bound=sealed),
            200,
            {"ok": True, "data": {"post_id": 3, "title": "T"}},
        )


def test_bound_expired_or_forged_is_refused(site: App, client: ActionClient) -> None:
    """A seal past its ttl, or a value the app never sealed: 400 bound_invalid; the
    action does not run."""
    expired = client.bound("edit", {"post_id": 3}, ttl=-1)
    assert_json(client.call("edit", {"title": "T"}, bound=expired), 400, BOUND_INVALID)
    assert_json(client.call("edit", {"title": "T"}, bound="forged"), 400, BOUND_INVALID)
    assert site.calls == []


def test_bound_for_an_action_without_bound_values_is_an_error(client: ActionClient) -> None:
    with pytest.raises(TypeError, match=r"^action 'note' declares no bound parameter$"):
        client.bound("note", {"post_id": 1})


# --- fast passwords -------------------------------------------------------------------------


def costs(stored: str) -> tuple[int, ...]:
    match = ARGON2ID.fullmatch(stored)
    assert match, stored
    return tuple(map(int, match.groups()))


def test_fast_passwords_hash_cheaply_and_verify_anywhere() -> None:
    """Inside: argon2id at m=8, t=1, p=1, with the usual salt and hash lengths. The hash
    verifies inside and after; after, hashes have the default costs again and the cheap
    one needs a rehash."""
    with fast_passwords():
        cheap = hash_password("pw")
        assert costs(cheap) == FAST_COSTS
        assert verify_password(cheap, "pw") is True
        assert verify_password(cheap, "wrong") is False
        assert needs_rehash(cheap) is False
    assert costs(hash_password("pw")) == DEFAULT_COSTS
    assert verify_password(cheap, "pw") is True
    assert needs_rehash(cheap) is True


def test_fast_passwords_verify_hashes_made_before() -> None:
    """A hash with the default costs still verifies inside the block."""
    stored = hash_password("pw")
    with fast_passwords():
        assert verify_password(stored, "pw") is True
        assert verify_password(stored, "wrong") is False


def test_fast_passwords_nested_and_after_an_error() -> None:
    """Nested blocks keep the cheap costs until the outer one ends; an exception in the
    block still puts the default costs back."""
    with fast_passwords():
        with fast_passwords():
            pass
        assert costs(hash_password("pw")) == FAST_COSTS
    assert costs(hash_password("pw")) == DEFAULT_COSTS

    def failing_test() -> None:
        with fast_passwords():
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match=r"^the test failed$"):
        failing_test()
    assert costs(hash_password("pw")) == DEFAULT_COSTS


def test_fast_passwords_reach_the_apps_threads(client: ActionClient) -> None:
    """A sync handler hashing in the app's worker thread gets the cheap costs too."""
    with fast_passwords():
        reply = client.call("register", {"text": "pw"})
    assert reply.status_code == 200
    assert costs(reply.json()["data"]["text"]) == FAST_COSTS


def test_fast_passwords_make_the_unknown_account_check_cheap() -> None:
    """The dummy hash verified for an unknown account is a cheap one inside the block,
    so a log-in for a missing account costs as little as one with a wrong password."""
    with fast_passwords():
        assert verify_password(None, "pw") is False
        before = passwords_module._dummy_hash.cache_info().hits
        dummy = passwords_module._dummy_hash(passwords_module._hasher)
        assert passwords_module._dummy_hash.cache_info().hits == before + 1
    assert costs(dummy) == FAST_COSTS
