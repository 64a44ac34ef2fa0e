"""``python -m bench.soak`` (``make soak``): the demo board under wrk for a while, with
valid and hostile traffic mixed; then whether it held: no 5xx, flat memory, no leaked
file descriptors.

The board (examples/board) runs as ``make demo`` serves it (uvicorn, ``--no-proxy-headers``),
pinned to one core, on a free loopback port, with a throwaway key, data directory and
known passwords. The soak signs in as the seeded author the way a browser does (the log-in
page's token, the form posted, the session cookie kept), reads the tokens and sealed
values its pages hold, and prepares every kind of request below as raw HTTP. Each kind is
sent once first and must get the answer it should (a soak whose requests all bounce off
a broken session would prove nothing); then wrk, pinned to the other core, sends them
all, shuffled, by weight (bench/soak.lua), for SOAK_SECONDS, counting the replies by
status. Every second the server's RSS (``VmRSS``) and open file descriptors
(``/proc/PID/fd``) are sampled. After the run the session must still work.

Valid traffic: the board page (the bulk: a session, a query, a 100-post template), the
security and edit pages, a static file, creating posts (JSON and a plain form) and
editing one's own post with its sealed ID. The board's rate limits cannot be raised from
the environment (``create_post`` allows 10 a minute per author, ``edit_post`` 30), so
after the first calls of each minute those answer 429: an expected refusal. Hostile
traffic: no token, a forged token, no cookie, a foreign, ``null`` or malformed Origin,
``Sec-Fetch-Site: cross-site``, a spoofed internal header, malformed JSON, JSON nested
too deep, unknown fields, a wrong content type, a body declared over the 1 MiB cap, a
chunked form streaming past it, a form with too many fields or too long a name, a forged
or misused sealed ID, unknown action IDs, GET on an action, a page that does not exist.
The JSON ones that carry a valid token reach the rate limit before the decoder, and
mostly answer 429 too; the form ones are read (capped) before the token check, so the
decoders see those at full rate. ``report_problem`` is left out: it fails on purpose
(500 with a digest, to show what a bug looks like).

Pass: no reply of 500 or above, no socket error or timeout in wrk, RSS at the end less
than 10 % above RSS after the warm-up (the first 20 % of the run; each the median of 5
samples, a second apart: one sample swings by a few % with the 1 MiB bodies in
flight), open file descriptors at the last sample at most 5 above their count at the
first sample after the warm-up, and the author still signed in. Exit 0 if it passed, 1
if not (or if the setup was refused), 2 if a tool is missing.

Settings, from the environment: SOAK_SECONDS (60), SOAK_CONNECTIONS (32),
SOAK_THREADS (wrk's, 1; the counts of every thread are added up), SOAK_SERVER_CPU (0),
SOAK_CLIENT_CPU (1), SOAK_WARMUP (0.2: the share of the run that is warm-up),
SOAK_RSS_GROWTH (0.10), SOAK_FD_TOLERANCE (5), SOAK_OUTPUT (also write the report to
this file).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "soak.lua"
COMMAND = "make soak"

AUTHOR = "author@board.example"
ADMIN = "admin@board.example"
MiB = 1024 * 1024
CAP = 1 * MiB
"""bastion's default body cap, which the board keeps."""
WINDOW = 5
"""Samples (seconds) whose median RSS is taken after the warm-up and at the end."""


class Refused(Exception):
    """The setup is wrong: no soak is run, or its figures mean nothing."""


@dataclass(frozen=True)
class Settings:
    seconds: int
    connections: int
    threads: int
    server_cpu: str
    client_cpu: str
    warmup: float
    rss_growth: float
    fd_tolerance: int
    output: str | None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            seconds=int(env("SOAK_SECONDS", "60")),
            connections=int(env("SOAK_CONNECTIONS", "32")),
            threads=int(env("SOAK_THREADS", "1")),
            server_cpu=env("SOAK_SERVER_CPU", "0"),
            client_cpu=env("SOAK_CLIENT_CPU", "1"),
            warmup=float(env("SOAK_WARMUP", "0.2")),
            rss_growth=float(env("SOAK_RSS_GROWTH", "0.10")),
            fd_tolerance=int(env("SOAK_FD_TOLERANCE", "5")),
            output=env("SOAK_OUTPUT") or None,
        )

    def pinned(self, cpu: str) -> list[str]:
        """``taskset -c cpu`` when there is a core to spare for each side, else nothing."""
        if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
            return []
        return ["taskset", "-c", cpu]


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- HTTP, by hand: every request is raw bytes, as wrk will send it ------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def cookies(self) -> dict[str, str]:
        pairs = (c.split(";", 1)[0].strip() for c in self.headers.get_all("set-cookie") or [])
        return dict(p.split("=", 1) for p in pairs if "=" in p)


def raw_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> bytes:
    """One HTTP/1.1 request as bytes: ``Host``, the headers, then the body (with its
    length, or in 64 KiB chunks)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    payload = b""
    if body is not None and chunked:
        lines.append("Transfer-Encoding: chunked")
        step = 64 * 1024
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            payload += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        payload += b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def send(port: int, request: bytes, timeout: float = 10.0) -> Reply:
    """Send raw ``request`` on a connection of its own; the reply, read in full."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        method = request.split(b" ", 1)[0].decode()
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        try:
            return Reply(response.status, response.msg, response.read())
        finally:
            response.close()


class _Forms(HTMLParser):
    """Every form of a page: its action, hidden values and field names; and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = {"action": a.get("action", ""), "hidden": {}, "names": set()}
            self.forms.append(self._form)
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag in ("input", "textarea") and self._form is not None:
            if a.get("type") == "hidden":
                self._form["hidden"][a.get("name", "")] = a.get("value", "")
            self._form["names"].add(a.get("name", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def _page(port: int, path: str, cookie: str | None = None) -> tuple[Reply, _Forms]:
    headers = {"Cookie": cookie} if cookie else {}
    reply = send(port, raw_request(port, "GET", path, headers))
    parser = _Forms()
    parser.feed(reply.body.decode(errors="replace"))
    return reply, parser


# --- the board, and a signed-in author ---------------------------------------------------


@dataclass
class Board:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    author_password: str
    admin_password: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def errors(self, lines: int = 60) -> str:
        """The server log's errors (with their tracebacks), else its last lines."""
        found: list[str] = []
        inside = False
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith(("ERROR", "CRITICAL")):
                inside = True
            elif line.startswith(("INFO", "WARNING", "DEBUG")):
                inside = False
            if inside:
                found.append(line)
        if not found:
            return "--- the end of the server log\n" + self.log_tail(30)
        return "--- errors in the server log\n" + "\n".join(found[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def board(settings: Settings) -> Iterator[Board]:
    """The board as ``make demo`` serves it, pinned to the server core, with throwaway
    data, key and passwords, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="bastion-soak-") as tmp:
        port = _free_port()
        passwords = {name: secrets.token_urlsafe(15) for name in ("admin", "author")}
        env = {
            **{
                k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BASTION_DATA_DIR")
            },
            "BASTION_SECRET_KEY": secrets.token_hex(32),
            "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
            "BOARD_DATA_DIR": str(Path(tmp) / "data"),
            "BOARD_ADMIN_PASSWORD": passwords["admin"],
            "BOARD_AUTHOR_PASSWORD": passwords["author"],
        }
        command = [
            *settings.pinned(settings.server_cpu),
            sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "examples"),
            "board.app:app", "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers",
        ]  # fmt: skip
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            server = Board(port, process, log_path, passwords["author"], passwords["admin"])
            try:
                _wait_up(server)
                yield server
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_up(server: Board) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.process.poll() is not None:
            raise Refused(f"the board exited:\n{server.log_tail()}")
        try:
            if send(server.port, raw_request(server.port, "GET", "/login"), 1.0).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Refused(f"the board did not answer on {server.port}:\n{server.log_tail()}")
        time.sleep(0.1)


@dataclass
class Author:
    """What a signed-in author's pages hold: the session cookie, a CSRF token, and the
    forms the soak calls (action URLs, sealed values)."""

    cookie: str
    token: str
    create: str
    edit: str
    post_id: int
    edit_bound: str
    delete_bound: str
    actions: dict[str, str] = field(default_factory=dict)


def _form(forms: _Forms, *, has: str | None = None, bound: bool | None = None) -> dict[str, Any]:
    for form in forms.forms:
        if has is not None and has not in form["names"]:
            continue
        if bound is not None and ("_bound" in form["hidden"]) != bound:
            continue
        return form
    raise Refused(f"no form with {has or '_bound'} on the page")


def sign_in(server: Board) -> Author:
    """Log in as the seeded author, as a browser does; then read the board's forms."""
    port = server.port
    reply, forms = _page(port, "/login")
    login = _form(forms, has="password")
    cookies = reply.cookies()
    if reply.status != 200 or not cookies:
        raise Refused(f"GET /login answered {reply.status} without a session cookie")
    fields = {
        **login["hidden"],
        "email": AUTHOR,
        "password": server.author_password,
    }
    headers = {
        "Origin": server.origin,
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = urlencode(fields).encode()
    reply = send(port, raw_request(port, "POST", login["action"], headers, body))
    cookies |= reply.cookies()
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if reply.status != 303:
        raise Refused(f"the log-in form answered {reply.status}: {reply.body[:300]!r}")
    reply, forms = _page(port, "/", cookie)
    if reply.status != 200:
        raise Refused(f"GET / after log-in answered {reply.status}: not signed in")
    create = _form(forms, has="title", bound=False)
    delete = _form(forms, bound=True)
    edits = [m for link in forms.links if (m := re.fullmatch(r"/posts/(\d+)/edit", link))]
    if not edits:
        raise Refused("the author's board shows no post of theirs to edit")
    post_id = int(edits[0].group(1))
    reply, forms = _page(port, f"/posts/{post_id}/edit", cookie)
    if reply.status != 200:
        raise Refused(f"GET /posts/{post_id}/edit answered {reply.status}")
    edit = _form(forms, has="title", bound=True)
    return Author(
        cookie=cookie,
        token=create["hidden"]["_csrf"],
        create=create["action"],
        edit=edit["action"],
        post_id=post_id,
        edit_bound=edit["hidden"]["_bound"],
        delete_bound=delete["hidden"]["_bound"],
    )


# --- the traffic ----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    request: bytes
    expected: frozenset[int]
    """What its first call must answer (429 is always acceptable for a rate-limited one)."""
    hostile: bool


def traffic(server: Board, author: Author) -> list[Kind]:
    """Every kind of request the soak sends, with its weight in the mix."""
    port, origin = server.port, server.origin
    signed = {"Cookie": author.cookie, "Origin": origin}
    script = {**signed, "Accept": "application/json", "Content-Type": "application/json"}
    token = {**script, "X-CSRF-Token": author.token}
    form = {**signed, "Accept": "application/json"}
    form |= {"Content-Type": "application/x-www-form-urlencoded"}
    post = json.dumps({"title": "Soak test", "body": "Posted under load."}).encode()
    edit = urlencode(
        {"_csrf": author.token, "_bound": author.edit_bound, "title": "Edited", "body": "Again."}
    ).encode()
    deep = (b"[" * 64 + b"]" * 64).join([b'{"title":"x","body":', b"}"])
    many = "&".join(f"f{i}=1" for i in range(1_200)).encode() + b"&_csrf=" + b"A" * 86
    unknown = "/_actions/" + secrets.token_urlsafe(16)

    def kind(
        name: str, weight: int, statuses: set[int], request: bytes, *, hostile: bool = True
    ) -> Kind:
        return Kind(name, weight, request, frozenset(statuses), hostile)

    def post_json(headers: dict[str, str], body: bytes = post, path: str = author.create) -> bytes:
        return raw_request(port, "POST", path, headers, body)

    def post_form(body: bytes, path: str = author.create, **more: str) -> bytes:
        return raw_request(port, "POST", path, {**form, **more}, body)

    cookie_only = {"Cookie": author.cookie}
    return [
        # valid
        kind("board page", 12, {200}, raw_request(port, "GET", "/", cookie_only), hostile=False),
        kind(
            "security page",
            2,
            {200},
            raw_request(port, "GET", "/security", cookie_only),
            hostile=False,
        ),
        kind(
            "edit page",
            2,
            {200},
            raw_request(port, "GET", f"/posts/{author.post_id}/edit", cookie_only),
            hostile=False,
        ),
        kind(
            "static file",
            2,
            {200},
            raw_request(port, "GET", "/static/board.css", cookie_only),
            hostile=False,
        ),
        kind("create post (JSON)", 3, {200}, post_json(token), hostile=False),
        kind(
            "create post (plain form)",
            1,
            {303},
            raw_request(
                port,
                "POST",
                author.create,
                {**signed, "Content-Type": "application/x-www-form-urlencoded"},
                urlencode(
                    {"_csrf": author.token, "_next": "/", "title": "A form", "body": "x"}
                ).encode(),
            ),
            hostile=False,
        ),
        kind("edit own post (sealed ID)", 1, {200}, post_form(edit, author.edit), hostile=False),
        # hostile: the session and the origin
        kind("no CSRF token", 2, {403}, post_json(script)),
        kind("forged CSRF token", 2, {403}, post_json({**script, "X-CSRF-Token": "A" * 86})),
        kind(
            "no session cookie",
            2,
            {403},
            post_json({k: v for k, v in token.items() if k != "Cookie"}),
        ),
        kind("foreign Origin", 2, {403}, post_json({**token, "Origin": "https://evil.example"})),
        kind("Origin: null", 1, {403}, post_json({**token, "Origin": "null"})),
        kind("malformed Origin", 1, {403}, post_json({**token, "Origin": "http://[::1"})),
        kind(
            "Sec-Fetch-Site: cross-site",
            1,
            {403},
            post_json({**token, "Sec-Fetch-Site": "cross-site"}),
        ),
        kind(
            "internal header, no token",
            1,
            {403},
            post_json({**script, "X-Middleware-Subrequest": "middleware"}),
        ),
        # hostile: the body
        kind("malformed JSON", 2, {400}, post_json(token, b'{"title": "x", "body": ')),
        kind("JSON nested 64 deep", 2, {400}, post_json(token, deep)),
        kind("unknown field", 1, {422}, post_json(token, b'{"title":"x","body":"y","admin":true}')),
        kind("wrong content type", 1, {415}, post_json({**token, "Content-Type": "text/plain"})),
        kind("declared over the cap", 1, {413}, post_json(token, b"x" * (CAP + 1))),
        kind(
            "chunked form past the cap",
            1,
            {413},
            raw_request(
                port,
                "POST",
                author.create,
                form,
                f"_csrf={author.token}&a=".encode() + b"x" * (CAP + 4096),
                chunked=True,
            ),
        ),
        kind(
            # Its token is not within the pre-token cap (64 KiB): refused there, unread.
            "chunked form with no token up front",
            1,
            {403},
            raw_request(
                port, "POST", author.create, form, b"a=" + b"x" * (CAP + 4096), chunked=True
            ),
        ),
        kind("form with 1,200 fields", 2, {413}, post_form(many)),
        kind("form field name of 300", 2, {400}, post_form(b"n" * 300 + b"=1&_csrf=" + b"A" * 86)),
        kind("form with forged token", 2, {403}, post_form(b"title=x&body=y&_csrf=" + b"A" * 86)),
        kind(
            "forged sealed ID",
            1,
            {400},
            post_form(
                urlencode(
                    {"_csrf": author.token, "_bound": "A" * 80, "title": "x", "body": "y"}
                ).encode(),
                author.edit,
            ),
        ),
        kind(
            "sealed ID of another action",
            1,
            {400},
            post_form(
                urlencode(
                    {
                        "_csrf": author.token,
                        "_bound": author.delete_bound,
                        "title": "x",
                        "body": "y",
                    }
                ).encode(),
                author.edit,
            ),
        ),
        # hostile: routing
        kind("unknown action ID", 2, {404}, post_json(token, path=unknown)),
        kind("GET on an action", 2, {405}, raw_request(port, "GET", author.create, cookie_only)),
        kind("page that does not exist", 1, {404}, raw_request(port, "GET", "/wp-login.php")),
    ]


def check(server: Board, kinds: list[Kind]) -> list[str]:
    """Each kind once: the answer it must get (or 429, for the rate-limited ones)."""
    lines = []
    for kind in kinds:
        reply = send(server.port, kind.request)
        allowed = kind.expected | ({429} if reply.status == 429 else set())
        if reply.status not in allowed or (reply.status == 429 and not kind.hostile):
            raise Refused(
                f"{kind.name!r} answered {reply.status}, not {sorted(kind.expected)}: "
                f"{reply.body[:300]!r}"
            )
        lines.append(f"  {kind.name:<30} {reply.status}  (weight {kind.weight})")
    return lines


# --- the load, and the samples ---------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    rss_kib: int
    fds: int


def sample(pid: int, at: float) -> Sample:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Sample(at, rss, len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Soak:
    result: dict[str, Any]
    samples: list[Sample]
    warm: list[Sample]
    """The samples of the first seconds after the warm-up."""
    end: list[Sample]
    """The last samples of the run."""

    @staticmethod
    def rss(samples: list[Sample]) -> int:
        """The median RSS of a few samples: one sample swings by several % with each
        request in flight (a 1 MiB body held, then freed)."""
        return int(statistics.median(s.rss_kib for s in samples))


def soak(server: Board, kinds: list[Kind], settings: Settings, folder: Path) -> Soak:
    """wrk with every kind, by weight, for the run; a sample of the server every second."""
    manifest = []
    for i, kind in enumerate(kinds):
        (folder / f"{i}.http").write_bytes(kind.request)
        manifest.append(f"{kind.weight} {i}.http")
    (folder / "manifest").write_text("\n".join(manifest) + "\n")
    command = [
        *settings.pinned(settings.client_cpu),
        "wrk", "-t", str(settings.threads), "-c", str(settings.connections),
        "-d", f"{settings.seconds}s", "--timeout", "10s", "-s", str(LUA),
        f"{server.origin}/",
    ]  # fmt: skip
    pid = server.process.pid
    samples = [sample(pid, 0.0)]
    started = time.monotonic()
    wrk = subprocess.Popen(  # noqa: S603
        command,
        env={**os.environ, "SOAK_REQUESTS": str(folder)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tick = 1
        while wrk.poll() is None:
            time.sleep(max(0.0, started + tick - time.monotonic()))
            tick += 1
            if wrk.poll() is not None or server.process.poll() is not None:
                break
            samples.append(sample(pid, time.monotonic() - started))
        stdout, stderr = wrk.communicate(timeout=settings.seconds + 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if server.process.poll() is not None:
        raise Refused(f"the board died during the soak:\n{server.log_tail()}")
    line = next((x for x in stdout.splitlines() if x.startswith("SOAK_RESULT ")), None)
    if wrk.returncode != 0 or line is None:
        raise Refused(f"wrk failed ({wrk.returncode}):\n{stdout}\n{stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("SOAK_RESULT "))
    boundary = settings.warmup * settings.seconds
    after = [s for s in samples if s.at >= boundary] or samples[-1:]
    window = max(1, min(WINDOW, len(after) // 4))
    return Soak(result, samples, after[:window], after[-window:])


def still_signed_in(server: Board, author: Author) -> bool:
    reply = send(server.port, raw_request(server.port, "GET", "/", {"Cookie": author.cookie}))
    return reply.status == 200


# --- the report -----------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def render(
    run: Soak, kinds: list[Kind], checked: list[str], signed_in: bool, settings: Settings
) -> tuple[str, list[str]]:
    """The report, and what failed (nothing if the soak passed)."""
    r = run.result
    statuses = {int(k): int(v) for k, v in r["statuses"].items()}
    seconds = r["duration_us"] / 1e6
    total = int(r["requests"])
    errors = {k: int(r[k]) for k in ("connect", "read", "write", "timeout") if r[k]}
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    warm_rss, end_rss = run.rss(run.warm), run.rss(run.end)
    rss_growth = (end_rss - warm_rss) / max(warm_rss, 1)
    warm_fds, end_fds = run.warm[0].fds, run.end[-1].fds
    fd_growth = end_fds - warm_fds
    peak = max(s.rss_kib for s in run.samples)
    weights = sum(k.weight for k in kinds)
    hostile = sum(k.weight for k in kinds if k.hostile)
    by_class: dict[str, int] = {}
    for status, n in statuses.items():
        by_class[f"{status // 100}xx"] = by_class.get(f"{status // 100}xx", 0) + n
    out = [
        f"Command: `{COMMAND}` (SOAK_SECONDS={settings.seconds}); the board under uvicorn "
        f"on CPU {settings.server_cpu}, wrk -t{settings.threads} -c{settings.connections} "
        f"on CPU {settings.client_cpu}; {len(kinds)} kinds of request, "
        f"{hostile}/{weights} of the mix hostile by weight.",
        "",
        "Each kind once, before the run:",
        *checked,
        "",
        f"requests      {total:,} in {seconds:.1f} s: {total / seconds:,.0f} req/s "
        f"(p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms, "
        f"max {r['max_us'] / 1000:.1f} ms)",
        "by class      " + ", ".join(f"{c} {n:,}" for c, n in sorted(by_class.items())),
        "by status     " + ", ".join(f"{s} {n:,}" for s, n in sorted(statuses.items())),
        f"5xx           {server_errors}",
        "wrk errors    " + (", ".join(f"{k} {v}" for k, v in errors.items()) if errors else "none"),
        f"RSS           {_mib(warm_rss)} after warm-up ({_span(run.warm)}), "
        f"{_mib(end_rss)} at the end ({_span(run.end)}): {rss_growth:+.1%} "
        f"(medians; start {_mib(run.samples[0].rss_kib)}, peak {_mib(peak)})",
        f"open fds      {warm_fds} after warm-up ({run.warm[0].at:.0f} s), {end_fds} at the "
        f"end ({run.end[-1].at:.0f} s): {fd_growth:+d} (at most "
        f"{max(s.fds for s in run.samples)})",
        f"after the run {'still signed in (GET / 200)' if signed_in else 'SIGNED OUT'}",
        "",
        "RSS (MiB) and open fds, every tenth of the run:",
        "  " + "  ".join(_timeline(run, settings)),
    ]
    failures = []
    if server_errors:
        failures.append(f"{server_errors} replies of 500 or above")
    if errors:
        failures.append(f"wrk saw socket errors or timeouts: {errors}")
    if rss_growth >= settings.rss_growth:
        failures.append(
            f"RSS grew {rss_growth:.1%} after warm-up (limit {settings.rss_growth:.0%})"
        )
    if fd_growth > settings.fd_tolerance:
        failures.append(f"open fds grew by {fd_growth} (tolerance {settings.fd_tolerance})")
    if not statuses.get(200):
        failures.append("no request succeeded")
    if not signed_in:
        failures.append("the author's session no longer works")
    out += ["", "PASS" if not failures else "FAIL: " + "; ".join(failures)]
    return "\n".join(out), failures


def _span(samples: list[Sample]) -> str:
    first, last = samples[0].at, samples[-1].at
    return f"{first:.0f} s" if len(samples) == 1 else f"{first:.0f} to {last:.0f} s"


def _timeline(run: Soak, settings: Settings) -> list[str]:
    chosen: list[Sample] = []
    for tenth in range(11):
        at = tenth * settings.seconds / 10
        s = min(run.samples, key=lambda s: abs(s.at - at))
        if s not in chosen:
            chosen.append(s)
    return [f"{s.at:.0f}s {s.rss_kib / 1024:.1f}/{s.fds}" for s in chosen]


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through the ``finally`` that stops the server


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    settings = Settings.from_env()
    if shutil.which("wrk") is None:
        _log("soak: wrk is missing (make soak installs it)")
        return 2
    if not Path("/proc/self/status").exists():
        _log("soak: needs Linux's /proc to sample the server")
        return 2
    try:
        with board(settings) as server, tempfile.TemporaryDirectory() as folder:
            _log(f"soak: the board on {server.origin}/, signing in as {AUTHOR}")
            author = sign_in(server)
            kinds = traffic(server, author)
            checked = check(server, kinds)
            _log(f"soak: {len(kinds)} kinds checked; wrk for {settings.seconds} s")
            run = soak(server, kinds, settings, Path(folder))
            signed_in = still_signed_in(server, author)
            report, failures = render(run, kinds, checked, signed_in, settings)
            if failures:
                report += "\n\n" + server.errors()
    except Refused as exc:
        _log(f"soak: REFUSED: {exc}")
        return 1
    print(report)
    if settings.output:
        Path(settings.output).write_text(report + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
