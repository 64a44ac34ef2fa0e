"""A hostile body costs at most its cap: 50 MiB sent to a real uvicorn server.

The quickstart runs in its own process; its peak resident memory (VmHWM) is read from
/proc before and after each attack. Run with ``pytest -s`` to see the figures.

Every attack carries what a script on the quickstart's page would send (its Origin, the
session cookie and a CSRF token read from the page), so it gets past the origin and
token checks and what answers is the body cap itself, the worst case.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from services import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "memory-test-key-0123456789-abcdefghijklmnopqrstuvwxyz"
MiB = 1024 * 1024
BODY = 50 * MiB
CHUNK = b"a" * MiB
MAX_GROWTH_KIB = 10 * 1024

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs /proc for VmHWM"
)


@dataclass
class Server:
    port: int
    pid: int
    greet_url: str = ""
    credentials: str = ""
    """Header lines a script on the page sends: Origin, the session cookie, a token."""


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of the process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def read_reply(sock: socket.socket) -> Reply:
    """One HTTP/1.1 response: status line, headers, and a Content-Length body."""
    reply = Reply()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        reply.status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/1.1 ") else 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            reply.headers[name.strip().lower()] = value.strip()
        length = int(reply.headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        reply.body = rest[:length]
    except OSError as exc:
        reply.error = repr(exc)
    return reply


def exchange(port: int, request: bytes) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_reply(sock)


def attack(port: int, head: bytes, body: Iterable[bytes]) -> tuple[Reply, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return send_while_reading(sock, head, body)


def send_while_reading(
    sock: socket.socket, head: bytes, body: Iterable[bytes]
) -> tuple[Reply, int]:
    """Send the head and then the body, while another thread reads the reply: the server
    answers before the body is done and may close the connection mid-send."""
    replies: list[Reply] = []
    reader = threading.Thread(target=lambda: replies.append(read_reply(sock)))
    reader.start()
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server hung up once it had answered: expected
    reader.join(10)
    assert not reader.is_alive(), "no reply within 10 s"
    return replies[0], sent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`python -m uvicorn --app-dir examples quickstart:app` on a free port."""
    with tempfile.TemporaryFile() as log:
        yield from _serve(log, tmp_path_factory.mktemp("memory-data"))


def _serve(log: IO[bytes], data_dir: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": KEY,
        "BASTION_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "BASTION_DATA_DIR": str(data_dir),
        # The demo accounts' password: set, so the quickstart neither generates nor logs one.
        "QUICKSTART_PASSWORD": "memory-test-password",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            "examples",
            "quickstart:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"uvicorn exited ({process.returncode}):\n{log.read().decode()}")
            try:
                page = exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if page.status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not answer within 20 s"
            time.sleep(0.05)
        urls = re.findall(rb'action="(/_actions/[^"]+)"', page.body)
        assert len(urls) == 8
        greet = re.search(rb'<section id="greet">.*?action="(/_actions/[^"]+)"', page.body, re.S)
        assert greet, page.body
        # Rendering the forms' tokens made the session the page's reply sets.
        cookie = re.fullmatch(r"(bastion_session=[A-Za-z0-9_-]{43});.*", page.headers["set-cookie"])
        token = re.search(rb'name="_csrf" value="([A-Za-z0-9_-]{86})"', page.body)
        assert cookie, page.headers
        assert token, page.body
        credentials = (
            f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookie.group(1)}\r\n"
            f"X-CSRF-Token: {token.group(1).decode()}\r\n"
        )
        yield Server(
            port=port, pid=process.pid, greet_url=greet.group(1).decode(), credentials=credentials
        )
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def greet_request(server: Server, body: bytes) -> bytes:
    return (
        f"POST {server.greet_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{server.credentials}"
        "Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture(scope="module")
def warm(server: Server) -> Server:
    """One real call first, so imports and first-call allocations are not counted; it
    also proves the credentials pass the origin and token checks."""
    reply = exchange(server.port, greet_request(server, b'{"name":"Ada"}'))
    assert reply.status == 200
    assert reply.body == b'{"ok":true,"data":{"message":"Hello, Ada!"}}'
    return server


def measured(server: Server, what: str, head: bytes, body: Iterable[bytes]) -> Reply:
    before = vm_hwm_kib(server.pid)
    reply, sent = attack(server.port, head, body)
    growth = vm_hwm_kib(server.pid) - before
    print(
        f"\n[memory] {what}: sent {sent / MiB:.1f} MiB, reply {reply.status}, "
        f"VmHWM {before} KiB -> +{growth} KiB"
    )
    assert growth < MAX_GROWTH_KIB, f"peak RSS grew by {growth} KiB"
    return reply


TOO_LARGE = (
    b'{"ok":false,"error":{"code":"payload_too_large","message":"The request is too large."}}'
)


def test_honest_50_mib_content_length_is_413_without_reading_it(warm: Server) -> None:
    """Content-Length: 50 MiB → 413 from the headers alone; peak RSS grows < 10 MiB."""
    head = (
        f"POST {warm.greet_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{warm.credentials}"
        f"Content-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    ).encode()
    reply = measured(warm, "honest Content-Length", head, (CHUNK for _ in range(50)))
    assert reply.status == 413, reply
    assert reply.body == TOO_LARGE
    assert reply.headers["cache-control"] == "no-store"


def test_chunked_50_mib_without_content_length_is_413_at_the_cap(warm: Server) -> None:
    """Transfer-Encoding: chunked, no length → 413 once 1 MiB has arrived; RSS < +10 MiB."""
    head = (
        f"POST {warm.greet_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{warm.credentials}"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
        yield b"0\r\n\r\n"

    reply = measured(warm, "chunked, no Content-Length", head, chunks())
    assert reply.status == 413, reply
    assert reply.body == TOO_LARGE


def test_lying_content_length_is_a_4xx(warm: Server) -> None:
    """Content-Length: 100, then 50 MiB: the 100 bytes are a truncated JSON body (4xx),
    the rest is not a request; never 2xx or 5xx, and RSS < +10 MiB."""
    head = (
        f"POST {warm.greet_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{warm.credentials}"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    first = b'{"name": "' + CHUNK[10:]
    reply = measured(warm, "lying Content-Length (100)", head, [first, *[CHUNK] * 49])
    print(f"[memory] lying Content-Length answered by: {reply.body[:60]!r}")
    assert reply.status in (400, 413), reply
    # Either bastion refused the 100 bytes (not JSON) or uvicorn refused what followed
    # them (not HTTP) first; never a greeting.
    assert reply.body.startswith(b'{"ok":false,"error":{"code":"') or reply.body == (
        b"Invalid HTTP request received."
    ), reply


def test_lying_content_length_bastion_refuses_the_declared_bytes(warm: Server) -> None:
    """The same lie, paced: bastion reads exactly the 100 declared bytes and answers 400
    malformed; the 50 MiB after them are refused as not HTTP. RSS < +10 MiB."""
    declared = b'{"name": "' + b"a" * 90
    assert len(declared) == 100
    head = (
        f"POST {warm.greet_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{warm.credentials}"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    before = vm_hwm_kib(warm.pid)
    with socket.create_connection(("127.0.0.1", warm.port), timeout=10) as sock:
        sock.sendall(head + declared)
        first = read_reply(sock)
        rest, sent = send_while_reading(sock, b"", (CHUNK for _ in range(50)))
    growth = vm_hwm_kib(warm.pid) - before
    print(
        f"\n[memory] lying Content-Length, paced: reply {first.status} then {rest.status} "
        f"after {sent / MiB:.1f} MiB, VmHWM {before} KiB -> +{growth} KiB"
    )
    assert first.status == 400, first
    assert first.body == (
        b'{"ok":false,"error":{"code":"malformed","message":"The request body is not valid JSON."}}'
    )
    assert first.headers["cache-control"] == "no-store"
    assert rest.status == 400, rest
    assert rest.body == b"Invalid HTTP request received."
    assert growth < MAX_GROWTH_KIB, f"peak RSS grew by {growth} KiB"


def test_server_still_answers_after_the_attacks(warm: Server) -> None:
    """The process survived all three and serves the next caller normally."""
    reply = exchange(warm.port, greet_request(warm, b'{"name":"Grace"}'))
    assert reply.status == 200
    assert reply.body == b'{"ok":true,"data":{"message":"Hello, Grace!"}}'
