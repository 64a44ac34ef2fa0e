"""The fault table: ``make cluster``'s board under load while one thing at a time fails.

    .venv/bin/python examples/cluster/faults.py    # the table in Markdown; exit 1 if a check fails

Everything runs on 127.0.0.1, in temporary directories, and is stopped by PID at the end:
a PostgreSQL of the harness's own (``initdb`` into a directory of its own, run as the
``postgres`` user when the harness runs as root, since PostgreSQL refuses root), and the
cluster, started through examples/cluster/run.py's own functions: its redis-server, three
workers, nginx. ``CLUSTER_DIR`` keeps the cluster's directory (logs) after the run.
Without PostgreSQL's server binaries, the system PostgreSQL at ``DATABASE_URL`` is used
instead, in a schema of the harness's own and through a TCP relay that the fault cuts
(``FAULTS_POSTGRES=relay`` chooses that anyway).

Four visitors sign up, then load the board and publish posts over https through the
proxy, each post with a title of its own, so that PostgreSQL can be asked how many of
the posts answered 200 it holds, and how often. One fault after another:

1. a worker killed (SIGKILL);
2. Redis stopped, then started again on its port (empty: it keeps nothing on disk);
3. PostgreSQL stopped (SIGINT, a fast shutdown), then started again;
4. the secret key rotated while the load runs, one worker at a time (``rotate``);
5. a Redis Cluster failover: not measured here.

Each fault's window runs from the moment it starts until every visitor has had
``STABLE`` answers in a row that succeed. docs/cluster.md ("Faults, measured") has the
table of one run; examples/board/tests/test_cluster_faults.py asserts every check.
"""

from __future__ import annotations

import contextlib
import glob
import html
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import httpx2 as httpx
import psycopg
from sqlalchemy.engine import make_url

from bastion import generate_secret_key

HERE: Final = Path(__file__).resolve().parent


def _launcher() -> ModuleType:
    """examples/cluster/run.py, imported by path (examples/cluster is no package)."""
    spec = importlib.util.spec_from_file_location("cluster_run", HERE / "run.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {HERE / 'run.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run = _launcher()

WORKERS: Final = 3
VISITORS: Final = 4
THINK: Final = 0.15
"""Seconds a visitor waits between two requests."""
WRITE_EVERY: Final = 7.0
"""Seconds between two posts of one visitor: create_post allows 10 a minute per member,
and its sliding window refuses the 10th of an even pace, so 60/7 stays below it."""
MAX_REQUESTS: Final = 6000
"""The whole run's requests, at most: the load stops there."""
REQUEST_TIMEOUT: Final = 5.0
STABLE: Final = 3
"""Successful answers in a row, for each visitor, that end a fault's window."""
RECOVERY_TIMEOUT: Final = 30.0
"""Seconds after a fault is over by which every visitor must be served again."""
DOWN_FOR: Final = 3.0
"""Seconds Redis and PostgreSQL stay down."""
MIN_WINDOW: Final = 4.0
"""Seconds a fault's window lasts at least, so that posts are written in it."""
MIXED_FOR: Final = 4.0
"""Seconds worker-1 serves with a new key beside the others' old one (the one-pass
rotation)."""
REFUSED_WITHIN: Final = 1.0
"""Seconds a refusal may take while Redis or PostgreSQL is down."""
PASSWORD: Final = "a long password for the fault harness"
UNAVAILABLE: Final = "The service is unavailable. Try again later."
ENVELOPE: Final = {"ok": False, "error": {"code": "unavailable", "message": UNAVAILABLE}}
DIGEST: Final = re.compile(r"[0-9a-f]{16}")

# What an answer was, for the table.
OK: Final = "ok"
SIGNED_OUT: Final = "signed out"
UNAVAILABLE_503: Final = "503"
"""A generic 503 from a worker: the plain page, or exactly the envelope (and a digest)."""
WORKER_5XX: Final = "worker 5xx"
"""Any other 5xx from a worker (it names itself in X-Served-By)."""
PROXY_5XX: Final = "proxy 5xx"
"""nginx's own error page: no worker answered (no X-Served-By)."""
NO_ANSWER: Final = "no answer"
REFUSED: Final = "refused"
"""Any other answer: a 4xx that is not a signed-out one (a 429, a token refused)."""
PAGES: Final = frozenset({"board", "login page", "signup page", "edit page"})


# --- PostgreSQL: one of the harness's own, or the system's behind a relay --------------------


class OwnPostgres:
    """``initdb`` into a directory of its own and ``postgres`` on a free loopback port:
    ``stop`` is a fast shutdown (SIGINT), ``start`` serves the same data again."""

    how = "a PostgreSQL of the harness's own, stopped by SIGINT (fast shutdown), started again"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = run.free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="faults-postgres-"))
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            os.chown(self.directory, pwd.getpwnam(self.user).pw_uid, -1)
        self.log = self.directory / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        self._run(["initdb", "-D", "data", "-U", "postgres", "--auth=trust", "--no-sync"])

    @staticmethod
    def find() -> Path | None:
        """The newest PostgreSQL's server binaries, if this machine has them (and, for
        root, the ``postgres`` user to run them as)."""
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
        if not found or not os.access(Path(found[-1]).with_name("initdb"), os.X_OK):
            return None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return None
        return Path(found[-1]).parent

    def _run(self, command: list[str]) -> None:
        with self.log.open("ab") as log:
            subprocess.run(  # noqa: S603 - our own command line
                [str(self.bin_dir / command[0]), *command[1:]],
                cwd=self.directory,
                user=self.user,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def start(self) -> float:
        """Serving; returns the moment it was started (before it answered)."""
        command = [str(self.bin_dir / "postgres"), "-D", "data", "-p", str(self.port)]
        command += ["-k", str(self.directory), "-c", "listen_addresses=127.0.0.1"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                command,
                cwd=self.directory,
                user=self.user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        if not _until(self._answers, run.START_TIMEOUT):
            raise run.Failed(f"PostgreSQL did not start; see {self.log}")
        return started

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise run.Failed(f"PostgreSQL exited with {self.process.returncode}; see {self.log}")
        try:
            psycopg.connect(self.url, connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=run.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as connection:
            return connection.execute(query.encode(), params).fetchall()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Polls ``predicate`` until it holds (``True``) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


class RelayedPostgres:
    """The system PostgreSQL at ``DATABASE_URL``, in a schema of the harness's own, reached
    through a TCP relay on a free loopback port: ``stop`` closes every connection and
    refuses new ones, as a server that went away; ``start`` lets them through again."""

    def __init__(self, base: str, why: str) -> None:
        self.how = f"the system PostgreSQL behind a TCP relay, cut and restored ({why})"
        self.base = make_url(base).set(drivername="postgresql")
        self.schema = f"faults_{secrets.token_hex(4)}"
        host, port = self.base.host or "127.0.0.1", self.base.port or 5432
        with psycopg.connect(self._text(self.base), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{self.schema}"'.encode())
        self.relay = Relay((host, port))
        schema = {"options": f"-csearch_path={self.schema}"}
        self.url = self._text(
            self.base.set(host="127.0.0.1", port=self.relay.port).update_query_dict(schema)
        )
        self._direct = self._text(self.base.update_query_dict(schema))

    @staticmethod
    def _text(url: Any) -> str:
        return str(url.render_as_string(hide_password=False))

    def start(self) -> float:
        self.relay.up = True
        return time.monotonic()

    def stop(self) -> None:
        self.relay.cut()

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self._direct, autocommit=True, connect_timeout=3) as connection:
            return connection.execute(query.encode(), params).fetchall()

    def close(self) -> None:
        self.relay.close()
        with psycopg.connect(self._text(self.base), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{self.schema}" CASCADE'.encode())


class Relay:
    """127.0.0.1:``port`` → ``target``, two threads per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = True
        self._closing = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        with self._lock:
            self.up = False
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing = True
        self.cut()
        self._accepting.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                if not self.up:
                    raise ConnectionRefusedError
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            # Blocking from now on: a pooled connection may sit idle for long.
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._open.discard(source)
        source.close()


def own_database() -> OwnPostgres | RelayedPostgres:
    bin_dir = OwnPostgres.find()
    if bin_dir is None or os.environ.get("FAULTS_POSTGRES") == "relay":
        why = "FAULTS_POSTGRES=relay" if bin_dir else "no PostgreSQL server binaries here"
        return RelayedPostgres(os.environ.get("DATABASE_URL") or run.DEFAULT_DATABASE, why)
    database = OwnPostgres(bin_dir)
    try:
        database.create()
        database.start()
    except BaseException:
        database.close()
        raise
    return database


# --- visitors and their load ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request a visitor sent and what came of it (``outcome``: one of the above)."""

    visitor: str
    kind: str
    started: float
    ended: float
    status: int | None
    served_by: str | None
    outcome: str
    title: str | None = None
    """The post's title, for a create-post call."""


@dataclass(frozen=True)
class Form:
    action: str
    hidden: dict[str, str]


_FORM = re.compile(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def find_form(page: str, field_id: str) -> Form | None:
    """The action form of ``page`` with the field ``id="field_id"`` (``new-title``: the
    compose form; ``edit-title``; ``login-email``; ``signup-email``)."""
    for match in _FORM.finditer(page):
        if f'id="{field_id}"' in match.group(2):
            hidden = {name: html.unescape(value) for name, value in _HIDDEN.findall(match.group(2))}
            return Form(html.unescape(match.group(1)), hidden)
    return None


def outcome(kind: str, reply: httpx.Response | None) -> str:
    if reply is None:
        return NO_ANSWER
    status = reply.status_code
    if status >= 500:
        if "x-served-by" not in reply.headers:
            return PROXY_5XX
        return UNAVAILABLE_503 if status == 503 and generic(kind, reply) else WORKER_5XX
    if kind == "board":
        if status == 303 and reply.headers.get("location", "").startswith("/login"):
            return SIGNED_OUT
        return OK if status == 200 and 'id="compose"' in reply.text else REFUSED
    if kind == "login page" and status == 303:
        return OK  # signed in already (on another worker, say): the board
    if kind in PAGES:
        return OK if status == 200 else REFUSED
    body = _json(reply)
    if status == 403 and body.get("error", {}).get("code") == "no_session":
        return SIGNED_OUT
    return OK if status == 200 and body.get("ok") is True else REFUSED


def generic(kind: str, reply: httpx.Response) -> bool:
    """Whether a 503 is exactly the generic one: a page's plain text, a call's envelope
    with nothing else but the digest its log line has."""
    content_type = reply.headers.get("content-type")
    if kind in PAGES:
        return content_type == "text/plain; charset=utf-8" and reply.text == UNAVAILABLE
    body = _json(reply)
    digest = (
        body.get("error", {}).pop("digest", None) if isinstance(body.get("error"), dict) else None
    )
    digest_ok = digest is None or (isinstance(digest, str) and DIGEST.fullmatch(digest))
    return content_type == "application/json" and body == ENVELOPE and bool(digest_ok)


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def body_of(title: str) -> str:
    """What a post says: checked against the row, so that a half-written post shows."""
    return f"The whole of “{title}”, written once."


class Journal:
    """Every request of the run, appended to from the visitors' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Request] = []

    def add(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)

    def since(self, moment: float) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if r.started >= moment]


class Visitor:
    """A person with a browser: one cookie jar, over https through the proxy, trusting the
    cluster's certificate only; pages asked for as HTML, actions called as its script
    calls them (JSON, the page's token in ``X-CSRF-Token``)."""

    def __init__(self, name: str, base: str, certificate: str, journal: Journal) -> None:
        self.name = name
        self.email = f"{name}@faults.example"
        self.base = base
        self.journal = journal
        self.client = httpx.Client(
            base_url=base,
            verify=ssl.create_default_context(cafile=certificate),
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
        )
        self.signed_in = False
        self.sign_ins = 0
        self.compose: Form | None = None
        self.posts = 0
        self.next_post = 0.0
        self.resume_at = 0.0
        """After a 429, when its Retry-After is over (10 s at most), as a browser's user
        would wait."""

    def close(self) -> None:
        self.client.close()

    def _send(
        self, kind: str, send: Callable[[], httpx.Response], title: str | None
    ) -> tuple[httpx.Response | None, str]:
        started = time.monotonic()
        try:
            reply: httpx.Response | None = send()
        except httpx.TransportError:
            reply = None
        result = outcome(kind, reply)
        self.journal.add(
            Request(
                self.name,
                kind,
                started,
                time.monotonic(),
                None if reply is None else reply.status_code,
                None if reply is None else reply.headers.get("x-served-by"),
                result,
                title,
            )
        )
        if result == SIGNED_OUT:
            self.signed_in, self.compose = False, None
        if reply is not None and reply.status_code == 429:
            wait = reply.headers.get("retry-after", "1")
            self.resume_at = time.monotonic() + min(float(wait) if wait.isdigit() else 1.0, 10.0)
        return reply, result

    def page(self, kind: str, path: str) -> tuple[httpx.Response | None, str]:
        headers = {"Accept": "text/html", "Sec-Fetch-Site": "same-origin"}
        headers |= {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        return self._send(kind, lambda: self.client.get(path, headers=headers), None)

    def call(
        self, kind: str, form: Form, body: dict[str, str], title: str | None = None
    ) -> tuple[httpx.Response | None, str]:
        headers = {"Accept": "application/json", "Origin": self.base}
        headers["X-CSRF-Token"] = form.hidden["_csrf"]
        send = lambda: self.client.post(form.action, json=body, headers=headers)  # noqa: E731
        return self._send(kind, send, title)

    def sign_up(self) -> None:
        reply, _ = self.page("signup page", "/signup")
        form = find_form(reply.text, "signup-email") if reply is not None else None
        if form is None:
            raise run.Failed(f"{self.name}: no sign-up form")
        body = {"name": self.name, "email": self.email, "password": PASSWORD}
        reply, result = self.call("sign-up", form, body)
        if result != OK:
            raise run.Failed(f"{self.name}: sign-up answered {reply and reply.text}")

    def sign_in(self) -> bool:
        reply, result = self.page("login page", "/login")
        if reply is not None and reply.status_code == 303:
            self.signed_in = True
            return True
        form = find_form(reply.text, "login-email") if result == OK and reply else None
        if form is not None:
            _, result = self.call("sign-in", form, {"email": self.email, "password": PASSWORD})
            self.signed_in = result == OK
            self.sign_ins += self.signed_in
        return self.signed_in

    def step(self) -> None:
        """What a visitor does next: sign in if it must, else load the board and, now and
        then, publish a post with the board's form."""
        if time.monotonic() < self.resume_at:
            return
        if not self.signed_in:
            self.sign_in()
            return
        reply, result = self.page("board", "/")
        if result == OK and reply is not None:
            self.compose = find_form(reply.text, "new-title")
        if self.compose is not None and time.monotonic() >= self.next_post:
            self.next_post = time.monotonic() + WRITE_EVERY
            self.posts += 1
            title = f"load: {self.name} #{self.posts}"
            self.call("create-post", self.compose, {"title": title, "body": body_of(title)}, title)


class Load:
    """The visitors, each in a thread of its own, until ``stop`` or ``MAX_REQUESTS``."""

    def __init__(self, visitors: list[Visitor], journal: Journal) -> None:
        self.visitors = visitors
        self.journal = journal
        self._stop = threading.Event()
        self._failed: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(v,)) for v in visitors]

    def start(self) -> None:
        # Their posts spread evenly over WRITE_EVERY, so that every window has some.
        now = time.monotonic()
        for n, visitor in enumerate(self.visitors):
            visitor.next_post = now + n * WRITE_EVERY / len(self.visitors)
        for thread in self._threads:
            thread.start()

    def _run(self, visitor: Visitor) -> None:
        try:
            while not self._stop.is_set() and len(self.journal) < MAX_REQUESTS:
                visitor.step()
                self._stop.wait(THINK)
        except BaseException as failure:  # re-raised by stop(), in the harness's thread
            self._failed.append(failure)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._failed:
            raise self._failed[0]

    @property
    def running(self) -> bool:
        return not self._stop.is_set() and all(t.is_alive() for t in self._threads)


# --- one fault's window -----------------------------------------------------------------------


@dataclass
class Window:
    """A fault, from the moment it started until every visitor was served again."""

    fault: str
    started: float
    over: float
    """When the fault was undone (the worker killed: at once; Redis or PostgreSQL started
    again; the last worker started with its new key): recovery counts from here."""
    ended: float
    requests: list[Request]
    recovered: bool
    refusals: bool = False
    """Whether generic 503s are the right answer meanwhile (Redis or PostgreSQL is down)."""
    held: bool = True
    """``False`` for a demonstration: its checks show what breaks, and fail nothing."""
    lost: int = 0
    """create-post calls answered 200 whose post PostgreSQL does not hold."""
    doubled: int = 0
    """Titles PostgreSQL holds more than once."""
    half: int = 0
    """Posts whose body is not the one sent."""
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def count(self, *outcomes: str) -> int:
        return sum(r.outcome in outcomes for r in self.requests)

    @property
    def recovery(self) -> float:
        """Seconds from ``over`` until the end of the last request that did not succeed."""
        return max([0.0, *(r.ended - self.over for r in self.requests if r.outcome != OK)])

    @property
    def slowest_refusal(self) -> float:
        refused = [r for r in self.requests if r.outcome not in (OK, SIGNED_OUT)]
        return max([0.0, *(r.ended - r.started for r in refused)])


class InService:
    """Which workers the proxy sends requests to: those that answered a visitor
    (``X-Served-By``) since they were last started."""

    def __init__(self, journal: Journal, workers: list[str]) -> None:
        self.journal = journal
        self.since = dict.fromkeys(workers, time.monotonic())

    def restarted(self, name: str) -> None:
        self.since[name] = time.monotonic()

    def serving(self) -> set[str]:
        return {
            r.served_by
            for r in self.journal.since(min(self.since.values()))
            if r.outcome == OK
            and r.served_by in self.since
            and r.started >= self.since[r.served_by]
        }


class Harness:
    """The database, the cluster on it, the visitors and their load; a method per fault,
    each returning its ``Window``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.journal = Journal()
        self.key = generate_secret_key()
        self.database: OwnPostgres | RelayedPostgres | None = None
        self.cluster: Any = None
        self.visitors: list[Visitor] = []
        self.keeper: Visitor | None = None
        self.load: Load | None = None
        self.pids: set[int] = set()

    def start(self) -> None:
        self.database = own_database()
        self.directory.mkdir(parents=True, exist_ok=True)
        options = run.Options(
            workers=WORKERS,
            proxy="nginx",
            port=run.free_port(),
            directory=self.directory,
            store=None,
            database=self.database.url,
            secret_key=self.key,
        )
        self.cluster = run.Cluster(self.directory)
        state = run.start(self.cluster, options)
        base, certificate = state["url"].rstrip("/"), state["certificate"]
        names = [f"visitor-{n}" for n in range(1, VISITORS + 1)]
        self.visitors = [Visitor(name, base, certificate, self.journal) for name in names]
        # The keeper renders a form before the key rotation and sends it after; it takes
        # no part in the load.
        self.keeper = Visitor("keeper", base, certificate, Journal())
        for visitor in [*self.visitors, self.keeper]:
            visitor.sign_up()
            if not visitor.sign_in():
                raise run.Failed(f"{visitor.name} could not sign in")
        self.load = Load(self.visitors, self.journal)
        self.load.start()
        self.note_pids()

    def note_pids(self) -> None:
        self.pids |= {child.pid for child in self.cluster.children}
        process = getattr(self.database, "process", None)
        if process is not None:
            self.pids.add(process.pid)

    def stop(self) -> None:
        if self.load is not None:
            with contextlib.suppress(Exception):  # a visitor's failure: raised already
                self.load.stop()
        for visitor in [*self.visitors, *([self.keeper] if self.keeper else [])]:
            visitor.close()
        if self.cluster is not None:
            self.cluster.stop()
        if self.database is not None:
            self.database.close()

    def workers(self) -> list[Any]:
        return [self.cluster.child(f"worker-{n}") for n in range(1, WORKERS + 1)]

    def window(self, fault: str, do: Callable[[], float], *, refusals: bool = False) -> Window:
        """``do`` the fault under load (it returns when the fault was undone); the window
        ends when every visitor has had ``STABLE`` successes since the last failure, and
        lasts ``MIN_WINDOW`` at least."""
        self._all_served()
        started = time.monotonic()
        over = do()
        while True:
            now = time.monotonic()
            requests = self.journal.since(started)
            calm = max([over, *(r.ended for r in requests if r.outcome != OK)])
            streaks = Counter(r.visitor for r in requests if r.started >= calm)
            recovered = all(streaks[v.name] >= STABLE for v in self.visitors)
            assert self.load is not None  # noqa: S101 - started first
            if (recovered and now >= started + MIN_WINDOW) or (
                now > over + RECOVERY_TIMEOUT or not self.load.running
            ):
                return Window(fault, started, over, now, requests, recovered, refusals)
            time.sleep(0.1)

    def _all_served(self) -> None:
        """Before a fault: every visitor served, signed in."""
        moment = time.monotonic()

        def served() -> bool:
            ok = {r.visitor for r in self.journal.since(moment) if r.outcome == OK}
            return ok >= {v.name for v in self.visitors}

        if not _until(served, RECOVERY_TIMEOUT):
            raise run.Failed("the load is not served before the fault")

    # --- the faults

    def kill_a_worker(self) -> Window:
        victim = self.cluster.child(f"worker-{WORKERS}")

        def kill() -> float:
            self.cluster.stop_child(victim, kill=True)
            return time.monotonic()

        window = self.window(f"{victim.name} killed (SIGKILL)", kill)
        served = {r.served_by for r in window.requests if r.started > window.over}
        window.checks["the killed worker answers nothing after"] = victim.name not in served
        window.notes.append("the proxy passes over it")
        # Started again, after the window, for the faults that follow.
        again = self.cluster.restart(victim)
        self.cluster.wait_until([again], lambda c: run.answers(c.port))
        return window

    def restart_redis(self) -> Window:
        redis = self.cluster.child("redis-server")
        before = [w.pid for w in self.workers()]
        sign_ins = sum(v.sign_ins for v in self.visitors)

        def down_and_up() -> float:
            self.cluster.stop_child(redis)  # SIGTERM, by its PID
            time.sleep(DOWN_FOR)
            again = self.cluster.restart(redis)  # the same command line: the same port
            over = time.monotonic()
            self.cluster.wait_until([again], lambda c: run.redis_answers(c.port))
            return over

        window = self.window("Redis stopped, started again", down_and_up, refusals=True)
        self._no_restart(window, before)
        again = sum(v.sign_ins for v in self.visitors) - sign_ins
        window.notes.append(f"it keeps no sessions: {again} visitors had to sign in again")
        return window

    def restart_postgres(self) -> Window:
        database = self.database
        assert database is not None  # noqa: S101 - started first
        before = [w.pid for w in self.workers()]

        def down_and_up() -> float:
            database.stop()
            time.sleep(DOWN_FOR)
            return database.start()

        window = self.window("PostgreSQL stopped, started again", down_and_up, refusals=True)
        self._no_restart(window, before)
        window.notes.append(database.how)
        return window

    def _no_restart(self, window: Window, before: list[int]) -> None:
        workers = self.workers()
        same = [w.pid for w in workers] == before and not any(w.exited() for w in workers)
        window.checks["served again without restarting a worker"] = same
        within = window.slowest_refusal < REFUSED_WITHIN
        window.checks[f"each refusal within {REFUSED_WITHIN:.0f} s"] = within
        window.notes.append(f"slowest refusal {window.slowest_refusal * 1000:.0f} ms")

    def rotate(self) -> Window:
        """A new key, one worker at a time, in two passes: every worker learns the new key
        as a fallback (``BASTION_SECRET_KEY=old``, ``…_FALLBACKS=new``), then every worker
        makes with it (``new``, fallback ``old``). In one pass, a worker making with the
        new key beside one that does not know it yet hands out what that one cannot read
        (``rotate_in_one_pass``)."""
        old, new = self.key, generate_secret_key()
        window = self._rotation("secret key rotated, two passes", [(old, new), (new, old)])
        self.key = new
        return window

    def rotate_in_one_pass(self) -> Window:
        """The rotation as docs/deployment.md words it, rolled out one worker at a time:
        ``new`` with fallback ``old`` for each; worker-1 serves with it ``MIXED_FOR`` before
        the others follow. A demonstration, not a property."""
        old, new = self.key, generate_secret_key()
        window = self._rotation("secret key rotated, one pass", [(new, old)], mixed=True)
        self.key = new
        window.held = False
        return window

    def _rotation(self, fault: str, passes: list[tuple[str, str]], mixed: bool = False) -> Window:
        keeper = self.keeper
        assert keeper is not None  # noqa: S101 - started first
        form = self._form_before_rotation(keeper)

        def rotate() -> float:
            back = InService(self.journal, [w.name for w in self.workers()])
            for key, fallback in passes:
                for worker in self.workers():
                    # nginx leaves out a worker that refused a connection for fail_timeout
                    # (10 s): restarted faster than that, every worker would be out at once
                    # ("no live upstreams": a 502 for every request). So a worker restarts
                    # only while another one serves.
                    if not _until(lambda name=worker.name: back.serving() - {name}, 30.0):
                        raise run.Failed(f"no worker serves but {worker.name}")
                    env = {"BASTION_SECRET_KEY": key, "BASTION_SECRET_KEY_FALLBACKS": fallback}
                    again = self.cluster.restart(worker, env=env)
                    over = time.monotonic()
                    self.cluster.wait_until([again], lambda c: run.answers(c.port))
                    back.restarted(worker.name)
                    if mixed and worker.name == "worker-1":
                        _until(lambda: "worker-1" in back.serving(), 30.0)
                        time.sleep(MIXED_FOR)
            return over

        window = self.window(fault, rotate)
        body = {"title": "Kept", "body": "Rendered before.", "_bound": form.hidden["_bound"]}
        _, result = keeper.call("edit-post", form, body)
        window.checks["a form rendered before the rotation succeeds after it"] = result == OK
        window.checks["nobody signed out"] = window.count(SIGNED_OUT) == 0 and result != SIGNED_OUT
        restarts = len(passes) * WORKERS
        window.notes.append(f"{restarts} restarts; the edit form rendered before: {result}")
        return window

    def _form_before_rotation(self, keeper: Visitor) -> Form:
        """The edit form of a post of the keeper's own, rendered under the current key:
        its token, its action ID and its sealed ``_bound``."""
        reply, result = keeper.page("board", "/")
        if result == SIGNED_OUT:  # by Redis's restart, which forgot every session
            keeper.sign_in()
            reply, result = keeper.page("board", "/")
        compose = find_form(reply.text, "new-title") if reply is not None else None
        if compose is None:
            raise run.Failed(f"the keeper has no board ({result})")
        body = {"title": "The keeper's post", "body": "Before."}
        reply, result = keeper.call("create-post", compose, body)
        if reply is None or result != OK:
            raise run.Failed(f"the keeper could not post ({result})")
        post = reply.json()["data"]["id"]
        reply, result = keeper.page("edit page", f"/posts/{post}/edit")
        form = find_form(reply.text, "edit-title") if reply is not None else None
        if form is None or "_bound" not in form.hidden:
            raise run.Failed(f"the keeper has no edit form ({result})")
        return form

    # --- what PostgreSQL holds

    def count_writes(self, windows: list[Window]) -> None:
        """Each window's create-post calls against PostgreSQL's rows: lost (answered 200,
        not there), doubled (there twice), half-written (another body), and written
        although not answered 200 (a reply lost on the way)."""
        assert self.database is not None  # noqa: S101 - started first
        rows = self.database.rows(
            "SELECT title, body, count(*) FROM posts WHERE title LIKE 'load: %%' "
            "GROUP BY title, body"
        )
        held: Counter[str] = Counter()
        wrong: set[str] = set()
        for title, body, count in rows:
            held[title] += count
            if body != body_of(title):
                wrong.add(title)
        for window in windows:
            creates = [r for r in window.requests if r.kind == "create-post" and r.title]
            answered = [r.title for r in creates if r.outcome == OK]
            window.lost = sum(held[t] == 0 for t in answered)
            window.doubled = sum(held[r.title] > 1 for r in creates)
            window.half = sum(r.title in wrong for r in creates)
            unsure = sum(r.outcome != OK and held[r.title] > 0 for r in creates)
            window.notes.append(f"{len(answered)} of {len(creates)} posts answered 200")
            if unsure:
                window.notes.append(f"{unsure} written though not answered 200")


def judge(window: Window) -> None:
    """The checks every fault is held to, besides its own."""
    checks = window.checks
    if window.refusals:
        checks["no 5xx from a living worker but the generic 503"] = window.count(WORKER_5XX) == 0
    else:
        checks["no 5xx from a living worker"] = window.count(WORKER_5XX, UNAVAILABLE_503) == 0
    if not window.fault.endswith("killed (SIGKILL)"):
        # Only a worker killed mid-request leaves the proxy with nothing to answer.
        checks["no 502 from the proxy"] = window.count(PROXY_5XX) == 0
    checks["every request answered"] = window.count(NO_ANSWER) == 0
    checks["no other 4xx"] = window.count(REFUSED) == 0
    checks["no lost write"] = window.lost == 0
    checks["no doubled write"] = window.doubled == 0
    checks["no half-written post"] = window.half == 0
    checks[f"served again within {RECOVERY_TIMEOUT:.0f} s"] = window.recovered


@contextmanager
def harness(directory: Path) -> Iterator[Harness]:
    """A started harness, stopped (every process by its PID) however the block ends."""
    running = Harness(directory)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@dataclass
class Measured:
    windows: list[Window]
    pids: set[int]
    """Every process the harness started (and had running at the end of a fault)."""


def measure(directory: Path, *, one_pass: bool = False) -> Measured:
    """Every fault, one after another on one cluster, each window judged."""
    with harness(directory) as running:
        faults = [running.kill_a_worker, running.restart_redis, running.restart_postgres]
        faults += [running.rotate, *([running.rotate_in_one_pass] if one_pass else [])]
        windows = []
        for fault in faults:
            windows.append(fault())
            running.note_pids()
        assert running.load is not None  # noqa: S101 - started
        running.load.stop()
        running.count_writes(windows)
    for window in windows:
        judge(window)
    return Measured(windows, running.pids)


# --- the table --------------------------------------------------------------------------------


HEADER: Final = (
    "| fault | requests during it | 5xx from living workers | proxy 502s | 503s "
    "| lost / doubled writes | recovery | notes |\n|---|---|---|---|---|---|---|---|"
)


def table(windows: list[Window]) -> str:
    rows = [HEADER]
    for w in windows:
        recovery = f"{w.recovery:.2f} s" if w.recovered else f"none in {RECOVERY_TIMEOUT:.0f} s"
        notes = [f"window {w.ended - w.started:.1f} s", *w.notes]
        pages = sum(r.outcome == UNAVAILABLE_503 and r.kind in PAGES for r in w.requests)
        if w.count(UNAVAILABLE_503):
            calls = w.count(UNAVAILABLE_503) - pages
            notes.append(f"503s: {pages} pages (plain text), {calls} calls (the envelope)")
        if w.count(SIGNED_OUT):
            notes.append(f"{w.count(SIGNED_OUT)} answers signed out")
        refused = Counter(r.status for r in w.requests if r.outcome == REFUSED)
        if refused:
            shown = ", ".join(f"{n} {status}" for status, n in sorted(refused.items()))
            notes.append(f"other 4xx: {shown}")
        rows.append(
            f"| {w.fault} | {len(w.requests)} | {w.count(WORKER_5XX)} | {w.count(PROXY_5XX)} "
            f"| {w.count(UNAVAILABLE_503)} | {w.lost} / {w.doubled} | {recovery} "
            f"| {'; '.join(notes)} |"
        )
    rows.append("| Redis Cluster master failover | not measured here | | | | | | |")
    return "\n".join(rows)


def failures(windows: list[Window]) -> list[str]:
    return [
        f"{w.fault}: {what}" for w in windows if w.held for what, ok in w.checks.items() if not ok
    ]


def main(argv: list[str]) -> int:
    one_pass = "--one-pass" in argv
    kept = os.environ.get("CLUSTER_DIR")
    with tempfile.TemporaryDirectory(prefix="faults-") as directory:
        print("PostgreSQL, Redis, 3 workers and nginx, then the load…", flush=True)
        try:
            windows = measure(Path(kept or directory) / "cluster", one_pass=one_pass).windows
        except run.Failed as failure:
            print(f"faults: {failure}", file=sys.stderr)
            return 1
    print(table(windows), end="\n\n")
    for w in windows:
        for what, ok in w.checks.items():
            mark = ("ok  " if ok else "FAIL") if w.held else ("    " if ok else "BREAKS")
            print(f"{mark} {w.fault}: {what}")
    failed = failures(windows)
    print(f"\n{len(failed)} checks failed" if failed else "\nevery check holds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
