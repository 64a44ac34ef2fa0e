"""The real services the tests run against, and the processes they start.

- ``REDIS_URL`` names the Redis the tests use (CI sets it). Without it, a throwaway
  ``redis-server`` is started when the binary exists; otherwise the tests that need
  Redis are skipped, with that reason shown in the summary.
- ``RedisServer`` is a ``redis-server`` of a test's own, on a spare loopback port and
  without persistence, that the test may kill, freeze and restart.
- ``RedisClusterServers`` is a Redis Cluster of a test's own (three masters, with or
  without a replica each) made of such servers; ``REDIS_CLUSTER_URL`` names the cluster
  the tests share instead (else one is started for the run, else they are skipped).
- ``AppServer`` is ``tests/fixtures/shared_app.py`` under uvicorn in its own process.

Everything listens on 127.0.0.1 only, and every process started here is stopped by the
fixture or ``with`` block that started it.
"""

from __future__ import annotations

import contextlib
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
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import pytest
import redis
import redis.cluster

from bastion.stores.redis import CLUSTER_SCHEME, cluster_nodes

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

    def __init__(
        self, directory: Path, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("redis-server is not installed: the test needs a Redis of its own")
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.args = args
        """More of redis-server's options (a cluster node's)."""
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
                    *self.args,
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

    def command(self, *args: str) -> Any:
        """One command's reply, decoded (``CLUSTER INFO`` as text, ``INFO`` as a dict,
        ``ROLE`` as a list), on a connection of its own."""
        with redis.Redis(port=self.port, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*args)


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


# --- a Redis Cluster -------------------------------------------------------------------------


def redis_cli_binary() -> str | None:
    return shutil.which("redis-cli")


class RedisClusterServers:
    """A Redis Cluster of the test's own: ``masters`` masters, with ``replicas`` replicas
    each, every node a ``RedisServer`` (loopback, no persistence) in a directory of its own
    under ``directory``. ``node_timeout`` (ms) is how long a silent node has until it is
    marked failed and, if it was a master with a replica, replaced by that replica."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 0, node_timeout: int = 15000
    ) -> None:
        cli = redis_cli_binary()
        if cli is None:
            pytest.skip("redis-cli is not installed: the test needs a Redis Cluster of its own")
        self.cli = cli
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        ports: set[int] = set()
        for _ in range(masters * (1 + replicas)):
            # Each node listens on two ports: clients' and the cluster bus.
            port, bus = _spare_port(ports), _spare_port(ports)
            args = (
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus),
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(node_timeout),
                # A replica's first sync at once, not after redis-server's 5 s of waiting
                # for other replicas to share it.
                "--repl-diskless-sync-delay",
                "0",
            )
            self.nodes.append(RedisServer(directory / f"node-{port}", port, args))

    @property
    def url(self) -> str:
        """bastion's spelling: ``redis+cluster://`` and every node's address."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        """Start every node, join them into one cluster with the slots split evenly among
        the masters, and wait until every node says the cluster is ok (and every replica
        has synchronised with its master)."""
        for node in self.nodes:
            node.start()
        created = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout.decode()}")
        if not wait_for(self.ready, 20.0, interval=0.1):
            logs = "\n".join(node.log() for node in self.nodes)
            pytest.fail(f"the Redis Cluster did not become ready:\n{logs}")

    def ready(self) -> bool:
        """Whether every node says ``cluster_state:ok`` and every replica's link to its
        master is up."""
        try:
            for node in self.nodes:
                if "cluster_state:ok" not in node.command("CLUSTER", "INFO"):
                    return False
                replication = node.command("INFO", "replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        except redis.exceptions.RedisError:
            return False
        return True

    def masters(self) -> list[RedisServer]:
        """The live nodes that are masters now (a failover changes which)."""
        return [
            node
            for node in self.nodes
            if not node.process_exited() and node.command("ROLE")[0] == "master"
        ]

    def owner(self, key: str) -> RedisServer:
        """The master that serves ``key`` now: the one whose own line of CLUSTER NODES
        lists a slot range holding the key's slot."""
        for node in self.masters():
            slot = int(node.command("CLUSTER", "KEYSLOT", key))
            for line in node.command("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and any(
                    int(span.partition("-")[0]) <= slot <= int(span.rpartition("-")[2])
                    for span in fields[8:]
                    if span[0].isdigit()
                ):
                    return node
        raise AssertionError(f"no master serves the slot of {key!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)


def _spare_port(taken: set[int]) -> int:
    """A free loopback port not in ``taken`` (which it joins)."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


@contextmanager
def redis_cluster(
    directory: Path, masters: int = 3, replicas: int = 0, node_timeout: int = 15000
) -> Iterator[RedisClusterServers]:
    """A started ``RedisClusterServers``, every node killed when the block ends (however
    it ends)."""
    cluster = RedisClusterServers(directory, masters, replicas, node_timeout)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def redis_cluster_for_tests(directory: Path) -> Iterator[str]:
    """``REDIS_CLUSTER_URL`` (``redis+cluster://host:port,…``); else a throwaway three-master
    cluster; else a skip that says why."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    if redis_server_binary() is None or redis_cli_binary() is None:
        pytest.skip(
            "no Redis Cluster: REDIS_CLUSTER_URL is unset and redis-server or "
            "redis-cli is not installed"
        )
    with redis_cluster(directory) as cluster:
        yield cluster.url


def redis_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A plain (synchronous) client on ``url``, a single Redis or a cluster, to look around
    the stores; on a cluster, SCAN reads every master and DEL splits its keys by slot."""
    if url.startswith(CLUSTER_SCHEME):
        nodes, username, password = cluster_nodes(url)
        return redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            socket_timeout=5,
        )
    return redis.Redis.from_url(url, socket_timeout=5)


def delete_matching(url: str, pattern: str) -> None:
    """Delete every key that matches ``pattern`` (a SCAN pattern), on every master."""
    with contextlib.closing(redis_client(url)) as client:
        stale = list(client.scan_iter(match=pattern, count=1000))
        if stale:
            client.delete(*stale)


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
