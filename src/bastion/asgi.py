"""The session around every request: loaded before the app runs, saved when the response
starts, and the host guard in front of it (``trusted_hosts``).

``bastion.mount(app)`` installs it around the whole app, so pages can render tokens and
flash messages and no route answers a foreign ``Host``; bastion's own ASGI entry wraps
itself with it too, and whichever runs first does the work. It sits above the
``Runtime``: it is the one piece of the request path that is not a stage.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import ActionError, ServiceUnavailable
from bastion.http import network
from bastion.http.incoming import RequestHeaders, path_below
from bastion.http.network import host_trusted
from bastion.http.responses import error
from bastion.messages import CATALOG, Messages
from bastion.sessions import (
    FLASH_KEY,
    SCOPE_KEY,
    Pending,
    Session,
    cookie_name,
    session_cookie,
)

if TYPE_CHECKING:
    from bastion.pipeline.runtime import Runtime

__all__ = ["SessionMiddleware", "UntrustedHost"]

logger = logging.getLogger("bastion")


class UntrustedHost(ActionError):
    status = 400
    code = "untrusted_host"
    message = CATALOG["untrusted_host"]


class SessionMiddleware:
    """Loads the session before the app runs and saves it when the response starts.

    ``bastion.mount(app)`` installs it around the whole app, so pages can render
    tokens and flash messages; bastion's own ASGI entry wraps itself with it too,
    and whichever runs first does the work.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or SCOPE_KEY in scope:
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        config = runtime.config
        if config.debug:
            # Every route of the app, not only bastion's: debug replies leak detail.
            network.refuse_debug_off_loopback(scope, runtime.checked_servers)
        headers = RequestHeaders(scope)
        headers.keep(scope)  # the pipeline reads the same index, if nothing changed them
        if config.trusted_hosts is not None and not host_trusted(headers, config.trusted_hosts):
            # Before the app runs: nothing it builds from Host (a redirect) may name a
            # host it does not serve.
            await _refuse_host(scope, headers, config.prefix, runtime.messages)(
                scope, receive, send
            )
            return
        secure = runtime.is_https(scope)
        name = cookie_name(config.sessions.cookie_name, secure)
        cookie = session_cookie(headers, name)
        loaded: Session | Pending
        if scope["method"] not in ("GET", "HEAD") and _is_action_call(scope, config.prefix):
            # An action call's session is loaded by its pipeline, after the checks that
            # need none, with the call's rate-limit hit (one round trip on Redis).
            loaded = Pending(cookie)
        else:
            try:
                loaded = await runtime.sessions.load(cookie)
            except Exception:
                # Fail closed: without its session, no request of this visitor goes on.
                logger.exception("bastion: the session store failed to load a session")
                await _unavailable(scope, headers, config.prefix, runtime.messages)(
                    scope, receive, send
                )
                return
            if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                # Shown once: the flash moves from the session to this page's request.
                scope[FLASH_KEY] = loaded.pop_flash()
        scope[SCOPE_KEY] = loaded

        failed = False

        async def send_with_session(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the app's own body, after its reply was replaced by a 503
            session = loaded.session if isinstance(loaded, Pending) else loaded
            if (
                message["type"] == "http.response.start"
                and session is not None
                and session.needs_saving
            ):
                try:
                    extra = await runtime.sessions.save(session, name, secure)
                except Exception:
                    # The reply would claim a change the store never recorded.
                    logger.exception("bastion: the session store failed to save a session")
                    failed = True
                    await _unavailable(scope, headers, config.prefix, runtime.messages)(
                        scope, receive, send
                    )
                    return
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_session)


def _is_action_call(scope: Scope, prefix: str) -> bool:
    """Whether the request goes to one of bastion's actions (``{prefix}/{action}``)."""
    path = path_below(scope, prefix)
    return len(path) > 1 and path.count("/") == 1


def _unavailable(scope: Scope, headers: Headers, prefix: str, messages: Messages) -> Response:
    """503: the JSON envelope for action calls and scripts, plain text for pages."""
    words = messages.text(ServiceUnavailable.code)
    if _wants_envelope(scope, headers, prefix):
        return error(ServiceUnavailable(), message=words)
    return _plain(503, words.encode())


def _refuse_host(scope: Scope, headers: Headers, prefix: str, messages: Messages) -> Response:
    """400 for a ``Host`` that is not trusted: the envelope for calls, text for pages."""
    words = messages.text(UntrustedHost.code)
    if _wants_envelope(scope, headers, prefix):
        return error(UntrustedHost(), message=words)
    return _plain(400, words.encode())


def _wants_envelope(scope: Scope, headers: Headers, prefix: str) -> bool:
    path: str = scope.get("path", "")
    return (
        path == prefix
        or path.startswith(prefix + "/")
        or "application/json" in headers.get("accept", "")
    )


def _plain(status: int, body: bytes) -> Response:
    return Response(
        body,
        status,
        {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        media_type="text/plain",
    )
