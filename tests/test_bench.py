"""The benchmark's bastion server answers the benchmark's call (`make bench` refuses a run
otherwise, but it is not part of `make test`): the same login, headers and body, over the
same loopback Host, give 200 and the expected post."""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bastion_app
from bench.common import BODY, ORIGIN, expected_post


def test_the_bench_call_is_answered_as_the_bench_expects() -> None:
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        login = client.get("/bench/login")
        assert login.status_code == 200, login.text
        reply = client.post(
            login.json()["url"],
            content=BODY,
            headers={
                "Origin": ORIGIN,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRF-Token": login.json()["token"],
            },
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["ok"] is True
    assert expected_post(reply.json()["data"])
