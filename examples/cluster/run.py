"""``make cluster``: the demo board on several uvicorn workers behind a TLS reverse proxy.

    .venv/bin/python examples/cluster/run.py     # what `make cluster` runs

It starts, all on 127.0.0.1: a ``redis-server`` of its own (unless ``BASTION_STORE`` names
a Redis), ``CLUSTER_WORKERS`` board workers, each
``uvicorn --app-dir examples board.app:app --host 127.0.0.1 --port P --no-proxy-headers``
with a data directory of its own, and nginx (or HAProxy) terminating TLS with a
certificate made at start. Only Redis (sessions, rate limits) and the database are shared.
Ctrl-C or SIGTERM stops every process it started, by PID, and exits 0. docs/cluster.md.

=======================  ===========================================================
``CLUSTER_WORKERS``      how many workers (3)
``CLUSTER_PROXY``        ``nginx`` (the default) or ``haproxy``
``CLUSTER_PORT``         the proxy's port (8443; 0 for any free one)
``CLUSTER_DIR``          certificate, configs, logs, data (``build/cluster``)
``BASTION_STORE``        a Redis of your own (``redis://…``); unset, one of its own
``DATABASE_URL``         the database (``postgresql://postgres@127.0.0.1:5432/test``)
``BASTION_SECRET_KEY``   the workers' one key; unset, made once in ``CLUSTER_DIR``
=======================  ===========================================================

Once every process answers, it writes ``CLUSTER_DIR/cluster.json`` (the URL, the
certificate, every PID and port) for tools and tests, and removes it when it stops.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion import generate_secret_key

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent.parent
EXAMPLES: Final = REPO / "examples"
DEFAULT_DATABASE: Final = "postgresql://postgres@127.0.0.1:5432/test"
PROXIES: Final = {"nginx": "/usr/sbin/nginx", "haproxy": "/usr/sbin/haproxy"}
START_TIMEOUT: Final = 40.0
"""Seconds every process has to answer (the first start hashes the seeded passwords)."""
STOP_TIMEOUT: Final = 10.0
"""Seconds a process has to exit after SIGTERM before it is killed."""
HEALTH_PATH: Final = "/static/board.css"
"""What readiness asks for: a static file, which needs neither the database nor a session."""


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: stop everything, exit 0."""


class Signals:
    """SIGINT and SIGTERM raise ``Stopped`` wherever the launcher is (a wait, a sleep),
    except while a child is being started: then the signal waits until that child is on
    the list ``Cluster.stop`` walks, so that no process escapes it."""

    def __init__(self) -> None:
        self.holding = False
        self.held: str | None = None
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._arrived)

    def _arrived(self, number: int, _frame: object) -> None:
        self.held = signal.Signals(number).name
        if not self.holding:
            raise Stopped(self.held)

    @contextmanager
    def held_back(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.held:
            raise Stopped(self.held)

    def ignore(self) -> None:
        """From now on nothing interrupts the launcher: it is stopping every child."""
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)


class Failed(Exception):
    """A process did not start or died: stop everything, exit 1."""


@dataclass(frozen=True, kw_only=True)
class Options:
    workers: int
    proxy: str
    port: int
    directory: Path
    store: str | None
    database: str
    secret_key: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Options:
        workers = _number(environ, "CLUSTER_WORKERS", 3)
        port = _number(environ, "CLUSTER_PORT", 8443)
        proxy = environ.get("CLUSTER_PROXY") or "nginx"
        if workers < 1 or not 0 <= port < 65536:
            raise Failed("CLUSTER_WORKERS must be at least 1, CLUSTER_PORT a port (0: any)")
        if proxy not in PROXIES:
            raise Failed(f"CLUSTER_PROXY must be one of {', '.join(PROXIES)}, not {proxy!r}")
        return cls(
            workers=workers,
            proxy=proxy,
            port=port or free_port(),
            directory=Path(environ.get("CLUSTER_DIR") or REPO / "build" / "cluster").resolve(),
            store=environ.get("BASTION_STORE") or None,
            database=environ.get("DATABASE_URL") or DEFAULT_DATABASE,
            secret_key=environ.get("BASTION_SECRET_KEY") or None,
        )


def _number(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(environ.get(name) or default)
    except ValueError:
        raise Failed(f"{name} must be a number, not {environ[name]!r}") from None


@dataclass
class Child:
    """A process the launcher started: stopped by its PID, its output in ``log``; how it
    was started (``command``, ``env``, ``cwd``) is kept, so that it can be started again."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    command: list[str]
    env: Mapping[str, str] | None
    cwd: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])

    def failure(self, what: str) -> Failed:
        return Failed(f"{self.name} (pid {self.pid}) {what}; the end of {self.log}:\n{self.tail()}")


class Cluster:
    """Every process started, in order, so that ``stop`` finds each one by its PID."""

    def __init__(self, directory: Path, signals: Signals | None = None) -> None:
        self.directory = directory
        self.signals = signals
        """``None`` for a cluster run from other code (examples/cluster/faults.py), which
        keeps its own signal handlers."""
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log = self.directory / f"{name}.log"
        return self._spawn(name, command, log, port=port, env=env, cwd=cwd or self.directory)

    def restart(self, child: Child, *, env: Mapping[str, str] | None = None) -> Child:
        """``child`` stopped (if it still runs) and started again: the same command line,
        directory and port, its environment updated with ``env``, its log appended to. It
        takes the old one's place in ``children``, so ``stop`` keeps its order."""
        self.stop_child(child)
        changed = {**(child.env or os.environ), **(env or {})}
        return self._spawn(
            child.name,
            child.command,
            child.log,
            port=child.port,
            env=changed,
            cwd=child.cwd,
            replacing=child,
        )

    def _spawn(
        self,
        name: str,
        command: list[str],
        log: Path,
        *,
        port: int,
        env: Mapping[str, str] | None,
        cwd: Path,
        replacing: Child | None = None,
    ) -> Child:
        held = self.signals.held_back() if self.signals else contextlib.nullcontext()
        with log.open("ab" if replacing else "wb") as out, held:
            # A session of its own: Ctrl-C reaches the launcher only, which then stops the
            # children in order (the proxy first, its own Redis last).
            process = subprocess.Popen(  # noqa: S603 - our own command lines, no shell
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            child = Child(name, process, log, port, command, env, cwd)
            if replacing is None:
                self.children.append(child)
            else:
                self.children[self.children.index(replacing)] = child
        return child

    def child(self, name: str) -> Child:
        """The child named ``name`` (after a restart, the process started again)."""
        return next(c for c in self.children if c.name == name)

    def stop_child(self, child: Child, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) to ``child``, by its PID, and its exit waited for; killed
        if it has not exited in ``STOP_TIMEOUT``."""
        if not child.exited():
            if kill:
                child.process.kill()
            else:
                child.process.terminate()
        try:
            child.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

    def wait_until(self, children: list[Child], answers: Callable[[Child], bool]) -> None:
        """Until each child answers; ``Failed`` if one exits or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(children)
        while waiting:
            for child in list(waiting):
                if child.exited():
                    raise child.failure(f"exited with {child.process.returncode} at start")
                if answers(child):
                    waiting.remove(child)
            if waiting and time.monotonic() > deadline:
                raise waiting[0].failure(f"did not answer in {START_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to each child still running, newest first, then its own Redis: a worker
        shutting down may still need it. What has not exited in time is killed."""
        started = list(reversed(self.children))
        redis = [c for c in started if c.name == "redis-server"]
        for group in ([c for c in started if c not in redis], redis):
            for child in group:
                if not child.exited():
                    child.process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in group:
                try:
                    child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()


# --- what each process is given -------------------------------------------------------------


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port nothing listens on now (and not one of ``taken``)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in (taken or set()):
            return port


def make_certificate(directory: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost, made at every start:
    cert.pem, key.pem (owner only) and haproxy.pem (both, as HAProxy reads them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "cert.pem").write_bytes(cert_pem)
    _write_private(directory / "key.pem", key_pem)
    _write_private(directory / "haproxy.pem", cert_pem + key_pem)


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(data)


def secret_key(options: Options) -> str:
    """``BASTION_SECRET_KEY``, else the one kept in the runtime directory (made the first
    time): one key for every worker, kept across restarts so sessions survive them."""
    if options.secret_key:
        return options.secret_key
    path = options.directory / "secret-key"
    if not path.exists():
        _write_private(path, (generate_secret_key() + "\n").encode())
    return path.read_text().strip()


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with each ``@NAME@`` replaced (``@`` means nothing else in either)."""
    for name, value in values.items():
        template = template.replace(f"@{name}@", value)
    left = re.search(r"@[A-Z_]+@", template)
    if left:
        raise Failed(f"nothing fills {left.group()} in the proxy's template")
    return template


def proxy_config(options: Options, binary: str, ports: list[int]) -> list[str]:
    """The proxy's config written from its template, and the command that runs it."""
    runtime = str(options.directory)
    if options.proxy == "nginx":
        servers = [f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports]
        config = options.directory / "nginx.conf"
        template = "nginx.conf.template"
        command = [binary, "-p", runtime, "-e", f"{runtime}/nginx-error.log", "-c", str(config)]
        command += ["-g", "daemon off;"]
    else:
        servers = [f"    server worker-{n} 127.0.0.1:{p}" for n, p in enumerate(ports, 1)]
        config = options.directory / "haproxy.cfg"
        template = "haproxy.cfg.template"
        command = [binary, "-f", str(config), "-db"]
    values = {"RUNTIME": runtime, "PORT": str(options.port), "SERVERS": "\n".join(servers)}
    config.write_text(fill((HERE / template).read_text(), values))
    return command


def worker_env(options: Options, number: int, key: str, store: str) -> dict[str, str]:
    """This environment and what makes a worker one of the cluster's. BASTION_DATA_DIR
    goes: each worker keeps its own directory, so only Redis and the database are shared."""
    env = {k: v for k, v in os.environ.items() if k != "BASTION_DATA_DIR"}
    return env | {
        "BASTION_SECRET_KEY": key,
        "BASTION_ALLOWED_ORIGINS": f"https://127.0.0.1:{options.port}",
        "BASTION_STORE": store,
        "DATABASE_URL": options.database,
        # The proxy's X-Forwarded-For is believed from loopback only, and cookies are
        # Secure and __Host- although the worker itself speaks plain HTTP.
        "BASTION_TRUSTED_PROXIES": "127.0.0.1",
        "BASTION_HTTPS": "true",
        "BOARD_DATA_DIR": str(options.directory / f"worker-{number}"),
        "BOARD_SERVED_BY": f"worker-{number}",
    }


def shown(url: str) -> str:
    """``url`` with any password replaced, for the banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


# --- is it answering? -------------------------------------------------------------------------


def answers(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """Whether 127.0.0.1:``port`` serves the health path (200), over TLS with ``tls``."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=tls)
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    )
    try:
        connection.request("GET", HEALTH_PATH)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- the cluster ------------------------------------------------------------------------------


def start(cluster: Cluster, options: Options) -> dict[str, Any]:
    """Every process started and answering; what ``cluster.json`` holds."""
    directory = options.directory
    proxy_binary = shutil.which(options.proxy) or PROXIES[options.proxy]
    if not os.access(proxy_binary, os.X_OK):
        raise Failed(f"{options.proxy} is not installed (make cluster installs it)")
    make_certificate(directory)
    key = secret_key(options)
    taken = {options.port}
    ports = []
    for _ in range(options.workers):
        ports.append(free_port(taken))
        taken.add(ports[-1])
    # The proxy's config first: a template that does not fill stops nothing half-started.
    proxy_command = proxy_config(options, proxy_binary, ports)

    store, redis = options.store, None
    if store is None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        port = free_port(taken)
        taken.add(port)
        (directory / "redis").mkdir(exist_ok=True)
        # No RDB, no AOF: the cluster's sessions and counters go when it stops.
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(directory / "redis")]
        redis = cluster.start("redis-server", command, port=port)
        cluster.wait_until([redis], lambda c: redis_answers(c.port))
        store = f"redis://127.0.0.1:{port}/0"

    workers = []
    for number, port in enumerate(ports, 1):
        # The workers start together: the board takes a lock while it creates its tables
        # and seeded accounts, so one of them does and the others find them there.
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "board.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-proxy-headers",
        ]
        env = worker_env(options, number, key, store)
        data = directory / f"worker-{number}"
        data.mkdir(mode=0o700, exist_ok=True)
        workers.append(cluster.start(f"worker-{number}", command, env=env, cwd=data, port=port))
    cluster.wait_until(workers, lambda c: answers(c.port))

    (directory / "nginx-temp").mkdir(exist_ok=True)
    proxy = cluster.start(options.proxy, proxy_command, port=options.port)
    tls = ssl.create_default_context(cafile=directory / "cert.pem")
    cluster.wait_until([proxy], lambda c: answers(c.port, tls))

    return {
        "url": f"https://127.0.0.1:{options.port}/",
        "certificate": str(directory / "cert.pem"),
        "store": shown(store),
        "database": shown(options.database),
        "proxy": {"name": proxy.name, "pid": proxy.pid, "port": proxy.port},
        "workers": [{"name": w.name, "pid": w.pid, "port": w.port} for w in workers],
        "redis": None if redis is None else {"pid": redis.pid, "port": redis.port},
    }


def banner(state: dict[str, Any], options: Options, first_start: list[str]) -> str:
    redis = state["redis"]
    store = state["store"] + (
        f" (a redis-server of its own, pid {redis['pid']}, no persistence)" if redis else ""
    )
    workers = "\n".join(
        f"              {w['name']} on 127.0.0.1:{w['port']}, pid {w['pid']}"
        for w in state["workers"]
    )
    lines = [
        "",
        f"  bastion demo board on {len(state['workers'])} workers at {state['url']}",
        "",
        f"  proxy       {options.proxy}, pid {state['proxy']['pid']}; its certificate, "
        f"self-signed: {state['certificate']}",
        f"  workers\n{workers}",
        f"  store       {store}",
        f"  database    {state['database']}",
        f"  logs        {options.directory}/*.log",
        "",
        "  Sign in as admin@board.example (admin) or author@board.example (author).",
        *(f"  First start on this database: {line}" for line in first_start),
        "  Ctrl-C stops every process started here.",
        "",
    ]
    return "\n".join(lines)


def seeded(cluster: Cluster) -> list[str]:
    """What a worker logged when it created the seeded accounts (their generated
    passwords, printed once), from whichever worker did."""
    found = []
    for child in cluster.children:
        if child.name.startswith("worker-") and child.log.exists():
            text = child.log.read_text(errors="replace")
            found += re.findall(r"board: (created \S+ with the password .*)", text)
    return found


def watch(cluster: Cluster) -> NoReturn:
    """Until a signal arrives: a worker that dies is reported (the proxy passes over it);
    the proxy, its own Redis or the last worker dying ends the cluster."""
    reported: set[str] = set()
    while True:
        time.sleep(0.5)
        for child in cluster.children:
            if not child.exited() or child.name in reported:
                continue
            workers = [c for c in cluster.children if c.name.startswith("worker-")]
            if child in workers and any(not w.exited() for w in workers):
                reported.add(child.name)
                print(child.failure(f"exited with {child.process.returncode}"), flush=True)
                continue
            raise child.failure(f"exited with {child.process.returncode}")


def main() -> int:
    signals = Signals()
    cluster: Cluster | None = None
    state_file: Path | None = None
    try:
        options = Options.from_env(os.environ)
        options.directory.mkdir(parents=True, exist_ok=True)
        state_file = options.directory / "cluster.json"
        state_file.unlink(missing_ok=True)
        cluster = Cluster(options.directory, signals)
        state = start(cluster, options)
        state["launcher"] = os.getpid()
        # Whole or not at all, for whoever waits for it to appear.
        written = state_file.with_suffix(".tmp")
        written.write_text(json.dumps(state, indent=2) + "\n")
        written.replace(state_file)
        print(banner(state, options, seeded(cluster)), flush=True)
        watch(cluster)
    except Stopped as stop:
        print(f"\n  {stop}: stopping every process started here", flush=True)
        return 0
    except Failed as failure:
        print(f"cluster: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        signals.ignore()
        if cluster is not None:
            cluster.stop()
        if state_file is not None:
            state_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
