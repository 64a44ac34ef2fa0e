"""The floor: a bare Starlette endpoint that parses the same JSON and answers a small
JSON. No session, no origin or token check, no validation, no rate limit, no audit:
what one core can do for this request before any of the work the others do."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/posts"


async def create_post(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"ok": True, "data": {"id": 1, "title": data["title"]}})


app = Starlette(routes=[Route(PATH, create_post, methods=["POST"])])
