"""``python -m bench`` (``make bench``): verify, then measure, the three servers; then the
in-process figures; then one table and the targets.

Each server runs under uvicorn (uvloop, httptools, one worker, no access log) pinned to
one core; wrk runs pinned to the other. Before any number is taken, each server must
answer the scripted request with 200 and the expected JSON, and the guarded ones must
refuse it without its token, cookie or origin: a server that answers 403 fast, or one
that checks nothing, would fake the numbers. After each run, wrk must report no error
of any kind, and the guarded servers must have stored as many posts as wrk counted.
Each run has a server process of its own (started, checked, warmed up, measured).

Settings, from the environment: BENCH_SECONDS (10) per run, BENCH_RUNS (3),
BENCH_WARMUP (3 s before each run, not counted), BENCH_CONNECTIONS (64), BENCH_THREADS (wrk's, 1),
BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1), BENCH_PORT (8701, and the next two),
BENCH_ONLY (comma-separated names among floor, bastion, fastapi), BENCH_OUTPUT (also
write the report to this file), BENCH_QUIET_WAIT (60: seconds to wait, before each run,
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
from .common import BODY, ORIGIN, PAYLOAD, expected_post

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "post.lua"
COMMAND = "make bench"

STORE_GOALS = {"bastion-sqlite": 0.45, "bastion-redis": 0.35}
"""req/s ÷ floor on the stores people deploy (the memory store's goal is floor_ratio)."""

TARGETS = {
    "floor_ratio": 0.7,
    "fastapi_ratio": 3.0,
    "pipeline_us": 30.0,
    "rss_mib": 5.0,
}


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


SERVERS = (
    Target("floor", "floor (bare Starlette)", "bench.floor_app", False, _floor_reply),
    Target("bastion", "bastion (full pipeline)", "bench.bastion_app", True, _bastion_reply),
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


def _created(target: Target, port: int) -> int:
    status, _, body = _request(port, "GET", "/bench/stats")
    data = _json(body)
    if status != 200 or not isinstance(data, dict):
        raise Refused(f"{target.key}: /bench/stats answered {status}")
    return int(data["created"])


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
    port: int, creds: Credentials, seconds: int, settings: Settings, load: OtherLoad | None = None
) -> Run:
    env = {
        **os.environ,
        "BENCH_BODY": BODY.decode(),
        "BENCH_ORIGIN": ORIGIN,
        "BENCH_COOKIE": creds.cookie or "",
        "BENCH_TOKEN": creds.token or "",
    }
    command = [
        *settings.pinned(settings.client_cpu),
        "wrk", "-t", str(settings.threads), "-c", str(settings.connections),
        "-d", f"{seconds}s", "--timeout", "10s", "-s", str(LUA),
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
    errors = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if errors or r["requests"] == 0:
        raise Refused(f"wrk saw errors {errors} in {r['requests']} requests: refusing to report")
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
        if settings.warmup > 0:
            _wrk(port, creds, settings.warmup, settings)
        _wait_quiet(settings)
        before = _created(target, port) if target.guarded else 0
        run = _wrk(port, creds, settings.seconds, settings, OtherLoad(server.pid))
        if target.guarded and _created(target, port) - before < run.requests:
            raise Refused(f"{target.key}: fewer posts stored than wrk's 200s: refusing")
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


def render(results: list[Result], inproc: dict[str, Any] | None, settings: Settings) -> str:
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
    targets = []
    bastion, fastapi = by_key.get("bastion"), by_key.get("fastapi")
    if bastion and floor:
        v = bastion.rps / floor.rps
        ok = v >= TARGETS["floor_ratio"]
        targets.append(f"| bastion req/s ÷ floor | {v:.2f} | ≥ 0.7 | {_verdict(ok)} |")
    for key, goal in STORE_GOALS.items():
        measured = by_key.get(key)
        if measured and floor:
            v = measured.rps / floor.rps
            ok = v >= goal
            targets.append(
                f"| {measured.target.label} ÷ floor | {v:.2f} | ≥ {goal} | {_verdict(ok)} |"
            )
    if bastion and fastapi:
        v = bastion.rps / fastapi.rps
        ok = v >= TARGETS["fastapi_ratio"]
        targets.append(f"| bastion req/s ÷ FastAPI stack | {v:.2f} | ≥ 3 | {_verdict(ok)} |")
    if inproc is not None:
        v = inproc["pipeline_us"]
        ok = v <= TARGETS["pipeline_us"]
        targets.append(f"| pipeline cost per call | {v:.1f} µs | ≤ 30 µs | {_verdict(ok)} |")
        v, calls = inproc["rss"]["growth_mib"], inproc["rss"]["calls"]
        ok = v < TARGETS["rss_mib"]
        targets.append(
            f"| RSS growth over {calls:,} calls | {v:+.2f} MiB | < 5 MiB | {_verdict(ok)} |"
        )
    if targets:
        out += ["", "| target | measured | goal | |", "|---|--:|--:|---|", *targets]
    return "\n".join(out)


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
    try:
        for i, target in enumerate(chosen):
            _log(f"bench: {target.label}")
            results.append(_measure(target, settings.port + i, settings))
        inproc = None
        if not settings.only or "inprocess" in settings.only or "bastion" in settings.only:
            _log("bench: in-process pipeline cost and memory")
            inproc = _inprocess(settings)
    except Refused as exc:
        _log(f"bench: REFUSED: {exc}")
        return 1
    report = render(results, inproc, settings)
    print(report)
    if settings.output:
        Path(settings.output).write_text(report + "\n")
    return 0
