"""On one Redis that holds both the sessions and the rate-limit counters (bastion's default
for ``BASTION_STORE=redis://``), a call's session read and its rate-limit hits are one
round trip: a pipeline of ``GET`` and ``limits``' own sliding-window script.

Each test runs a ``redis-server`` of its own, so that what Redis counts
(``total_reads_processed``: the requests it read, one per round trip, however many
commands each held) is this test's calls and nothing else. What is asserted is what a
user and an attacker see: the same limit, the same ``Retry-After``, the same refusal of a
session that ended, with one round trip instead of two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis
from conftest import SECRET, mounted
from limits import parse
from pydantic import BaseModel, ConfigDict
from services import RedisServer, redis_server

from bastion import Bastion, Context, User, authenticated, public
from bastion.errors import RateLimited
from bastion.ratelimit import Counter
from bastion.sessions import UNKNOWN
from bastion.stores import RedisStore
from bastion.testing import ActionClient

ORIGIN = "http://127.0.0.1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as started:
        yield started


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port, socket_timeout=5)
    yield client
    client.close()


def round_trips(raw: redis.Redis) -> int:
    """Requests Redis has read so far, not counting this reading's own."""
    return int(raw.info("stats")["total_reads_processed"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class Done(BaseModel):
    ok: bool = True


class Counted:
    def __init__(self) -> None:
        self.runs = 0


def build(url: str, counted: Counted) -> Bastion[User]:
    app: Bastion[User] = Bastion(
        secret_key=SECRET,
        allowed_origins=[ORIGIN],
        store=RedisStore(url),  # the counters default to the same Redis
        load_user=lambda user_id: User(id=user_id),
    )

    @app.action(policy=public, rate="100/minute")
    async def sign_in(ctx: Context[User], data: SignIn) -> Done:
        await ctx.login(User(id=data.user))
        return Done()

    @app.action(policy=authenticated, rate="3/minute")
    def note(ctx: Context[User]) -> Done:
        counted.runs += 1
        return Done()

    @app.action(policy=authenticated)
    async def everywhere(ctx: Context[User]) -> Done:
        await ctx.end_sessions()
        return Done()

    @app.action(policy=public, rate="3/minute")
    def ping(ctx: Context[User]) -> Done:
        counted.runs += 1
        return Done()

    return app


def calls_cost(raw: redis.Redis, call: Callable[[], object]) -> int:
    """The round trips ``call()`` made to Redis."""
    before = round_trips(raw)
    call()
    # The second reading's own request is counted by the time it answers.
    return round_trips(raw) - before - 1


def test_a_signed_in_call_is_one_round_trip_and_keeps_its_limit(
    server: RedisServer, raw: redis.Redis
) -> None:
    """A signed-in author calls an action limited to 3 a minute. This process wrote the
    session at sign-in, so it knows the session's user: every call sends the read and the
    hit together, one round trip. The limit holds exactly as before: the fourth call is
    429 with a Retry-After, and its handler does not run."""
    counted = Counted()
    app = build(server.url, counted)
    with ActionClient(mounted(app), app, origin=ORIGIN) as client:
        assert client.call("sign_in", {"user": 7}).status_code == 200
        token = client.token()  # the page's token (the test client reads the store for it)
        first = client.call("note", token=token)
        assert first.status_code == 200
        replies = []
        costs = []
        for _ in range(4):
            costs.append(calls_cost(raw, lambda: replies.append(client.call("note", token=token))))
        assert [r.status_code for r in replies] == [200, 200, 429, 429]
        # A 429 asks the counters for its Retry-After: a second round trip (the first
        # one also loads limits' script for it into this new Redis).
        assert costs[:2] == [1, 1]
        assert costs[3] == 2
        refused = replies[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert counted.runs == 3
    anyio.run(app.shutdown)


def test_an_anonymous_caller_and_a_public_action_are_one_round_trip_too(
    server: RedisServer, raw: redis.Redis
) -> None:
    """An anonymous visitor with a session (its token was rendered), and then a signed-in
    user calling a public action, which is counted per user and per address: both hits
    go with the read."""
    counted = Counted()
    app = build(server.url, counted)
    with ActionClient(mounted(app), app, origin=ORIGIN) as client:
        token = client.token()  # the page rendered a token: the visitor has a session
        assert client.call("ping", token=token).status_code == 200  # the first call opens
        assert calls_cost(raw, lambda: client.call("ping", token=token)) == 1  # connections
        assert client.call("sign_in", {"user": 8}, token=token).status_code == 200
        token = client.token()
        assert client.call("ping", token=token).status_code == 200  # the address's third
        assert client.call("ping", token=token).status_code == 429
        client.reset_limits()
        assert client.call("ping", token=token).status_code == 200
        assert calls_cost(raw, lambda: client.call("ping", token=token)) == 1
        assert counted.runs == 5
    anyio.run(app.shutdown)


def test_a_session_ended_elsewhere_is_refused_and_forgotten(
    server: RedisServer, raw: redis.Redis
) -> None:
    """A signed-in user ends all their sessions (sign out everywhere) after this process
    last saw this one. A call that still brings a copy of its cookie and its token passes
    the CSRF check (the token is the cookie's), and had its hit sent with the read, keyed
    by the user; the read finds no session: refused as ``no_session``, its handler does
    not run, and this process forgets the user it knew for that session, so the next
    such call reads first and is not counted against the user."""
    counted = Counted()
    app = build(server.url, counted)
    with ActionClient(mounted(app), app, origin=ORIGIN) as client:
        assert client.call("sign_in", {"user": 9}).status_code == 200
        token = client.token()
        assert client.call("note", token=token).status_code == 200
        sid = client.session_id
        assert client.call("everywhere", token=token).status_code == 200
        client.cookies.set("bastion_session", sid or "")  # a copy of the cookie, kept
        for _ in range(4):  # more than the action's 3 a minute: the refusals are not hits
            refused = client.call("note", token=token)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "no_session"
        assert counted.runs == 1
        hint = app.session_manager.hint(sid)
        assert hint is not None
        assert hint[1] is UNKNOWN
    anyio.run(app.shutdown)


def test_hits_sent_with_a_read_and_limits_own_hits_count_on_one_counter(
    server: RedisServer, raw: redis.Redis
) -> None:
    """The hits bastion sends in its pipeline are ``limits``' own script on ``limits``'
    own keys: mixed with hits made through ``limits``, they fill one window (3 a minute:
    two through the pipeline, one through limits, then both ways refuse)."""

    async def run() -> None:
        store = RedisStore(server.url)
        counter = Counter(server.url)
        rate = parse("3/minute")
        keys = [("action", "mixed", "user:1")]
        assert counter.shares(store.rate_limit_storage)
        try:
            for _ in range(2):
                value, replies = await store.get_and_run("absent", counter.scripts(rate, keys))
                assert value is None
                await counter.settle(rate, keys, replies)
            await counter.hit(rate, *keys[0])
            with pytest.raises(RateLimited):
                await counter.check(rate, *keys[0])
            _, replies = await store.get_and_run("absent", counter.scripts(rate, keys))
            with pytest.raises(RateLimited) as refused:
                await counter.settle(rate, keys, replies)
            assert 1 <= refused.value.retry_after <= 60
        finally:
            await counter.close()
            await store.close()

    anyio.run(run)


def test_a_redis_that_lost_the_script_loads_it_again(server: RedisServer, raw: redis.Redis) -> None:
    """After ``SCRIPT FLUSH`` (or a restart), Redis answers the pipeline's ``EVALSHA``
    with NOSCRIPT: the script is loaded and run again, and the hit counts once."""

    async def run() -> None:
        store = RedisStore(server.url)
        counter = Counter(server.url)
        rate = parse("1/minute")
        keys = [("action", "flushed", "1.2.3.4")]
        try:
            await store.set("present", b"value", 60)
            raw.script_flush()
            value, replies = await store.get_and_run("present", counter.scripts(rate, keys))
            assert value == b"value"
            await counter.settle(rate, keys, replies)
            with pytest.raises(RateLimited):
                await counter.check(rate, *keys[0])
        finally:
            await counter.close()
            await store.close()

    anyio.run(run)


def test_counters_elsewhere_are_read_then_hit(server: RedisServer) -> None:
    """Counters on another storage than the store's Redis (memory here, or another Redis):
    nothing is pipelined, the read and the hit go each their own way."""
    app = Bastion(
        secret_key=SECRET,
        allowed_origins=[ORIGIN],
        store=RedisStore(server.url),
        rate_limit_storage="memory://",
    )
    shared = Bastion(secret_key=SECRET, allowed_origins=[ORIGIN], store=RedisStore(server.url))
    assert app.runtime.read_and_count is None
    assert shared.runtime.read_and_count is not None
    anyio.run(app.shutdown)
    anyio.run(shared.shutdown)


def test_a_session_this_process_has_not_seen_is_read_then_counted(
    server: RedisServer, raw: redis.Redis
) -> None:
    """Another worker signed the user in: this process knows nothing of the session, so
    its first call reads it, then counts (two round trips), and the next ones send both
    together (one)."""
    counted = Counted()
    signing_in, serving = build(server.url, counted), build(server.url, counted)
    with ActionClient(mounted(signing_in), signing_in, origin=ORIGIN) as first:
        assert first.call("sign_in", {"user": 5}).status_code == 200
        token = first.token()
        cookie = first.session_id
    anyio.run(signing_in.shutdown)
    with ActionClient(mounted(serving), serving, origin=ORIGIN) as client:
        # Another visitor first, whose session this process has not seen either: the
        # worker's connections (the store's and the counters') are open after it.
        other = client.token()
        hint = serving.session_manager.hint(client.session_id)
        assert hint is not None
        serving.session_manager.forget(hint[0])
        assert client.call("ping", token=other).status_code == 200
        client.cookies.clear()
        client.cookies.set("bastion_session", cookie or "")
        replies: list[int] = []
        costs: list[int] = []
        for _ in range(2):
            costs.append(
                calls_cost(
                    raw, lambda: replies.append(client.call("note", token=token).status_code)
                )
            )
        assert replies == [200, 200]
        assert costs == [2, 1]
    assert counted.runs == 3
    anyio.run(serving.shutdown)
