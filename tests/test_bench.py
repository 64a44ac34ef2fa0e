"""The benchmark's bastion server answers the benchmark's call (`make bench` refuses a run
otherwise, but it is not part of `make test`): the same login, headers and body, over the
same loopback Host, give 200 and the expected post; its forged-token calls get exactly the
refusal the bench measures; and the bench's own instruments (the per-stage timer, the
Redis commandstats reading, the verdicts) do what the report says."""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient

ROOT = str(Path(__file__).resolve().parents[1])


@contextmanager
def _imported(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """The bench's app and shared values, imported from the repository root. The app
    quiets the bastion.audit and bastion.security loggers as it is imported (for the bench
    server): their levels are put back, so no later test loses its records."""
    monkeypatch.syspath_prepend(ROOT)
    loggers = [logging.getLogger(name) for name in ("bastion.audit", "bastion.security")]
    levels = [logger.level for logger in loggers]
    try:
        yield importlib.import_module("bench.bastion_app"), importlib.import_module("bench.common")
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
            del sys.modules[name]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    monkeypatch.delenv("BENCH_REFUSAL_RATE", raising=False)
    with _imported(monkeypatch) as modules:
        yield modules


def _headers(common: ModuleType, token: str, content_type: str = "application/json") -> dict:
    return {
        "Origin": common.ORIGIN,
        "Content-Type": content_type,
        "Accept": "application/json",
        "X-CSRF-Token": token,
    }


def test_the_bench_call_is_answered_as_the_bench_expects(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    bastion_app, common = bench
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        login = client.get("/bench/login")
        assert login.status_code == 200, login.text
        reply = client.post(
            login.json()["url"],
            content=common.BODY,
            headers=_headers(common, login.json()["token"]),
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["ok"] is True
    assert common.expected_post(reply.json()["data"])


def test_a_forged_token_has_the_shape_of_a_real_one(bench: tuple[ModuleType, ModuleType]) -> None:
    bastion_app, common = bench
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        token = client.get("/bench/login").json()["token"]
    forged = common.forge(token)
    assert len(forged) == len(token) == common.TOKEN_LENGTH
    assert forged != token
    assert all(a != b for a, b in zip(forged[:-1], token[:-1], strict=True))
    assert len(base64.urlsafe_b64decode(forged + "==")) == 64
    with pytest.raises(ValueError, match="CSRF token"):
        common.forge("A" * 85)


@pytest.mark.parametrize("kind", ["json", "form"])
def test_the_forged_token_call_is_refused_with_the_exact_envelope(
    bench: tuple[ModuleType, ModuleType], kind: str
) -> None:
    """What bench/run.py checks before and after each refused row, and refused.lua
    during it: 403 csrf_failed, and the handler never ran."""
    bastion_app, common = bench
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        login = client.get("/bench/login").json()
        forged = common.forge(login["token"])
        created = client.get("/bench/stats").json()["created"]
        if kind == "json":
            reply = client.post(login["url"], content=common.BODY, headers=_headers(common, forged))
        else:
            headers = _headers(common, "", common.FORM_TYPE)
            del headers["X-CSRF-Token"]
            reply = client.post(login["url"], content=common.form_body(forged), headers=headers)
        assert reply.status_code == common.REFUSED_STATUS, reply.text
        assert reply.json()["ok"] is False
        assert reply.json()["error"]["code"] == common.REFUSED_CODE
        assert common.refused(reply.status_code, reply.json())
        assert not common.rate_limited(reply.status_code, reply.json())
        assert client.get("/bench/stats").json()["created"] == created
        # The same form with the real token is not refused for its token.
        if kind == "form":
            real = client.post(
                login["url"], content=common.form_body(login["token"]), headers=headers
            )
            assert real.status_code != common.REFUSED_STATUS, real.text


def test_the_bench_server_reports_its_refusal_rate(bench: tuple[ModuleType, ModuleType]) -> None:
    bastion_app, _ = bench
    assert bastion_app.REFUSAL_RATE == "1000000000/minute"
    with TestClient(bastion_app.app, base_url="http://127.0.0.1:8000") as client:
        status = client.get("/bench/stats").json()["refusal_rate"]
    assert status == bastion_app.REFUSAL_RATE_STATUS
    assert status == "refusal_rate='1000000000/minute'"


def test_an_empty_refusal_rate_passes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REFUSAL_RATE", "")
    with _imported(monkeypatch) as (bastion_app, _):
        assert bastion_app.REFUSAL_RATE_STATUS.startswith("not passed")


def test_the_stage_timer_adds_up_to_the_call(bench: tuple[ModuleType, ModuleType]) -> None:
    from bastion import pipeline

    bastion_app, _ = bench
    inprocess = importlib.import_module("bench.inprocess")
    original = pipeline.handle
    loop = asyncio.new_event_loop()
    try:
        cookie, token = loop.run_until_complete(inprocess._sign_in(bastion_app.app))
        driver = inprocess.Driver(bastion_app.app, bastion_app.PATH, cookie, token)
        loop.run_until_complete(driver.calls(200))
        st = inprocess.per_stage(loop, driver, 500)
    finally:
        loop.close()
    assert pipeline.handle is original  # put back
    assert [row["name"] for row in st["rows"]] == [s.name for s in pipeline.STAGES]
    assert [row["n"] for row in st["rows"]] == list(range(1, len(pipeline.STAGES) + 1))
    # Every call passed every check: each stage ran in every call, but those that run
    # only after a refusal (none here).
    ran = {row["name"]: row["runs"] for row in st["rows"]}
    assert all(ran[s.name] == (0 if s.when == "refused" else 500) for s in pipeline.STAGES)
    assert all(row["us"] > 0 for row in st["rows"] if row["runs"])
    assert all(row["us"] == 0 for row in st["rows"] if not row["runs"])
    # The stages are timed inside the call: their sum is most of it, never more.
    assert 0.3 * st["full_us"] < st["stages_us"] <= st["full_us"]
    assert st["outside_us"] == pytest.approx(st["full_us"] - st["stages_us"])
    table = "\n".join(inprocess.stage_table(st))
    assert "outside the stages" in table
    assert all(s.name in table for s in pipeline.STAGES)


def test_a_refusal_is_timed_in_the_stage_that_refused(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    """A stage that raises is still timed, and the later checks do not run."""
    from bastion import pipeline

    bastion_app, common = bench
    inprocess = importlib.import_module("bench.inprocess")
    loop = asyncio.new_event_loop()
    try:
        cookie, token = loop.run_until_complete(inprocess._sign_in(bastion_app.app))
        driver = inprocess.Driver(
            bastion_app.app, bastion_app.PATH, cookie, common.forge(token.decode()).encode()
        )
        with inprocess.stages_timed() as clock:
            assert loop.run_until_complete(driver.call()) == common.REFUSED_STATUS
    finally:
        loop.close()
    runs = dict(zip(clock.names, clock.runs, strict=True))
    checks = [s.name for s in pipeline.STAGES if s.when == "checks"]
    csrf = next(n for n in checks if "CSRF" in n)
    after = checks[checks.index(csrf) + 1 :]
    assert runs[csrf] == 1
    assert "execute" in after
    assert all(runs[n] == 0 for n in after)  # the handler and the rest never ran
    assert all(runs[s.name] == 1 for s in pipeline.STAGES if s.when == "always")
    assert all(runs[s.name] == 0 for s in pipeline.STAGES if s.when == "reply")


SAMPLE_COMMANDSTATS = """# Commandstats\r
cmdstat_get:calls=1200,usec=2400,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r
cmdstat_evalsha:calls=1100,usec=9900,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r
cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r
cmdstat_client|list:calls=2,usec=20,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r
"""


def test_the_commandstats_reading(bench: tuple[ModuleType, ModuleType]) -> None:
    run = importlib.import_module("bench.run")
    before = run.parse_commandstats(SAMPLE_COMMANDSTATS)
    assert before == {"get": 1200, "evalsha": 1100, "info": 7, "client|list": 2}
    after = run.parse_commandstats(
        SAMPLE_COMMANDSTATS.replace("calls=1200,", "calls=2200,")
        .replace("calls=1100,", "calls=2100,")
        .replace("calls=7,", "calls=8,")
        + "cmdstat_set:calls=3,usec=3,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
    )
    diff = run.commands_between(before, after, {"info": 1})
    assert diff == {"get": 1000, "evalsha": 1000, "set": 3}  # the reader's INFO taken out
    per_call = {name: n / 1000 for name, n in diff.items()}
    assert run.format_per_call(per_call) == "get 1.00, evalsha 1.00, set <0.01 (total 2.00)"
    assert run.format_per_call({}) == "none (total 0.00)"


def _result(run: ModuleType, key: str, rps: float, **extra: Any) -> Any:
    target = next(t for t in run.SERVERS if t.key == key)
    return run.Result(target, [run.Run(int(rps * 10), 10.0, 1.0, 2.0, **extra)])


def test_the_verdicts(bench: tuple[ModuleType, ModuleType]) -> None:
    run = importlib.import_module("bench.run")
    assert run.TARGETS["floor_ratio"] == 0.5
    results = [
        _result(run, "floor", 10_000),
        _result(run, "bastion", 5_100),
        _result(run, "refused-json", 7_500),
        _result(run, "refused-form", 6_000),
        _result(
            run,
            "bastion-redis",
            3_000,
            redis={"evalsha": 30_000, "get": 30_000},
            redis_trips=30_000,
        ),
        _result(run, "fastapi", 1_000),
    ]
    flood = run.Flood(1000, 101, 900, 429, "not passed")
    rows = {
        what: (measured, goal, verdict)
        for what, measured, goal, verdict in run.targets(results, None, flood)
    }
    assert rows["bastion req/s ÷ floor"] == ("0.51", "≥ 0.5", "met")
    assert rows["refused: bad CSRF token (JSON) ÷ floor"] == ("0.75", "≥ 0.7", "met")
    assert rows["refused: bad CSRF token (form) ÷ floor"] == ("0.60", "≥ 0.7", "**missed**")
    assert rows["bastion, Redis store and limits (REDIS_URL) ÷ floor"][2] == "**missed**"
    assert rows["bastion req/s ÷ FastAPI stack"] == ("5.10", "≥ 3", "met")
    assert rows["flood: 1,000 bad-token calls from one address"] == (
        "first 429 at call 101",
        "meets 429",
        "met",
    )
    assert rows["Redis round trips per call"] == ("1.00 (2.00 commands)", "1 round trip", "met")
    none = run.targets(results[:1], None, run.Flood(1000, None, 0, 200, None))
    assert (
        "flood: 1,000 bad-token calls from one address",
        "none",
        "meets 429",
        "**missed**",
    ) in none
    assert (
        run._flood_text(flood)
        == "flood: 1,000 bad-token calls, first 429 at call 101 (900 answered 429)"
    )
    assert run._flood_text(run.Flood(1000, None, 0, 200, None)) == (
        "flood: 1,000 bad-token calls, no 429 came"
    )
