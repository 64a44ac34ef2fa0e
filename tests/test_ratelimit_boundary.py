"""Stage 5 at its edges: exactly N calls pass, the next is 429, per principal and per
address; and which address a call comes from when proxies are trusted.

The clock. bastion counts in the ``limits`` library's sliding-window counter, in its
async memory storage: ``limits.aio.storage.memory`` reads ``time.time()`` for every
counter it keeps and every window it measures, and ``bastion.ratelimit`` reads it once more for
``Retry-After``. The ``clock`` fixture replaces the ``time`` name in those two modules
only (not the ``time`` module itself, which sessions, tokens and the event loop keep
using) with an object whose ``time()`` returns a number the test sets. Calls then land
at exact instants, and boundaries are checked to the millisecond without sleeping.

The attacks: a caller trying to get more than N calls per window by changing what it
can change (its session cookie, its ``X-Forwarded-For`` header, the left part of a
proxy chain, the timing around a minute boundary).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import limits.aio.storage.memory
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette

from bastion import Bastion, ConfigurationError, Context, User, authenticated, public
from bastion import ratelimit as ratelimit_module
from bastion.events import AuditEvent
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

T0 = 1_800_000_000.0
"""A whole minute (T0 % 60 == 0), so fixed-window edges would fall on T0 + 60·k."""
RATE_LIMITED = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
ALICE = ("198.51.100.1", 50001)
BOB = ("198.51.100.2", 50002)
PROXY = ("10.0.0.5", 443)
STRANGER = ("203.0.113.9", 40000)


class Clock:
    """What ``time.time()`` says in the patched modules."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(T0)
    monkeypatch.setattr(limits.aio.storage.memory, "time", clock)
    monkeypatch.setattr(ratelimit_module, "time", clock)
    return clock


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


class Who(BaseModel):
    client: str | None


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    calls: list[str] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)

    def client(self, peer: tuple[str, int] = ALICE) -> ActionClient:
        return ActionClient(self.app, self.bastion, client=peer)


def build(rate: str = "3/minute", trusted_proxies: tuple[str, ...] = ()) -> Site:
    events: list[AuditEvent] = []
    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        load_user=lambda user_id: User(id=user_id),
        trusted_proxies=trusted_proxies,
        audit_sinks=[events.append],
    )
    calls: list[str] = []

    @bastion.action(policy=public, rate=rate)
    def ping() -> None:
        calls.append("ping")

    @bastion.action(policy=public, rate=rate)
    def pong() -> None:
        calls.append("pong")

    @bastion.action(policy=authenticated, rate=rate)
    def note() -> None:
        calls.append("note")

    @bastion.action(policy=public, rate=None)
    def whoami(ctx: Context) -> Who:
        return Who(client=ctx.client)

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context, data: SignIn) -> None:
        await ctx.login(User(id=data.user))

    app = Starlette()
    bastion.mount(app)
    return Site(bastion, app, calls, events)


@pytest.fixture
def site() -> Site:
    return build()


@pytest.fixture
def alice(site: Site) -> Iterator[ActionClient]:
    with site.client(ALICE) as c:
        yield c


def assert_limited(reply: httpx.Response, retry_after: int) -> None:
    assert reply.status_code == 429
    assert reply.json() == RATE_LIMITED
    assert reply.headers["retry-after"] == str(retry_after)
    assert reply.headers["cache-control"] == "no-store"


def ok(reply: httpx.Response) -> bool:
    return reply.status_code == 200


# --- the count: N pass, N+1 is refused --------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 10])
def test_exactly_n_calls_pass_and_the_next_is_429(clock: Clock, n: int) -> None:
    """``rate="N/minute"``, all calls at one instant: calls 1..N are 200, call N+1 is
    429 with ``Retry-After: 60`` and the handler ran exactly N times."""
    site = build(f"{n}/minute")
    with site.client() as client:
        replies = [client.call("ping") for _ in range(n + 1)]
    assert [r.status_code for r in replies] == [200] * n + [429]
    assert_limited(replies[-1], 60)
    assert site.calls == ["ping"] * n


def test_refused_calls_are_not_counted(site: Site, alice: ActionClient, clock: Clock) -> None:
    """Hammering after the limit does not extend it: ten refusals at T0+30 and the
    window still frees at T0+60."""
    for _ in range(3):
        assert ok(alice.call("ping"))
    clock.now = T0 + 30
    for _ in range(10):
        assert_limited(alice.call("ping"), 30)
    clock.now = T0 + 60.001
    assert ok(alice.call("ping"))
    assert site.calls == ["ping"] * 4


def test_calls_refused_before_the_rate_stage_are_not_counted(
    site: Site, alice: ActionClient, clock: Clock
) -> None:
    """Calls refused earlier (no CSRF token: 403) do not use up the caller's window: a
    cross-site flood cannot lock a visitor out."""
    for _ in range(5):
        assert alice.call("ping", token=None).status_code == 403
    assert [alice.call("ping").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_each_action_has_its_own_window(site: Site, alice: ActionClient, clock: Clock) -> None:
    """Using up ``ping`` leaves ``pong`` untouched."""
    assert [alice.call("ping").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [alice.call("pong").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_rate_limit_comes_before_reading_the_body(
    site: Site, alice: ActionClient, clock: Clock
) -> None:
    """Over the limit, even a malformed body is answered 429: the body is not read."""
    for _ in range(3):
        assert ok(alice.call("ping"))
    reply = alice.post(
        alice.url("ping"),
        content=b"{not json",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert_limited(reply, 60)


# --- the window: a sliding counter -----------------------------------------------------


def test_window_frees_one_slot_as_the_last_window_weighs_less(
    site: Site, alice: ActionClient, clock: Clock
) -> None:
    """Calls at T0, T0+20, T0+40 fill a 3/minute window. Refused at T0+50 (Retry-After
    10: the window's end) and at T0+59.999 (Retry-After 1). At T0+60.001 the last window
    weighs just under 3 (floor 2): one call passes; the next waits until it weighs under
    2, at T0+80 (Retry-After 20), and passes just after."""
    for at in (0, 20, 40):
        clock.now = T0 + at
        assert ok(alice.call("ping"))
    clock.now = T0 + 50
    assert_limited(alice.call("ping"), 10)
    clock.now = T0 + 59.999
    assert_limited(alice.call("ping"), 1)
    clock.now = T0 + 60.001
    assert ok(alice.call("ping"))
    assert_limited(alice.call("ping"), 20)
    clock.now = T0 + 79.99
    assert_limited(alice.call("ping"), 1)
    clock.now = T0 + 80.01
    assert ok(alice.call("ping"))
    assert site.calls == ["ping"] * 5


def test_burst_across_a_minute_boundary_is_not_doubled(
    site: Site, alice: ActionClient, clock: Clock
) -> None:
    """Attack: 3 calls at the end of one minute and 3 at the start of the next (a fixed
    window would allow 6 in two seconds). After the first three, the next minute lets one
    call in at once and the rest only as the last minute's weight falls: the fifth call,
    at T0+61, is refused until T0+80."""
    clock.now = T0 + 59
    assert [alice.call("ping").status_code for _ in range(3)] == [200, 200, 200]
    clock.now = T0 + 61
    assert ok(alice.call("ping"))
    assert_limited(alice.call("ping"), 19)
    clock.now = T0 + 80.01
    assert ok(alice.call("ping"))
    assert site.calls == ["ping"] * 5


def test_the_approximation_is_bounded_by_two_windows_worth(
    site: Site, alice: ActionClient, clock: Clock
) -> None:
    """The documented worst case (bastion.ratelimit): a caller that spends 3/minute at
    the very end of a minute, then tries every 0.1 s, gets its next calls just after +0, +20
    and +40 s into the next minute: 6 = 2N inside one 60-second span, and never more
    than 2N in any span of 60 seconds over three minutes."""
    clock.now = T0 + 59.9
    accepted = [59.9 for _ in range(3) if alice.call("ping").status_code == 200]
    assert len(accepted) == 3
    for tenth in range(600, 1800):
        at = (tenth + 0.5) / 10  # between the tenths: no attempt lands on an exact boundary
        clock.now = T0 + at
        if alice.call("ping").status_code == 200:
            accepted.append(at)
    assert accepted[3:6] == [60.05, 80.05, 100.05]
    most = max(sum(1 for t in accepted if start <= t < start + 60) for start in accepted)
    assert most == 6


def test_retry_after_counts_whole_seconds_up(site: Site, alice: ActionClient, clock: Clock) -> None:
    """Retry-After is the wait rounded up, never 0: 0.5 s left is ``1``, 30.2 s is ``31``."""
    for _ in range(3):
        assert ok(alice.call("ping"))
    clock.now = T0 + 29.8
    assert_limited(alice.call("ping"), 31)
    clock.now = T0 + 59.5
    assert_limited(alice.call("ping"), 1)


# --- per principal, per address ---------------------------------------------------------


def follow(source: ActionClient, target: ActionClient) -> None:
    """Copy ``source``'s cookies (its session) into ``target``: the same browser session
    seen from another address."""
    for cookie in source.cookies.jar:
        target.cookies.jar.set_cookie(cookie)


def test_signed_in_user_is_counted_across_addresses(site: Site, clock: Clock) -> None:
    """Attack: a signed-in user switches networks (or spreads over many) to get more
    calls. The limit is keyed by the user: from a second address, call N+1 is 429."""
    with site.client(ALICE) as home, site.client(BOB) as phone:
        assert ok(home.call("sign_in", {"user": "ada"}))
        assert [home.call("ping").status_code for _ in range(2)] == [200, 200]
        follow(home, phone)
        assert ok(phone.call("ping"))
        assert_limited(phone.call("ping"), 60)
        assert_limited(home.call("ping"), 60)
    assert site.calls == ["ping"] * 3


def test_users_on_one_address_have_their_own_windows(site: Site, clock: Clock) -> None:
    """Two users behind one address (an office NAT) do not share the window of an action
    only members may call; nor does an anonymous visitor there share theirs."""
    with site.client(ALICE) as ada, site.client(ALICE) as bob, site.client(ALICE) as anon:
        assert ok(ada.call("sign_in", {"user": "ada"}))
        assert ok(bob.call("sign_in", {"user": "bob"}))
        assert [ada.call("note").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [bob.call("note").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [anon.call("ping").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert site.calls == ["note"] * 6 + ["ping"] * 3


def test_a_public_actions_limit_holds_per_address_whoever_calls(site: Site, clock: Clock) -> None:
    """Attack (issue 12, finding 4): an address spent a public action's limit
    anonymously, then calls it from signed-in sessions (any account will do) to go on.
    A public action counts per address always: every signed-in session there gets 429."""
    with site.client(ALICE) as anon, site.client(ALICE) as ada, site.client(ALICE) as bob:
        assert [anon.call("ping").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert ok(ada.call("sign_in", {"user": "ada"}))
        assert ok(bob.call("sign_in", {"user": "bob"}))
        assert_limited(ada.call("ping"), 60)
        assert_limited(bob.call("ping"), 60)
    with site.client(BOB) as elsewhere:
        assert ok(elsewhere.call("ping"))
    assert site.calls == ["ping"] * 4


def test_a_public_action_counts_the_user_too(site: Site, clock: Clock) -> None:
    """Signed in, a public action is counted per user as well: spreading over addresses
    gives no more calls than the user's own window."""
    with site.client(ALICE) as home, site.client(BOB) as phone:
        assert ok(home.call("sign_in", {"user": "ada"}))
        assert [home.call("pong").status_code for _ in range(3)] == [200, 200, 200]
        follow(home, phone)
        assert_limited(phone.call("pong"), 60)


def test_anonymous_callers_are_counted_by_address(site: Site, clock: Clock) -> None:
    """Attack: an anonymous caller drops its cookie (a fresh session) to reset its
    window. Anonymous calls are keyed by address: the new session is still refused;
    another address is not."""
    with site.client(ALICE) as first:
        assert [first.call("ping").status_code for _ in range(3)] == [200, 200, 200]
    with site.client(ALICE) as fresh:
        assert fresh.session_id is None
        assert_limited(fresh.call("ping"), 60)
    with site.client(BOB) as other:
        assert ok(other.call("ping"))


def test_signing_in_starts_the_users_own_window(site: Site, clock: Clock) -> None:
    """An address that used up its anonymous window of a members' action can still sign
    in and call it as a user: the two windows are apart (``user:<id>`` is never an
    address)."""
    with site.client(ALICE) as client:
        assert [client.call("note").status_code for _ in range(4)] == [401, 401, 401, 429]
        assert ok(client.call("sign_in", {"user": "ada"}))
        assert ok(client.call("note"))


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": None if peer is None else (peer, 1234),
        "headers": [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded],
    }


TRUSTED = ("10.0.0.0/8", "2001:db8:ffff::/48")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # no header, or a peer that is not a proxy: the socket peer, whatever is claimed
        ("10.0.0.5", (), "10.0.0.5"),
        ("203.0.113.9", ("198.51.100.7",), "203.0.113.9"),
        ("203.0.113.9", ("10.0.0.1",), "203.0.113.9"),
        # one proxy hop: the address it appended
        ("10.0.0.5", ("198.51.100.7",), "198.51.100.7"),
        # several hops: the right-most address that is not a trusted proxy
        ("10.0.0.5", ("1.1.1.1, 198.51.100.7, 10.0.0.9",), "198.51.100.7"),
        ("10.0.0.5", ("spoofed, 198.51.100.7",), "198.51.100.7"),
        ("10.0.0.5", ("1.1.1.1", "198.51.100.7"), "198.51.100.7"),
        ("10.0.0.5", ("198.51.100.7, , ,10.0.0.9",), "198.51.100.7"),
        ("10.0.0.5", ("  198.51.100.7  ",), "198.51.100.7"),
        # every hop trusted: the peer
        ("10.0.0.5", ("10.1.1.1, 10.2.2.2",), "10.0.0.5"),
        ("10.0.0.5", ("",), "10.0.0.5"),
        # garbage where the client's address should be: no address at all
        ("10.0.0.5", ("not-an-ip",), None),
        ("10.0.0.5", ("198.51.100.7, garbage",), None),
        ("10.0.0.5", ("198.51.100.7:8080",), None),
        ("10.0.0.5", ("unknown, 10.0.0.9",), None),
        ("10.0.0.5", ("garbage, 198.51.100.7",), "198.51.100.7"),
        # IPv6
        ("2001:db8:ffff::1", ("2001:db8::7",), "2001:db8::7"),
        ("2001:db8::9", ("198.51.100.7",), "2001:db8::9"),
        ("10.0.0.5", ("2001:db8:ffff::2, 2001:db8::7",), "2001:db8::7"),
    ],
)
def test_client_address_behind_trusted_proxies(
    peer: str, forwarded: tuple[str, ...], expected: str | None
) -> None:
    """Attack: claim another address with ``X-Forwarded-For``. Only a trusted peer's
    header is read, from the right, skipping trusted hops: the left part (the client's
    own claim) is never taken over the address the proxies saw."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=TRUSTED)
    assert bastion.client_address(scope(peer, *forwarded)) == expected


@pytest.mark.parametrize("forwarded", [(), ("198.51.100.7",), ("1.1.1.1, 2.2.2.2",)])
def test_without_trusted_proxies_forwarded_for_is_ignored(forwarded: tuple[str, ...]) -> None:
    """By default no header is believed: the address is the socket peer."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    assert bastion.client_address(scope("10.0.0.5", *forwarded)) == "10.0.0.5"


def test_no_peer_is_no_address() -> None:
    """A server that gives no peer (a Unix socket): ``None``, even with a header."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=TRUSTED)
    assert bastion.client_address(scope(None, "198.51.100.7")) is None


def test_trusted_proxies_take_networks_with_host_bits() -> None:
    """``10.0.0.5/8`` means the network 10.0.0.0/8 (host bits are not an error)."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=["10.0.0.5/8"])
    assert bastion.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0/8", "trusted_proxies must be a list of networks, not one string"),
        (["10.0.0.0/33"], "trusted_proxies: '10.0.0.0/33' does not appear to be an IPv4 or"),
        (["proxy.internal"], "trusted_proxies: 'proxy.internal' does not appear to be an IPv4"),
    ],
)
def test_bad_trusted_proxies_are_refused_at_start_up(value: Any, message: str) -> None:
    """One string instead of a list, a bad prefix or a host name: refused at start-up."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, store=MemoryStore(), trusted_proxies=value)
    assert str(caught.value).startswith(message)


def whoami(client: ActionClient, forwarded: str | None = None) -> str | None:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    reply = client.call("whoami", headers=headers)
    assert reply.status_code == 200
    client_address: str | None = reply.json()["data"]["client"]
    return client_address


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(clock: Clock) -> None:
    """Attack: a direct caller rotates ``X-Forwarded-For`` on every call to get a fresh
    window each time. Its peer is no trusted proxy: every call is counted under the peer,
    and call N+1 is 429."""
    site = build(trusted_proxies=("10.0.0.0/8",))
    with site.client(STRANGER) as client:
        assert whoami(client, "198.51.100.7") == STRANGER[0]
        statuses = [
            client.call("ping", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 429]
    assert {e.client for e in site.events} == {STRANGER[0]}


def test_spoofed_forwarded_for_without_trusted_proxies_is_ignored(clock: Clock) -> None:
    """The same attack on an app with no trusted proxies at all: the same 429."""
    site = build()
    with site.client(STRANGER) as client:
        assert whoami(client, "10.0.0.1") == STRANGER[0]
        statuses = [
            client.call("ping", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 429]


def test_clients_behind_a_trusted_proxy_have_their_own_windows(clock: Clock) -> None:
    """Behind the proxy, each client is the address the proxy appended: one client
    using up its window does not lock out the next."""
    site = build(trusted_proxies=("10.0.0.0/8",))
    with site.client(PROXY) as proxy:
        assert whoami(proxy, "198.51.100.7") == "198.51.100.7"
        first = [
            proxy.call("ping", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
            for _ in range(4)
        ]
        second = proxy.call("ping", headers={"X-Forwarded-For": "198.51.100.8"})
    assert first == [200, 200, 200, 429]
    assert ok(second)
    assert [e.client for e in site.events][-2:] == ["198.51.100.7", "198.51.100.8"]


def test_spoofed_left_part_of_a_proxy_chain_does_not_reset_the_window(clock: Clock) -> None:
    """Attack: behind two trusted proxies, the client puts a new fake address in front of
    the chain on each call. The right-most untrusted hop (what the first proxy saw) is
    the same every time: call N+1 is 429."""
    site = build(trusted_proxies=("10.0.0.0/8",))
    with site.client(PROXY) as proxy:
        chain = "{fake}, 198.51.100.7, 10.0.0.9"
        assert whoami(proxy, chain.format(fake="1.2.3.4")) == "198.51.100.7"
        statuses = [
            proxy.call(
                "ping", headers={"X-Forwarded-For": chain.format(fake=f"192.0.2.{i}")}
            ).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 429]


def test_all_trusted_chain_counts_the_proxy(clock: Clock) -> None:
    """A chain of trusted hops only (an internal health check): the caller is the peer."""
    site = build(trusted_proxies=("10.0.0.0/8",))
    with site.client(PROXY) as proxy:
        assert whoami(proxy, "10.1.1.1, 10.2.2.2") == PROXY[0]
        assert whoami(proxy) == PROXY[0]


def test_garbage_forwarded_for_gives_no_address(clock: Clock) -> None:
    """A trusted proxy passing garbage where the client's address should be: the call
    has no client address (``None``), never the garbage text."""
    site = build(trusted_proxies=("10.0.0.0/8",))
    with site.client(PROXY) as proxy:
        assert whoami(proxy, "<script>, 10.0.0.9") is None
        assert whoami(proxy, "198.51.100.7, DROP TABLE") is None
    assert all(e.client is None for e in site.events)
