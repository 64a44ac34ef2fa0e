"""The FastAPI stack: the same call as people commonly assemble it from add-ons.

- Starlette's ``SessionMiddleware`` (a signed cookie holding ``user_id``);
- ``fastapi-csrf-protect``: a signed token in a cookie, the same token in
  ``X-CSRF-Token`` (double submit), checked in the endpoint;
- an ``Origin`` check against the same allowed origin (written by hand: a few lines);
- ``slowapi`` (the ``limits`` library) with the same never-reached rate, keyed by user,
  in its default strategy (fixed window) and memory storage;
- the user loaded from the session and required to have the ``author`` role;
- pydantic validation of the JSON into the same ``NewPost`` (``extra="forbid"``);
- the same handler work, and ``response_model=PostOut`` (the stored email stays behind);
- one audit event per call, for a JSON line on a logger set to WARNING (so, as with
  bastion's default sink, nothing is written).

``GET /bench/login`` is for the benchmark only: it signs the author in and sets the
CSRF cookie, answering the token the page would render.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi_csrf_protect import CsrfProtect
from fastapi_csrf_protect.exceptions import CsrfProtectError
from pydantic import BaseModel
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from starlette.middleware.sessions import SessionMiddleware

from .common import AUTHOR, ORIGIN, RATE, Account, NewPost, PostOut, Posts, load_user

PATH = "/posts"
SECRET = secrets.token_urlsafe(32)

audit_log = logging.getLogger("bench.fastapi.audit")
audit_log.setLevel(logging.WARNING)


class CsrfSettings(BaseModel):
    secret_key: str = SECRET
    cookie_samesite: str = "lax"


@CsrfProtect.load_config
def csrf_config() -> CsrfSettings:
    return CsrfSettings()


def user_key(request: Request) -> str:
    return f"user:{request.session.get('user_id')}"


limiter = Limiter(key_func=user_key)
app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
app.add_middleware(SessionMiddleware, secret_key=SECRET, same_site="lax", https_only=False)
posts = Posts()


@app.exception_handler(CsrfProtectError)
def csrf_refused(request: Request, exc: CsrfProtectError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code)


def same_origin(request: Request) -> None:
    if request.headers.get("origin") != ORIGIN:
        raise HTTPException(403, "Cross-origin request refused.")


def author(request: Request) -> Account:
    user_id = request.session.get("user_id")
    user = load_user(user_id) if user_id is not None else None
    if user is None:
        raise HTTPException(401, "Sign in first.")
    if "author" not in user.roles:
        raise HTTPException(403, "Authors only.")
    return user


@app.post("/posts", response_model=PostOut, dependencies=[Depends(same_origin)])
@limiter.limit(RATE)
async def create_post(
    request: Request,
    data: NewPost,
    csrf_protect: Annotated[CsrfProtect, Depends()],
    user: Annotated[Account, Depends(author)],
) -> object:
    started = time.perf_counter()
    await csrf_protect.validate_csrf(request)
    post = posts.add(data, user)
    event = {
        "timestamp": time.time(),
        "action": "create_post",
        "principal": str(user.id),
        "client": request.client.host if request.client else None,
        "outcome": "ok",
        "status": 200,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if audit_log.isEnabledFor(logging.INFO):
        audit_log.info(json.dumps(event, separators=(",", ":")), extra={"audit": event})
    return post


@app.get("/bench/login")
async def bench_login(request: Request, csrf_protect: Annotated[CsrfProtect, Depends()]) -> object:
    request.session["user_id"] = AUTHOR.id
    token, signed = csrf_protect.generate_csrf_tokens()
    response = JSONResponse({"token": token, "url": PATH})
    csrf_protect.set_csrf_cookie(signed, response)
    return response


@app.get("/bench/stats")
async def bench_stats() -> dict[str, int]:
    return {"created": posts.created}
