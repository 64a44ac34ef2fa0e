"""The pipeline's own cost per call, and memory over many calls, without HTTP.

    python -m bench.inprocess          # a report; --json for one line run.py reads

The bastion app of ``bench.bastion_app`` is driven through its ASGI callable with a
prepared scope, ``receive`` and ``send`` (what uvicorn would pass, minus the socket):

- **pipeline cost** = (one full call through the app) - (the same validation and
  handler called directly: ``NewPost.model_validate_json(body)`` then the handler).
  Each is timed with ``timeit``: batches of calls in one event loop turn, best of N;
- **RSS growth**: resident memory after a warm-up, then after 100,000 more calls
  (``VmRSS`` from /proc/self/status, after ``gc.collect()``).

A diagnostic pair follows: the same action registered without a rate limit, to tell
the rate-limit check's share from the rest; then the CPU cost of one rate-limit hit in
the memory counters with 1 and with 20,000 callers holding counters (``_hit_cost``).

Then, separately and after all of the above (so that the timing cannot touch them), the
**cost of each stage**: ``bastion.pipeline.handle`` is replaced, for that run only, by a
wrapper that passes its own copy of ``bastion.pipeline.STAGES`` in which every stage's
``run`` is wrapped by a ``time.perf_counter_ns`` accumulator; the same call is driven
BENCH_INPROC_STAGE_CALLS times (20,000) after a warm-up, each call through the app timed
too, and batches of the same calls untimed interleaved with them. A stage's figure is
its total ÷ the calls (a stage that runs only after a refusal shows 0); "outside the
stages" is the timed full call's mean less the stages' sum: the session middleware's
save (an action call's session is read by stage 5), the Starlette app and router, the
sending of the reply, and the wrappers' own cost (the timed full call less the untimed
one shows that cost).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import platform
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import uvloop

from bastion import Context, pipeline, require
from bastion.ratelimit import Counter, parse_rate

from . import bastion_app
from .common import AUTHOR, BODY, ORIGIN, NewPost, PostOut, expected_post

Scope = dict[str, Any]
Message = dict[str, Any]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


CALLS = _env_int("BENCH_INPROC_CALLS", 1_000)
"""Calls per timed batch."""
REPEAT = _env_int("BENCH_INPROC_REPEAT", 15)
"""Batches timed; the best one counts."""
WARMUP = _env_int("BENCH_INPROC_WARMUP", 5_000)
RSS_CALLS = _env_int("BENCH_RSS_CALLS", 100_000)
STAGE_CALLS = _env_int("BENCH_INPROC_STAGE_CALLS", 20_000)
"""Calls driven with every stage timed (after a warm-up of STAGE_WARMUP)."""
STAGE_WARMUP = _env_int("BENCH_INPROC_STAGE_WARMUP", 1_000)


@bastion_app.bastion.action(policy=require(roles={"author"}), rate=None, name="no_rate")
async def create_post_no_rate(ctx: Context, data: NewPost) -> PostOut:
    """The same action without its rate limit: the diagnostic pair only."""
    return bastion_app.posts.add(data, ctx.user)  # type: ignore[return-value,arg-type]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _request(app: Any, scope: Scope, body: bytes = b"") -> tuple[int, list[Any], bytes]:
    """One request through the ASGI callable: its status, headers and body."""
    status, headers, chunks = 0, [], []
    done = False

    async def receive() -> Message:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, headers, b"".join(chunks)


class Driver:
    """Calls one action of the app as a signed-in author's script does."""

    def __init__(self, app: Any, path: str, cookie: bytes, token: bytes) -> None:
        self.app = app
        self.scope = _scope(
            "POST",
            path,
            [
                (b"content-type", b"application/json"),
                (b"accept", b"application/json"),
                (b"content-length", str(len(BODY)).encode()),
                (b"origin", ORIGIN.encode()),
                (b"cookie", cookie),
                (b"x-csrf-token", token),
            ],
        )
        self.message: Message = {"type": "http.request", "body": BODY, "more_body": False}

    async def call(self) -> int:
        status = 0
        message = self.message

        async def receive() -> Message:
            return message

        async def send(sent: Message) -> None:
            nonlocal status
            if sent["type"] == "http.response.start":
                status = sent["status"]

        await self.app(dict(self.scope), receive, send)
        return status

    async def calls(self, n: int) -> None:
        call = self.call
        for _ in range(n):
            status = await call()
            if status != 200:
                raise RuntimeError(f"an in-process call answered {status}, not 200")

    async def timed_calls(self, n: int) -> int:
        """``n`` calls, each answered 200; the nanoseconds spent inside the app."""
        call, clock, spent = self.call, time.perf_counter_ns, 0
        for _ in range(n):
            started = clock()
            status = await call()
            spent += clock() - started
            if status != 200:
                raise RuntimeError(f"an in-process call answered {status}, not 200")
        return spent


async def _sign_in(app: Any) -> tuple[bytes, bytes]:
    """The author's session cookie and a CSRF token, from the bench-only login route."""
    status, headers, body = await _request(app, _scope("GET", "/bench/login", []))
    cookies = [v.split(b";")[0] for k, v in headers if k.lower() == b"set-cookie"]
    if status != 200 or not cookies:
        raise RuntimeError(f"bench login answered {status} with no session cookie")
    return b"; ".join(cookies), json.loads(body)["token"].encode()


def _direct(handler: Callable[..., Awaitable[Any]]) -> Callable[[int], Awaitable[None]]:
    ctx = SimpleNamespace(user=AUTHOR)

    async def calls(n: int) -> None:
        for _ in range(n):
            data = NewPost.model_validate_json(BODY)
            await handler(ctx, data)

    return calls


def _best(
    loop: asyncio.AbstractEventLoop, calls: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    """µs per call: the best batch, and the median one (to show any drift)."""
    times = timeit.repeat(lambda: loop.run_until_complete(calls(CALLS)), number=1, repeat=REPEAT)
    per_call = sorted(t / CALLS * 1e6 for t in times)
    return {"best_us": per_call[0], "median_us": per_call[len(per_call) // 2]}


def _rss() -> int:
    """Resident memory in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _rss_growth(loop: asyncio.AbstractEventLoop, driver: Driver) -> dict[str, float]:
    before = _rss()
    left = RSS_CALLS
    while left:
        n = min(left, 1_000)
        loop.run_until_complete(driver.calls(n))
        left -= n
    after = _rss()
    return {
        "calls": RSS_CALLS,
        "before_mib": before / 2**20,
        "after_mib": after / 2**20,
        "growth_mib": (after - before) / 2**20,
    }


@dataclasses.dataclass
class StageClock:
    """What the timed copies of the stages added up: nanoseconds and runs, per stage."""

    names: list[str]
    ns: list[int]
    runs: list[int]

    def reset(self) -> None:
        self.ns[:] = [0] * len(self.names)
        self.runs[:] = [0] * len(self.names)


Timed = tuple[tuple[Any, ...], StageClock]


def timed_stages(stages: tuple[Any, ...]) -> Timed:
    """A copy of ``stages`` with each one's ``run`` timed (``dataclasses.replace``), and
    the clock they add to. A stage that raises (a refusal) is timed too."""
    clock = StageClock([s.name for s in stages], [0] * len(stages), [0] * len(stages))
    now, totals, runs = time.perf_counter_ns, clock.ns, clock.runs

    def timed(i: int, run: Callable[..., Awaitable[None] | None]) -> Callable[..., Awaitable[None]]:
        async def run_timed(call: Any, runtime: Any) -> None:
            started = now()
            try:
                pending = run(call, runtime)  # a stage that waits returns what it waits for
                if pending is not None:
                    await pending
            finally:
                totals[i] += now() - started
                runs[i] += 1

        return run_timed

    copy = tuple(dataclasses.replace(s, run=timed(i, s.run)) for i, s in enumerate(stages))
    return copy, clock


@contextmanager
def stages_timed(timed: Timed | None = None) -> Iterator[StageClock]:
    """While the block runs, every call the app makes to ``bastion.pipeline.handle``
    runs the timed copy of ``bastion.pipeline.STAGES`` (as they are now, unless ``timed``
    is given); put back after."""
    original = pipeline.handle
    stages, clock = timed if timed is not None else timed_stages(pipeline.STAGES)

    async def handle(*args: Any, **kwargs: Any) -> Any:
        kwargs["stages"] = stages
        return await original(*args, **kwargs)

    pipeline.handle = handle
    try:
        yield clock
    finally:
        pipeline.handle = original


def per_stage(loop: asyncio.AbstractEventLoop, driver: Driver, calls: int) -> dict[str, Any]:
    """The mean µs of each stage over ``calls`` calls (after a warm-up), and of the call
    through the app; "outside" is the difference. Batches of the same calls untimed are
    interleaved with the timed ones, for what the timing itself costs."""
    timed = timed_stages(pipeline.STAGES)
    with stages_timed(timed) as clock:
        left = STAGE_WARMUP
        while left:
            n = min(left, 1_000)
            loop.run_until_complete(driver.calls(n))
            left -= n
    clock.reset()
    spent = untimed = 0
    left = calls
    while left:
        n = min(left, 1_000)
        with stages_timed(timed):
            spent += loop.run_until_complete(driver.timed_calls(n))
        untimed += loop.run_until_complete(driver.timed_calls(n))
        left -= n
    if not any(clock.runs):
        raise RuntimeError("the app did not call bastion.pipeline.handle: no stage was timed")
    rows: list[dict[str, Any]] = [
        {"n": i + 1, "name": name, "us": ns / calls / 1000, "runs": runs}
        for i, (name, ns, runs) in enumerate(zip(clock.names, clock.ns, clock.runs, strict=True))
    ]
    full_us = spent / calls / 1000
    stages_us = sum(r["us"] for r in rows)
    return {
        "calls": calls,
        "rows": rows,
        "stages_us": stages_us,
        "outside_us": full_us - stages_us,
        "full_us": full_us,
        "untimed_us": untimed / calls / 1000,
    }


async def _check(app: Any, path: str, cookie: bytes, token: bytes) -> None:
    """One call, its reply read in full: 200 and the expected post, or no numbers."""
    driver = Driver(app, path, cookie, token)
    status, _, body = await _request(app, driver.scope, BODY)
    reply = json.loads(body) if body else None
    if status != 200 or not (
        isinstance(reply, dict) and reply.get("ok") is True and expected_post(reply.get("data"))
    ):
        raise RuntimeError(f"in-process call to {path} answered {status}: {body[:200]!r}")


CALLERS = (1, 20_000)
"""Callers with live counters for the rate-limit hit's cost (``_hit_cost``)."""


def _hit_cost(loop: asyncio.AbstractEventLoop, callers: int, hits: int = 2_000) -> float:
    """CPU µs of one rate-limit hit in the memory counters that ``callers`` other callers
    also have counters in, with a turn of the event loop between hits (as between a
    server's calls, where the storage's upkeep runs): best of 3."""
    rate = parse_rate("100000000/minute", "bench")
    counter = Counter()

    async def run() -> float:
        for i in range(callers):
            await counter.hit(rate, "refused", f"caller{i}")
        started = time.process_time()
        for _ in range(hits):
            await counter.hit(rate, "action", "create_post", "user:1")
            await asyncio.sleep(0)
        return (time.process_time() - started) / hits * 1e6

    return min(loop.run_until_complete(run()) for _ in range(3))


def measure() -> dict[str, Any]:
    app = bastion_app.app
    bastion = bastion_app.bastion
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    cookie, token = loop.run_until_complete(_sign_in(app))
    limited = Driver(app, bastion_app.PATH, cookie, token)
    unlimited = Driver(app, bastion.url_for(create_post_no_rate), cookie, token)
    for driver in (limited, unlimited):
        loop.run_until_complete(_check(app, driver.scope["path"], cookie, token))

    direct = _direct(bastion_app.create_post)
    loop.run_until_complete(direct(WARMUP))
    loop.run_until_complete(limited.calls(WARMUP))
    direct_t = _best(loop, direct)
    full_t = _best(loop, limited.calls)
    # Diagnostic: bastion's own ASGI callable, without the Starlette app around it.
    alone = Driver(bastion, bastion_app.PATH, cookie, token)
    loop.run_until_complete(_check(bastion, bastion_app.PATH, cookie, token))
    alone_t = _best(loop, alone.calls)
    rss = _rss_growth(loop, limited)

    # Diagnostic: the same pipeline with no rate limit (after the figures above).
    loop.run_until_complete(unlimited.calls(WARMUP))
    no_rate_t = _best(loop, unlimited.calls)
    no_rate_rss = _rss_growth(loop, unlimited)

    callers = {str(n): _hit_cost(loop, n) for n in CALLERS}

    # Last, apart from every figure above: each stage of the same call, timed.
    stages = per_stage(loop, limited, STAGE_CALLS)
    loop.close()
    return {
        "calls_per_batch": CALLS,
        "batches": REPEAT,
        "direct": direct_t,
        "full": full_t,
        "pipeline_us": full_t["best_us"] - direct_t["best_us"],
        "rss": rss,
        "alone": {"full": alone_t, "pipeline_us": alone_t["best_us"] - direct_t["best_us"]},
        "no_rate": {
            "full": no_rate_t,
            "pipeline_us": no_rate_t["best_us"] - direct_t["best_us"],
            "rss": no_rate_rss,
        },
        "callers": callers,
        "stages": stages,
        "python": platform.python_version(),
    }


def report(r: dict[str, Any]) -> str:
    rss, alone, diag = r["rss"], r["alone"], r["no_rate"]
    lines = [
        f"In-process (ASGI callable, no HTTP), batches of {r['calls_per_batch']:,} calls, "
        f"best of {r['batches']} (median in brackets):",
        f"  full call through the app      {r['full']['best_us']:8.1f} µs"
        f"  ({r['full']['median_us']:.1f})",
        f"  validation + handler directly  {r['direct']['best_us']:8.1f} µs"
        f"  ({r['direct']['median_us']:.1f})",
        f"  pipeline cost per call         {r['pipeline_us']:8.1f} µs",
        f"  RSS over {rss['calls']:,} calls: {rss['before_mib']:.1f} -> "
        f"{rss['after_mib']:.1f} MiB, growth {rss['growth_mib']:+.2f} MiB",
        "  diagnostic, bastion's own ASGI callable (no Starlette app, router or middleware):",
        f"    full call {alone['full']['best_us']:.1f} µs"
        f" ({alone['full']['median_us']:.1f}), pipeline cost {alone['pipeline_us']:.1f} µs",
        "  diagnostic, the same action without a rate limit:",
        f"    full call {diag['full']['best_us']:.1f} µs"
        f" ({diag['full']['median_us']:.1f}), pipeline cost {diag['pipeline_us']:.1f} µs,"
        f" RSS growth over {diag['rss']['calls']:,} calls {diag['rss']['growth_mib']:+.2f} MiB",
    ]
    if "callers" in r:
        costs = ", ".join(f"{float(us):.1f} µs with {int(n):,}" for n, us in r["callers"].items())
        lines += [
            "  rate-limit hit (memory counters), a turn of the event loop between hits, by the",
            f"  callers with counters in the window: {costs}",
        ]
    if "stages" in r:
        lines += ["", *stage_table(r["stages"])]
    return "\n".join(lines)


def stage_table(st: dict[str, Any]) -> list[str]:
    """The per-stage figures as a text table (stage number, name, mean µs per call)."""
    width = max(len(x) for x in [*(row["name"] for row in st["rows"]), "full call, this run"])
    lines = [
        f"Per stage, the same call, each stage timed (perf_counter_ns), mean of "
        f"{st['calls']:,} calls:",
        f"    #  {'stage':<{width}}       µs",
    ]
    for row in st["rows"]:
        partial = "" if row["runs"] == st["calls"] else f"  (ran in {row['runs']:,} calls)"
        lines.append(f"  {row['n']:>3}  {row['name']:<{width}}  {row['us']:7.2f}{partial}")
    lines += [
        f"       {'outside the stages':<{width}}  {st['outside_us']:7.2f}"
        "  (the session's save, Starlette app and router, the reply's sending)",
        f"       {'sum of the stages':<{width}}  {st['stages_us']:7.2f}",
        f"       {'full call, this run':<{width}}  {st['full_us']:7.2f}"
        f"  (the same calls untimed, interleaved: {st['untimed_us']:.2f};"
        f" the timing's own cost {st['full_us'] - st['untimed_us']:+.2f})",
    ]
    return lines


def main() -> None:
    result = measure()
    if "--json" in sys.argv[1:]:
        print("BENCH_INPROCESS " + json.dumps(result))
    else:
        print(report(result))


if __name__ == "__main__":
    main()
