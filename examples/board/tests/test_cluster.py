"""``make cluster`` (examples/cluster/run.py): the board on three uvicorn workers behind
nginx, and behind HAProxy, over TLS, sharing one Redis (the launcher's own redis-server)
and one PostgreSQL schema (the test's own, dropped afterwards).

Through the proxy, over https and trusting only the certificate the launcher made: the
author signs in and posts; with that one ``__Host-board_session`` cookie every worker
answers (``X-Served-By``) and each shows her signed in with her post, so a session made
through the proxy works whichever worker answers. The proxy replaces a client's
``X-Forwarded-For``: the workers count the call under 127.0.0.1. A worker killed, the proxy
passes over it, and a post written then is written once. On SIGINT the launcher exits 0
and every process it started (and theirs) is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx2 as httpx
import pytest
from services import free_port, wait_for

from .databases import Postgres
from .inprocess import EXAMPLES
from .served import ADMIN_PASSWORD, AUTHOR, AUTHOR_PASSWORD, COOKIE, Browser

LAUNCHER: Final = EXAMPLES / "cluster" / "run.py"
DOCS: Final = EXAMPLES.parent / "docs" / "cluster.md"
BINARIES: Final = {"nginx": "/usr/sbin/nginx", "haproxy": "/usr/sbin/haproxy"}
WORKERS: Final = frozenset({"worker-1", "worker-2", "worker-3"})
START_TIMEOUT: Final = 45.0
"""Seconds the launcher has until every process answers."""
SPOOFED: Final = "203.0.113.9"
SET_COOKIE: Final = (
    rf"__Host-{COOKIE}=[A-Za-z0-9_-]{{43}}; Max-Age=\d+; Path=/; HttpOnly; SameSite=Lax; Secure"
)


@dataclass
class Launched:
    """The launcher's process and what it wrote to ``cluster.json`` once all answered."""

    process: subprocess.Popen[bytes]
    state: dict[str, Any]
    directory: Path
    log_path: Path

    @property
    def url(self) -> str:
        return str(self.state["url"]).rstrip("/")

    def pids(self) -> dict[str, int]:
        """Every process it started, by name."""
        pids = {w["name"]: w["pid"] for w in self.state["workers"]}
        pids[self.state["proxy"]["name"]] = self.state["proxy"]["pid"]
        if self.state["redis"] is not None:
            pids["redis-server"] = self.state["redis"]["pid"]
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launcher_env(directory: Path, **settings: str) -> dict[str, str]:
    """None of the test's ``BASTION_*``, ``BOARD_*``, ``CLUSTER_*`` or ``DATABASE_URL``: the
    runtime in ``directory``, the proxy on any free port, and ``settings``."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BASTION_", "BOARD_", "CLUSTER_")) and key != "DATABASE_URL"
    }
    return inherited | {"CLUSTER_DIR": str(directory), "CLUSTER_PORT": "0", **settings}


@contextmanager
def launched(tmp_path: Path, proxy: str, database: Postgres) -> Iterator[Launched]:
    """``make cluster``'s launcher with three workers behind ``proxy``, on the test's own
    schema and seeded passwords. Whatever happens, SIGINT at the end, and anything left
    killed."""
    directory = tmp_path / "cluster"
    env = launcher_env(
        directory,
        CLUSTER_PROXY=proxy,
        CLUSTER_WORKERS=str(len(WORKERS)),
        DATABASE_URL=database.url().render_as_string(hide_password=False),
        BOARD_ADMIN_PASSWORD=ADMIN_PASSWORD,
        BOARD_AUTHOR_PASSWORD=AUTHOR_PASSWORD,
    )
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(LAUNCHER)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    state_file = directory / "cluster.json"
    state: dict[str, Any] = {}
    try:
        ready = wait_for(lambda: state_file.exists() or process.poll() is not None, START_TIMEOUT)
        if process.poll() is not None or not ready:
            pytest.fail(f"the launcher did not start the cluster:\n{log_path.read_text()}")
        state = json.loads(state_file.read_text())
        yield Launched(process, state, directory, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if state:  # what a failed launcher left behind
            for pid in Launched(process, state, directory, log_path).pids().values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class TlsBrowser(Browser):
    """``Browser`` over https, trusting the launcher's certificate and nothing else."""

    def __init__(self, base: str, certificate: str) -> None:
        self.base = base
        self.client = httpx.Client(
            base_url=base,
            verify=ssl.create_default_context(cafile=certificate),
            timeout=10.0,
            trust_env=False,
        )
        self.page_path = "/"
        self.page_text = ""


def descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them now (nginx's worker, say), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (name) state ppid …": the name may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found = set(pids)
    while more := {p for p, parent in parents.items() if parent in found} - found:
        found |= more
    return found


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def audited(cluster: Launched, action: str) -> list[dict[str, Any]]:
    """The audit events of ``action`` the workers logged (one JSON line per call)."""
    events = []
    for log in sorted(cluster.directory.glob("worker-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            _, marker, event = line.partition("bastion.audit: ")
            if marker and json.loads(event).get("action") == action:
                events.append(json.loads(event))
    return events


@pytest.mark.parametrize("proxy", sorted(BINARIES))
def test_a_session_made_through_the_proxy_works_on_every_worker(
    proxy: str, tmp_path: Path, postgres: Postgres
) -> None:
    """Sign-in and a post through the proxy, then every worker answers that session; the
    proxy's X-Forwarded-For is its own; a killed worker is passed over; SIGINT stops all."""
    if not os.access(BINARIES[proxy], os.X_OK):
        pytest.skip(f"{proxy} is not installed ({BINARIES[proxy]}; `make proxies` installs it)")
    title = f"Through {proxy}"
    with launched(tmp_path, proxy, postgres) as cluster:
        started = descendants(set(cluster.pids().values()))
        assert set(cluster.pids().values()) <= set(working_in(cluster.directory))
        assert len(cluster.state["workers"]) == len(WORKERS)
        with TlsBrowser(cluster.url, cluster.state["certificate"]) as ada:
            # A client's own X-Forwarded-For, which the proxy must not pass on.
            ada.client.headers["X-Forwarded-For"] = SPOOFED
            ada.open("/login")
            reply = ada.post(ada.form(button="Sign in"), email=AUTHOR, password=AUTHOR_PASSWORD)
            assert reply.status_code == 303, reply.text
            # Secure and __Host-: the worker speaks plain HTTP, but BASTION_HTTPS says how
            # the visitor reached it.
            assert re.fullmatch(SET_COOKIE, reply.headers["set-cookie"]), reply.headers
            session = ada.client.cookies[f"__Host-{COOKIE}"]

            ada.open("/")
            compose = ada.form(button="Publish", within="compose")
            ada.submit(compose, "/", title=title, body="Written once, read by every worker.")

            served_by = set()
            for _ in range(4 * len(WORKERS)):
                reply = ada.get("/")
                assert reply.status_code == 200, reply.text
                assert title in reply.text
                assert 'id="compose"' in reply.text  # her form: she is signed in here too
                served_by.add(reply.headers["x-served-by"])
                if served_by == WORKERS:
                    break
            assert served_by == WORKERS
            assert ada.client.cookies[f"__Host-{COOKIE}"] == session  # the one session

            for action in ("login", "create_post"):
                events = audited(cluster, action)
                assert [e["client"] for e in events] == ["127.0.0.1"], events

            # worker-3 dies: the proxy passes over it, the launcher keeps the rest serving.
            gone = next(w for w in cluster.state["workers"] if w["name"] == "worker-3")
            os.kill(gone["pid"], signal.SIGKILL)
            wait_for(lambda: not running(gone["pid"]), 5.0)
            after = set()
            for _ in range(2 * len(WORKERS)):
                reply = ada.get("/")
                assert reply.status_code == 200, reply.text
                after.add(reply.headers["x-served-by"])
            assert after == WORKERS - {"worker-3"}
            ada.open("/")
            compose = ada.form(button="Publish", within="compose")
            ada.submit(compose, "/", title=f"{title}, later", body="One worker down.")
        assert postgres.rows("SELECT count(*) FROM posts WHERE title = %s", f"{title}, later") == [
            (1,)
        ]
        assert cluster.process.poll() is None
        assert re.search(r"worker-3 \(pid \d+\) exited with -9;", cluster.log()), cluster.log()

        cluster.process.send_signal(signal.SIGINT)
        assert cluster.process.wait(timeout=30) == 0, cluster.log()
        assert not (cluster.directory / "cluster.json").exists()
        assert [pid for pid in started if running(pid)] == []
        assert working_in(cluster.directory) == []


def test_a_worker_that_cannot_start_stops_the_rest(tmp_path: Path) -> None:
    """A database that refuses the connection: worker-1 exits at start; the launcher
    prints the end of its log, stops what it had started (its redis-server) and exits 1."""
    directory = tmp_path / "cluster"
    env = launcher_env(
        directory,
        CLUSTER_WORKERS="1",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
    )
    done = subprocess.run(
        [sys.executable, str(LAUNCHER)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"worker-1 \(pid \d+\) exited with \d+ at start", done.stderr), done.stderr
    assert "Application startup failed" in done.stderr  # the end of the worker's own log
    assert not (directory / "cluster.json").exists()
    assert working_in(directory) == []


def working_in(directory: Path) -> list[int]:
    """The processes whose working directory is in ``directory`` (every child the launcher
    starts works in the runtime directory)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        with contextlib.suppress(OSError):
            if cwd.resolve().is_relative_to(directory.resolve()):
                found.append(int(cwd.parent.name))
    return found


def test_the_docs_show_the_templates_the_launcher_fills() -> None:
    """docs/cluster.md's nginx and HAProxy blocks are the two templates, as they are."""
    blocks = re.findall(r"^```(nginx|haproxy)\n(.*?)^```$", DOCS.read_text(), re.M | re.S)
    assert dict(blocks) == {
        "nginx": (LAUNCHER.parent / "nginx.conf.template").read_text(),
        "haproxy": (LAUNCHER.parent / "haproxy.cfg.template").read_text(),
    }
    assert len(blocks) == 2
