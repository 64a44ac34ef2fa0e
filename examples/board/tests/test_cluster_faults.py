"""The fault table (examples/cluster/faults.py), measured once for the module and held
here: ``make cluster``'s board on three workers behind nginx, its own redis-server and
a PostgreSQL of the harness's own, four signed-in visitors loading the board and posting
over https through the proxy while, one after another, a worker is killed, Redis and
PostgreSQL are stopped and started again, and the secret key is rotated worker by worker.

Each test holds one fault to its properties, counted exactly: 5xx from living workers,
the proxy's 502s (only for a request in flight on the killed worker), generic 503s,
posts answered 200 that PostgreSQL lacks or holds twice, how soon every visitor is
served again, and that no worker was restarted for it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from types import ModuleType
from typing import Any, Final

import pytest

from .inprocess import EXAMPLES
from .test_cluster import running, working_in

DOCS: Final = EXAMPLES.parent / "docs" / "cluster.md"


def _faults() -> ModuleType:
    """examples/cluster/faults.py, imported by path (examples/cluster is no package)."""
    spec = importlib.util.spec_from_file_location(
        "cluster_faults", EXAMPLES / "cluster" / "faults.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


faults = _faults()
KILLED: Final = "worker-3 killed (SIGKILL)"
REDIS: Final = "Redis stopped, started again"
POSTGRES: Final = "PostgreSQL stopped, started again"
ROTATED: Final = "secret key rotated, two passes"


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every fault, once, on one cluster; afterwards every process it started is gone."""
    for binary in ("/usr/sbin/nginx", shutil.which("redis-server") or "/usr/bin/redis-server"):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed (`make proxies`, redis-server)")
    directory = tmp_path_factory.mktemp("faults") / "cluster"
    result = faults.measure(directory)
    assert [pid for pid in result.pids if running(pid)] == []
    assert working_in(directory) == []
    return result


@pytest.fixture(scope="module")
def windows(measured: Any) -> dict[str, Any]:
    return {w.fault: w for w in measured.windows}


def assert_clean_writes(window: Any) -> None:
    """No post answered 200 that PostgreSQL lacks, none there twice, none half-written."""
    assert (window.lost, window.doubled, window.half) == (0, 0, 0), window.notes


def test_a_killed_worker_is_passed_over_and_no_write_is_lost(windows: dict[str, Any]) -> None:
    """SIGKILL to worker-3 under load: no 5xx from the living workers, not even a 503;
    a 502 from the proxy only for a request in flight at the kill; nobody signed out;
    every post answered 200 is in PostgreSQL once; the killed worker answers nothing."""
    w = windows[KILLED]
    assert w.count(faults.WORKER_5XX, faults.UNAVAILABLE_503) == 0
    in_flight = [r for r in w.requests if r.outcome == faults.PROXY_5XX]
    assert all(r.started <= w.over for r in in_flight), in_flight
    assert w.count(faults.NO_ANSWER, faults.REFUSED, faults.SIGNED_OUT) == 0
    assert_clean_writes(w)
    assert w.recovered
    assert w.checks == dict.fromkeys(w.checks, True)


@pytest.mark.parametrize("fault", [REDIS, POSTGRES])
def test_a_store_that_goes_away_is_refused_503_fast_and_recovers(
    windows: dict[str, Any], fault: str
) -> None:
    """Redis, then PostgreSQL, stopped for 3 s and started again on its port: every
    refusal is the generic 503 (a page's plain text, a call's envelope) within 1 s, no
    other 5xx and no proxy 502; no post half-written, lost or doubled; every visitor
    served again with the same worker processes."""
    w = windows[fault]
    assert w.count(faults.UNAVAILABLE_503) > 0  # it was down while the load ran
    assert w.count(faults.WORKER_5XX, faults.PROXY_5XX, faults.NO_ANSWER, faults.REFUSED) == 0
    assert w.slowest_refusal < 1.0
    assert_clean_writes(w)
    assert w.recovered
    assert w.recovery < faults.RECOVERY_TIMEOUT
    assert w.checks["served again without restarting a worker"]
    assert w.checks == dict.fromkeys(w.checks, True)


def test_redis_restarted_empty_signs_every_visitor_out_once(windows: dict[str, Any]) -> None:
    """The launcher's redis-server keeps nothing on disk: after its restart each visitor
    finds its session gone and signs in again (and then is served)."""
    w = windows[REDIS]
    signed_out = {r.visitor for r in w.requests if r.outcome == faults.SIGNED_OUT}
    assert signed_out == {f"visitor-{n}" for n in range(1, faults.VISITORS + 1)}
    assert f"it keeps no sessions: {faults.VISITORS} visitors had to sign in again" in w.notes


def test_postgres_down_leaves_no_session_behind(windows: dict[str, Any]) -> None:
    """PostgreSQL down is no reason to sign anyone out: sessions live in Redis."""
    assert windows[POSTGRES].count(faults.SIGNED_OUT) == 0


def test_a_rolling_key_rotation_signs_nobody_out_and_keeps_old_forms(
    windows: dict[str, Any],
) -> None:
    """Two passes, one worker at a time (old key with the new one as fallback, then the
    new key with the old as fallback), under load: no 5xx, no 502, no 4xx, nobody signed
    out, every write once; an edit form (token, action ID, sealed ``_bound``) rendered
    under the old key succeeds once every worker runs the new one."""
    w = windows[ROTATED]
    assert w.count(faults.OK) == len(w.requests)
    assert w.checks["a form rendered before the rotation succeeds after it"]
    assert w.checks["nobody signed out"]
    assert_clean_writes(w)
    assert w.checks == dict.fromkeys(w.checks, True)


def test_the_run_wrote_posts_and_every_check_holds(measured: Any) -> None:
    """Posts were written while the faults ran (the writes above are not vacuous), and
    the harness reports no failed check (its exit status would be 0)."""
    answered = sum(
        r.kind == "create-post" and r.outcome == faults.OK
        for w in measured.windows
        for r in w.requests
    )
    assert answered >= 10
    assert faults.failures(measured.windows) == []


def test_the_docs_table_has_every_fault() -> None:
    """docs/cluster.md's "Faults, measured" has a row for each fault the harness runs."""
    section = DOCS.read_text().split("## Faults, measured", 1)[1]
    rows = re.findall(r"^\| ([^|]+?) \|", section, re.M)
    for fault in (KILLED, REDIS, POSTGRES, ROTATED, "Redis Cluster master failover"):
        assert fault in rows, rows
