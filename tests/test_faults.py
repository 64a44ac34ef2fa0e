"""Faults: the Redis behind a running app goes away, and comes back.

Each test starts a redis-server of its own (a spare loopback port, no persistence, files
in the test's directory) and tests/fixtures/shared_app.py under uvicorn pointed at it.
After a warm-up, Redis is killed (SIGKILL), shut down (SIGTERM) or frozen (SIGSTOP: it
accepts connections and never answers, so only timeouts end the calls). Then:

- every action call answers 503 with the generic message within one second: the
  session middleware's plain text when the session cannot be loaded (any visitor with a
  cookie), the JSON envelope when only the rate-limit storage is down; never a
  traceback or a word about Redis;
- no handler runs (the app's ``GET /status`` counts runs without touching the store);
- ``GET /_actions/health`` answers 503 ``{"ok":false,"store":"unavailable"}``;
- once Redis is back, calls succeed again within a few seconds, without restarting the
  app.

The fail-closed latencies are printed (``pytest -s tests/test_faults.py``).
"""

from __future__ import annotations

import re
import secrets
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from services import AppServer, RedisServer, app_servers, free_port, redis_server, wait_for

UNAVAILABLE = "The service is unavailable. Try again later."
UNAVAILABLE_ENVELOPE = {"ok": False, "error": {"code": "unavailable", "message": UNAVAILABLE}}
HEALTHY = b'{"ok":true,"store":"ok"}'
DEGRADED = b'{"ok":false,"store":"unavailable"}'
FAIL_CLOSED_WITHIN = 1.0
"""Seconds an action call may take to be refused once Redis is gone."""
RECOVERED_WITHIN = 5.0
"""Seconds after Redis is back by which calls must succeed again."""
CALLS_PER_ACTION = 4
LEAKS = ("traceback", 'file "', ".py", "redis", "127.0.0.1", "connect")
"""What no refusal may hold (compared in lower case)."""

FAULTS = {
    "SIGKILL": signal.SIGKILL,
    "SIGTERM": signal.SIGTERM,
    "SIGSTOP": signal.SIGSTOP,
}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


def serve(tmp_path: Path, **env: str) -> AppServer:
    port = free_port()
    return AppServer(
        port,
        {
            "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
            "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
            **env,
        },
        tmp_path / "app",
    )


class Browser:
    """One visitor: a cookie jar, and the token and action URLs of the last page."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.base, timeout=10.0, trust_env=False)
        self.token = ""
        self.urls: dict[str, str] = {}

    def page(self) -> httpx.Response:
        reply = self.client.get("/", headers={"Accept": "text/html"})
        if reply.status_code == 200:
            self.token = re.findall(r'name="_csrf" value="([A-Za-z0-9_-]{86})"', reply.text)[0]
            self.urls = dict(re.findall(r'data-name="(\w+)" href="([^"]+)"', reply.text))
        return reply

    def call(self, name: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(
            self.urls[name],
            json=body or {},
            headers={
                "Accept": "application/json",
                "Origin": self.server.base,
                "X-CSRF-Token": self.token,
            },
        )

    def timed_call(self, name: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        reply = self.call(name)
        return reply, time.perf_counter() - started

    def health(self) -> httpx.Response:
        # No cookie: the health check is what a load balancer asks.
        return httpx.get(self.server.base + "/_actions/health", timeout=10.0, trust_env=False)

    def close(self) -> None:
        self.client.close()


def ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ok"] is True, body
    return body["data"]


def assert_no_leak(reply: httpx.Response) -> None:
    text = reply.text.lower()
    for word in LEAKS:
        assert word not in text, (word, reply.text)
    assert "set-cookie" not in reply.headers


def assert_plain_unavailable(reply: httpx.Response) -> None:
    """The session middleware's refusal, before any handler: 503 with the generic
    sentence — the JSON envelope for an action call, plain text for a page."""
    assert reply.status_code == 503, reply.text
    if reply.request.url.path.startswith("/_actions/"):
        assert reply.json() == {
            "ok": False,
            "error": {"code": "unavailable", "message": UNAVAILABLE},
        }
        assert reply.headers["content-type"] == "application/json"
    else:
        assert reply.text == UNAVAILABLE
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert_no_leak(reply)


def assert_json_unavailable(reply: httpx.Response) -> None:
    """The pipeline's refusal: 503 and exactly the generic JSON envelope."""
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == UNAVAILABLE_ENVELOPE
    assert_no_leak(reply)


def report(label: str, latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"\nfail-closed latency, {label}: n={len(ms)} min={ms[0]:.1f} ms "
        f"median={statistics.median(ms):.1f} ms max={ms[-1]:.1f} ms"
    )


def wait_recovered(attempt: Any) -> float:
    """Seconds until ``attempt()`` is true (it retries; fails after RECOVERED_WITHIN)."""
    started = time.perf_counter()
    assert wait_for(attempt, RECOVERED_WITHIN, interval=0.1), "calls did not succeed again"
    return time.perf_counter() - started


# --- the store is Redis: sessions fail, so every visitor with a cookie gets 503 -------------------


@pytest.mark.parametrize("fault", list(FAULTS))
def test_redis_lost_fails_closed_fast_and_recovers(
    fault: str, redis: RedisServer, tmp_path: Path
) -> None:
    """BASTION_STORE is this Redis. Warm up (page, calls, health 200); then Redis goes
    (killed, shut down or frozen): each call of `count` and `limited` with the visitor's
    cookie and token answers the plain-text 503 within a second, no handler runs, the page
    itself is 503 too, and health says the store is unavailable. Redis comes back: within
    a few seconds health is 200 and calls succeed, the app never restarted."""
    with app_servers([serve(tmp_path, BASTION_STORE=redis.url)]) as [app]:
        browser = Browser(app)
        try:
            assert browser.page().status_code == 200
            assert ok(browser.call("count"))["runs"] == 1
            assert ok(browser.call("limited"))["runs"] == 1
            health = browser.health()
            assert (health.status_code, health.content) == (200, HEALTHY)
            runs = app.status()
            pid = app.pid

            if fault == "SIGSTOP":
                redis.send(signal.SIGSTOP)
            else:
                redis.stop(FAULTS[fault])

            latencies = []
            for _ in range(CALLS_PER_ACTION):
                for name in ("count", "limited"):
                    reply, seconds = browser.timed_call(name)
                    assert_plain_unavailable(reply)
                    latencies.append(seconds)
            report(f"{fault}, action calls", latencies)
            assert max(latencies) < FAIL_CLOSED_WITHIN, latencies

            health_latencies = []
            for _ in range(3):
                started = time.perf_counter()
                health = browser.health()
                health_latencies.append(time.perf_counter() - started)
                assert (health.status_code, health.content) == (503, DEGRADED)
                assert health.headers["content-type"] == "application/json"
            report(f"{fault}, health", health_latencies)
            assert max(health_latencies) < FAIL_CLOSED_WITHIN, health_latencies

            assert_plain_unavailable(browser.page())
            assert app.status() == runs  # fail closed: not one handler ran
            assert app.pid == pid
            log = app.log()
            assert "bastion: the session store failed to load a session" in log
            assert "Traceback" in log  # the detail is in the server log, and only there

            if fault == "SIGSTOP":
                redis.send(signal.SIGCONT)
            else:
                redis.start()  # same port, empty: the old session is gone

            def recovered() -> bool:
                if browser.health().status_code != 200:
                    return False
                if fault != "SIGSTOP" and browser.page().status_code != 200:
                    return False  # a fresh session: the old one died with the data
                return browser.call("count").status_code == 200

            seconds = wait_recovered(recovered)
            print(f"\nrecovered after {fault} in {seconds * 1000:.0f} ms")
            assert ok(browser.call("limited"))["runs"] == 2
            assert app.pid == pid  # the same process throughout
            # Attempts refused while it recovered ran nothing: one success, one run.
            assert app.status()["count"] == runs["count"] + 1
        finally:
            browser.close()


# --- only the rate-limit storage is Redis: the pipeline's JSON 503 ------------------------------


def test_rate_limit_storage_lost_answers_the_json_envelope(
    redis: RedisServer, tmp_path: Path
) -> None:
    """Sessions in SQLite, counters in this Redis (SHARED_APP_RATE_STORAGE). Redis is
    killed: a rate-limited action answers the exact generic JSON envelope (503) within a
    second and its handler does not run; an action without a limit is still served.
    Redis comes back: the limited action is served again, the app never restarted."""
    app_server = serve(
        tmp_path,
        BASTION_STORE=f"sqlite:///{tmp_path / 'state'}",
        SHARED_APP_RATE_STORAGE=redis.url,
    )
    with app_servers([app_server]) as [app]:
        browser = Browser(app)
        try:
            assert browser.page().status_code == 200
            assert ok(browser.call("limited"))["runs"] == 1
            pid = app.pid

            redis.stop(signal.SIGKILL)

            latencies = []
            for _ in range(CALLS_PER_ACTION * 2):
                reply, seconds = browser.timed_call("limited")
                assert_json_unavailable(reply)
                latencies.append(seconds)
            report("SIGKILL of the rate-limit storage, limited action", latencies)
            assert max(latencies) < FAIL_CLOSED_WITHIN, latencies
            assert app.status()["limited"] == 1  # never ran uncounted
            assert ok(browser.call("count"))["runs"] == 1  # no limit, no Redis needed
            assert "bastion: the rate-limit storage failed; refusing the call" in app.log()

            redis.start()
            seconds = wait_recovered(lambda: browser.call("limited").status_code == 200)
            print(f"\nrate-limit storage recovered in {seconds * 1000:.0f} ms")
            assert app.status()["limited"] == 2
            assert app.pid == pid
        finally:
            browser.close()
