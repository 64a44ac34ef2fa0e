"""Twenty scripts' calls of ``create_post`` at once, with one ``Idempotency-Key``, on the
board under uvicorn (SQLite and PostgreSQL): one post.

The failure mode: a client whose connection dropped retries, and retries again, some of
them while the first is still running (a timeout shorter than the server's, a retry loop
on several workers). Without the key, a post per retry; with it, the handler runs once.
Every other call gets the first one's reply (status and body, byte for byte) or, while
the first still runs, ``409 idempotency_in_progress``. Whatever the key, each call counts
against the action's rate first (stage 7, before the key is looked at in stage 13): past
``create_post``'s ten a minute, ``429``. Then the same key with another body: ``422``.
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import httpx2 as httpx

from .conftest import Served
from .served import AUTHOR, AUTHOR_PASSWORD, COOKIE, Browser

CALLS: Final = 20
RATE: Final = 10
"""``create_post``'s limit per member and minute (``rate="10/minute"`` in actions.py)."""
RATE_WINDOW: Final = 60
"""Seconds, at most, before the limit lets one more call through (``Retry-After``)."""
BUSY: Final = {
    "ok": False,
    "error": {
        "code": "idempotency_in_progress",
        "message": "This request is already being processed. Try again shortly.",
    },
}
LIMITED: Final = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
REUSED: Final = {
    "ok": False,
    "error": {
        "code": "idempotency_key_reused",
        "message": "This idempotency key was used for another request.",
    },
}


def _script(base: str, session: str, token: str, key: str) -> httpx.Client:
    """A script's client: the member's session, the page's token, the one key."""
    return httpx.Client(
        base_url=base,
        cookies={COOKIE: session},
        headers={
            "Accept": "application/json",
            "Origin": base,
            "X-CSRF-Token": token,
            "Idempotency-Key": key,
        },
        timeout=30.0,
        trust_env=False,
    )


def _past_the_rate(client: httpx.Client, path: str, body: dict[str, str]) -> httpx.Response:
    """The reply to ``body``, sent again after ``Retry-After`` if the rate refused it."""
    reply = client.post(path, json=body)
    if reply.status_code == 429:
        wait = int(reply.headers["retry-after"])
        assert 1 <= wait <= RATE_WINDOW, wait
        time.sleep(wait)
        reply = client.post(path, json=body)
    assert reply.status_code != 429, reply.headers
    return reply


def test_twenty_parallel_calls_with_one_key_publish_one_post(served: Served) -> None:
    """Twenty connections, opened first, released together by a barrier: the handler runs
    once (one row); each reply is the first one's, a 409, or a 429 past the rate, and
    none is a 5xx. Later the same call gets the first one's reply again, and the same
    key with another body is 422; still one row."""
    board, rows = served.server, served.rows
    with Browser(board) as ada:
        ada.sign_in(AUTHOR, AUTHOR_PASSWORD)
        compose = ada.form(button="Publish", within="compose")
        session = str(ada.client.cookies.get(COOKIE))
        token = compose.hidden["_csrf"]
    title = f"Exactly once {secrets.token_hex(4)}"
    draft = {"title": title, "body": "Sent twenty times."}
    key = secrets.token_urlsafe(16)
    clients = [_script(board.base, session, token, key) for _ in range(CALLS)]
    barrier = threading.Barrier(CALLS)

    def call(client: httpx.Client) -> httpx.Response:
        assert client.get("/static/favicon.svg").status_code == 200  # the connection, open
        barrier.wait(timeout=30)  # every connection open: now all at once
        return client.post(compose.action, json=draft)

    try:
        with ThreadPoolExecutor(CALLS) as pool:
            replies = list(pool.map(call, clients))

        assert rows("SELECT count(*) FROM posts WHERE title = %s", title) == [(1,)]
        statuses = sorted(reply.status_code for reply in replies)
        assert all(status < 500 for status in statuses), statuses
        done = [r for r in replies if r.status_code == 200]
        busy = [r for r in replies if r.status_code == 409]
        limited = [r for r in replies if r.status_code == 429]
        print(
            f"{served.engine_url.get_backend_name()}: {len(done)} x 200, {len(busy)} x 409, "
            f"{len(limited)} x 429"
        )
        assert (len(done) + len(busy), len(limited)) == (RATE, CALLS - RATE), statuses
        assert done, "no call got the reply"
        [(post_id,)] = rows("SELECT id FROM posts WHERE title = %s", title)
        first: dict[str, Any] = {
            "ok": True,
            "data": {"id": post_id, "title": title, "message": f"Published “{title}”."},
        }
        assert {r.content for r in done} == {done[0].content}  # any repeat: byte for byte
        assert done[0].json() == first
        assert all(r.json() == BUSY for r in busy)
        assert all(r.json() == LIMITED for r in limited)

        # Once the rate lets calls through again: the same call is the first one's reply,
        # the same key with another body is refused, and neither runs anything. The key
        # and its reply live in bastion's session store, the same whatever the database:
        # waited out (up to a minute) on SQLite only.
        if served.engine_url.get_backend_name() != "sqlite":
            return
        again = _past_the_rate(clients[0], compose.action, draft)
        assert (again.status_code, again.content) == (200, done[0].content)
        other = _past_the_rate(clients[1], compose.action, {**draft, "body": "Something else."})
        assert other.status_code == 422, other.text
        assert other.json() == REUSED
        assert rows("SELECT count(*) FROM posts WHERE title = %s", title) == [(1,)]
    finally:
        for client in clients:
            client.close()
