"""``python -m bench`` (``make bench``): verify, then measure, the servers; then the flood
check and the in-process figures; then one table and the targets.

Each server runs under uvicorn (uvloop, httptools, one worker, no access log) pinned to
one core; wrk runs pinned to the other. Before any number is taken, each server must
answer the scripted request with 200 and the expected JSON, and the guarded ones must
refuse it without its token, cookie or origin: a server that answers 403 fast, or one
that checks nothing, would fake the numbers. After each run, wrk must report no error
of any kind, and the guarded servers must have stored as many posts as wrk counted.
Each run has a server process of its own (started, checked, warmed up, measured).

Two rows measure the price of a hostile call on the bastion memory-store server: the
same POST with the session's cookie and the page's Origin but a forged CSRF token of the
right shape (JSON, token in X-CSRF-Token; and a small urlencoded form, token in _csrf,
``Accept: application/json``). Before and after each run one such call must be answered
403 ``csrf_failed`` without the handler running, during it every reply must be that
(refused.lua counts the others: any is REFUSED), and no post may have been stored. The
bastion servers take ``BENCH_REFUSAL_RATE`` (bench.bastion_app: out of reach by default,
so that the cost of counting refusals is measured, not a 429).

The flood check: a fresh bastion server with the library's default refusal rate
(``BENCH_REFUSAL_RATE=``), sent 1,000 forged-token JSON calls one after another from one
address: after how many calls the first 429 ``rate_limited`` came (a target, not a
condition: any reply but 403 ``csrf_failed`` or 429 ``rate_limited`` is REFUSED).

On the Redis store, ``INFO commandstats`` (a read; nothing is reset) just before and just
after the measured run give the Redis commands per call (the warm-up in neither), ÷ the
calls served between the readings: wrk's requests, and the few still in flight when it
stopped, which the server finishes (its handler's count tells). The Redis may be shared:
other clients active during the run are flagged.

Settings, from the environment: BENCH_SECONDS (10) per run, BENCH_RUNS (3),
BENCH_WARMUP (3 s before each run, not counted), BENCH_CONNECTIONS (64), BENCH_THREADS (wrk's, 1),
BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1), BENCH_PORT (8701, and the next ones: one per
server), BENCH_ONLY (comma-separated names among floor, bastion, refused-json,
refused-form, bastion-sqlite, bastion-redis, fastapi, flood, inprocess), BENCH_OUTPUT (also
write the report to this file), BENCH_JSON (write the figures as JSON to this file),
BENCH_REFUSAL_RATE (bench.bastion_app), BENCH_QUIET_WAIT (60: seconds to wait, before each run,
for the machine to be quiet), BENCH_ATTEMPTS (3: tries of a run that other processes
disturbed), BENCH_NICE (the server's, wrk's and the in-process run's niceness, and their
sessions' autogroup niceness: -10 as root, else 0), and BENCH_INPROC_* / BENCH_RSS_CALLS
(bench.inprocess).

The machine may be shared: before each run the bench waits for it to be quiet (under
10 % busy), and during each run it adds up the CPU time of every process but its own
(the server and wrk), and the share of its core the server had. A run where the server
had less than 95 % of its core is taken again, up to BENCH_ATTEMPTS times; both figures
are reported with the numbers, flagged when the last try was still disturbed: numbers
taken beside someone else's test suite are not the machine's.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import inprocess
from .common import (
    BODY,
    FORM_TYPE,
    ORIGIN,
    PAYLOAD,
    REFUSED_CODE,
    REFUSED_STATUS,
    expected_post,
    forge,
    form_body,
    rate_limited,
    refused,
)

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "post.lua"
REFUSED_LUA = Path(__file__).resolve().parent / "refused.lua"
COMMAND = "make bench"

STORE_GOALS = {"bastion-sqlite": 0.45, "bastion-redis": 0.35}
"""req/s ÷ floor on the stores people deploy (the memory store's goal is floor_ratio)."""

TARGETS = {
    "floor_ratio": 0.5,
    "fastapi_ratio": 3.0,
    "pipeline_us": 30.0,
    "rss_mib": 5.0,
    "refused_ratio": 0.7,
}
"""Issue 16's goals: bastion ÷ floor on memory, ÷ the FastAPI stack, the in-process
pipeline cost and RSS growth, and each refused row ÷ floor. The flood must meet a 429
before its end; the Redis commands per call are reported (goal: one round trip)."""

FLOOD_CALLS = 1_000
"""Forged-token calls the flood check sends, one after another, from one address."""


class Refused(Exception):
    """The setup is wrong: no number is reported."""


@dataclass(frozen=True)
class Settings:
    seconds: int
    runs: int
    warmup: int
    connections: int
    threads: int
    server_cpu: str
    client_cpu: str
    port: int
    only: tuple[str, ...]
    output: str | None
    json: str | None
    quiet_wait: int
    attempts: int
    nice: int

    def pinned(self, cpu: str) -> list[str]:
        """The prefix that runs a command on ``cpu``, at the bench's priority."""
        nice = ["nice", "-n", str(self.nice)] if self.nice else []
        return [*nice, "taskset", "-c", cpu]

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a pinned command in a session of its own, at the bench's priority.

        With autogroup scheduling (Linux's default), niceness only counts within one
        session: the new session's own group gets the same niceness, so that the bench
        keeps its cores beside other sessions' work (root only; else as it comes)."""
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)  # noqa: S603
        if self.nice:
            with suppress(OSError):
                Path(f"/proc/{proc.pid}/autogroup").write_text(str(self.nice))
        return proc

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        only = tuple(n.strip() for n in env("BENCH_ONLY", "").split(",") if n.strip())
        return cls(
            seconds=int(env("BENCH_SECONDS", "10")),
            runs=int(env("BENCH_RUNS", "3")),
            warmup=int(env("BENCH_WARMUP", "3")),
            connections=int(env("BENCH_CONNECTIONS", "64")),
            threads=int(env("BENCH_THREADS", "1")),
            server_cpu=env("BENCH_SERVER_CPU", "0"),
            client_cpu=env("BENCH_CLIENT_CPU", "1"),
            port=int(env("BENCH_PORT", "8701")),
            only=only,
            output=env("BENCH_OUTPUT") or None,
            json=env("BENCH_JSON") or None,
            quiet_wait=int(env("BENCH_QUIET_WAIT", "60")),
            attempts=int(env("BENCH_ATTEMPTS", "3")),
            nice=int(env("BENCH_NICE", "-10" if os.geteuid() == 0 else "0")),
        )


# --- the three servers -----------------------------------------------------------------


def _floor_reply(reply: Any) -> bool:
    return reply == {"ok": True, "data": {"id": 1, "title": PAYLOAD["title"]}}


def _bastion_reply(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("ok") is True and expected_post(reply.get("data"))


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    module: str
    guarded: bool
    """Signs in first (``GET /bench/login``), refuses calls without its credentials,
    and counts what it stored (``GET /bench/stats``)."""
    expected: Callable[[Any], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    """Set for the server: which store bastion keeps its state in."""
    hostile: str | None = None
    """``json`` or ``form``: the row measures a forged-token call (403 ``csrf_failed``
    expected for every reply, no post stored) instead of the valid one."""

    @property
    def redis(self) -> bool:
        return self.env.get("BENCH_STORE") == "redis"


SERVERS = (
    Target("floor", "floor (bare Starlette)", "bench.floor_app", False, _floor_reply),
    Target("bastion", "bastion (full pipeline)", "bench.bastion_app", True, _bastion_reply),
    Target(
        "refused-json",
        "refused: bad CSRF token (JSON)",
        "bench.bastion_app",
        True,
        _bastion_reply,
        hostile="json",
    ),
    Target(
        "refused-form",
        "refused: bad CSRF token (form)",
        "bench.bastion_app",
        True,
        _bastion_reply,
        hostile="form",
    ),
    Target(
        "bastion-sqlite",
        "bastion, SQLite store (the default)",
        "bench.bastion_app",
        True,
        _bastion_reply,
        {"BENCH_STORE": "sqlite"},
    ),
    Target(
        "bastion-redis",
        "bastion, Redis store and limits (REDIS_URL)",
        "bench.bastion_app",
        True,
        _bastion_reply,
        {"BENCH_STORE": "redis"},
    ),
    Target(
        "fastapi",
        "FastAPI + csrf-protect + slowapi + sessions",
        "bench.fastapi_app",
        True,
        expected_post,
    ),
)


@dataclass
class Credentials:
    path: str = "/posts"
    cookie: str | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Origin": ORIGIN,
        }
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.token:
            headers["X-CSRF-Token"] = self.token
        return headers


FLOOD = Target(
    "flood",
    "flood: the library's default refusal rate",
    "bench.bastion_app",
    True,
    _bastion_reply,
    {"BENCH_REFUSAL_RATE": ""},
)
"""The flood check's server: the memory store, ``refusal_rate`` not passed."""


@dataclass(frozen=True)
class Hostile:
    """A forged-token call: the session's cookie and the page's Origin, a token of the
    right shape that is not the session's, in the header (JSON) or the form's _csrf."""

    body: bytes
    content_type: str
    token: str | None
    """For X-CSRF-Token; ``None`` for a form (its token is in the body)."""

    @classmethod
    def of(cls, kind: str, creds: Credentials) -> Hostile:
        if not creds.token:
            raise Refused("no CSRF token to forge from: the bench login gave none")
        forged = forge(creds.token)
        if kind == "form":
            return cls(form_body(forged), FORM_TYPE, None)
        return cls(BODY, "application/json", forged)

    def headers(self, creds: Credentials) -> dict[str, str]:
        headers = {
            "Content-Type": self.content_type,
            "Accept": "application/json",
            "Origin": ORIGIN,
        }
        if creds.cookie:
            headers["Cookie"] = creds.cookie
        if self.token:
            headers["X-CSRF-Token"] = self.token
        return headers


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    others: float = 0.0
    """CPU used by other processes during the run, in cores (0.05: 5 % of one core)."""
    share: float = 1.0
    """The share of its core the server had during the run (1.0: all of it)."""
    refusal_rate: str | None = None
    """What the bastion server made of BENCH_REFUSAL_RATE (its /bench/stats)."""
    redis: dict[str, int] | None = None
    """Redis commands during the measured run, by name (INFO commandstats' calls=)."""
    redis_others: int = 0
    """Other clients of the Redis that were active during the run."""
    redis_trips: int | None = None
    """Requests Redis read during the run (``total_reads_processed``): round trips."""
    redis_calls: int = 0
    """The calls those commands served: wrk's requests, and those still in flight when
    wrk stopped, which the server finished (its handler's count between the readings)."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Result:
    target: Target
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def others(self) -> float:
        return max((r.others for r in self.runs), default=0.0)

    @property
    def share(self) -> float:
        return min((r.share for r in self.runs), default=1.0)

    @property
    def redis_per_call(self) -> dict[str, float] | None:
        """Redis commands per request over the runs read, by name, most first."""
        read = [r for r in self.runs if r.redis is not None]
        if not read:
            return None
        requests = sum(r.redis_calls or r.requests for r in read)
        totals: dict[str, int] = {}
        for run in read:
            for name, n in (run.redis or {}).items():
                totals[name] = totals.get(name, 0) + n
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return {name: n / requests for name, n in ranked}

    @property
    def redis_others(self) -> int:
        return max((r.redis_others for r in self.runs), default=0)

    @property
    def redis_trips_per_call(self) -> float | None:
        """Round trips to Redis per request over the runs read."""
        read = [r for r in self.runs if r.redis_trips is not None]
        if not read:
            return None
        return sum(r.redis_trips or 0 for r in read) / sum(
            r.redis_calls or r.requests for r in read
        )


@dataclass
class Flood:
    calls: int
    first_429: int | None
    """The number of the first call answered 429 ``rate_limited`` (1 is the first)."""
    limited: int
    """Calls answered 429."""
    after: int
    """The status a valid call from the same address got after the flood."""
    refusal_rate: str | None


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.msg, reply.read()
    finally:
        conn.close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@contextmanager
def _server(target: Target, port: int, settings: Settings) -> Iterator[subprocess.Popen[Any]]:
    """The target under uvicorn, pinned to the server core, until the block ends."""
    command = [
        *settings.pinned(settings.server_cpu),
        sys.executable, "-m", "uvicorn", f"{target.module}:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--workers", "1",
        "--no-access-log", "--log-level", "warning", "--no-proxy-headers",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        env = {**os.environ, **target.env}
        proc = settings.start(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise Refused(f"{target.key} server exited:\n{log.read().decode()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise Refused(f"{target.key} server did not listen on {port}") from None
                    time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _sign_in(target: Target, port: int) -> Credentials:
    if not target.guarded:
        return Credentials()
    status, msg, body = _request(port, "GET", "/bench/login")
    data = _json(body)
    cookies = [c.split(";", 1)[0].strip() for c in msg.get_all("set-cookie") or []]
    if status != 200 or not isinstance(data, dict) or not cookies:
        raise Refused(f"{target.key}: bench login answered {status}: {body[:200]!r}")
    return Credentials(path=data["url"], cookie="; ".join(cookies), token=data["token"])


def _stats(target: Target, port: int) -> dict[str, Any]:
    status, _, body = _request(port, "GET", "/bench/stats")
    data = _json(body)
    if status != 200 or not isinstance(data, dict):
        raise Refused(f"{target.key}: /bench/stats answered {status}")
    return data


def _created(target: Target, port: int) -> int:
    return int(_stats(target, port)["created"])


def _verify(target: Target, port: int, creds: Credentials) -> None:
    """200 and the expected JSON for the scripted call; refusals without its parts."""
    status, _, body = _request(port, "POST", creds.path, BODY, creds.headers())
    if status != 200 or not target.expected(_json(body)):
        raise Refused(
            f"{target.key}: the scripted call answered {status} {body[:300]!r}, not 200 and "
            "the expected JSON: refusing to report numbers"
        )
    if not target.guarded:
        return
    broken = {
        "a forged CSRF token": Credentials(creds.path, creds.cookie, "A" * 86),
        "no cookie": Credentials(creds.path, None, creds.token),
    }
    for what, bad in broken.items():
        status, _, body = _request(port, "POST", creds.path, BODY, bad.headers())
        if not 400 <= status < 500:
            raise Refused(f"{target.key}: a call with {what} answered {status}, not a refusal")
    headers = {**creds.headers(), "Origin": "https://evil.example"}
    status, _, _ = _request(port, "POST", creds.path, BODY, headers)
    if status != 403:
        raise Refused(f"{target.key}: a call from another origin answered {status}, not 403")


def _verify_refusal(target: Target, port: int, creds: Credentials, hostile: Hostile) -> None:
    """The forged-token call answered exactly 403 ``csrf_failed``, the handler not run."""
    before = _created(target, port)
    status, _, body = _request(port, "POST", creds.path, hostile.body, hostile.headers(creds))
    if not refused(status, _json(body)):
        raise Refused(
            f"{target.key}: the forged-token call answered {status} {body[:300]!r}, not "
            f"{REFUSED_STATUS} {REFUSED_CODE}: refusing to report numbers"
        )
    if _created(target, port) != before:
        raise Refused(f"{target.key}: the handler ran for a forged token")


# --- Redis commands per call ------------------------------------------------------------


def parse_commandstats(text: str) -> dict[str, int]:
    """``INFO commandstats`` as ``{command: calls}`` (``cmdstat_get:calls=3,usec=...``;
    subcommands keep their name, ``client|list``)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("cmdstat_"):
            continue
        name, _, fields = line.removeprefix("cmdstat_").partition(":")
        for item in fields.split(","):
            key, _, value = item.partition("=")
            if key == "calls":
                calls[name] = int(value)
    return calls


def commands_between(
    before: Mapping[str, int], after: Mapping[str, int], own: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The commands run between two readings, less ``own`` (the reader's), none at 0."""
    own = own or {}
    diff = {k: after[k] - before.get(k, 0) - own.get(k, 0) for k in after}
    return {k: v for k, v in diff.items() if v > 0}


def format_per_call(per_call: Mapping[str, float]) -> str:
    """``evalsha 1.00, get 1.00 (total 2.00)``, in the order given (most first)."""
    shown = [f"{name} {v:.2f}" if v >= 0.005 else f"{name} <0.01" for name, v in per_call.items()]
    return f"{', '.join(shown) or 'none'} (total {sum(per_call.values()):.2f})"


class RedisReader:
    """A connection of its own to the Redis at ``url`` (redis://, rediss://, unix://), for
    ``INFO commandstats`` and ``CLIENT LIST``: reads only, nothing reset or flushed."""

    def __init__(self, url: str) -> None:
        import ssl
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(parts.path)
        elif parts.scheme in ("redis", "rediss"):
            sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5)
            if parts.scheme == "rediss":
                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=parts.hostname
                )
        else:
            raise ValueError(f"not a Redis URL: {parts.scheme}://")
        self.sock = sock
        self.file = sock.makefile("rb")
        if parts.password is not None:
            auth = [unquote(parts.password)]
            if parts.username:
                auth.insert(0, unquote(parts.username))
            self.command("AUTH", *auth)
        self.id = int(self.command("CLIENT", "ID"))

    def command(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise OSError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(f"Redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(max(int(rest), 0))]
        raise OSError(f"Redis: an unexpected reply {line[:40]!r}")

    def commandstats(self) -> dict[str, int]:
        return parse_commandstats(self.command("INFO", "commandstats"))

    def stats(self) -> tuple[int, int | None]:
        """From INFO stats: ``total_connections_received`` (connections ever accepted) and
        ``total_reads_processed`` (requests ever read: one per round trip, however many
        commands a pipeline held; ``None`` before Redis 6)."""
        found = dict(
            line.partition(":")[::2] for line in self.command("INFO", "stats").splitlines()
        )
        if "total_connections_received" not in found:
            raise OSError("Redis: no total_connections_received in INFO stats")
        reads = found.get("total_reads_processed")
        return int(found["total_connections_received"]), int(reads) if reads else None

    def clients(self) -> list[dict[str, str]]:
        """``CLIENT LIST``, one dict a connection."""
        text = self.command("CLIENT", "LIST")
        return [
            dict(item.partition("=")[::2] for item in line.split())
            for line in text.splitlines()
            if line.strip()
        ]

    def close(self) -> None:
        with suppress(OSError):
            self.file.close()
            self.sock.close()


def _socket_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (/proc: its fds, the TCP tables)."""
    inodes = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = row.split()
                if len(cols) > 9 and cols[9] in inodes:
                    ports.add(int(cols[1].rpartition(":")[2], 16))
    return ports


class RedisCount:
    """The Redis commands run between ``start()`` and ``stop()``: commandstats read on
    either side, the reader's own commands taken out. Other clients cannot be told
    apart in those counts; to flag the figure, the clients active in between are
    counted: connections open at the end that ran a command since the start, and those
    accepted in between (``total_connections_received``), less the server's own (its
    sockets' ports, from /proc) and the reader's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reader: RedisReader | None = None

    def start(self, server_pid: int) -> None:
        try:
            self.reader = RedisReader(self.url)
            self.own_id = self.reader.id
            self.ports = _socket_ports(server_pid)
            self.connections, self.reads = self.reader.stats()
            self.before = self.reader.commandstats()
        except (OSError, ValueError) as exc:
            _log(f"  WARNING: Redis INFO commandstats could not be read ({exc}): not reported")
            self.close()
            return
        self.started = time.monotonic()

    def stop(self, server_pid: int) -> tuple[dict[str, int], int, int | None] | None:
        """The commands run, by name; the other clients active; the requests Redis read
        (round trips), the reader's own taken out."""
        if self.reader is None:
            return None
        try:
            after = self.reader.commandstats()
            elapsed = time.monotonic() - self.started
            clients = self.reader.clients()
            connections, reads = self.reader.stats()
            connections -= self.connections
        except OSError as exc:
            _log(f"  WARNING: Redis INFO commandstats could not be read ({exc}): not reported")
            return None
        finally:
            self.close()
        # The reader's INFO commandstats of start() is counted once it has run: in this
        # reading (its other commands came before the first reading or after this one).
        diff = commands_between(self.before, after, {"info": 1})
        ports = _socket_ports(server_pid)
        active = 0
        for client in clients:
            port = client.get("addr", "").rpartition(":")[2]
            if client.get("id") == str(self.own_id) or (port.isdigit() and int(port) in ports):
                continue
            if client.get("idle", "").isdigit() and int(client["idle"]) < elapsed:
                active += 1
        # The server's pool may have opened connections of its own during the run.
        arrived = connections - len(ports - self.ports)
        # The reader's own requests after the first INFO stats: INFO commandstats twice,
        # CLIENT LIST, and the last INFO stats (each counted once Redis has read it).
        trips = reads - self.reads - 4 if reads is not None and self.reads is not None else None
        return diff, max(active, arrived), trips

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


# --- other load on the machine ---------------------------------------------------------

MIN_SHARE = 0.95
"""The share of its core below which the measured process was disturbed: the server
under load (it is saturated, so it takes all of its core when nothing else does), or
the in-process run."""
_TICKS = os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _machine_seconds() -> float:
    """User, nice, system and steal CPU seconds of the whole machine (/proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return (values[0] + values[1] + values[2] + values[7]) / _TICKS


class OtherLoad:
    """The CPU used by anything but the bench between ``start()`` and ``stop()``, in cores:
    the machine's user, system and steal time, less this process, its reaped children
    (wrk, the in-process run) and the live processes named (the server). Interrupt time
    (the loopback network) is left out; processes that came and went are counted."""

    def __init__(self, *alive: int) -> None:
        self.alive = alive
        self.reaped = 0.0
        """CPU seconds of the children reaped since ``start()``."""

    def _ours(self) -> tuple[float, float, list[float]]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        alive = [_process_seconds(pid) for pid in self.alive]
        return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime, alive

    def start(self) -> None:
        self.machine, self.ours, self.started = _machine_seconds(), self._ours(), time.monotonic()

    def stop(self) -> float:
        """Call it once the children started since ``start()`` are reaped."""
        self.elapsed = max(time.monotonic() - self.started, 1e-9)
        (own0, kids0, alive0), (own1, kids1, alive1) = self.ours, self._ours()
        self.reaped = kids1 - kids0
        self.alive_seconds = [b - a for a, b in zip(alive0, alive1, strict=True)]
        ours = (own1 - own0) + self.reaped + sum(self.alive_seconds)
        other = (_machine_seconds() - self.machine) - ours
        return max(other, 0.0) / self.elapsed

    def share(self) -> float:
        """The first live process's CPU over the time (or the reaped children's)."""
        used = self.alive_seconds[0] if self.alive else self.reaped
        return min(used / self.elapsed, 1.0)


def _busy() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def _wait_quiet(settings: Settings) -> None:
    """Wait (up to BENCH_QUIET_WAIT s) until the whole machine is under 10 % busy."""
    deadline = time.monotonic() + settings.quiet_wait
    waited = False
    while True:
        busy0, total0 = _busy()
        time.sleep(1)
        busy1, total1 = _busy()
        fraction = (busy1 - busy0) / max(total1 - total0, 1)
        if fraction < 0.10:
            if waited:
                _log("  the machine is quiet again")
            return
        if time.monotonic() > deadline:
            _log(f"  WARNING: the machine is still {fraction:.0%} busy: measuring anyway")
            return
        if not waited:
            _log(f"  the machine is {fraction:.0%} busy (other processes): waiting")
            waited = True


def _wrk(
    port: int,
    creds: Credentials,
    seconds: int,
    settings: Settings,
    load: OtherLoad | None = None,
    hostile: Hostile | None = None,
) -> Run:
    """One wrk run of the scripted call (post.lua), or of a forged-token one (refused.lua:
    every reply must be 403 ``csrf_failed``)."""
    env = {
        **os.environ,
        "BENCH_BODY": BODY.decode(),
        "BENCH_ORIGIN": ORIGIN,
        "BENCH_COOKIE": creds.cookie or "",
        "BENCH_TOKEN": creds.token or "",
    }
    if hostile is not None:
        env.update(
            BENCH_BODY=hostile.body.decode(),
            BENCH_CONTENT_TYPE=hostile.content_type,
            BENCH_TOKEN=hostile.token or "",
            BENCH_EXPECT_STATUS=str(REFUSED_STATUS),
            BENCH_EXPECT_CODE=REFUSED_CODE,
        )
    script = LUA if hostile is None else REFUSED_LUA
    command = [
        *settings.pinned(settings.client_cpu),
        "wrk", "-t", str(settings.threads), "-c", str(settings.connections),
        "-d", f"{seconds}s", "--timeout", "10s", "-s", str(script),
        f"http://127.0.0.1:{port}{creds.path}",
    ]  # fmt: skip
    if load is not None:
        load.start()
    proc = settings.start(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate(timeout=seconds + 60)
    others = load.stop() if load is not None else 0.0
    share = load.share() if load is not None else 1.0
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise Refused(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    # A refusal's 403 is counted by wrk as a status error: there, refused.lua counts
    # the replies that were not the refusal instead.
    kinds = ("connect", "read", "write", "timeout") + (("status",) if hostile is None else ())
    errors = {k: r[k] for k in kinds if r[k]}
    if errors or r["requests"] == 0:
        raise Refused(f"wrk saw errors {errors} in {r['requests']} requests: refusing to report")
    if hostile is not None and r["unexpected"]:
        raise Refused(
            f"{r['unexpected']:,} of wrk's {r['requests']:,} replies were not "
            f"{REFUSED_STATUS} {REFUSED_CODE} (the first: {r['first_unexpected']}): "
            "refusing to report"
        )
    return Run(
        r["requests"],
        r["duration_us"] / 1e6,
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        others,
        share,
    )


def _one_run(target: Target, port: int, settings: Settings) -> Run:
    """One measured run on a fresh server: sign in, check, warm up, measure, check again.

    A fresh process each time, so that no run inherits another's state (bastion's
    moving-window rate limit keeps every call of the last minute)."""
    with _server(target, port, settings) as server:
        creds = _sign_in(target, port)
        _verify(target, port, creds)
        refusal_rate = _stats(target, port).get("refusal_rate") if target.guarded else None
        hostile = Hostile.of(target.hostile, creds) if target.hostile else None
        if hostile is not None:
            _verify_refusal(target, port, creds, hostile)
        if settings.warmup > 0:
            _wrk(port, creds, settings.warmup, settings, hostile=hostile)
        _wait_quiet(settings)
        before = _created(target, port) if target.guarded else 0
        redis = RedisCount(os.environ["REDIS_URL"]) if target.redis else None
        if redis is not None:
            redis.start(server.pid)
        try:
            run = _wrk(port, creds, settings.seconds, settings, OtherLoad(server.pid), hostile)
            if redis is not None:
                # wrk has gone; what its last connections had sent is served first.
                time.sleep(0.5)
                counted = redis.stop(server.pid)
                if counted is not None:
                    run.redis, run.redis_others, run.redis_trips = counted
        finally:
            if redis is not None:
                redis.close()
        run.refusal_rate = refusal_rate
        stored = _created(target, port) - before if target.guarded else 0
        if hostile is not None:
            if stored:
                raise Refused(f"{target.key}: {stored} posts stored from forged-token calls")
            _verify_refusal(target, port, creds, hostile)  # still refused after the load
        elif target.guarded and stored < run.requests:
            raise Refused(f"{target.key}: fewer posts stored than wrk's 200s: refusing")
        if run.redis is not None:
            run.redis_calls = stored if target.guarded and not hostile else run.requests
        _verify(target, port, creds)  # still the same answers after the load
    return run


def _measure(target: Target, port: int, settings: Settings) -> Result:
    result = Result(target)
    for i in range(settings.runs):
        for attempt in range(1, max(settings.attempts, 1) + 1):
            run = _one_run(target, port, settings)
            noisy = run.share < MIN_SHARE
            _log(
                f"  {target.key} run {i + 1}: {run.rps:,.0f} req/s, "
                f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                f"server had {run.share:.0%} of its core, other load {run.others:.0%} of a core"
                + ("  <- disturbed" if noisy else "")
            )
            if not noisy or attempt >= settings.attempts:
                break
            _log(f"  {target.key} run {i + 1}: taken again")
        result.runs.append(run)
    return result


def _flood(port: int, settings: Settings, calls: int = FLOOD_CALLS) -> Flood:
    """A fresh server with the library's default refusal rate, sent ``calls`` forged-token
    JSON calls one after another from this address: when the first 429 came."""
    target = FLOOD
    with _server(target, port, settings):
        creds = _sign_in(target, port)
        status, _, body = _request(port, "POST", creds.path, BODY, creds.headers())
        if status != 200 or not target.expected(_json(body)):
            raise Refused(f"flood: the valid call answered {status} {body[:300]!r}, not 200")
        stats = _stats(target, port)
        before = int(stats["created"])
        hostile = Hostile.of("json", creds)
        first, limited = None, 0
        for i in range(1, calls + 1):
            status, _, body = _request(
                port, "POST", creds.path, hostile.body, hostile.headers(creds)
            )
            reply = _json(body)
            if rate_limited(status, reply):
                limited += 1
                first = first or i
            elif not refused(status, reply):
                raise Refused(
                    f"flood: call {i} answered {status} {body[:300]!r}, neither "
                    f"{REFUSED_STATUS} {REFUSED_CODE} nor 429 rate_limited"
                )
        if _created(target, port) != before:
            raise Refused("flood: the handler ran for a forged token")
        # Informational: whether the address's valid calls are refused too, afterwards.
        after, _, _ = _request(port, "POST", creds.path, BODY, creds.headers())
    return Flood(calls, first, limited, after, stats.get("refusal_rate"))


def _inprocess(settings: Settings) -> dict[str, Any]:
    command = [*settings.pinned(settings.server_cpu), sys.executable, "-m", "bench.inprocess"]
    _wait_quiet(settings)
    load = OtherLoad()
    load.start()
    proc = settings.start(
        [*command, "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate(timeout=1800)
    others = load.stop()
    share = load.share()
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_INPROCESS ")), None)
    if proc.returncode != 0 or line is None:
        raise Refused(f"in-process benchmark failed:\n{stdout}\n{stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_INPROCESS "))
    result["others"], result["share"] = others, share
    _log(
        f"  it had {share:.0%} of its core, other load {others:.0%} of a core"
        + ("  <- disturbed" if share < MIN_SHARE else "")
    )
    return result


# --- the report ------------------------------------------------------------------------


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _revision() -> str:
    """The commit measured (read-only), and whether src/ had changes beside it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {head}" + (" with local changes in src/" if dirty else "")


def machine() -> list[str]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    wrk_version = (wrk.stdout or wrk.stderr).split("[")[0].strip()
    packages = ", ".join(
        f"{p} {_version(p)}"
        for p in (
            "uvicorn", "uvloop", "httptools", "starlette", "pydantic", "limits", "fastapi",
            "fastapi-csrf-protect", "slowapi",
        )
    )  # fmt: skip
    return [
        f"- nproc: {os.cpu_count()}; CPU: {_cpu_model()}; bastion at {_revision()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        f"- {wrk_version}; {packages}",
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _flood_text(flood: Flood) -> str:
    if flood.first_429 is None:
        return f"flood: {flood.calls:,} bad-token calls, no 429 came"
    return (
        f"flood: {flood.calls:,} bad-token calls, first 429 at call {flood.first_429:,} "
        f"({flood.limited:,} answered 429)"
    )


def targets(
    results: list[Result], inproc: dict[str, Any] | None, flood: Flood | None
) -> list[tuple[str, str, str, str]]:
    """The verdict table's rows: what, measured, goal, verdict."""
    by_key = {r.target.key: r for r in results}
    floor = by_key.get("floor")
    rows: list[tuple[str, str, str, str]] = []
    bastion, fastapi = by_key.get("bastion"), by_key.get("fastapi")
    if bastion and floor:
        v, goal = bastion.rps / floor.rps, TARGETS["floor_ratio"]
        rows.append(("bastion req/s ÷ floor", f"{v:.2f}", f"≥ {goal:g}", _verdict(v >= goal)))
    for key, goal in STORE_GOALS.items():
        measured = by_key.get(key)
        if measured and floor:
            v = measured.rps / floor.rps
            rows.append(
                (f"{measured.target.label} ÷ floor", f"{v:.2f}", f"≥ {goal:g}", _verdict(v >= goal))
            )
    for r in results:
        if r.target.hostile and floor:
            v, goal = r.rps / floor.rps, TARGETS["refused_ratio"]
            rows.append(
                (f"{r.target.label} ÷ floor", f"{v:.2f}", f"≥ {goal:g}", _verdict(v >= goal))
            )
    if bastion and fastapi:
        v, goal = bastion.rps / fastapi.rps, TARGETS["fastapi_ratio"]
        rows.append(
            ("bastion req/s ÷ FastAPI stack", f"{v:.2f}", f"≥ {goal:g}", _verdict(v >= goal))
        )
    if inproc is not None:
        v, goal = inproc["pipeline_us"], TARGETS["pipeline_us"]
        rows.append(
            ("pipeline cost per call", f"{v:.1f} µs", f"≤ {goal:g} µs", _verdict(v <= goal))
        )
        v, calls, goal = inproc["rss"]["growth_mib"], inproc["rss"]["calls"], TARGETS["rss_mib"]
        rows.append(
            (
                f"RSS growth over {calls:,} calls",
                f"{v:+.2f} MiB",
                f"< {goal:g} MiB",
                _verdict(v < goal),
            )
        )
    if flood is not None:
        first = "none" if flood.first_429 is None else f"first 429 at call {flood.first_429:,}"
        rows.append(
            (
                f"flood: {flood.calls:,} bad-token calls from one address",
                first,
                "meets 429",
                _verdict(flood.first_429 is not None),
            )
        )
    for r in results:
        per_call = r.redis_per_call
        if per_call is not None:
            flag = " ⚠" if r.redis_others else ""
            trips = r.redis_trips_per_call
            rows.append(
                (
                    "Redis round trips per call",
                    f"{trips:.2f}{flag} ({sum(per_call.values()):.2f} commands)"
                    if trips is not None
                    else f"? ({sum(per_call.values()):.2f} commands){flag}",
                    "1 round trip",
                    _verdict(trips is not None and trips < 1.05),
                )
            )
    return rows


def _refusal_rates(results: list[Result], flood: Flood | None) -> list[str]:
    """What the bastion servers made of BENCH_REFUSAL_RATE, once per kind."""
    seen: dict[str, list[str]] = {}
    for r in results:
        for run in r.runs:
            if run.refusal_rate is not None and r.target.key not in seen.get(run.refusal_rate, []):
                seen.setdefault(run.refusal_rate, []).append(r.target.key)
    if flood is not None and flood.refusal_rate is not None:
        seen.setdefault(flood.refusal_rate, []).append("flood")
    return [f"{', '.join(keys)}: {status}" for status, keys in seen.items()]


def render(
    results: list[Result],
    inproc: dict[str, Any] | None,
    settings: Settings,
    flood: Flood | None = None,
) -> str:
    by_key = {r.target.key: r for r in results}
    floor = by_key.get("floor")
    out = [
        f"Command: `{COMMAND}` (BENCH_SECONDS={settings.seconds}, BENCH_RUNS={settings.runs}, "
        f"BENCH_CONNECTIONS={settings.connections}); server on CPU {settings.server_cpu}, "
        f"wrk -t{settings.threads} -c{settings.connections} on CPU {settings.client_cpu}; "
        f"both at nice {settings.nice}.",
        "",
        *machine(),
        "",
        "| server | req/s (median) | p50 latency | p99 latency | req/s ÷ floor | "
        "req/s of each run | server's core | other load |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        ratio = f"{r.rps / floor.rps:.2f}" if floor else "-"
        runs = " / ".join(f"{run.rps:,.0f}" for run in r.runs)
        flag = " ⚠" if r.share < MIN_SHARE else ""
        out.append(
            f"| {r.target.label} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms "
            f"| {ratio} | {runs} | {r.share:.0%}{flag} | {r.others:.0%} |"
        )
    out += [
        "",
        "Latency: median over the runs of wrk's per-run percentile. Server's core: the least",
        "share of its core the server had in a run (⚠ under "
        f"{MIN_SHARE:.0%}: something else took it, the",
        "numbers are not the machine's own). Other load: the most CPU that processes other",
        "than the server and wrk used during a run, in % of one core (on either core).",
    ]
    if any(r.target.hostile for r in results):
        out += [
            "Refused rows: the session's cookie and Origin, a forged token of the right shape;",
            f"every reply {REFUSED_STATUS} {REFUSED_CODE}, no post stored.",
        ]
    for r in results:
        per_call = r.redis_per_call
        if per_call is not None:
            calls = sum(run.redis_calls or run.requests for run in r.runs if run.redis is not None)
            requests = sum(run.requests for run in r.runs if run.redis is not None)
            out += [
                "",
                f"Redis commands per call: {format_per_call(per_call)}",
                "Redis round trips per call: "
                + (
                    f"{r.redis_trips_per_call:.2f} (total_reads_processed: the requests Redis "
                    "read, each as many commands as a pipeline held)"
                    if r.redis_trips_per_call is not None
                    else "not read (no total_reads_processed: Redis before 6)"
                ),
                f"  ({r.target.key}: INFO commandstats read just before and after the measured "
                f"run; ÷ {calls:,} calls served, wrk's {requests:,} and "
                f"{calls - requests:,} in flight when it stopped; the calls it abandoned "
                "mid-way, up to one a connection, add their first stages' commands)",
            ]
            if r.redis_others:
                out.append(
                    f"  ⚠ {r.redis_others} other Redis client(s) were active during a run: "
                    "their commands are in these counts"
                )
        elif r.target.redis:
            out += ["", "Redis commands per call: not read (INFO commandstats failed)"]
    rates = _refusal_rates(results, flood)
    if rates:
        out += ["", "Bastion(refusal_rate=...) on the bastion servers (BENCH_REFUSAL_RATE):"]
        out += [f"- {line}" for line in rates]
    if flood is not None:
        out += [
            "",
            _flood_text(flood) + f"; then a valid call from the same address: {flood.after}",
        ]
    if inproc is not None:
        noisy = " ⚠" if inproc["share"] < MIN_SHARE else ""
        out += [
            "",
            "```",
            inprocess.report(inproc),
            f"  it had {inproc['share']:.0%} of its core{noisy}; "
            f"other load {inproc['others']:.0%} of a core",
            "```",
        ]
    rows = targets(results, inproc, flood)
    if rows:
        out += ["", "| target | measured | goal | |", "|---|--:|--:|---|"]
        out += [
            f"| {what} | {measured} | {goal} | {verdict} |"
            for what, measured, goal, verdict in rows
        ]
    return "\n".join(out)


def summary(
    results: list[Result],
    inproc: dict[str, Any] | None,
    settings: Settings,
    flood: Flood | None = None,
) -> dict[str, Any]:
    """The figures of the report, as JSON (BENCH_JSON)."""
    floor = next((r for r in results if r.target.key == "floor"), None)
    return {
        "settings": dataclasses.asdict(settings),
        "servers": [
            {
                "key": r.target.key,
                "label": r.target.label,
                "rps": r.rps,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "floor_ratio": r.rps / floor.rps if floor else None,
                "runs": [dataclasses.asdict(run) for run in r.runs],
                "share": r.share,
                "others": r.others,
                "redis_per_call": r.redis_per_call,
                "redis_others": r.redis_others,
            }
            for r in results
        ],
        "flood": dataclasses.asdict(flood) if flood is not None else None,
        "inprocess": inproc,
        "targets": [
            {"target": what, "measured": measured, "goal": goal, "verdict": verdict}
            for what, measured, goal, verdict in targets(results, inproc, flood)
        ],
    }


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through the ``finally`` that stops the server


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    settings = Settings.from_env()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            _log(f"bench: {tool} is missing (make bench installs wrk; taskset is util-linux)")
            return 2
    if (os.cpu_count() or 1) < 2:
        _log("bench: needs two cores (one for the server, one for wrk)")
        return 2
    chosen = [t for t in SERVERS if not settings.only or t.key in settings.only]
    if not os.environ.get("REDIS_URL"):
        # The real Redis people deploy, or none: no throwaway server stands in for it.
        _log("bench: REDIS_URL is not set: the Redis store is not measured")
        chosen = [t for t in chosen if t.key != "bastion-redis"]
    results: list[Result] = []
    flood = None
    try:
        for i, target in enumerate(chosen):
            _log(f"bench: {target.label}")
            results.append(_measure(target, settings.port + i, settings))
        if not settings.only or "flood" in settings.only:
            _log(f"bench: the flood check ({FLOOD_CALLS:,} forged-token calls, one address)")
            flood = _flood(settings.port + len(chosen), settings)
            _log(f"  {_flood_text(flood)}")
        inproc = None
        if not settings.only or "inprocess" in settings.only or "bastion" in settings.only:
            _log("bench: in-process pipeline cost and memory")
            inproc = _inprocess(settings)
    except Refused as exc:
        _log(f"bench: REFUSED: {exc}")
        return 1
    report = render(results, inproc, settings, flood)
    print(report)
    if settings.output:
        Path(settings.output).write_text(report + "\n")
    if settings.json:
        figures = summary(results, inproc, settings, flood)
        Path(settings.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    return 0
