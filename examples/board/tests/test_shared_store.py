"""The board on two processes, as a team that outgrows one machine runs it: each with a
data directory of its own, both on one PostgreSQL database and one Redis
(``BASTION_STORE``), one secret key.

- A visitor signs in on A and goes on on B: B knows the session (the page shows who is
  signed in), takes A's form token, and the post B creates is read back on A.
- Sign out everywhere, pressed on A, signs the visitor out on B too; an admin on A
  signs a member out on B; a role an admin changes on A applies to the member's next
  call on B.
- Redis goes away: B refuses the create-post call with 503 and the generic envelope, and
  no post is written. Sessions live in Redis, not beside the processes: with Redis gone
  there is no session to check a token against, so nothing is done.

The Redis is the test's own (tests/services.py), killed by PID; PostgreSQL is the one at
DATABASE_URL, in a schema of the test's own (databases.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from services import RedisServer, free_port, redis_server

from .databases import Postgres
from .served import ADMIN, ADMIN_PASSWORD, AUTHOR, AUTHOR_PASSWORD, BoardServer, Browser

NO_SESSION = {
    "ok": False,
    "error": {
        "code": "no_session",
        "message": "Your session has ended or cookies are off. Reload the page and try again.",
    },
}
UNAVAILABLE = {
    "ok": False,
    "error": {"code": "unavailable", "message": "The service is unavailable. Try again later."},
}


@dataclass
class Pair:
    a: BoardServer
    b: BoardServer
    redis: RedisServer


@pytest.fixture
def pair(tmp_path: Path, postgres: Postgres) -> Iterator[Pair]:
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    with redis_server(tmp_path / "redis") as redis:
        env = {
            "BASTION_STORE": redis.url,
            "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
            "BASTION_ALLOWED_ORIGINS": ",".join(f"http://127.0.0.1:{p}" for p in ports),
        }
        for name in "ab":
            (tmp_path / name).mkdir()
        servers = [
            BoardServer(tmp_path / name, postgres.url(), port=port, env=env)
            for name, port in zip("ab", ports, strict=True)
        ]
        try:
            for server in servers:
                server.wait_ready()
            yield Pair(*servers, redis)
        finally:
            for server in servers:
                server.stop()


def test_a_session_made_on_a_is_used_on_b(pair: Pair, postgres: Postgres) -> None:
    """Signed in on A, the visitor's cookie and A's form token work on B: B shows the
    signed-in board and creates the post, which A then shows."""
    with Browser(pair.a) as on_a, Browser(pair.b) as on_b:
        on_a.sign_in(AUTHOR, AUTHOR_PASSWORD)
        assert "Sign out" in on_a.open("/")
        compose = on_a.form(button="Publish", within="compose")
        on_b.client.cookies = on_a.client.cookies  # one browser, a second worker
        assert "Sign out" in on_b.open("/")
        # A's form (its token, made on A) posted to B, as a proxy would route it.
        reply = on_b.call(compose, {"title": "Made on B", "body": "With A's token."})
        assert reply.status_code == 200, reply.text
        assert "Made on B" in on_a.open("/")
    assert postgres.rows("SELECT count(*) FROM posts WHERE title = %s", "Made on B") == [(1,)]


def test_with_redis_gone_a_create_post_call_is_503_and_writes_nothing(
    pair: Pair, postgres: Postgres
) -> None:
    """Redis killed: B answers the create-post call 503 with exactly the generic
    envelope, promptly, and no post is written (the session store is where the
    session and its CSRF secret live: there is nothing to check the call against)."""
    with Browser(pair.a) as on_a, Browser(pair.b) as on_b:
        on_a.sign_in(AUTHOR, AUTHOR_PASSWORD)
        on_a.open("/")
        compose = on_a.form(button="Publish", within="compose")
        on_b.client.cookies = on_a.client.cookies
        before = postgres.rows("SELECT count(*) FROM posts")

        pair.redis.stop()

        started = time.perf_counter()
        reply = on_b.call(compose, {"title": "Redis is gone", "body": "Not written."})
        assert time.perf_counter() - started < 5.0
        assert reply.status_code == 503, reply.text
        body = reply.json()
        body["error"].pop("digest", None)
        assert body == UNAVAILABLE
    assert postgres.rows("SELECT count(*) FROM posts") == before
    assert postgres.rows("SELECT count(*) FROM posts WHERE title = %s", "Redis is gone") == [(0,)]


def test_sign_out_everywhere_on_a_signs_out_on_b(pair: Pair) -> None:
    """The author is signed in on two devices, one on each worker. From the first, on A,
    "Sign out everywhere": the second, on B, is signed out at its next page."""
    with Browser(pair.a) as phone, Browser(pair.b) as laptop:
        phone.sign_in(AUTHOR, AUTHOR_PASSWORD)
        laptop.sign_in(AUTHOR, AUTHOR_PASSWORD)
        assert "Sign out" in laptop.open("/")
        phone.open("/me")
        page = phone.submit(phone.form(button="Sign out everywhere"), "/login")
        assert "Signed out everywhere (2 sessions ended)." in page
        assert "Sign out" not in laptop.open("/login")
        assert laptop.get("/me").headers["location"].startswith("/login")


def test_an_admin_on_a_signs_a_member_out_and_demotes_them_on_b(
    pair: Pair, postgres: Postgres
) -> None:
    """An admin on A changes the author's role to reader: the author's next post, on
    B, is refused 403. Then the admin signs the author out everywhere: the author's
    next call on B is refused as one whose session has ended (its page's token is
    bound to a session that no longer exists)."""
    [(author_id,)] = postgres.rows("SELECT id FROM accounts WHERE email = %s", AUTHOR)
    with Browser(pair.a) as admin, Browser(pair.b) as author:
        admin.sign_in(ADMIN, ADMIN_PASSWORD)
        author.sign_in(AUTHOR, AUTHOR_PASSWORD)
        compose = author.form(button="Publish", within="compose")
        before = author.call(compose, {"title": "Still an author", "body": "Yes."})
        assert before.status_code == 200, before.text

        admin.open("/admin")
        role = admin.form(button="Save", within=f"role-form-{author_id}")
        reply = admin.call(role, {"role": "reader", "_bound": role.hidden["_bound"]})
        assert reply.json()["data"]["message"] == "Ada is now a reader."
        demoted = author.call(compose, {"title": "A reader now", "body": "No."})
        assert demoted.status_code == 403, demoted.text

        admin.open("/admin")
        end = admin.form(button="Sign out everywhere", within=f"sessions-form-{author_id}")
        reply = admin.call(end, {"_bound": end.hidden["_bound"]})
        assert reply.json() == {
            "ok": True,
            "data": {"message": "Ada is signed out everywhere (1 session ended)."},
        }
        gone = author.call(compose, {"title": "Signed out", "body": "No."})
        assert (gone.status_code, gone.json()) == (403, NO_SESSION)
        assert "Sign out" in admin.open("/admin")  # the admin's own session is untouched
    assert postgres.rows(
        "SELECT count(*) FROM posts WHERE title IN (%s, %s)", "A reader now", "Signed out"
    ) == [(0,)]
