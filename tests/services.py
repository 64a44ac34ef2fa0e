"""The real services the tests run against, and the processes they start.

- ``REDIS_URL`` names the Redis the tests use (CI sets it). Without it, a throwaway
  ``redis-server`` is started when the binary exists; otherwise the tests that need
  Redis are skipped, with that reason shown in the summary.
- ``RedisServer`` is a ``redis-server`` of a test's own, on a spare loopback port and
  without persistence, that the test may kill, freeze and restart.
- ``AppServer`` is ``tests/fixtures/shared_app.py`` under uvicorn in its own process.

Everything listens on 127.0.0.1 only, and every process started here is stopped by the
fixture or ``with`` block that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_APP = "tests.fixtures.shared_app:app"
START_TIMEOUT = 20.0
"""Seconds a server has to answer its first request."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (``True``) or ``timeout`` seconds pass (``False``)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def with_db(url: str, db: int) -> str:
    """``url`` with its database number replaced: ``redis://h:p/0`` → ``redis://h:p/{db}``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


# --- redis-server ---------------------------------------------------------------------------


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def redis_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING now (raw RESP, no client)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` of the test's own: loopback only, no RDB, no AOF, its files in
    ``directory``. ``stop`` kills it; ``start`` again serves on the same port (empty)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("redis-server is not installed: the test needs a Redis of its own")
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "redis-server.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for(lambda: redis_answers(self.port) or self.process_exited(), 10.0):
            pytest.fail(f"redis-server did not start:\n{self.log()}")
        if self.process_exited():
            pytest.fail(f"redis-server exited:\n{self.log()}")

    def process_exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop it with ``sig`` and wait until it is gone (a frozen one is thawed first,
        or it could never handle a SIGTERM)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        if sig != signal.SIGKILL:
            self.process.send_signal(signal.SIGCONT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def redis_server(directory: Path, port: int | None = None) -> Iterator[RedisServer]:
    """A started ``RedisServer``, killed when the block ends (however it ends)."""
    server = RedisServer(directory, port)
    try:
        server.start()
        yield server
    finally:
        server.stop(signal.SIGKILL)


@contextmanager
def redis_for_tests(directory: Path) -> Iterator[str]:
    """``REDIS_URL``; else a throwaway ``redis-server``; else a skip that says why."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if redis_server_binary() is None:
        pytest.skip("no Redis: REDIS_URL is unset and redis-server is not installed")
    with redis_server(directory) as server:
        yield server.url


# --- the app under uvicorn --------------------------------------------------------------------


class AppServer:
    """``tests/fixtures/shared_app.py`` (or ``target`` in ``app_dir``) under uvicorn on
    127.0.0.1:``port``, configured by ``env`` alone (``BASTION_*``, ``BOARD_*`` and
    ``DATABASE_URL`` of the test process are not inherited). ``args`` are uvicorn's own
    options, as a deployment would give them (``--no-proxy-headers``)."""

    def __init__(
        self,
        port: int,
        env: dict[str, str],
        directory: Path,
        *,
        target: str = SHARED_APP,
        app_dir: Path = REPO,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.target = target
        self.app_dir = app_dir
        self.args = args
        self.base = f"http://127.0.0.1:{port}"
        self.directory = directory
        self.log_path = directory / f"uvicorn-{port}.log"
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BASTION_", "SHARED_APP_", "BOARD_")) and key != "DATABASE_URL"
        }
        self.env = {**inherited, "BASTION_DATA_DIR": str(directory / "data"), **env}
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the process; ``wait_ready`` waits for it to serve."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(self.app_dir),
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def wait_ready(self) -> None:
        def serving() -> bool:
            if self.process is None or self.process.poll() is not None:
                pytest.fail(f"{self.base} exited:\n{self.log()}")
            try:
                # A path the app does not have: a 404 proves it serves, and reads no store.
                httpx.get(self.base + "/ready", timeout=1.0, trust_env=False)
            except httpx.TransportError:
                return False
            return True

        if not wait_for(serving, START_TIMEOUT):
            pytest.fail(f"{self.base} did not start in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, int]:
        """How often each handler ran in this process (no cookie: the store is not read)."""
        reply = httpx.get(self.base + "/status", timeout=5.0, trust_env=False)
        assert reply.status_code == 200, reply.text
        runs: dict[str, int] = reply.json()["runs"]
        return runs


def start_all(servers: list[AppServer]) -> None:
    """Start several app processes at once and wait until every one serves."""
    for server in servers:
        server.launch()
    for server in servers:
        server.wait_ready()


@contextmanager
def app_servers(servers: list[AppServer]) -> Iterator[list[AppServer]]:
    """The servers started, and stopped when the block ends (however it ends)."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
        start_all(servers)
        yield servers
