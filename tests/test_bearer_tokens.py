"""API tokens (stage 4, ``bastion.tokens``): a script calls an action with
``Authorization: Bearer bst_…``, no cookie and no CSRF token, and every way to misuse one
is refused.

Each attack test names the attack, asserts the exact refusal (status, envelope code, the
``WWW-Authenticate`` challenge where RFC 6750 wants one) and that the handler did not run
(the app counts its runs). The stores are real: memory, SQLite (a file), Redis
(``REDIS_URL``), and a Redis that is not there for failing closed.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict
from starlette.testclient import TestClient

from bastion import Bastion, ConfigurationError, Context, User, public, recent_login, require
from bastion.events import AuditEvent
from bastion.stores import MemoryStore, RedisStore, SQLiteStore, Store
from bastion.tokens import PREFIX, Tokens

ORIGIN = "http://127.0.0.1"
USERS = {
    1: User(1, roles=frozenset({"author"}), permissions=frozenset({"post:create"})),
    2: User(2),
}


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str


class Saved(BaseModel):
    number: int
    by: str


class Listing(BaseModel):
    titles: list[str]


class Board:
    """An app whose actions record every run: two accept tokens, two do not."""

    def __init__(self, store: Store, *, token_rate: str = "600/minute") -> None:  # noqa: S107
        self.runs: list[str] = []
        self.events: list[AuditEvent] = []
        self.bastion = Bastion(
            secret_key=SECRET,
            allowed_origins=[ORIGIN],
            store=store,
            load_user=USERS.get,
            default_rate="100000/minute",
            token_rate=token_rate,
            rate_limit_storage="memory://",
            audit_sinks=[self.events.append],
        )
        runs = self.runs

        @self.bastion.action(policy=require("post:create"), tokens="posts:write")
        def create_post(ctx: Context, data: Draft) -> Saved:
            runs.append(f"create {data.title}")
            return Saved(number=len(runs), by=str(ctx.session.user_id))

        @self.bastion.action(policy=public, tokens=["posts:read"])
        def list_posts() -> Listing:
            runs.append("list")
            return Listing(titles=[r for r in runs if r.startswith("create")])

        @self.bastion.action(policy=require("post:create"))
        def delete_everything() -> Listing:
            runs.append("delete everything")
            return Listing(titles=[])

        @self.bastion.action(policy=recent_login(600), tokens=True)
        def change_email() -> Listing:
            runs.append("change email")
            return Listing(titles=[])

        self.app = mounted(self.bastion)

    def __enter__(self) -> Board:
        # One client, one event loop, for the whole test: a Redis store's connections
        # belong to the loop that opened them.
        self.client = TestClient(self.app, base_url=ORIGIN).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def run(self, fn: Any, *args: Any) -> Any:
        """An async call of the app's (``bastion.tokens``), on the app's loop."""
        return self.client.portal.call(fn, *args)

    def token(self, *scopes: str, user: int = 1, expires_in: float = 3600.0) -> str:
        _token, secret = self.run(
            lambda: self.bastion.tokens.create(
                user, name="ci", scopes=scopes or ("posts:write",), expires_in=expires_in
            )
        )
        return str(secret)

    def call(self, action: str, secret: str | None, body: Any = None, **headers: str) -> Any:
        """A call as a script makes it: no cookie, no browser header, no CSRF token."""
        sent = {"Accept": "application/json", **headers}
        if secret is not None:
            sent["Authorization"] = f"Bearer {secret}"
        self.client.cookies.clear()
        return self.client.post(self.url(action), json=body or {}, headers=sent)

    def url(self, action: str) -> str:
        return self.bastion.url_for(action)


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code
    return body


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path)
        yield made
        anyio.run(made.close)
    else:
        url = request.getfixturevalue("redis_url")
        redis_store = RedisStore(url, prefix=f"bastion-tokens-test:{time.time_ns()}:")
        yield redis_store
        anyio.run(redis_store.close)


@pytest.fixture
def board(store: Store) -> Iterator[Board]:
    with Board(store) as made:
        yield made


# --- what a script does -----------------------------------------------------------------


def test_a_script_lists_and_creates_with_a_token_and_is_refused_once_it_is_revoked(
    board: Board,
) -> None:
    """Created, shown once, used without a cookie or CSRF token, listed with its last
    use, revoked: the very next call with it is 401, and the handler does not run."""
    token, secret = board.run(
        lambda: board.bastion.tokens.create(
            1,
            name="deploy bot",
            scopes=["posts:write", "posts:read"],
            expires_in=timedelta(days=30),
        )
    )
    assert secret.startswith(PREFIX)
    assert len(secret) == len(PREFIX) + 43
    made = board.call("create_post", secret, {"title": "from a script"})
    assert made.status_code == 200, made.text
    assert made.json() == {"ok": True, "data": {"number": 1, "by": "1"}}
    assert "set-cookie" not in made.headers  # a token call makes no session
    listed = board.call("list_posts", secret)
    assert listed.json()["data"] == {"titles": ["create from a script"]}

    [shown] = board.run(board.bastion.tokens.list, 1)
    assert (shown.id, shown.name, shown.scopes) == (token.id, "deploy bot", token.scopes)
    assert shown.last_used is not None
    assert time.time() - shown.last_used < 30
    assert secret not in json.dumps(shown.as_record())  # never stored, never listed

    assert board.run(board.bastion.tokens.revoke, 1, token.id) is True
    again = board.call("create_post", secret, {"title": "after revocation"})
    refused(again, 401, "invalid_token")
    assert again.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert board.runs == ["create from a script", "list"]
    assert board.run(board.bastion.tokens.list, 1) == []


def test_the_audit_event_names_the_token_never_its_secret(board: Board) -> None:
    secret = board.token()
    board.call("create_post", secret, {"title": "audited"})
    [event] = [e for e in board.events if e.action == "create_post"]
    assert event.outcome == "ok"
    assert event.principal == "1"
    [token] = board.run(board.bastion.tokens.list, 1)
    assert event.token_id == token.id
    assert secret not in event.as_json()


# --- attacks ----------------------------------------------------------------------------


def test_a_forged_token_is_401_with_the_bearer_challenge(board: Board) -> None:
    """A guessed token of the right shape, and a malformed one: both 401, same words."""
    for forged in (PREFIX + "A" * 43, "not-a-token"):
        response = board.call("create_post", forged, {"title": "forged"})
        refused(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert board.runs == []


def test_an_expired_token_is_refused(board: Board) -> None:
    secret = board.token(expires_in=0.5)
    assert board.call("create_post", secret, {"title": "in time"}).status_code == 200
    time.sleep(0.6)
    refused(board.call("create_post", secret, {"title": "too late"}), 401, "invalid_token")
    assert board.runs == ["create in time"]


def test_a_token_and_a_session_cookie_on_one_call_are_refused(board: Board) -> None:
    """No confused deputy: a session cookie beside a token (whose call is it, and does
    the CSRF rule apply?) is 400 whatever either is worth, before anything is looked up:
    the cookie with and without its ``__Host-`` prefix, and sent twice."""
    secret = board.token()
    for cookie in (
        "bastion_session=a-session-id",
        "__Host-bastion_session=a-session-id",
        "lb=sticky; bastion_session=one; bastion_session=two",
    ):
        response = board.call("create_post", secret, {"title": "deputy"}, Cookie=cookie)
        refused(response, 400, "token_with_cookie")
    assert board.runs == []
    [token] = board.run(board.bastion.tokens.list, 1)
    assert token.last_used is None
    # A cookie of something else (a load balancer's) is not a session cookie.
    response = board.call("create_post", secret, {"title": "sticky"}, Cookie="lb=sticky")
    assert response.status_code == 200, response.text


def test_a_token_sent_by_a_browser_is_a_browser_call(board: Board) -> None:
    """A page's script that attached a token (stolen, or planted by XSS) gets no
    exemption: Sec-Fetch-Site marks a browser's call, which needs a session and its CSRF
    token; the token is not looked at."""
    secret = board.token()
    response = board.call(
        "create_post", secret, {"title": "xss"}, **{"Sec-Fetch-Site": "same-origin"}
    )
    refused(response, 403, "csrf_failed")
    assert board.runs == []
    [token] = board.run(board.bastion.tokens.list, 1)
    assert token.last_used is None  # not even looked up


def test_a_token_in_the_query_string_is_refused_even_when_valid(board: Board) -> None:
    """Logs and Referer headers keep URLs: a token there is refused (400), whichever
    parameter carries it, with or without the Authorization header."""
    secret = board.token()
    for query, headers in (
        ({"access_token": secret}, {}),
        ({"q": secret}, {"Authorization": f"Bearer {secret}"}),
    ):
        response = board.client.post(
            board.url("create_post"),
            params=query,
            json={"title": "url"},
            headers={"Accept": "application/json", **headers},
        )
        refused(response, 400, "token_in_url")
    assert board.runs == []


def test_scopes_are_not_escalated(board: Board) -> None:
    """A read-only token cannot write (403 insufficient_scope); a token cannot call an
    action that takes none (403 token_not_accepted), whatever its scopes name."""
    reader = board.token("posts:read")
    response = board.call("create_post", reader, {"title": "escalated"})
    refused(response, 403, "insufficient_scope")
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    writer = board.token("posts:write", "delete_everything")
    refused(board.call("delete_everything", writer), 403, "token_not_accepted")
    assert board.runs == []
    # The action's own name is a scope too.
    assert board.call("list_posts", board.token("list_posts")).status_code == 200


def test_a_token_never_does_more_than_its_user(board: Board) -> None:
    """User 2 has no post:create permission: a token of theirs with the scope is still
    refused by the action's policy (403)."""
    secret = board.token("posts:write", user=2)
    refused(board.call("create_post", secret, {"title": "not theirs"}), 403, "forbidden")
    assert board.runs == []


def test_a_step_up_action_refuses_a_token(board: Board) -> None:
    """A token proves no recent log-in: a step-up action is 401 reauthentication_required."""
    secret = board.token("change_email")
    refused(board.call("change_email", secret), 401, "reauthentication_required")
    assert board.runs == []


def test_a_user_cannot_revoke_anothers_token(board: Board) -> None:
    secret = board.token(user=1)
    [token] = board.run(board.bastion.tokens.list, 1)
    assert board.run(board.bastion.tokens.revoke, 2, token.id) is False
    assert board.call("create_post", secret, {"title": "still mine"}).status_code == 200


def test_a_token_is_rate_limited_on_its_own(tmp_path: Path) -> None:
    """A leaked token in a loop meets 429 at token_rate, whatever actions it calls."""
    with Board(MemoryStore(), token_rate="3/minute") as board:
        secret = board.token("posts:write", "posts:read")
        statuses = [
            board.call(
                action, secret, {"title": "t"} if action == "create_post" else {}
            ).status_code
            for action in ("create_post", "list_posts", "create_post", "list_posts")
        ]
        refused(board.call("list_posts", secret), 429, "rate_limited")
    assert statuses == [200, 200, 200, 429]
    assert len(board.runs) == 3


def test_tokens_fail_closed_when_the_store_is_down(caplog: pytest.LogCaptureFixture) -> None:
    """The store that holds the tokens does not answer: 503, nothing runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        Board(RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)) as board,
        caplog.at_level(logging.ERROR, logger="bastion"),
    ):
        response = board.call("create_post", PREFIX + "B" * 43, {"title": "down"})
    refused(response, 503, "unavailable")
    assert board.runs == []
    assert "failed to look up an API token" in caplog.text


# --- declaring and creating -------------------------------------------------------------


def test_tokens_must_be_declared_sensibly() -> None:
    bastion = Bastion(secret_key=SECRET, allowed_origins=[ORIGIN], store=MemoryStore())
    for wrong in ("", [], [""], 3):
        with pytest.raises(ConfigurationError, match="tokens is True, False or the scopes"):
            bastion.action(policy=public, tokens=wrong)(lambda: None)  # type: ignore[arg-type]


def test_a_token_needs_a_name_scopes_and_an_expiry_within_a_year() -> None:
    tokens = Tokens(MemoryStore())

    async def create(**kwargs: Any) -> None:
        await tokens.create(1, **{"name": "n", "scopes": ["s"], "expires_in": 60, **kwargs})

    for kwargs in (
        {"name": " "},
        {"scopes": []},
        {"scopes": [""]},
        {"expires_in": 0},
        {"expires_in": timedelta(days=367)},
    ):
        with pytest.raises(ValueError, match="token"):
            anyio.run(lambda kw=kwargs: create(**kw))
