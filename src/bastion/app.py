"""``Bastion``: configuration, registration and the ASGI entry point."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Final, TypeVar

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import pipeline, templating
from .config import Config, Limits, check_timeout
from .errors import ConfigurationError, NotFound
from .keys import KeyRing, Secret, resolve_secret
from .policy import Policy
from .registry import Registry, build_spec
from .responses import error

__all__ = ["Bastion"]

logger = logging.getLogger("bastion")

F = TypeVar("F", bound=Callable[..., Any])

_SCRIPT: Final = "/bastion.js"


class Bastion:
    """Server actions with every check on by default.

    ::

        bastion = Bastion(secret_key=os.environ["BASTION_SECRET_KEY"])

        @bastion.action(policy=public)
        async def greet(data: Greeting) -> Reply: ...

        bastion.mount(app)  # POST /_actions/{id}
    """

    def __init__(
        self,
        *,
        secret_key: str | bytes | Secret | None = None,
        secret_key_fallbacks: Sequence[str | bytes | Secret] = (),
        debug: bool = False,
        prefix: str = "/_actions",
        limits: Limits | None = None,
        timeout: float = 30.0,
    ) -> None:
        secret, fallbacks = resolve_secret(secret_key, secret_key_fallbacks, debug=debug)
        self.config: Final = Config(
            secret_key=secret,
            secret_key_fallbacks=fallbacks,
            debug=debug,
            prefix=prefix,
            limits=limits or Limits(),
            timeout=timeout,
        )
        self.keys: Final = KeyRing(secret, fallbacks)
        self.registry: Final = Registry()
        self._checked_servers: set[tuple[Any, ...]] = set()

    @property
    def debug(self) -> bool:
        return self.config.debug

    # --- registration ------------------------------------------------------------------

    def action(
        self,
        *,
        policy: Policy | None = None,
        name: str | None = None,
        timeout: float | None = None,
        max_body_bytes: int | None = None,
        max_files: int | None = None,
        max_file_bytes: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function as an action. It is returned unchanged.

        ``policy`` is required: who may call it (``public`` for anyone). The input
        model is the annotation of the parameter typed with a pydantic model, the
        output is the return annotation; both are checked here, at import time.
        """
        overrides = {
            key: value
            for key, value in {
                "max_body_bytes": max_body_bytes,
                "max_files": max_files,
                "max_file_bytes": max_file_bytes,
            }.items()
            if value is not None
        }

        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"an action's name must be a non-empty string, not {name!r}")

        def register(fn: F) -> F:
            label: str = name or getattr(fn, "__name__", None) or repr(fn)
            try:
                limits = dataclasses.replace(self.config.limits, **overrides)
            except ConfigurationError as exc:
                raise ConfigurationError(f"action {label!r}: {exc}") from exc
            spec = build_spec(
                fn,
                name=label,
                policy=policy,
                limits=limits,
                timeout=check_timeout(
                    self.config.timeout if timeout is None else timeout,
                    f"action {label!r}: timeout",
                ),
                keys=self.keys.all("action-id"),
            )
            self.registry.add(spec)
            return fn

        return register

    def url_for(self, action: Callable[..., Any] | str) -> str:
        """The path an action answers at, for a function or a registered name."""
        return f"{self.config.prefix}/{self.registry.get(action).id}"

    @property
    def script_url(self) -> str:
        """Where ``bastion.js`` (progressive enhancement for forms) is served."""
        return self.config.prefix + _SCRIPT

    def templates(self, target: Any) -> None:
        """Add ``action_url``, ``bastion_fields`` and ``bastion_script`` to Jinja templates
        (a Starlette ``Jinja2Templates`` or a ``jinja2.Environment``)."""
        templating.install(self, target)

    # --- mounting ----------------------------------------------------------------------

    def mount(self, app: Starlette) -> None:
        """Serve the actions from a Starlette or FastAPI app, under ``prefix``."""
        app.mount(self.config.prefix, app=self, name="bastion")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Served on its own (not mounted): nothing to start, but the protocol is
            # answered, or servers and test clients waiting for startup fail.
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})  # actions are HTTP only
            return
        if self.config.debug:
            self._refuse_debug_off_loopback(scope)
        path = _relative_path(scope, self.config.prefix)
        response: Response
        if path == _SCRIPT and scope["method"] in ("GET", "HEAD"):
            response = _script_response()
        elif path.startswith("/") and path.count("/") == 1 and len(path) > 1:
            response = await pipeline.handle(self, scope, receive, path[1:])
        else:
            response = error(NotFound())
        await response(scope, receive, send)

    def _refuse_debug_off_loopback(self, scope: Scope) -> None:
        server = tuple(scope.get("server") or ())
        if server in self._checked_servers:
            return
        host = server[0] if server else None
        if not _is_loopback(host):
            logger.critical("bastion: debug mode refused: the server listens on %r", host)
            raise ConfigurationError(
                f"debug=True is only allowed on a loopback address, not on {host!r}"
            )
        self._checked_servers.add(server)

    def __repr__(self) -> str:
        return f"Bastion(prefix={self.config.prefix!r}, actions={len(self.registry)})"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _is_loopback(host: object) -> bool:
    if host == "localhost":
        return True
    try:
        return isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _relative_path(scope: Scope, prefix: str) -> str:
    """The path below the prefix, whether mounted with Starlette or served directly;
    ``""`` for a path outside the prefix (answered 404)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if root.endswith(prefix):  # mounted: the mount point consumed the prefix
        return path
    if path.startswith(prefix + "/"):  # served on its own
        return path[len(prefix) :]
    return ""


@functools.cache
def _script() -> bytes:
    return resources.files("bastion").joinpath("static/bastion.js").read_bytes()


def _script_response() -> Response:
    return Response(
        _script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
