"""Stage 5, rate limits: per action, per caller (the signed-in user, else the client
address), the default for public actions, where the stage sits in the pipeline, rate
strings, and whose address counts behind ``trusted_proxies``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict
from starlette.types import Scope

from bastion import Bastion, ConfigurationError, Context, User, authenticated, public
from bastion.ratelimit import parse_rate
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

RATE_LIMITED = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
UNAUTHORIZED = {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}}
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
USERS = {1: User(1), 2: User(2)}


@pytest.fixture(autouse=True)
def clear_of_a_minute_edge() -> None:
    """Each test starts at least 5 s before the next minute: the sliding window's counters
    turn over on the minute, and calls on both sides of that edge may pass a limit's
    count once more (the documented bound, tests/test_ratelimit_boundary.py). These tests
    are about who is counted, not about the edge: a test that straddled it would see a
    call it does not expect once in a few hundred runs."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.05)


def assert_limited(response: httpx.Response, window: int) -> None:
    """429, the exact envelope, and Retry-After a whole number of seconds in the window."""
    assert_reply(response, 429, RATE_LIMITED)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int


class Ping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class Seen(BaseModel):
    client: str | None


@dataclass
class Site:
    bastion: Bastion
    ran: list[str] = field(default_factory=list)

    def client(self, address: str = "198.51.100.7", **kwargs: Any) -> ActionClient:
        return ActionClient(mounted(self.bastion), self.bastion, client=(address, 50000), **kwargs)

    def action(self, name: str, **options: Any) -> None:
        """Register ``name`` (public unless told): records each run, answers ctx.client."""
        options.setdefault("policy", public)

        def handler(ctx: Context) -> Seen:
            self.ran.append(name)
            return Seen(client=ctx.client)

        self.bastion.action(name=name, **options)(handler)


def build(**options: Any) -> Site:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=USERS.get, **options)

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context, data: SignIn) -> None:
        await ctx.login(USERS[data.id])

    return Site(bastion)


def ok(address: str) -> dict[str, Any]:
    return {"ok": True, "data": {"client": address}}


# --- per action, per caller -----------------------------------------------------------------


def test_fourth_call_of_three_per_minute_is_429_and_the_handler_does_not_run() -> None:
    """rate="3/minute": three calls answer 200, the fourth 429 with the exact envelope
    and an integer Retry-After; the handler ran three times."""
    site = build()
    site.action("ping", rate="3/minute")
    with site.client() as client:
        for _ in range(3):
            assert_reply(client.call("ping"), 200, ok("198.51.100.7"))
        assert_limited(client.call("ping"), 60)
        assert_limited(client.call("ping"), 60)
    assert site.ran == ["ping"] * 3


def test_each_action_has_its_own_count() -> None:
    """One action's limit being reached leaves the caller's other actions alone."""
    site = build()
    site.action("one", rate="1/minute")
    site.action("two", rate="1/minute")
    with site.client() as client:
        assert client.call("one").status_code == 200
        assert_limited(client.call("one"), 60)
        assert_reply(client.call("two"), 200, ok("198.51.100.7"))
    assert site.ran == ["one", "two"]


def test_signed_in_users_have_their_own_counts_at_one_address() -> None:
    """Keyed by the signed-in user: two users behind one address do not share a limit."""
    site = build()
    site.action("post", policy=authenticated, rate="2/minute")
    with site.client() as first, site.client() as second:
        assert first.call("sign_in", {"id": 1}).status_code == 200
        assert second.call("sign_in", {"id": 2}).status_code == 200
        for _ in range(2):
            assert first.call("post").status_code == 200
        assert_limited(first.call("post"), 60)
        for _ in range(2):
            assert_reply(second.call("post"), 200, ok("198.51.100.7"))
        assert_limited(second.call("post"), 60)
    assert site.ran == ["post"] * 4


def test_a_signed_in_user_keeps_their_count_across_sessions_and_addresses() -> None:
    """The same user from a second browser at another address shares the first's count."""
    site = build()
    site.action("post", policy=authenticated, rate="2/minute")
    with site.client("198.51.100.7") as laptop, site.client("203.0.113.9") as phone:
        assert laptop.call("sign_in", {"id": 1}).status_code == 200
        assert phone.call("sign_in", {"id": 1}).status_code == 200
        assert laptop.call("post").status_code == 200
        assert phone.call("post").status_code == 200
        assert_limited(laptop.call("post"), 60)
        assert_limited(phone.call("post"), 60)


def test_anonymous_callers_are_counted_per_client_address() -> None:
    """Anonymous: keyed by address. A new session (a cleared cookie) at the same address
    does not reset the count; another address has its own."""
    site = build()
    site.action("ping", rate="2/minute")
    with site.client("198.51.100.7") as first:
        for _ in range(2):
            assert first.call("ping").status_code == 200
    with site.client("198.51.100.7") as same_address:
        assert_limited(same_address.call("ping"), 60)
    with site.client("198.51.100.8") as other:
        assert_reply(other.call("ping"), 200, ok("198.51.100.8"))
    assert site.ran == ["ping"] * 3


def test_the_limit_is_a_moving_window_not_a_ban() -> None:
    """rate="1/second": the second call inside the second is 429; after it, allowed."""
    site = build()
    site.action("ping", rate="1/second")
    with site.client() as client:
        assert client.call("ping").status_code == 200
        assert_limited(client.call("ping"), 1)
        time.sleep(1.1)
        assert_reply(client.call("ping"), 200, ok("198.51.100.7"))
    assert site.ran == ["ping"] * 2


# --- defaults ------------------------------------------------------------------------------


def test_default_rate_applies_to_public_actions_without_their_own() -> None:
    """A public action with no rate= gets default_rate."""
    site = build(default_rate="2/minute")
    site.action("ping")
    assert site.bastion.registry.get("ping").rate == parse_rate("2/minute", "test")
    with site.client() as client:
        for _ in range(2):
            assert client.call("ping").status_code == 200
        assert_limited(client.call("ping"), 60)
    assert site.ran == ["ping"] * 2


def test_default_rate_is_sixty_per_minute() -> None:
    """Without default_rate, a public action may be called 60 times a minute per caller."""
    site = build()
    site.action("ping")
    assert str(site.bastion.registry.get("ping").rate) == "60 per 1 minute"


def test_rate_none_on_a_public_action_means_no_limit() -> None:
    """rate=None opts out explicitly (bastion audit flags it): no 429, ever."""
    site = build(default_rate="2/minute")
    site.action("ping", rate=None)
    assert site.bastion.registry.get("ping").rate is None
    with site.client() as client:
        for _ in range(10):
            assert_reply(client.call("ping"), 200, ok("198.51.100.7"))


def test_non_public_actions_have_no_default_limit() -> None:
    """default_rate is for public actions: an authenticated one without rate= is unlimited."""
    site = build(default_rate="2/minute")
    site.action("post", policy=authenticated)
    assert site.bastion.registry.get("post").rate is None
    with site.client() as client:
        assert client.call("sign_in", {"id": 1}).status_code == 200
        for _ in range(10):
            assert client.call("post").status_code == 200


def test_a_non_public_action_may_name_its_own_rate() -> None:
    site = build()
    site.action("post", policy=authenticated, rate="1/minute")
    with site.client() as client:
        assert client.call("sign_in", {"id": 1}).status_code == 200
        assert client.call("post").status_code == 200
        assert_limited(client.call("post"), 60)
    assert site.ran == ["post"]


# --- rate strings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "why"),
    [
        ("often", r"'often' is not a rate like '20/minute'"),
        ("", r"'' is not a rate like '20/minute'"),
        ("3/fortnight", r"'3/fortnight' is not a rate like '20/minute'"),
        ("1/second;100/day", r"'1/second;100/day' names 2 rates; give one"),
        ("0/minute", r"'0/minute' allows no call at all; use a policy to refuse everyone"),
    ],
)
def test_invalid_rate_is_refused_at_registration_naming_the_action(rate: str, why: str) -> None:
    """A rate= that is not exactly one rate of at least one call raises ConfigurationError
    when the action registers, naming it; the action does not exist afterwards."""
    site = build()
    with pytest.raises(ConfigurationError, match=rf"^action 'ping': rate: {why}$"):
        site.action("ping", rate=rate)
    with pytest.raises(LookupError):
        site.bastion.registry.get("ping")


def test_invalid_default_rate_is_refused_at_start_up() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^default_rate: 'lots' is not a rate like '20/minute'$"
    ):
        Bastion(secret_key=SECRET, store=MemoryStore(), default_rate="lots")


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        ("20/minute", "20 per 1 minute"),
        ("5 per 15 minutes", "5 per 15 minute"),
        ("100/day", "100 per 1 day"),
        ("2/3 seconds", "2 per 3 second"),
    ],
)
def test_rate_strings_as_the_limits_library_reads_them(rate: str, shown: str) -> None:
    assert str(parse_rate(rate, "test")) == shown


def test_no_rate_is_none() -> None:
    assert parse_rate(None, "test") is None


# --- the stage's place in the pipeline --------------------------------------------------------


def test_rate_limit_comes_after_the_csrf_check() -> None:
    """Calls refused for their token (403) are not counted: the stage runs after CSRF."""
    site = build()
    site.action("ping", rate="2/minute")
    with site.client() as client:
        for _ in range(3):
            assert_reply(client.call("ping", token=None), 403, CSRF_FAILED)
        for _ in range(2):
            assert client.call("ping").status_code == 200
        assert_limited(client.call("ping"), 60)
    assert site.ran == ["ping"] * 2


def test_rate_limit_comes_before_the_policy() -> None:
    """Anonymous calls to an authenticated action count: 401, 401, then 429."""
    site = build()
    site.action("post", policy=authenticated, rate="2/minute")
    with site.client() as client:
        for _ in range(2):
            assert_reply(client.call("post"), 401, UNAUTHORIZED)
        assert_limited(client.call("post"), 60)
    assert site.ran == []


def test_rate_limit_comes_before_the_body_is_read() -> None:
    """Once limited, even a malformed body is answered 429, not 400: nothing is decoded."""
    site = build()

    @site.bastion.action(policy=public, rate="1/minute")
    def ping(data: Ping) -> None:
        site.ran.append("ping")

    with site.client() as client:
        assert client.call(ping, {"n": 1}).status_code == 200
        reply = client.post(
            client.url(ping),
            content=b"{not json",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        assert_limited(reply, 60)
    assert site.ran == ["ping"]


# --- the client address: trusted proxies ------------------------------------------------------


def scope(peer: str | None, *forwarded: str) -> Scope:
    """An HTTP scope from ``peer``, with one X-Forwarded-For header per value given."""
    return {
        "type": "http",
        "client": (peer, 50000) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded],
    }


def address_of(trusted: list[str]) -> Callable[[Scope], str | None]:
    return Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=trusted).client_address


def test_without_trusted_proxies_x_forwarded_for_is_ignored() -> None:
    """No trusted_proxies: the socket peer, whatever X-Forwarded-For says."""
    address = address_of([])
    assert address(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    assert address(scope("127.0.0.1", "198.51.100.1")) == "127.0.0.1"
    assert address(scope("testclient")) == "testclient"
    assert address(scope(None, "198.51.100.1")) is None


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("127.0.0.1", ["203.0.113.9"], "203.0.113.9", id="one-hop"),
        pytest.param(
            "127.0.0.1",
            ["198.51.100.1, 203.0.113.9, 127.0.0.5"],
            "203.0.113.9",
            id="right-most-untrusted",
        ),
        pytest.param(
            "127.0.0.1", ["198.51.100.1", "203.0.113.9"], "203.0.113.9", id="repeated-header"
        ),
        pytest.param("127.0.0.1", [" 203.0.113.9 ,  "], "203.0.113.9", id="spaces"),
        pytest.param("127.0.0.1", [], "127.0.0.1", id="no-header"),
        pytest.param("127.0.0.1", ["127.0.0.2, 127.0.0.3"], "127.0.0.1", id="all-trusted"),
        pytest.param("127.0.0.1", ["198.51.100.1, not-an-ip"], None, id="garbage-hop"),
        pytest.param("127.0.0.1", ["2001:db8::1"], "2001:db8::1", id="ipv6-client"),
        pytest.param("203.0.113.50", ["198.51.100.1"], "203.0.113.50", id="untrusted-peer"),
        pytest.param("testclient", ["198.51.100.1"], "testclient", id="peer-not-an-ip"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_a_trusted_peer(
    peer: str, forwarded: list[str], expected: str | None
) -> None:
    """trusted_proxies=["127.0.0.0/8"]: from a trusted peer, the right-most address in
    X-Forwarded-For that is not a trusted proxy is the client (the left part is the
    client's own to forge); from any other peer the header is ignored. A right-most
    untrusted hop that is not an IP gives no address rather than a forged one."""
    assert address_of(["127.0.0.0/8"])(scope(peer, *forwarded)) == expected


def test_trusted_ipv6_proxies() -> None:
    """Networks may be IPv6 (and a host address without a prefix length is one address)."""
    address = address_of(["::1", "fd00::/8"])
    assert address(scope("::1", "203.0.113.9, fd00::7")) == "203.0.113.9"
    assert address(scope("::2", "203.0.113.9")) == "::2"


@pytest.mark.parametrize(
    ("trusted", "why"),
    [
        ("127.0.0.0/8", r"^trusted_proxies must be a list of networks, not one string$"),
        (["10.0.0.0/33"], r"^trusted_proxies: "),
        (["proxy.internal"], r"^trusted_proxies: "),
    ],
)
def test_bad_trusted_proxies_are_refused_at_start_up(trusted: Any, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=trusted)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count() -> None:
    """Over the wire, from a trusted peer (127.0.0.1): ctx.client is the forwarded
    address, and the limit is counted per forwarded client."""
    site = build(trusted_proxies=["127.0.0.0/8"])
    site.action("ping", rate="1/minute")
    with site.client("127.0.0.1") as proxy:
        first = {"X-Forwarded-For": "203.0.113.9"}
        second = {"X-Forwarded-For": "198.51.100.4, 203.0.113.10"}
        assert_reply(proxy.call("ping", headers=first), 200, ok("203.0.113.9"))
        assert_limited(proxy.call("ping", headers=first), 60)
        assert_reply(proxy.call("ping", headers=second), 200, ok("203.0.113.10"))
    assert site.ran == ["ping"] * 2


def test_x_forwarded_for_from_an_untrusted_peer_does_not_buy_more_calls() -> None:
    """From a peer that is not a trusted proxy, a new X-Forwarded-For on each call does
    not change the caller: one count for the peer."""
    site = build(trusted_proxies=["127.0.0.0/8"])
    site.action("ping", rate="1/minute")
    with site.client("203.0.113.50") as client:
        reply = client.call("ping", headers={"X-Forwarded-For": "198.51.100.1"})
        assert_reply(reply, 200, ok("203.0.113.50"))
        assert_limited(client.call("ping", headers={"X-Forwarded-For": "198.51.100.2"}), 60)
    assert site.ran == ["ping"]


@pytest.mark.parametrize(
    ("policy", "limited"),
    [
        pytest.param(public, True, id="public"),
        pytest.param(public | authenticated, True, id="public-or-authenticated"),
        pytest.param(lambda ctx: True, True, id="plain-callable"),
        pytest.param(authenticated, False, id="authenticated"),
        pytest.param(public & authenticated, False, id="public-and-authenticated"),
    ],
)
def test_default_rate_follows_whether_the_policy_admits_anonymous_callers(
    policy: Any, limited: bool
) -> None:
    """Any policy that may let an anonymous caller through — public, `public | x`, a plain
    callable — gets the default rate; policies that require a user do not."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), default_rate="7/minute")

    @bastion.action(policy=policy)
    async def act() -> None:
        return None

    rate = bastion.registry.get("act").rate
    assert (str(rate) if rate else None) == ("7 per 1 minute" if limited else None)


# --- memory counters: a hit's cost does not grow with the callers in the window ---------------


def test_expired_counters_are_swept_at_most_once_a_second_not_every_turn() -> None:
    """Attack: many addresses each leave counters (a refusal flood from a botnet). limits'
    memory storage swept every key it held on every turn of the event loop, so each call
    got slower with every caller in the window. Here 300 hits, a turn of the loop between
    each, start one sweep, not 300, and every hit is still counted."""
    import asyncio

    from bastion.ratelimit import Counter

    rate = parse_rate("100000/minute", "test")
    counter = Counter()

    async def hits() -> set[object]:
        sweeps: set[object] = set()
        for i in range(2_000):  # callers with counters in the window
            await counter.hit(rate, "refused", f"10.0.{i // 256}.{i % 256}")
        for _ in range(300):
            await counter.hit(rate, "action", "post", "user:1")
            sweeps.add(counter.storage.timer)  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        return sweeps

    sweeps = asyncio.run(hits())
    assert len(sweeps - {None}) == 1
    window = asyncio.run(
        counter.storage.get_sliding_window(rate.key_for("action", "post", "user:1"), 60)
    )  # type: ignore[attr-defined]
    assert window[2] == 300  # this window's count: every hit counted


def test_expired_counters_are_still_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep only frees memory, and still does: counters past their expiry (two
    windows) are gone after the next sweep, the live ones stay."""
    import asyncio

    from bastion import ratelimit
    from bastion.ratelimit import Counter

    monkeypatch.setattr(ratelimit, "SWEEP_EVERY", 0.2)
    rate = parse_rate("100/second", "test")
    counter = Counter()
    storage: Any = counter.storage

    async def run() -> tuple[int, int]:
        for i in range(100):
            await counter.hit(rate, "action", "post", f"caller{i}")
        before = len(storage.storage)
        await asyncio.sleep(2.3)  # past 2 x the window: every counter expired
        await counter.hit(rate, "action", "post", "live")  # starts a sweep
        await asyncio.sleep(0.1)
        return before, len(storage.storage)

    before, after = asyncio.run(run())
    assert before >= 100
    assert after == 1  # the live caller's counter alone
