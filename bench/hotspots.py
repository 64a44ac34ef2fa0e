"""Where bastion's server spends its time under load: py-spy on the bench server.

    python -m bench.hotspots            # or: make bench-profile

The bastion bench server runs as in ``python -m bench`` (uvicorn, one core); wrk loads
it from the other core while ``py-spy record`` samples it (BENCH_PROFILE_SECONDS, 20 s by
default). Printed: the functions with the most samples on top of the stack (self), and
the ones on the stack at all (total), as a share of the samples where the server was
busy (py-spy leaves out the idle ones: the event loop waiting in epoll). The raw stacks
are kept at BENCH_PROFILE_OUTPUT (/tmp/bastion-profile.txt) for a flame graph.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from .common import BODY, ORIGIN
from .run import (
    SERVERS,
    Hostile,
    Refused,
    Settings,
    _server,
    _sign_in,
    _verify,
    _verify_refusal,
    _wait_quiet,
    _wrk,
)

_LINE = re.compile(r" \(([^()]*):\d+\)$")
_WAITING = re.compile(r"^_worker \(concurrent/futures/thread\.py:\d+\)$")
"""A thread-pool worker waiting for work: idle, though py-spy does not flag it so."""
_PLUMBING = (
    "runpy",
    "click/",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "uvicorn/__main__.py",
    "asyncio/runners.py",
)


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: lines of one function counted together."""
    return _LINE.sub(r" (\1)", frame)


def _package(function: str) -> str:
    """``name (bastion/pipeline.py)`` -> ``bastion``; the standard library by module."""
    path = function.rpartition(" (")[2].rstrip(")")
    return path.split("/")[0].removesuffix(".py")


def summarize(raw: str, top: int = 25) -> str:
    """Self and total shares of the server's busy samples on its main thread."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = pool = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        if frames[0].startswith("Thread._bootstrap "):
            # A worker thread (the default executor of asyncio.to_thread).
            pool += 0 if _WAITING.match(frames[-1]) else n
            continue
        names = [_function(f) for f in frames]
        samples += n
        own[names[-1]] += n
        packages[_package(names[-1])] += n
        for name in set(names):
            total[name] += n
    if not samples:
        return "no samples"

    def pct(n: int) -> str:
        return f"{100 * n / samples:5.1f}"

    out = [
        f"{samples} busy samples of the main thread (and {pool} of worker threads at work)",
        "",
        "| self % | function |",
        "|--:|---|",
        *(f"| {pct(n)} | {name} |" for name, n in own.most_common(top)),
        "",
        "| total % | function (on the stack; server plumbing left out) |",
        "|--:|---|",
    ]
    kept = [(k, n) for k, n in total.most_common() if not any(p in k for p in _PLUMBING)]
    out += [f"| {pct(n)} | {name} |" for name, n in kept[: top + 15]]
    out += ["", "| self % | package or module |", "|--:|---|"]
    out += [f"| {pct(n)} | {name} |" for name, n in packages.most_common(12)]
    return "\n".join(out)


def main() -> int:
    settings = Settings.from_env()
    seconds = int(os.environ.get("BENCH_PROFILE_SECONDS", "20"))
    output = Path(os.environ.get("BENCH_PROFILE_OUTPUT", "/tmp/bastion-profile.txt"))  # noqa: S108
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # BENCH_PROFILE_SERVER: which bench server (bastion, refused-json, refused-form,
    # bastion-sqlite, bastion-redis …).
    key = os.environ.get("BENCH_PROFILE_SERVER", "bastion")
    found = [t for t in SERVERS if t.key == key]
    if not found:
        print(f"bench.hotspots: no bench server {key!r}", file=sys.stderr)
        return 2
    target = found[0]
    try:
        with _server(target, settings.port, settings) as proc:
            creds = _sign_in(target, settings.port)
            _verify(target, settings.port, creds)
            # The refused rows (refused-json, refused-form) send their forged-token call.
            hostile = Hostile.of(target.hostile, creds) if target.hostile else None
            if hostile is not None:
                _verify_refusal(target, settings.port, creds, hostile)
            _wait_quiet(settings)
            _wrk(settings.port, creds, 2, settings, hostile=hostile)  # warm-up
            load = threading.Thread(
                target=_wrk,
                args=(settings.port, creds, seconds + 3, settings),
                kwargs={"hostile": hostile},
                daemon=True,
            )
            load.start()
            command = [
                *settings.pinned(settings.client_cpu), py_spy, "record",
                "--pid", str(proc.pid), "--duration", str(seconds), "--rate", "200",
                "--format", "raw", "--output", str(output),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
            load.join()
            if done.returncode != 0:
                raise Refused(f"py-spy failed:\n{done.stdout}\n{done.stderr}")
    except Refused as exc:
        print(f"bench.hotspots: REFUSED: {exc}", file=sys.stderr)
        return 1
    print(f"bastion server under wrk ({len(BODY)} B JSON, Origin {ORIGIN}), py-spy {seconds} s:")
    print(summarize(output.read_text()))
    print(f"\nraw stacks: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
