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
"""

from __future__ import annotations

import logging
import os
import tempfile

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion import Bastion, Context, MemoryStore, csrf, generate_secret_key, require
from bastion.sessions import get_session
from bastion.stores import Store, store_from_url

from .common import AUTHOR, ORIGIN, RATE, NewPost, PostOut, Posts, load_user

logging.getLogger("bastion.audit").setLevel(logging.WARNING)


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


bastion = Bastion(
    secret_key=generate_secret_key(),
    allowed_origins=[ORIGIN],
    # wrk and the in-process driver reach the server at its loopback address.
    trusted_hosts=["127.0.0.1"],
    store=_store(),
    load_user=load_user,
)
posts = Posts()


@bastion.action(policy=require(roles={"author"}), rate=RATE)
async def create_post(ctx: Context, data: NewPost) -> PostOut:
    return posts.add(data, ctx.user)  # type: ignore[return-value,arg-type]  # through PostOut


async def bench_login(request: Request) -> JSONResponse:
    session = get_session(request.scope)
    session.login(AUTHOR.id)
    return JSONResponse({"token": csrf.issue(session, bastion.keys), "url": PATH})


async def bench_stats(request: Request) -> JSONResponse:
    return JSONResponse({"created": posts.created})


app = Starlette(
    routes=[
        Route("/bench/login", bench_login),
        Route("/bench/stats", bench_stats),
    ]
)
bastion.mount(app)
PATH = bastion.url_for(create_post)
"""Where the action answers: ``/_actions/<opaque id>``."""
