"""Ending every session of a user, on every host: ``ctx.end_sessions()`` (sign out
everywhere) and ``Bastion.end_sessions(user_id)`` (an admin's, a password reset's).

Two ``Bastion`` apps on one store stand for two hosts: what one ends, the other no
longer knows. The stores are real: memory (shared by both apps), SQLite (one file) and
Redis (``REDIS_URL``). Each test states what a user or an attacker does and asserts
exactly what every client gets next.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict

from bastion import Bastion, ConfigurationError, Context, authenticated, public, require
from bastion.config import SessionConfig
from bastion.sessions import Session
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.testing import ActionClient

UNAUTHORIZED = {
    "ok": False,
    "error": {"code": "unauthorized", "message": "Please sign in first."},
}


@dataclass(frozen=True)
class Member:
    id: int
    roles: frozenset[str]
    permissions: frozenset[str] = frozenset()


MEMBERS = {1: Member(1, frozenset({"admin"})), 2: Member(2, frozenset()), 3: Member(3, frozenset())}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class Who(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class Ended(BaseModel):
    ended: int


def build(store: Store, config: SessionConfig | None = None) -> Bastion[Member]:
    """One host: the same actions and key, on ``store``."""
    app: Bastion[Member] = Bastion(
        secret_key=SECRET,
        allowed_origins=["http://127.0.0.1"],
        store=store,
        load_user=MEMBERS.get,
        sessions=config,
        default_rate="10000/minute",
        rate_limit_storage="memory://",  # the sessions are what is shared here
    )

    @app.action(policy=public)
    async def sign_in(ctx: Context[Member], data: SignIn) -> Who:
        await ctx.login(MEMBERS[data.user])
        return Who(user=data.user)

    @app.action(policy=authenticated)
    def whoami(ctx: Context[Member]) -> Who:
        assert ctx.user is not None
        return Who(user=ctx.user.id)

    @app.action(policy=authenticated)
    async def sign_out_everywhere(ctx: Context[Member]) -> Ended:
        return Ended(ended=await ctx.end_sessions())

    @app.action(policy=require(roles={"admin"}))
    async def end_theirs(ctx: Context[Member], data: Who) -> Ended:
        return Ended(ended=await ctx.end_sessions(data.user))

    return app


class Hosts:
    """Hosts on one store, each with its own ``Bastion`` (and its own store client), and
    browsers on them: a browser is one cookie jar, taken to whichever host it calls."""

    def __init__(self, make_store: Callable[[], Store], config: SessionConfig | None = None):
        self.make_store = make_store
        self.config = config
        self.clients: list[ActionClient] = []

    def app(self) -> Bastion[Member]:
        """Another host: the same actions and key, a client of its own to the store."""
        return build(self.make_store(), self.config)

    def browser(self, user: int | None = None) -> ActionClient:
        app = self.app()
        client = ActionClient(mounted(app), app).__enter__()
        self.clients.append(client)
        if user is not None:
            reply = client.call("sign_in", {"user": user})
            assert reply.status_code == 200, reply.text
        return client

    def browser_with(self, sid: str) -> ActionClient:
        """A browser holding the session cookie ``sid``, on another host."""
        other = self.browser()
        other.cookies.set("bastion_session", sid, domain="127.0.0.1")
        return other

    def elsewhere(self, client: ActionClient) -> ActionClient:
        """The same browser (its cookies) on another host."""
        other = self.browser()
        other.cookies = client.cookies
        return other

    def end_sessions(self, user: int) -> int:
        """``Bastion.end_sessions`` on a host no browser uses (an admin's script)."""

        async def run() -> int:
            app = self.app()
            try:
                return await app.end_sessions(user)
            finally:
                await app.shutdown()

        return anyio.run(run)

    def close(self) -> None:
        for client in self.clients:
            client.__exit__(None, None, None)


def who(client: ActionClient) -> Any:
    reply = client.call("whoami")
    return reply.json()["data"]["user"] if reply.status_code == 200 else reply.json()


def _redis_store(url: str) -> Callable[[], Store]:
    from bastion.stores.redis import RedisStore

    prefix = "bastion-end-sessions-test:"

    def make() -> Store:
        return RedisStore(url, prefix=prefix)

    return make


@pytest.fixture(params=["memory", "sqlite", "redis"])
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hosts]:
    if request.param == "memory":
        shared = MemoryStore()  # one process's memory: both hosts hold the same object
        made = Hosts(lambda: shared)
    elif request.param == "sqlite":
        made = Hosts(lambda: SQLiteStore(tmp_path))
    else:
        url = request.getfixturevalue("redis_url")
        made = Hosts(_redis_store(url))
    try:
        yield made
    finally:
        made.close()
        if request.param == "redis":
            client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
            keys = list(client.scan_iter(match="bastion-end-sessions-test:*"))
            if keys:
                client.delete(*keys)
            client.close()


def test_sign_out_everywhere_ends_the_users_sessions_on_every_host(hosts: Hosts) -> None:
    """Ada is signed in on three browsers, on both hosts; Grace on one. Ada presses "sign
    out everywhere" on host A: her three sessions end (the count says 3) and every one of
    her browsers, on either host, is anonymous next; this browser's cookie is cleared in
    the reply itself. Grace is still signed in."""
    phone, laptop = hosts.browser(user=2), hosts.browser(user=2)
    tablet, grace = hosts.browser(user=2), hosts.browser(user=1)
    assert [who(c) for c in (phone, laptop, tablet, grace)] == [2, 2, 2, 1]
    reply = phone.call("sign_out_everywhere")
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"ended": 3}}
    assert "Max-Age=0" in reply.headers["set-cookie"]
    for browser in (phone, laptop, tablet, hosts.elsewhere(laptop), hosts.elsewhere(phone)):
        assert who(browser) == UNAUTHORIZED
    assert who(grace) == 1
    assert who(hosts.elsewhere(grace)) == 1


def test_an_admin_ends_another_users_sessions(hosts: Hosts) -> None:
    """An admin on host A ends the sessions of user 3, signed in on host B: B refuses
    3's next call, the admin stays signed in, and a user who is not an admin cannot end
    anyone's (403, nothing ended)."""
    admin, victim, other = hosts.browser(user=1), hosts.browser(user=3), hosts.browser(user=2)
    refused = other.call("end_theirs", {"user": 3})
    assert refused.status_code == 403
    assert who(victim) == 3
    reply = admin.call("end_theirs", {"user": 3})
    assert reply.json() == {"ok": True, "data": {"ended": 1}}
    assert who(victim) == UNAUTHORIZED
    assert who(admin) == 1
    assert who(other) == 2


def test_a_session_signed_out_on_its_own_is_not_counted(hosts: Hosts) -> None:
    """A session that ended on its own (its browser signed in as another user) is not
    counted again: ending user 2's sessions ends one, not two; ending again ends none."""
    first, second = hosts.browser(user=2), hosts.browser(user=2)
    assert hosts.end_sessions(99) == 0  # nobody's: nothing happens
    # The first browser signs in as someone else: user 2's session there ends (rotated).
    assert first.call("sign_in", {"user": 3}).status_code == 200
    assert hosts.end_sessions(2) == 1
    assert who(second) == UNAUTHORIZED
    assert who(first) == 3
    assert hosts.end_sessions(2) == 0


def test_a_request_in_flight_cannot_bring_an_ended_session_back(hosts: Hosts) -> None:
    """The attack: a stolen session keeps a slow request open while its owner signs out
    everywhere, hoping the request's end writes the session back. The save is a
    compare-and-set against what the request loaded, so the session stays ended."""
    owner = hosts.browser(user=2)
    sid = owner.session_id
    assert sid is not None

    async def race() -> None:
        slow, admin = hosts.app(), hosts.app()
        try:
            loaded = await slow.session_manager.load(sid)
            assert loaded.user_id == 2
            assert await admin.end_sessions(2) == 1
            loaded["touched"] = True  # the request in flight changes its session...
            await slow.session_manager.save(loaded, "bastion_session", False)  # ...and ends
            assert (await slow.session_manager.load(sid)).user_id is None
        finally:
            await slow.shutdown()
            await admin.shutdown()

    anyio.run(race)
    assert who(hosts.elsewhere(owner)) == UNAUTHORIZED


def test_simultaneous_sign_ins_are_all_listed(hosts: Hosts) -> None:
    """Twelve sign-ins of one user at once, on two hosts, contend for the user's list:
    every one is listed (compare-and-set, retried), so ending them ends all twelve."""
    sessions: list[str] = []

    async def sign_ins() -> None:
        apps = [hosts.app(), hosts.app()]

        async def one(app: Bastion[Member]) -> None:
            session = Session()
            session.login(2)
            await app.session_manager.save(session, "bastion_session", False)
            assert session.id is not None
            sessions.append(session.id)

        try:
            async with anyio.create_task_group() as group:
                for n in range(12):
                    group.start_soon(one, apps[n % 2])
        finally:
            for app in apps:
                await app.shutdown()

    anyio.run(sign_ins)
    assert len(set(sessions)) == 12
    assert hosts.end_sessions(2) == 12
    for sid in sessions:
        assert who(hosts.browser_with(sid)) == UNAUTHORIZED


def test_past_max_per_user_the_oldest_session_ends() -> None:
    """With ``max_per_user=2``, a third sign-in ends the first session (it is never left
    alive off the list, where no "sign out everywhere" could reach it)."""
    shared = MemoryStore()
    made = Hosts(lambda: shared, SessionConfig(max_per_user=2))
    try:
        first, second, third = (made.browser(user=2) for _ in range(3))
        assert [who(first), who(second), who(third)] == [UNAUTHORIZED, 2, 2]
        assert made.end_sessions(2) == 2
        assert [who(second), who(third)] == [UNAUTHORIZED, UNAUTHORIZED]
    finally:
        made.close()


def test_the_list_holds_storage_keys_not_session_ids() -> None:
    """The user's list, like the sessions, holds HMACs of the IDs: a copy of the store
    still holds no cookie."""
    store = MemoryStore()
    made = Hosts(lambda: store)
    try:
        browser = made.browser(user=2)
        raw = anyio.run(store.get, "user-sessions:2")
        assert raw is not None
        [(key, expires)] = json.loads(raw)
        assert browser.session_id is not None
        assert browser.session_id not in raw.decode()
        assert key == browser.bastion.session_manager.store_keys(browser.session_id)[0]
        assert expires > 0
    finally:
        made.close()


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_max_per_user_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SessionConfig(max_per_user=value)
    assert str(caught.value) == (
        f"SessionConfig.max_per_user must be a positive integer, not {value!r}"
    )
