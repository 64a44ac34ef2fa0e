"""Scale-out: two uvicorn processes of tests/fixtures/shared_app.py, on two ports, share
one Redis (``BASTION_STORE=redis://…/11``) or one three-master Redis Cluster
(``BASTION_STORE=redis+cluster://…``), and one secret key: every test runs on both.

A visitor signs in on A and then uses B: the session, the CSRF token and a sealed bound
argument issued by A are accepted by B; a limit of 5 calls a minute holds across both
(5 in total, not 10); and all of it still holds after both processes are restarted.
Each process keeps its SQLite directory apart, so only Redis can be what they share.

Isolation on a shared Redis: the servers use database 11 (a cluster has only database 0),
a secret key made for this run (so session keys are this run's own), and user IDs holding
a token of this run (so rate-limit keys are too); every key the run made, on every master
of a cluster, is deleted at the end.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from services import AppServer, app_servers, free_port, redis_client, start_all, with_db

from bastion import Bastion
from bastion.stores import MemoryStore

DB = 11
"""The Redis database the two processes share (on a single Redis)."""
COOKIE = "bastion_session"
SID = re.compile(r"[A-Za-z0-9_-]{43}")
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
BOUND_INVALID = {
    "ok": False,
    "error": {
        "code": "bound_invalid",
        "message": "This form is no longer valid. Reload the page and try again.",
    },
}


@dataclass
class Cluster:
    a: AppServer
    b: AppServer
    store_url: str
    secret: str
    run: str
    sids: set[str] = field(default_factory=set)
    """Every session ID a visitor held, for the clean-up."""

    def restart(self) -> None:
        """Stop both processes, then start both again on the same ports."""
        self.a.stop()
        self.b.stop()
        start_all([self.a, self.b])


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Processes A and B, sharing the tests' Redis (database 11) or their Redis Cluster."""
    directory = tmp_path_factory.mktemp("scaleout")
    port_a = free_port()
    port_b = free_port()
    while port_b == port_a:
        port_b = free_port()
    if request.param == "redis":
        store_url = with_db(request.getfixturevalue("redis_url"), DB)
    else:
        store_url = request.getfixturevalue("redis_cluster_url")
    secret = secrets.token_urlsafe(48)
    env = {
        "BASTION_STORE": store_url,
        "BASTION_SECRET_KEY": secret,
        "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port_a},http://127.0.0.1:{port_b}",
    }
    a = AppServer(port_a, env, directory / "a")
    b = AppServer(port_b, env, directory / "b")
    made = Cluster(a, b, store_url, secret, secrets.token_hex(8))
    try:
        with app_servers([a, b]):
            yield made
    finally:
        clean_up(made)


def clean_up(cluster: Cluster) -> None:
    """Delete this run's keys: the sessions it made and its rate-limit counters (on a
    cluster, SCAN reads every master and DEL goes to each key's own)."""
    keys = session_keys(cluster.secret, cluster.sids)
    client = redis_client(cluster.store_url)
    try:
        keys += list(client.scan_iter(match=f"*{cluster.run}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def session_keys(secret: str, sids: set[str]) -> list[bytes]:
    """Where the apps keep these sessions in Redis (RedisStore's prefix + the HMAC key)."""
    keyring = Bastion(secret_key=secret, store=MemoryStore(), allowed_origins=["http://x.test"])
    return [("bastion:" + keyring.session_manager.store_keys(sid)[0]).encode() for sid in sids]


# --- a visitor ----------------------------------------------------------------------------------


class Visitor:
    """A browser: one cookie jar for both processes (cookies ignore the port), the token,
    action URLs and sealed value of the last page it loaded."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.user = f"{name}-{cluster.run}-{secrets.token_hex(4)}"
        self.client = httpx.Client(timeout=10.0, trust_env=False)
        self.token = ""
        self.sealed = ""
        self.urls: dict[str, str] = {}

    @property
    def sid(self) -> str | None:
        return self.client.cookies.get(COOKIE)

    def page(self, server: AppServer) -> str:
        """Load ``/`` from ``server``; keep its token, action URLs and sealed value."""
        reply = self.client.get(server.base + "/", headers={"Accept": "text/html"})
        assert reply.status_code == 200, reply.text
        self.token = re.findall(r'name="_csrf" value="([A-Za-z0-9_-]{86})"', reply.text)[0]
        self.sealed = re.findall(r'name="_bound" value="([A-Za-z0-9_-]+)"', reply.text)[0]
        self.urls = dict(re.findall(r'data-name="(\w+)" href="([^"]+)"', reply.text))
        self._note_sid()
        user = re.search(r'<p id="user">([^<]*)</p>', reply.text)
        assert user is not None
        return user.group(1)

    def call(
        self, server: AppServer, name: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """POST the action to ``server`` as bastion.js does: JSON, the token in a header."""
        reply = self.client.post(
            server.base + self.urls[name],
            json=body or {},
            headers={
                "Accept": "application/json",
                "Origin": server.base,
                "X-CSRF-Token": self.token,
            },
        )
        self._note_sid()
        return reply

    def sign_in(self, server: AppServer) -> None:
        """Sign in on ``server`` and reload its page (log-in rotates the token)."""
        self.page(server)
        reply = self.call(server, "sign_in", {"user": self.user})
        assert reply.status_code == 200, reply.text
        assert self.page(server) == self.user

    def _note_sid(self) -> None:
        if self.sid is not None:
            self.cluster.sids.add(self.sid)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def visitor(cluster: Cluster) -> Iterator[Visitor]:
    """A visitor signed in on A (a user of this run's own)."""
    made = Visitor(cluster, "visitor")
    try:
        made.sign_in(cluster.a)
        yield made
    finally:
        made.close()


def ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ok"] is True, body
    return body["data"]


# --- sessions and tokens ------------------------------------------------------------------------


def test_a_session_made_on_a_is_used_on_b(cluster: Cluster, visitor: Visitor) -> None:
    """Signed in on A; B knows the user from the same cookie, accepts A's token, and
    session data written on one process is read on the other."""
    a, b = cluster.a, cluster.b
    sid = visitor.sid
    assert sid is not None
    assert SID.fullmatch(sid)

    reply = visitor.call(b, "whoami")
    assert reply.request.headers["cookie"] == f"{COOKIE}={sid}"
    assert ok(reply) == {"user": visitor.user}
    assert "set-cookie" not in reply.headers  # B adopted A's session, it made none

    assert ok(visitor.call(b, "remember", {"text": "written on B"})) is None
    recalled = ok(visitor.call(a, "recall"))
    assert recalled["note"] == "written on B"
    assert recalled["pid"] == a.pid
    assert ok(visitor.call(b, "recall"))["pid"] == b.pid != a.pid

    # B renders the same signed-in user on its own page, without a new cookie.
    assert visitor.page(b) == visitor.user
    assert visitor.sid == sid


def test_the_session_lives_in_redis_not_in_a_process(cluster: Cluster, visitor: Visitor) -> None:
    """The session is a key in Redis (database 11, or the cluster) with an expiry, and
    neither process made an SQLite store of its own."""
    assert visitor.sid is not None
    [key] = session_keys(cluster.secret, {visitor.sid})
    client = redis_client(cluster.store_url)
    try:
        assert client.exists(key) == 1
        assert client.pttl(key) > 0
    finally:
        client.close()
    for server in (cluster.a, cluster.b):
        assert not Path(server.env["BASTION_DATA_DIR"], "bastion.sqlite3").exists()


def test_b_refuses_a_token_of_another_session(cluster: Cluster, visitor: Visitor) -> None:
    """B checks A's tokens against the shared session, it does not wave them through:
    another visitor's token with this visitor's cookie is refused (403), and the handler
    does not run."""
    other = Visitor(cluster, "other")
    try:
        other.sign_in(cluster.a)
        before = cluster.b.status()["whoami"]
        visitor.token = other.token
        reply = visitor.call(cluster.b, "whoami")
        assert reply.status_code == 403
        assert reply.json() == CSRF_FAILED
        assert cluster.b.status()["whoami"] == before
    finally:
        other.close()


# --- sealed bound arguments -----------------------------------------------------------------


def test_a_sealed_value_from_a_is_accepted_by_b(cluster: Cluster, visitor: Visitor) -> None:
    """The `edit_post` form rendered by A (post 42 sealed in, tied to the signed-in
    session) is accepted by B, which runs the handler with post 42."""
    b = cluster.b
    before = b.status()["edit_post"]
    data = ok(visitor.call(b, "edit_post", {"title": "from A to B", "_bound": visitor.sealed}))
    assert data == {"post_id": 42, "title": "from A to B", "pid": b.pid}
    assert b.status()["edit_post"] == before + 1


def test_b_refuses_a_sealed_value_of_another_session(cluster: Cluster, visitor: Visitor) -> None:
    """The sealed value is tied to the session that A rendered it for: another signed-in
    visitor who sends it to B gets 400, and the handler does not run."""
    other = Visitor(cluster, "other")
    try:
        other.sign_in(cluster.a)
        before = cluster.b.status()["edit_post"]
        reply = other.call(cluster.b, "edit_post", {"title": "stolen", "_bound": visitor.sealed})
        assert reply.status_code == 400
        assert reply.json() == BOUND_INVALID
        assert cluster.b.status()["edit_post"] == before
    finally:
        other.close()


# --- rate limits --------------------------------------------------------------------------------


def exhaust_limit(cluster: Cluster, visitor: Visitor) -> None:
    """Five calls of `quota` (5/minute), alternately on A and B: all answered."""
    for i in range(5):
        server = cluster.a if i % 2 == 0 else cluster.b
        ok(visitor.call(server, "quota"))


def assert_limited(reply: httpx.Response) -> None:
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(reply.headers["retry-after"]) <= 60


def test_a_limit_of_5_a_minute_holds_across_both(cluster: Cluster, visitor: Visitor) -> None:
    """5/minute is 5 in total over A and B, not 5 each: calls alternate A, B, A, B, A;
    the 6th (on B) and the 7th (on A) are refused with 429, and no handler runs for
    them. Another user still has their own 5."""
    a, b = cluster.a, cluster.b
    before_a, before_b = a.status()["quota"], b.status()["quota"]
    exhaust_limit(cluster, visitor)
    assert (a.status()["quota"], b.status()["quota"]) == (before_a + 3, before_b + 2)

    assert_limited(visitor.call(b, "quota"))
    assert_limited(visitor.call(a, "quota"))
    assert (a.status()["quota"], b.status()["quota"]) == (before_a + 3, before_b + 2)

    other = Visitor(cluster, "other")
    try:
        other.sign_in(b)
        ok(other.call(a, "quota"))
    finally:
        other.close()


# --- a restart of both ----------------------------------------------------------------------


def test_everything_survives_a_restart_of_both(cluster: Cluster, visitor: Visitor) -> None:
    """Session, token, sealed value and the count of the limit are kept in Redis: after
    both processes are stopped and started again, the same cookie, token and sealed value
    work on either, the note written before is still there, and the limit spent before
    the restart is still spent."""
    a, b = cluster.a, cluster.b
    sid, token, sealed = visitor.sid, visitor.token, visitor.sealed
    ok(visitor.call(a, "remember", {"text": "before the restart"}))
    exhaust_limit(cluster, visitor)
    pids = (a.pid, b.pid)

    cluster.restart()

    assert a.pid not in pids
    assert b.pid not in pids
    assert (a.status()["quota"], b.status()["quota"]) == (0, 0)  # fresh processes
    assert (visitor.sid, visitor.token, visitor.sealed) == (sid, token, sealed)
    assert ok(visitor.call(b, "whoami")) == {"user": visitor.user}
    assert ok(visitor.call(a, "recall"))["note"] == "before the restart"
    edited = ok(visitor.call(a, "edit_post", {"title": "after", "_bound": sealed}))
    assert (edited["post_id"], edited["title"]) == (42, "after")
    edited = ok(visitor.call(b, "edit_post", {"title": "again", "_bound": sealed}))
    assert (edited["post_id"], edited["title"]) == (42, "again")
    assert_limited(visitor.call(a, "quota"))
    assert_limited(visitor.call(b, "quota"))
    assert (a.status()["quota"], b.status()["quota"]) == (0, 0)
    assert visitor.sid == sid  # no new session was needed
