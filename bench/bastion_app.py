"""Bastion: the "create post" action through the whole pipeline.

Every call: session from its cookie (BENCH_STORE: memory, sqlite or redis), Origin
check, CSRF token from ``X-CSRF-Token``, rate-limit check (never reached),
``require(roles={"author"})`` with the signed-in author loaded by ``load_user``,
validation of the JSON into ``NewPost``, the handler, output through ``PostOut`` (the
stored email stays behind), and one audit event for the default sink. The
``bastion.audit`` logger is set to WARNING, so the event is built and handed to the sink
but not written: logging I/O is not what is measured here.

``GET /bench/login`` is for the benchmark only: it signs the author in and answers a
CSRF token for that session (its cookie comes with the reply), as a page would render.
``GET /bench/stats`` answers how many posts were created (the handler's runs) and what
became of ``BENCH_REFUSAL_RATE`` (below).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion import Bastion, Context, MemoryStore, csrf, generate_secret_key, require
from bastion.sessions import get_session
from bastion.stores import Store, store_from_url

from .common import AUTHOR, ORIGIN, RATE, NewPost, PostOut, Posts, load_user

logging.getLogger("bastion.audit").setLevel(logging.WARNING)
# Each refused call is a WARNING on bastion.security; unconfigured, Python's last-resort
# handler writes it to stderr. Quieted as the audit log is: logging I/O is not measured.
logging.getLogger("bastion.security").setLevel(logging.ERROR)


def _store() -> Store:
    """``BENCH_STORE``: ``memory`` (the default here), ``sqlite`` (bastion's default store,
    in a directory of its own) or ``redis`` (the one at ``REDIS_URL``, rate limits in it
    too: the scale-out configuration)."""
    kind = os.environ.get("BENCH_STORE", "memory")
    if kind == "sqlite":
        return store_from_url(None, tempfile.mkdtemp(prefix="bench-sqlite-"))
    if kind == "redis":
        return store_from_url(os.environ["REDIS_URL"])
    return MemoryStore()


REFUSAL_RATE = os.environ.get("BENCH_REFUSAL_RATE", "1000000000/minute")
"""``Bastion(refusal_rate=...)``: how many refused calls one address may make before its
calls are answered 429. The throughput runs send nothing but refused calls from one
address, so by default the bench raises it out of reach (the cost of counting, not of a
429); empty (``BENCH_REFUSAL_RATE=``): nothing is passed, the library's default applies
(the flood check)."""


def _bastion() -> tuple[Bastion, str]:
    """The app's Bastion, and what became of ``refusal_rate`` (for the report)."""
    options: dict[str, Any] = {
        "secret_key": generate_secret_key(),
        "allowed_origins": [ORIGIN],
        # wrk and the in-process driver reach the server at its loopback address.
        "trusted_hosts": ["127.0.0.1"],
        "store": _store(),
        "load_user": load_user,
    }
    if not REFUSAL_RATE:
        return Bastion(**options), "not passed (BENCH_REFUSAL_RATE empty): the library default"
    return Bastion(**options, refusal_rate=REFUSAL_RATE), f"refusal_rate={REFUSAL_RATE!r}"


bastion, REFUSAL_RATE_STATUS = _bastion()
posts = Posts()


@bastion.action(policy=require(roles={"author"}), rate=RATE)
async def create_post(ctx: Context, data: NewPost) -> PostOut:
    return posts.add(data, ctx.user)  # type: ignore[return-value,arg-type]  # through PostOut


async def bench_login(request: Request) -> JSONResponse:
    session = get_session(request.scope)
    session.login(AUTHOR.id)
    return JSONResponse({"token": csrf.issue(session, bastion.keys), "url": PATH})


async def bench_stats(request: Request) -> JSONResponse:
    return JSONResponse({"created": posts.created, "refusal_rate": REFUSAL_RATE_STATUS})


app = Starlette(
    routes=[
        Route("/bench/login", bench_login),
        Route("/bench/stats", bench_stats),
    ]
)
bastion.mount(app)
PATH = bastion.url_for(create_post)
"""Where the action answers: ``/_actions/<opaque id>``."""
