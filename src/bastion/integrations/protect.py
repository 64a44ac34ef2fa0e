"""An action's guards on the app's own routes: ``Depends(bastion.protect)`` (FastAPI)
and ``@bastion.protected`` (Starlette).

A JSON route beside the actions rides on the same session cookie, so a cross-site page
can make a visitor's browser post to it just as it would to an action. A protected route
gets the two checks an action gets before its handler runs, in the action's order, on the
same session, with the same refusals (``403`` and the action's JSON envelope)::

    3  origin       Sec-Fetch-Site, Origin, Referer    403 cross_origin
    5  CSRF token   X-CSRF-Token, bound to the session  403 no_session, csrf_failed

The token is read from the ``X-CSRF-Token`` header only, never from the body: the body
is the route's to read, and the checks need none of it. A Starlette endpoint under
``protected`` is refused before anything reads its body. FastAPI reads and decodes a
route's body before it runs any dependency, so there a malformed JSON body is FastAPI's
own 422 before ``protect`` sees the call (the handler never runs either way); a
well-formed one is refused by ``protect`` before FastAPI validates it. Plain HTML forms
post to actions, which also read a ``_csrf`` field. Safe methods (GET, HEAD, OPTIONS)
pass unchecked, so a whole router can be protected; they must not change anything, as
everywhere.

Nothing here imports FastAPI: a FastAPI dependency is a plain callable whose parameter is
annotated with Starlette's ``Request``. Raised from a dependency, a refusal reaches the
app's exception handlers as ``Refused``, an ``HTTPException``: answered with the action's
envelope by ``respond``, which ``bastion.mount(app)`` registers (``handle_refusals`` does
it for another app); still a 403, in the framework's own error shape, where it is not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from bastion import csrf
from bastion.errors import ActionError
from bastion.http import origin, responses
from bastion.sessions import get_session

if TYPE_CHECKING:
    from bastion.pipeline.runtime import Runtime

__all__ = ["SAFE_METHODS", "Endpoint", "Refused", "check", "guarded", "refusal", "respond"]

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response] | Response]


class Refused(HTTPException):
    """An action's refusal, raised from a route's dependency, with its words as the app's
    catalog has them. An ``HTTPException``, so that an app without bastion's handler
    still answers its status, never a 500."""

    def __init__(self, error: ActionError, message: str | None = None) -> None:
        self.message = error.message if message is None else message
        super().__init__(error.status, self.message, headers=error.headers or None)
        self.error = error


def refusal(runtime: Runtime, connection: HTTPConnection) -> Refused | None:
    """The refusal an action would answer this call with, or ``None`` if it passes."""
    try:
        check(runtime, connection)
    except ActionError as exc:
        # In the app's words (Bastion(messages=...)), as the pipeline words an action's.
        return Refused(exc, runtime.messages.of(exc.code, exc.message, type(exc).message))
    return None


def check(runtime: Runtime, connection: HTTPConnection) -> None:
    """Raise the ``ActionError`` an action would answer this call with, if any."""
    scope = connection.scope
    if scope.get("method") in SAFE_METHODS:
        return
    # The session first, as in an action call: no session middleware is a set-up mistake (a 500
    # naming bastion.mount), never a call let through.
    session = get_session(scope)
    headers = Headers(scope=scope)
    label = _label(connection)
    origin.check(headers, runtime.origins_for(scope), label)
    csrf.verify(session.id, headers, None, runtime.keys, label)


def respond(request: Request, exc: Exception) -> Response:
    """The exception handler for ``Refused``: the action's JSON envelope."""
    if not isinstance(exc, Refused):  # pragma: no cover - registered for Refused only
        raise exc
    return responses.error(exc.error, message=exc.message)


def guarded(runtime: Runtime, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` behind the checks: a refusal is answered here, and the endpoint does
    not run. A sync endpoint runs in the thread pool, as Starlette would run it."""

    @functools.wraps(endpoint)
    async def protected(request: Request) -> Response:
        refused = refusal(runtime, request)
        if refused is not None:
            return responses.error(refused.error, message=refused.message)
        if _is_async(endpoint):
            reply = endpoint(request)
        else:
            reply = await run_in_threadpool(endpoint, request)
        return reply if isinstance(reply, Response) else await reply

    return protected


def _is_async(endpoint: object) -> bool:
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    call = getattr(endpoint, "__call__", None)  # noqa: B004 - a callable object's method
    return inspect.iscoroutinefunction(endpoint) or inspect.iscoroutinefunction(call)


def _label(connection: HTTPConnection) -> str:
    """What the security log calls the route: its declared path (``/notes/{id}``), never
    the path the client sent, which is the client's to fill with anything."""
    route = connection.scope.get("route")
    path = getattr(route, "path", None)
    method = connection.scope.get("method", "")
    if isinstance(path, str):
        return f"route {method} {path}"
    endpoint = connection.scope.get("endpoint")
    name = getattr(endpoint, "__qualname__", None)
    return f"route {method} {name}" if isinstance(name, str) else f"route {method}"
