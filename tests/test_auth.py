"""Who is calling: principals, load_user, log-in and log-out (session fixation), the log-in
throttle, and the timing of a log-in for an unknown account.

The site below has the quickstart's shape: a public ``login`` that checks the password
with ``ctx.check_password`` and signs in with ``ctx.login``, and ``whoami``/``logout``
behind ``authenticated``. Each client is a fresh browser at its own address.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from helpers import CSRF_FAILED, NO_SESSION, assert_reply
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import (
    ActionError,
    Bastion,
    ConfigurationError,
    Context,
    LoginThrottle,
    Principal,
    User,
    authenticated,
    hash_password,
    public,
)
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD)
SID = re.compile(r"[A-Za-z0-9_-]{43}")
DIGEST = re.compile(r"[0-9a-f]{16}")
LOGIN_FAILED = {
    "ok": False,
    "error": {"code": "login_failed", "message": "Wrong email or password."},
}
RATE_LIMITED = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
UNAUTHORIZED = {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}}
ADA = {"ok": True, "data": {"name": "Ada", "roles": ["author"]}}


def internal(response: httpx.Response) -> dict[str, Any]:
    digest = response.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    return {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
    }


@dataclass
class Account:
    """An app's own user row: a Principal, with more than it may show."""

    id: int
    name: str
    email: str
    password_hash: str
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=254)
    password: SecretStr = Field(min_length=1, max_length=1024)


class Profile(BaseModel):
    name: str
    roles: list[str]


@dataclass
class Site:
    bastion: Bastion
    accounts: dict[str, Account]
    loaded: list[Any] = field(default_factory=list)
    """Every user ID load_user was asked for, in order."""
    ran: list[str] = field(default_factory=list)
    """The handlers (whoami, logout) that ran."""
    app: Starlette = field(init=False)

    def __post_init__(self) -> None:
        self.app = mounted(self.bastion)

    def client(self, address: str = "198.51.100.7") -> ActionClient:
        """A fresh browser at ``address``."""
        return ActionClient(self.app, self.bastion, client=(address, 50000))

    def find(self, user_id: Any) -> Account | None:
        self.loaded.append(user_id)
        return next((a for a in self.accounts.values() if a.id == user_id), None)


def build(loader: str = "sync", **options: Any) -> Site:
    accounts = {
        "ada@example.com": Account(1, "Ada", "ada@example.com", HASH, frozenset({"author"})),
        "bob@example.com": Account(2, "Bob", "bob@example.com", HASH),
    }
    site: Site

    def load_sync(user_id: Any) -> Account | None:
        return site.find(user_id)

    async def load_async(user_id: Any) -> Account | None:
        await anyio.sleep(0)
        return site.find(user_id)

    def load_a_dict(user_id: Any) -> Any:
        """An app's mistake: the row as a dict, which is no Principal."""
        found = site.find(user_id)
        return {"id": found.id, "name": found.name} if found else None

    loaders = {"sync": load_sync, "async": load_async, "dict": load_a_dict}
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=loaders[loader], **options)
    site = Site(bastion, accounts)

    @bastion.action(policy=public, rate=None)
    async def login(ctx: Context, data: Credentials) -> Profile:
        """As the quickstart's: the same answer for an unknown account."""
        account = accounts.get(data.email.strip().lower())
        password = data.password.get_secret_value()
        stored = account.password_hash if account else None
        if not await ctx.check_password(data.email, password, stored) or account is None:
            raise ActionError("Wrong email or password.", code="login_failed", status=401)
        await ctx.login(account)
        return Profile(name=account.name, roles=sorted(account.roles))

    @bastion.action(policy=authenticated)
    def logout(ctx: Context) -> None:
        site.ran.append("logout")
        ctx.logout()

    @bastion.action(policy=authenticated)
    def whoami(ctx: Context) -> Profile:
        site.ran.append("whoami")
        account = ctx.user
        assert isinstance(account, Account)
        return Profile(name=account.name, roles=sorted(account.roles))

    return site


def login(client: ActionClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.call("login", {"email": email, "password": password})


# --- principals ------------------------------------------------------------------------------


def test_user_is_a_frozen_principal_with_empty_defaults() -> None:
    """User(id) has no roles and no permissions, cannot be changed, and is a Principal."""
    user = User(7)
    assert (user.id, user.roles, user.permissions) == (7, frozenset(), frozenset())
    assert isinstance(user, Principal)
    with pytest.raises(AttributeError):
        user.id = 8  # type: ignore[misc]


def test_any_object_with_id_roles_and_permissions_is_a_principal() -> None:
    """The app's own row class is a Principal; an object missing one attribute is not."""
    assert isinstance(Account(1, "Ada", "ada@example.com", HASH), Principal)

    @dataclass
    class Partial:
        id: int
        roles: frozenset[str]

    assert not isinstance(Partial(1, frozenset()), Principal)
    assert not isinstance({"id": 1, "roles": [], "permissions": []}, Principal)


# --- log-in and log-out ----------------------------------------------------------------------


def test_login_with_the_right_password_signs_in() -> None:
    """The right password answers the profile and later calls are that user's."""
    site = build()
    with site.client() as client:
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        assert_reply(client.call("whoami"), 200, ADA)
    assert site.ran == ["whoami"]


def test_wrong_password_and_unknown_account_get_the_very_same_answer() -> None:
    """A wrong password and an account that does not exist: the same status, headers
    that matter and body, byte for byte; nobody is signed in after either."""
    site = build()
    with site.client() as client:
        wrong = login(client, "ada@example.com", "not the password")
        unknown = login(client, "nobody@example.com", "not the password")
        assert_reply(wrong, 401, LOGIN_FAILED)
        assert_reply(unknown, 401, LOGIN_FAILED)
        assert wrong.content == unknown.content
        assert "set-cookie" not in wrong.headers
        assert "set-cookie" not in unknown.headers
        assert_reply(client.call("whoami"), 401, UNAUTHORIZED)
    assert site.ran == []


def test_login_rotates_the_session_id_and_the_old_one_is_refused() -> None:
    """Session fixation: the ID (and CSRF secret) before log-in die at log-in. Whoever
    knew the old cookie and a token made for it (an attacker who planted them) is
    refused 403 no_session (the old ID is no session any more); the victim's own old
    token in the new session is 403 csrf_failed; with the old cookie alone nobody is
    signed in (401)."""
    site = build()
    with site.client() as victim:
        old_token = victim.token()
        old_sid = victim.session_id
        assert old_sid is not None
        assert SID.fullmatch(old_sid)
        reply = login(victim, "ada@example.com")
        assert_reply(reply, 200, ADA)
        new_sid = victim.session_id
        assert new_sid is not None
        assert SID.fullmatch(new_sid)
        assert new_sid != old_sid
        # A fresh session: its whole week of absolute lifetime ahead (less the elapsed).
        assert re.fullmatch(
            rf"bastion_session={new_sid}; Max-Age=60479[89]; Path=/; HttpOnly; SameSite=Lax",
            reply.headers["set-cookie"],
        )
        # The victim's own token from before log-in is refused too: a new CSRF secret.
        assert_reply(victim.call("whoami", token=old_token), 403, CSRF_FAILED)
        assert_reply(victim.call("whoami"), 200, ADA)
    assert site.ran == ["whoami"]

    with site.client("203.0.113.66") as attacker:
        replay = attacker.call(
            "whoami", token=old_token, headers={"Cookie": f"bastion_session={old_sid}"}
        )
        assert_reply(replay, 403, NO_SESSION)
    with site.client("203.0.113.66") as attacker:
        attacker.cookies.set("bastion_session", old_sid, domain="127.0.0.1")
        assert_reply(attacker.call("whoami"), 401, UNAUTHORIZED)
        assert attacker.session_id != old_sid  # the old ID was not adopted again
    assert site.ran == ["whoami"]
    dead = anyio.run(site.bastion.session_manager.load, old_sid)
    assert (dead.id, dead.user_id) == (None, None)


def test_logout_ends_the_session_and_its_cookie() -> None:
    """logout answers 200 with data null, deletes the cookie, and the old cookie (with a
    token made for it) is refused afterwards: nobody is signed in with it."""
    site = build()
    with site.client() as client:
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        sid = client.session_id
        assert sid is not None
        token = client.token()
        reply = client.call("logout")
        assert_reply(reply, 200, {"ok": True, "data": None})
        assert reply.headers["set-cookie"] == (
            "bastion_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        )
        assert client.session_id is None
        assert_reply(client.call("whoami"), 401, UNAUTHORIZED)
    assert site.ran == ["logout"]

    with site.client("203.0.113.66") as thief:
        replay = thief.call("whoami", token=token, headers={"Cookie": f"bastion_session={sid}"})
        assert_reply(replay, 403, NO_SESSION)
    with site.client("203.0.113.66") as thief:
        thief.cookies.set("bastion_session", sid, domain="127.0.0.1")
        assert_reply(thief.call("whoami"), 401, UNAUTHORIZED)
    assert site.ran == ["logout"]
    ended = anyio.run(site.bastion.session_manager.load, sid)
    assert (ended.id, ended.user_id) == (None, None)


def test_logout_needs_a_signed_in_caller() -> None:
    """An anonymous logout is 401 and its handler does not run."""
    site = build()
    with site.client() as client:
        assert_reply(client.call("logout"), 401, UNAUTHORIZED)
    assert site.ran == []


# --- load_user -------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", ["sync", "async"])
def test_load_user_sync_or_async_is_called_once_per_call(loader: str) -> None:
    """load_user may be a plain or an async function; it runs once per call that needs
    the user (policy and handler share it), and not at all for public actions."""
    site = build(loader)
    with site.client() as client:
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        assert site.loaded == []  # login is public: nobody was loaded
        assert_reply(client.call("whoami"), 200, ADA)
        assert site.loaded == [1]
        assert_reply(client.call("whoami"), 200, ADA)
        assert site.loaded == [1, 1]


@pytest.mark.parametrize("loader", ["sync", "async"])
def test_deleted_user_is_anonymous_and_their_sign_in_ends(loader: str) -> None:
    """load_user returning None (the user was deleted) → 401 and the handler does not run;
    the session's sign-in ends then, so restoring the row later does not revive it."""
    site = build(loader)
    with site.client() as client:
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        sid = client.session_id
        ada = site.accounts.pop("ada@example.com")
        reply = client.call("whoami")
        assert_reply(reply, 401, UNAUTHORIZED)
        assert reply.headers["set-cookie"] == (
            "bastion_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        )
        site.accounts[ada.email] = ada
        assert_reply(client.call("whoami"), 401, UNAUTHORIZED)
    assert site.ran == []
    assert anyio.run(site.bastion.session_manager.load, sid).user_id is None


def test_load_user_returning_a_non_principal_is_a_generic_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loader that returns a dict is the app's mistake: the client gets the generic 500
    (the ConfigurationError stays in the server log), and the handler does not run."""
    site = build("dict")
    caplog.set_level(logging.ERROR, logger="bastion")
    with site.client() as client:
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        reply = client.call("whoami")
        assert_reply(reply, 500, internal(reply))
        assert "dict" not in reply.text
    assert site.ran == []
    [record] = [r for r in caplog.records if r.name == "bastion"]
    assert record.exc_info is not None
    assert record.exc_info[0] is ConfigurationError
    assert str(record.exc_info[1]) == (
        "load_user returned dict, which has no id, roles and permissions"
    )


def test_login_without_load_user_is_refused_and_signs_nobody_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Bastion without load_user could never tell who a signed-in session is, so
    ctx.login() refuses (a generic 500) instead of signing in a user no later call
    could load; the session stays anonymous."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    ran: list[str] = []

    @bastion.action(policy=public)
    async def sign_in(ctx: Context) -> None:
        await ctx.login(User(1))

    @bastion.action(policy=authenticated)
    def whoami(ctx: Context) -> None:
        ran.append("whoami")

    caplog.set_level(logging.ERROR, logger="bastion")
    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.call(sign_in)
        assert_reply(reply, 500, internal(reply))
        assert client.session() == {}
        assert_reply(
            client.call(whoami),
            401,
            {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}},
        )
    assert ran == []
    [record] = [r for r in caplog.records if r.name == "bastion"]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "ctx.login() needs Bastion(load_user=...)"


def test_bastion_user_gives_a_page_its_signed_in_user() -> None:
    """await bastion.user(request) on a page: None for a visitor, the user once signed in."""
    site = build()

    async def page(request: Request) -> PlainTextResponse:
        user = await site.bastion.user(request)
        return PlainTextResponse(user.name if isinstance(user, Account) else "nobody")

    app = Starlette(routes=[Route("/", page)])
    site.bastion.mount(app)
    with ActionClient(app, site.bastion) as client:
        assert client.get("/").text == "nobody"
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        assert client.get("/").text == "Ada"


# --- the log-in throttle -----------------------------------------------------------------------


def test_login_throttle_defaults_and_bad_rates() -> None:
    """Defaults: 5 failures per 15 minutes per account (and address), 100 per address;
    a rate limits cannot read is refused when the throttle is made, naming the field."""
    assert LoginThrottle() == LoginThrottle(
        per_account="5/15 minutes", per_address="100/15 minutes"
    )
    with pytest.raises(
        ConfigurationError,
        match=r"^LoginThrottle.per_account: 'often' is not a rate like '20/minute'$",
    ):
        LoginThrottle(per_account="often")
    with pytest.raises(
        ConfigurationError,
        match=r"^LoginThrottle.per_address: '' is not a rate like '20/minute'$",
    ):
        LoginThrottle(per_address="")


def test_five_failures_then_429_until_the_window_passes() -> None:
    """5 wrong passwords → 401 each, with the unknown account's very message; the 6th
    attempt → 429 with Retry-After, even with the right password; once the 2-second
    window has passed, the right password → 200."""
    site = build(login_throttle=LoginThrottle(per_account="5/2 seconds", per_address="100/minute"))
    with site.client() as client:
        unknown = login(client, "nobody@example.com", "guess")
        assert_reply(unknown, 401, LOGIN_FAILED)
        for attempt in range(5):
            reply = login(client, "ada@example.com", f"guess {attempt}")
            assert_reply(reply, 401, LOGIN_FAILED)
            assert reply.content == unknown.content
        for password in ("guess 5", PASSWORD):
            refused = login(client, "ada@example.com", password)
            assert_reply(refused, 429, RATE_LIMITED)
            assert refused.headers["retry-after"] in ("1", "2")
        assert_reply(client.call("whoami"), 401, UNAUTHORIZED)  # not signed in by the 429
        assert client.session_id is not None
        time.sleep(2.1)  # the window itself is what is being tested
        assert_reply(login(client, "ada@example.com"), 200, ADA)


def test_a_right_password_clears_the_failures() -> None:
    """4 failures, then the right password, then 5 more failures are all answered
    (none 429): a successful log-in starts the account's count again."""
    site = build(login_throttle=LoginThrottle(per_account="5/minute", per_address="100/minute"))
    with site.client() as client:
        for _ in range(4):
            assert_reply(login(client, "ada@example.com", "guess"), 401, LOGIN_FAILED)
        assert_reply(login(client, "ada@example.com"), 200, ADA)
        for _ in range(5):
            assert_reply(login(client, "ada@example.com", "guess"), 401, LOGIN_FAILED)
        assert_reply(login(client, "ada@example.com", "guess"), 429, RATE_LIMITED)


def test_account_key_is_normalised() -> None:
    """ "Ada@Example.COM", " ada@example.com " and a full-width spelling share one count:
    case, surrounding spaces and Unicode compatibility forms do not buy more guesses."""
    site = build(login_throttle=LoginThrottle(per_account="2/minute", per_address="100/minute"))
    with site.client() as client:
        assert_reply(login(client, "Ada@Example.COM", "guess"), 401, LOGIN_FAILED)
        assert_reply(login(client, " ada@example.com ", "guess"), 401, LOGIN_FAILED)
        assert_reply(login(client, "\uff21\uff24\uff21@example.com", "guess"), 429, RATE_LIMITED)
        assert_reply(login(client, "ADA@EXAMPLE.COM"), 429, RATE_LIMITED)
        # Another account from the same address is not affected.
        assert_reply(login(client, "bob@example.com", "guess"), 401, LOGIN_FAILED)


def test_per_address_limit_counts_failures_across_accounts() -> None:
    """Password spraying: 3 failures on 3 accounts (one unknown) from one address, then
    that address is 429 for any account, the right password included; another
    address is not affected."""
    site = build(login_throttle=LoginThrottle(per_account="5/minute", per_address="3/minute"))
    with site.client("198.51.100.7") as sprayer:
        for email in ("ada@example.com", "bob@example.com", "carol@example.com"):
            assert_reply(login(sprayer, email, "Winter2026!"), 401, LOGIN_FAILED)
        for email, password in (("dave@example.com", "Winter2026!"), ("bob@example.com", PASSWORD)):
            refused = login(sprayer, email, password)
            assert_reply(refused, 429, RATE_LIMITED)
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert_reply(sprayer.call("whoami"), 401, UNAUTHORIZED)
    with site.client("198.51.100.8") as neighbour:
        assert_reply(login(neighbour, "bob@example.com", "typo"), 401, LOGIN_FAILED)
        assert_reply(
            login(neighbour, "bob@example.com"),
            200,
            {"ok": True, "data": {"name": "Bob", "roles": []}},
        )


def test_per_account_limit_is_per_address() -> None:
    """An account's failures are counted per client address: a locked-out attacker does
    not lock the real user out from their own address."""
    site = build(login_throttle=LoginThrottle(per_account="2/minute", per_address="100/minute"))
    with site.client("203.0.113.66") as attacker:
        for _ in range(2):
            assert_reply(login(attacker, "ada@example.com", "guess"), 401, LOGIN_FAILED)
        assert_reply(login(attacker, "ada@example.com", "guess"), 429, RATE_LIMITED)
    with site.client("198.51.100.7") as ada:
        assert_reply(login(ada, "ada@example.com"), 200, ADA)


def test_concurrent_guesses_cannot_overrun_the_account_limit() -> None:
    """20 wrong passwords sent at once for one account: exactly 5 are verified (401), the
    other 15 are 429; the limit is taken before the slow verify, not after it."""
    site = build(login_throttle=LoginThrottle(per_account="5/minute", per_address="100/minute"))
    with site.client() as client:
        token = client.token()

        def guess(n: int) -> int:
            reply = client.call(
                "login", {"email": "ada@example.com", "password": f"guess {n}"}, token=token
            )
            return reply.status_code

        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(guess, range(20)))
    assert sorted(statuses) == [401] * 5 + [429] * 15


# --- timing ------------------------------------------------------------------------------------


def test_unknown_account_takes_as_long_as_a_wrong_password() -> None:
    """The median time of a log-in for an account that does not exist is within 25% of
    one with a wrong password for a real account: the dummy hash is verified too, so
    timing does not tell which accounts exist. (Run with -s to see both medians.)"""
    site = build(login_throttle=LoginThrottle(per_account="1000/minute", per_address="1000/minute"))

    def timed(client: ActionClient, email: str) -> float:
        start = time.perf_counter()
        reply = login(client, email, "not the password")
        elapsed = time.perf_counter() - start
        assert_reply(reply, 401, LOGIN_FAILED)
        return elapsed

    unknown: list[float] = []
    known: list[float] = []
    with site.client() as client:
        for _ in range(3):  # warm up: first calls pay for imports and caches
            timed(client, "nobody@example.com")
            timed(client, "ada@example.com")
        for _ in range(20):  # interleaved, so drift in the machine's load hits both
            unknown.append(timed(client, "nobody@example.com"))
            known.append(timed(client, "ada@example.com"))
    unknown_median = statistics.median(unknown)
    known_median = statistics.median(known)
    print(
        f"\n[timing] login median: unknown account {unknown_median * 1000:.1f} ms, "
        f"wrong password {known_median * 1000:.1f} ms"
    )
    assert abs(unknown_median - known_median) <= 0.25 * known_median
