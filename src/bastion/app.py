"""``Bastion``: configuration, registration and the ASGI entry point."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from bastion import csrf, pipeline
from bastion.actions import policy as policies
from bastion.actions import schema as schemas
from bastion.actions.policy import Policy as ActionPolicy
from bastion.actions.policy import predicate
from bastion.actions.registry import Check, PolicyLike, Registry, build_spec
from bastion.asgi import SessionMiddleware
from bastion.auth import LoginThrottle, PasswordCheck, U, UserLoader, load_user
from bastion.config import Config, Environment, Limits, SessionConfig, check_timeout
from bastion.crypto.keys import KeyRing, Secret, resolve_secret
from bastion.errors import ActionError, ConfigurationError, NotFound
from bastion.events import AuditSink, log_sink
from bastion.http import network
from bastion.http.headers import Policy, SecurityHeaders, check_paths, check_policy, default_csp
from bastion.http.incoming import path_below
from bastion.http.origin import parse_origin
from bastion.http.responses import error
from bastion.integrations import protect as protecting
from bastion.messages import DEFAULT as DEFAULT_MESSAGES
from bastion.messages import Messages
from bastion.pipeline.runtime import ReadAndCount, Runtime
from bastion.pipeline.stages.binding import DEFAULT_TTL, seal
from bastion.ratelimit import Counter, parse_rate
from bastion.sessions import SCOPE_KEY, Session, SessionManager, cookie_name, get_session
from bastion.stores import Store, store_from_url
from bastion.taint import TaintSet, redactor, taint_env
from bastion.telemetry import Telemetry
from bastion.tokens import Tokens

if TYPE_CHECKING:
    pass

__all__ = ["Bastion"]

logger = logging.getLogger("bastion")

F = TypeVar("F", bound=Callable[..., Any])

_SCRIPT: Final = "/bastion.js"
_HEALTH: Final = "/health"
_SCHEMA: Final = "/openapi.json"


class _Default:
    """The app's default, where ``None`` has a meaning of its own."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()


@dataclasses.dataclass(slots=True)
class AuditRun:
    """What ``bastion audit`` sets in ``AUDITING`` while it imports an app.

    Only the command line sets it (no environment variable can): an app imported by a
    server never collects its refusals, and never runs on a stand-in key or origin.
    """

    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """Registrations refused, ``(name, reason)``: collected here instead of raised."""
    stand_ins: Environment | None = None
    """Audit-only values (a throwaway secret key, an origin that resolves nowhere) for
    what neither the app nor the environment gives, so an app imports with an empty
    environment as it would in a test run; ``None``: none."""
    stood_in: list[str] = dataclasses.field(default_factory=list)
    """The ``Environment`` fields a ``Bastion()`` took from ``stand_ins``."""

    def fill(self, env: Environment, **wanted: bool) -> Environment:
        """``env`` with a stand-in for each field named ``True`` in ``wanted`` (the app
        passed no value for it) that the environment leaves unset."""
        if self.stand_ins is None:
            return env
        changes: dict[str, Any] = {}
        for name, needed in wanted.items():
            value = getattr(self.stand_ins, name)
            if needed and getattr(env, name) is None and value is not None:
                changes[name] = value
                if name not in self.stood_in:
                    self.stood_in.append(name)
        return dataclasses.replace(env, **changes) if changes else env


AUDITING: ContextVar[AuditRun | None] = ContextVar("bastion_auditing", default=None)
"""Set by ``bastion audit`` (and only by it): see ``AuditRun``."""


class Bastion(Generic[U]):
    """Server actions with every check on by default.

    Generic in the app's user class, which a type checker infers from ``load_user``:
    with ``load_user=find_user`` returning ``Member | None``, ``bastion.user(request)``
    is ``Member | None``, and handlers take ``ctx: Context[Member]``.

    ::

        bastion = Bastion(
            secret_key=os.environ["BASTION_SECRET_KEY"],
            allowed_origins=["https://board.example"],
        )

        @bastion.action(policy=public)
        async def greet(data: Greeting) -> Reply: ...

        bastion.mount(app)  # POST /_actions/{id}
    """

    def __init__(
        self,
        *,
        secret_key: str | bytes | Secret | None = None,
        secret_key_fallbacks: Sequence[str | bytes | Secret] | None = None,
        debug: bool = False,
        prefix: str = "/_actions",
        limits: Limits | None = None,
        timeout: float = 30.0,
        allowed_origins: Sequence[str] | None = None,
        trusted_hosts: Sequence[str] | None = None,
        https: bool | None = None,
        sessions: SessionConfig | None = None,
        store: Store | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        load_user: UserLoader[U] | None = None,
        login_throttle: LoginThrottle | None = None,
        default_rate: str = "60/minute",
        refusal_rate: str | None = "300/minute",
        token_rate: str = "600/minute",  # noqa: S107 - a rate limit, not a secret
        rate_limit_storage: str | None = None,
        trusted_proxies: Sequence[str] | None = None,
        audit_sinks: Sequence[AuditSink] = (log_sink,),
        unavailable_errors: tuple[type[BaseException], ...] = (ConnectionError,),
        messages: Messages | None = None,
        telemetry: Telemetry | bool = False,
    ) -> None:
        """Every argument is described on ``Config``. An argument left out is taken from
        the environment, read once here (``bastion.Environment``): ``secret_key`` from
        ``BASTION_SECRET_KEY``, ``secret_key_fallbacks`` from
        ``BASTION_SECRET_KEY_FALLBACKS``, ``allowed_origins``, ``trusted_hosts`` and
        ``trusted_proxies`` from ``BASTION_ALLOWED_ORIGINS``, ``BASTION_TRUSTED_HOSTS`` and
        ``BASTION_TRUSTED_PROXIES`` (comma separated), ``https`` from ``BASTION_HTTPS``, and
        ``store`` from ``BASTION_STORE`` (``redis://…``, ``memory://``), else a
        ``SQLiteStore`` in ``data_dir`` (``BASTION_DATA_DIR``, else ``./data``).

        ``load_user(user_id)`` finds a signed-in user (sync or async). ``default_rate`` is
        the limit of every public action that names none. ``refusal_rate`` is how many calls
        one client address may have refused before the action's own limit counts them (an
        unknown action, a wrong method or content type, another origin, a missing or forged
        CSRF token): past it, those refusals are 429 too (``None``: not counted).
        ``token_rate`` is how many calls one API token may make, whatever it calls (each
        action's own limit counts its user as well).
        ``rate_limit_storage`` is a
        ``limits`` storage URI (``memory://``, ``redis://…``); by default the store's Redis,
        else memory. ``trusted_proxies`` are the
        networks (CIDR) whose ``X-Forwarded-For`` is believed. ``audit_sinks`` receive one
        ``AuditEvent`` per call (by default, a JSON line on the ``bastion.audit`` logger).
        A handler raising one of ``unavailable_errors`` (a database driver's connection
        error, say) gets a generic 503 instead of a 500; it is logged under a digest the same
        way. ``messages`` replaces or translates the words of bastion's refusals
        (``bastion.messages``). ``telemetry=True`` gives every call an OpenTelemetry span
        and metrics through the global providers, a ``Telemetry(...)`` through its own
        (``bastion[otel]``; docs/observability.md); off by default.
        """
        env = Environment.read()
        auditing = AUDITING.get()
        if auditing is not None:
            env = auditing.fill(
                env,
                secret_key=secret_key is None,
                allowed_origins=allowed_origins is None,
                store=store is None,
            )
        secret, fallbacks = resolve_secret(
            secret_key if secret_key is not None else env.secret_key,
            secret_key_fallbacks
            if secret_key_fallbacks is not None
            else env.secret_key_fallbacks or (),
            debug=debug,
        )
        origins = _resolve_origins(
            allowed_origins if allowed_origins is not None else env.allowed_origins,
            debug=debug,
        )
        self.config: Final = Config(
            secret_key=secret,
            secret_key_fallbacks=fallbacks,
            debug=debug,
            prefix=prefix,
            limits=limits or Limits(),
            timeout=timeout,
            allowed_origins=origins,
            trusted_hosts=_resolve_hosts(
                trusted_hosts if trusted_hosts is not None else env.trusted_hosts, origins
            ),
            https=https if https is not None else env.https,
            sessions=sessions or SessionConfig(),
        )
        self.keys: Final = KeyRing(secret, fallbacks)
        self.registry: Final = Registry()
        self.store: Final[Store] = (
            store
            if store is not None
            else store_from_url(env.store, os.fspath(data_dir or env.data_dir or "data"))
        )
        self.session_manager: Final = SessionManager(self.store, self.keys, self.config.sessions)
        self.load_user: Final = load_user
        self.default_rate: Final = parse_rate(default_rate, "default_rate")
        self.refusal_rate: Final = parse_rate(refusal_rate, "refusal_rate")
        token_limit = parse_rate(token_rate, "token_rate")
        if token_limit is None:
            raise ConfigurationError("token_rate is a limit such as '600/minute', not None")
        self.tokens: Final = Tokens(self.store)
        """The users' API tokens: ``await bastion.tokens.create(user_id, ...)``."""
        if rate_limit_storage is None:
            # Counters live where the state does: shared when the store is Redis.
            rate_limit_storage = getattr(self.store, "rate_limit_storage", "memory://")
        self.counter: Final = Counter(rate_limit_storage)
        # Log-in failures are few and their limits small: counted exactly, in a moving window.
        self.password_check: Final = PasswordCheck(
            login_throttle or LoginThrottle(), self.counter.moving()
        )
        self.trusted_proxies: Final = (
            network.parse_networks(trusted_proxies)
            if trusted_proxies is not None
            else network.parse_networks(env.trusted_proxies or (), "BASTION_TRUSTED_PROXIES")
        )
        self.audit_sinks: Final = tuple(audit_sinks)
        self.unavailable_errors: Final = tuple(unavailable_errors)
        self.taints: Final = TaintSet()
        redactor.taint_sets.add(self.taints)
        # What the stages below may use: this, never the facade itself.
        self.runtime: Final = Runtime(
            config=self.config,
            keys=self.keys,
            registry=self.registry,
            store=self.store,
            sessions=self.session_manager,
            counter=self.counter,
            refusal_rate=self.refusal_rate,
            tokens=self.tokens,
            token_rate=token_limit,
            password_check=self.password_check,
            load_user=self.load_user,
            trusted_proxies=self.trusted_proxies,
            audit_sinks=self.audit_sinks,
            unavailable_errors=self.unavailable_errors,
            taints=self.taints,
            messages=messages or DEFAULT_MESSAGES,
            telemetry=_telemetry(telemetry),
            read_and_count=_read_and_count(self.store, self.counter),
        )
        self._entry = SessionMiddleware(self._dispatch, self.runtime)
        self._schema_served: tuple[ActionPolicy, str, str] | None = None
        """``serve_schema``'s policy, title and version; ``None``: not served (404)."""

    @property
    def debug(self) -> bool:
        return self.config.debug

    # --- registration ------------------------------------------------------------------

    def action(
        self,
        *,
        policy: PolicyLike | None = None,
        name: str | None = None,
        rate: str | _Default | None = DEFAULT,
        check: Check | None = None,
        fragment: str | None = None,
        timeout: float | None = None,
        max_body_bytes: int | None = None,
        max_files: int | None = None,
        max_file_bytes: int | None = None,
        idempotent: bool = False,
        tokens: bool | str | Iterable[str] = False,
    ) -> Callable[[F], F]:
        """Register a function as an action. It is returned unchanged.

        ``policy`` is required: who may call it (``public`` for anyone). The input
        model is the annotation of the parameter typed with a pydantic model, the
        output is the return annotation; both are checked here, at import time.
        ``rate`` limits calls per caller (``"20/minute"``; public actions get
        ``default_rate`` unless they name one; ``None`` for no limit). ``check`` runs
        after validation, bound values and dependencies, for decisions about the object
        the call is about ("owns this post"): its parameters are named by annotation as
        the handler's are (``ctx: Context``, the input model, the bound model,
        ``Depends``), or it takes ``(ctx, data)``; anything but ``True`` answers 403.
        ``fragment`` names the template htmx requests get back, rendered with ``data``
        (the result as the return type reads it), ``user`` and ``request``.
        ``idempotent=True`` runs a call once per idempotency key (the ``Idempotency-Key``
        header, or the key ``action_form()`` puts in each rendered form): a repeat gets
        the first call's reply, a concurrent one 409, the key with another body 422.
        ``tokens`` lets scripts call it with an API token (``Authorization: Bearer``, no
        cookie, no CSRF token): ``True`` for a token holding the action's name as a
        scope, or the scopes (one string or several) that grant it as well.
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

        def build(fn: F, label: str) -> None:
            try:
                limits = dataclasses.replace(self.config.limits, **overrides)
            except ConfigurationError as exc:
                raise ConfigurationError(f"action {label!r}: {exc}") from exc
            if isinstance(rate, _Default):
                admits_anonymous = getattr(policy, "admits_anonymous", True)
                limit = self.default_rate if admits_anonymous else None
            else:
                limit = parse_rate(rate, f"action {label!r}: rate")
            spec = build_spec(
                fn,
                name=label,
                policy=policy,
                rate=limit,
                check=check,
                fragment=fragment,
                file_cap_declared=max_file_bytes is not None,
                body_cap_declared=max_body_bytes is not None,
                idempotent=idempotent,
                tokens=tokens,
                limits=limits,
                timeout=check_timeout(
                    self.config.timeout if timeout is None else timeout,
                    f"action {label!r}: timeout",
                ),
                keys=self.keys.all("action-id"),
            )
            self.registry.add(spec)

        def register(fn: F) -> F:
            label: str = name or getattr(fn, "__name__", None) or repr(fn)
            try:
                build(fn, label)
            except ConfigurationError as exc:
                auditing = AUDITING.get()
                if auditing is None:
                    raise
                # `bastion audit` reports every refusal in one run instead of the first.
                auditing.refused.append((label, str(exc)))
            return fn

        return register

    def seal(
        self,
        action: Callable[..., Any] | str,
        values: dict[str, Any],
        *,
        request: HTTPConnection | None = None,
        session: Session | None = None,
        ttl: float = DEFAULT_TTL,
        bind_session: bool | None = None,
    ) -> str:
        """Values sealed for ``action``'s bound parameter, to send as ``_bound`` (templates
        use ``action_form(..., bind=...)``; a script sends it in its JSON). Valid for
        ``ttl`` seconds.

        Give the page's ``request`` (or its ``session``) so that a signed-in visitor's
        values are tied to their session: without one, the sealed value opens for anyone
        who holds it, until it expires. ``bind_session=True`` ties an anonymous visitor's
        values to their session too (creating it); ``False`` never ties them."""
        if request is not None:
            if session is not None:
                raise TypeError("give seal() the request or the session, not both")
            session = get_session(request.scope)
        spec = self.registry.get(action)
        return seal(self.keys, spec, values, session, ttl=ttl, bind_session=bind_session)

    def csrf_token(self, request: HTTPConnection) -> str:
        """The CSRF token for the visitor of ``request`` (a page's Starlette or FastAPI
        ``Request``), masked afresh, for a script to send as ``X-CSRF-Token``. Creates the
        visitor's session if they have none: the token is bound to it, and the response
        sets its cookie. Templates use ``csrf_meta()`` or ``csrf_input()`` instead."""
        return csrf.issue(get_session(request.scope), self.keys)

    def taint(self, value: str | bytes, reason: str) -> None:
        """Never let ``value`` leave the server: a reply, flash or redirect holding it is
        refused (500), and logs show it masked."""
        self.taints.add(value, reason)

    def taint_env(self, name: str, reason: str | None = None) -> str:
        """Read a secret (an API key) from the environment, tainted; ``KeyError`` if unset."""
        return taint_env(self.taints, name, reason)

    def url_for(self, action: Callable[..., Any] | str) -> str:
        """The path an action answers at, for a function or a registered name."""
        return f"{self.config.prefix}/{self.registry.get(action).id}"

    # --- the schema manifest -----------------------------------------------------------

    def schema(self, *, title: str = "Server actions", version: str = "1") -> dict[str, Any]:
        """Every action as an OpenAPI 3.1 document (a dict, ready for ``json.dumps``):
        a ``POST`` at its path, named by its registered name, with its input and output
        schemas, the refusals bastion can answer it with, and an ``x-bastion`` summary
        (policy, rate, tokens, step-up) worded as ``bastion audit`` words them. Nothing
        in it is secret: no key, no bound value, nothing of any session."""
        https = self.config.https is True
        return schemas.document(
            self.registry,
            prefix=self.config.prefix,
            # Over https the cookie is __Host- prefixed; undecided (None), the bare name.
            cookie=cookie_name(self.config.sessions.cookie_name, https),
            counts_refusals=self.refusal_rate is not None,
            title=title,
            version=version,
        )

    def serve_schema(
        self,
        *,
        policy: PolicyLike,
        title: str = "Server actions",
        version: str = "1",
    ) -> str:
        """Serve ``schema()`` at ``GET {prefix}/openapi.json`` to the callers ``policy``
        allows (``require(roles={"admin"})``); returns that path. Not served unless this is
        called. Anyone the policy refuses (anonymous or not) gets the 404 an unknown path
        gets, word for word, so the manifest's existence is not given away."""
        if policy is None or not callable(policy):
            raise ConfigurationError(
                f"serve_schema: policy must say who may read the manifest, not {policy!r}"
            )
        self._schema_served = (
            policy if isinstance(policy, ActionPolicy) else predicate(policy),
            title,
            version,
        )
        return self.config.prefix + _SCHEMA

    def include_in_openapi(
        self, app: Any, *, title: str = "Server actions", version: str = "1"
    ) -> None:
        """Add the actions to a FastAPI app's own OpenAPI document (``/openapi.json``,
        ``/docs``): its ``openapi()`` is wrapped to merge ``schema()`` into FastAPI's
        (paths, component schemas, security schemes), renaming a component of ours whose
        name FastAPI already uses for another schema. FastAPI serves that document to
        anyone unless the app says otherwise (``openapi_url=None``)."""
        from bastion.integrations import openapi  # nothing of FastAPI is imported

        openapi.include(app, functools.partial(self.schema, title=title, version=version))

    async def _serve_schema(self, scope: Scope, receive: Receive, path: str) -> Response:
        """``GET {prefix}/openapi.json``: the manifest for whom the policy allows; for
        anyone else, exactly what an unknown path under the prefix answers."""
        if self._schema_served is not None:
            policy, title, version = self._schema_served
            ctx = self.runtime.context("openapi.json", scope, get_session(scope))
            try:
                if policy.needs_user:
                    await ctx.current_user()
                await policies.authorize(policy, ctx)
            except ActionError:
                pass  # refused: answered below as if there were nothing here
            else:
                body = json.dumps(self.schema(title=title, version=version)).encode()
                return Response(
                    body,
                    200,
                    {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
                    media_type="application/json",
                )
        # The pipeline's own answer for an ID that names no action (and its refusal count).
        return await pipeline.handle(self.runtime, scope, receive, path[1:])

    @property
    def script_url(self) -> str:
        """Where ``bastion.js`` (progressive enhancement for forms) is served."""
        return self.config.prefix + _SCRIPT

    def templates(self, target: Any) -> None:
        """Add bastion's helpers to Jinja templates (a Starlette ``Jinja2Templates`` or a
        ``jinja2.Environment``), so no template writes an action URL, a token or a nonce
        by hand: ``action_form``, ``action_url``, ``bastion_fields``, ``bound_input``,
        ``csrf_input``, ``csrf_meta``, ``flash``, ``bastion_script``, ``csp_nonce`` and
        ``htmx_config`` (htmx's ``<meta name="htmx-config">`` for this response's nonce,
        showing refusals in the form's ``data-bastion-message`` slot). The same templates
        render the actions' htmx fragments, with ``data``, ``user`` and ``request``."""
        from bastion.integrations import (
            jinja,  # Jinja2 is loaded by the first app that renders forms
        )

        self.runtime.fragments.env = getattr(target, "env", target)
        jinja.install(self.runtime, target)

    # --- mounting ----------------------------------------------------------------------

    def mount(self, app: Starlette) -> None:
        """Serve the actions from a Starlette or FastAPI app, under ``prefix``, and
        give every page of the app its session (for tokens and flash messages). The app's
        lifespan runs bastion's start-up checks first and closes its store last."""
        # First among the app's routes: an action call is matched at once, not after every
        # route the app declares, and no catch-all route of the app can take it.
        app.router.routes.insert(0, Mount(self.config.prefix, app=self, name="bastion"))
        around = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(served: Any) -> AsyncIterator[Any]:
            await self.startup()
            try:
                async with around(served) as state:
                    yield state
            finally:
                await self.shutdown()

        app.router.lifespan_context = lifespan
        # The prefix itself is bastion's too (a 404): else Starlette redirects it to
        # "prefix/" with an absolute URL built from the Host header.
        app.router.routes.insert(1, Route(self.config.prefix, self, include_in_schema=False))
        app.add_middleware(SessionMiddleware, runtime=self.runtime)
        # Routes under `protect` refuse with the action's envelope, not FastAPI's.
        self.handle_refusals(app)

    def metrics_route(
        self, *, policy: PolicyLike, path: str = "/metrics", registry: Any = None
    ) -> Route:
        """A route serving the metrics as Prometheus text to the callers ``policy`` allows
        (``require(roles={"admin"})``): ``app.routes.append(bastion.metrics_route(...))``.
        Anyone else gets an unknown path's 404. ``registry`` is a prometheus_client
        ``CollectorRegistry`` (by default its global one, where OpenTelemetry's
        ``PrometheusMetricReader`` registers). Needs ``bastion[prometheus]`` and
        ``mount(app)`` (for the session)."""
        from bastion.integrations import metrics

        if policy is None or not callable(policy):
            raise ConfigurationError(
                f"metrics_route: policy must say who may read the metrics, not {policy!r}"
            )
        chosen = policy if isinstance(policy, ActionPolicy) else predicate(policy)
        endpoint = metrics.endpoint(self.runtime, chosen, registry)
        return Route(path, endpoint, methods=["GET"], include_in_schema=False)

    def add_security_headers(
        self,
        app: Starlette,
        *,
        csp: Policy = default_csp,
        csp_for: Mapping[str, Policy] | None = None,
    ) -> None:
        """CSP with a per-request nonce, no framing, nosniff, Referrer-Policy,
        Permissions-Policy, and HSTS over https, on every response of ``app``.
        ``csp`` is another policy: a string, or ``csp(nonce)`` building one.

        ``csp_for`` relaxes the policy for named paths and the paths below them, and no
        others: ``{"/docs": SWAGGER_CSP}`` lets FastAPI's Swagger UI load its CDN and run
        its inline script while every action page keeps the strict default. The longest
        matching path decides; a bad path or policy is a ``ConfigurationError`` here."""
        # Checked now: Starlette builds its middleware at the first request, too late.
        check_policy(csp, "csp")
        check_paths(csp_for if csp_for is not None else {})
        app.add_middleware(SecurityHeaders, https=self.is_https, csp=csp, csp_for=csp_for)

    async def protect(self, request: Request) -> None:
        """A FastAPI dependency that gives a plain route an action's origin and CSRF
        checks, on the same session: ``dependencies=[Depends(bastion.protect)]`` on a
        route or a router. The token comes in ``X-CSRF-Token`` (``bastion.call`` sends
        it); GET, HEAD and OPTIONS pass unchecked.

        A refusal is the action's: 403 ``cross_origin``, ``no_session`` or
        ``csrf_failed``, in the action's JSON envelope once ``handle_refusals(app)`` is
        called (else still a 403, in FastAPI's ``{"detail": ...}``); the route never
        runs. Needs ``mount(app)``: the session is the one actions use."""
        refused = protecting.refusal(self.runtime, request)
        if refused is not None:
            raise refused

    def protected(
        self, endpoint: Callable[[Request], Awaitable[Response] | Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint behind an action's origin and CSRF checks, as
        ``protect`` gives a FastAPI route: ``Route("/api/notes", bastion.protected(add),
        methods=["POST"])`` or ``@bastion.protected`` above ``async def add(request)``.
        A refusal is answered with the action's envelope, without the endpoint."""
        return protecting.guarded(self.runtime, endpoint)

    def handle_refusals(self, app: Starlette) -> None:
        """Answer the refusals ``protect`` raises in ``app``'s routes with the action's
        JSON envelope (status, code and message exactly as an action's), instead of the
        framework's own error shape."""
        app.add_exception_handler(protecting.Refused, protecting.respond)

    async def end_sessions(self, user_id: str | int) -> int:
        """End every session of ``user_id``, on every worker and host that shares the
        store (a password reset, an account locked by an admin): each of their browsers
        is anonymous at its next request. Returns how many sessions were ended. In an
        action, ``ctx.end_sessions()`` does the same and signs the caller's own browser
        out in its reply."""
        return await self.session_manager.end_all(user_id)

    # --- per request -------------------------------------------------------------------

    async def user(self, request: Any) -> U | None:
        """The signed-in user of a page request (a Starlette ``Request``), or ``None``."""
        return await load_user(self.load_user, get_session(request.scope))

    def client_address(self, scope: Scope) -> str | None:
        """The socket peer; behind ``trusted_proxies``, the right-most address in
        ``X-Forwarded-For`` that is not one of them (the left part is the client's to say).
        ``None`` when the server rewrote it from that header and no proxy is trusted."""
        return self.runtime.client_address(scope)

    def is_https(self, scope: Scope) -> bool:
        """Configuration first; else the connection's own scheme (never a header)."""
        return self.runtime.is_https(scope)

    def origins_for(self, scope: Scope) -> Collection[str]:
        """The origins calls may come from (``allowed_origins``; in debug mode without a
        list, the loopback origin being served)."""
        return self.runtime.origins_for(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if SCOPE_KEY in scope:  # mounted: the app's session middleware did its work
            await self._dispatch(scope, receive, send)
        else:  # served on its own: the session middleware around it does it now
            await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Served on its own (not mounted): nothing to start, but the protocol is
            # answered, or servers and test clients waiting for startup fail.
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})  # actions are HTTP only
            return
        # (Debug mode off loopback was refused by the session middleware around this.)
        path = path_below(scope, self.config.prefix)
        response: Response
        if path == _SCRIPT and scope["method"] in ("GET", "HEAD"):
            response = _script_response()
        elif path == _HEALTH and scope["method"] in ("GET", "HEAD"):
            response = await self._health()
        elif path == _SCHEMA and scope["method"] in ("GET", "HEAD"):
            response = await self._serve_schema(scope, receive, path)
        elif path.startswith("/") and path.count("/") == 1 and len(path) > 1:
            response = await pipeline.handle(self.runtime, scope, receive, path[1:])
        else:
            response = error(NotFound(), message=self.runtime.messages.text("not_found"))
        await response(scope, receive, send)

    # --- start and stop -----------------------------------------------------------------

    async def startup(self) -> None:
        """What can be checked before the first request, checked: an action naming an
        htmx fragment needs ``templates()`` (else its first htmx call would be a 500).
        Raises ``ConfigurationError``; the server then refuses to start."""
        missing = [s.name for s in self.registry if s.fragment is not None or s.renders]
        if missing and self.runtime.fragments.env is None:
            raise ConfigurationError(
                f"action {missing[0]!r} names a fragment: call bastion.templates(...) "
                "before the app starts"
            )

    async def shutdown(self) -> None:
        """Release the store's and the rate-limit counters' connections and files."""
        try:
            await self.store.close()
        finally:
            await self.counter.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Served on its own (not mounted): the same checks at start-up, the store closed
        at shutdown; a failed check is reported to the server, which stops."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except ConfigurationError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self) -> Response:
        """``GET {prefix}/health``: whether the store answers (for load balancers)."""
        try:
            with anyio.fail_after(1.0):
                await self.store.health()
                # The rate-limit counters may live elsewhere (their own Redis).
                if not await self.counter.healthy():
                    raise ConnectionError("the rate-limit storage does not answer")
            healthy = True
        except Exception:
            logger.warning("bastion: health check: the store does not answer", exc_info=True)
            healthy = False
        body = b'{"ok":true,"store":"ok"}' if healthy else b'{"ok":false,"store":"unavailable"}'
        return Response(
            body,
            200 if healthy else 503,
            {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
            media_type="application/json",
        )

    def __repr__(self) -> str:
        return f"Bastion(prefix={self.config.prefix!r}, actions={len(self.registry)})"


def _telemetry(value: Telemetry | bool) -> Telemetry | None:
    """``Bastion(telemetry=...)``: ``True`` records through OpenTelemetry's global providers."""
    if isinstance(value, Telemetry):
        return value
    if value is True:
        return Telemetry()
    if value is False:
        return None
    raise ConfigurationError("telemetry is True, False or a bastion.Telemetry(...)")


def _resolve_origins(values: Sequence[str] | None, *, debug: bool) -> tuple[str, ...]:
    if values is None:
        values = ()
    if isinstance(values, str):
        raise ConfigurationError("allowed_origins must be a list of origins, not one string")
    origins = []
    for value in values:
        parsed = parse_origin(value) if isinstance(value, str) else None
        if parsed is None:
            raise ConfigurationError(
                f"allowed_origins: {value!r} is not an origin like https://app.example "
                "(scheme, host and optional port; no path, no trailing slash)"
            )
        origins.append(parsed)
    if not origins and not debug:
        raise ConfigurationError(
            "allowed_origins is required: the origins your pages are served from, e.g. "
            "allowed_origins=['https://app.example'] or BASTION_ALLOWED_ORIGINS"
        )
    return tuple(origins)


def _resolve_hosts(
    values: Sequence[str] | None, origins: tuple[str, ...]
) -> tuple[str, ...] | None:
    """The host names requests may name; by default those of the allowed origins (a
    request for another host is no request for this app). ``["*"]`` trusts any."""
    if values is None:
        names = {urlsplit(origin).hostname for origin in origins}
        return tuple(sorted(name for name in names if name)) or None
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise ConfigurationError("trusted_hosts must be a list of host names")
    return tuple(v.lower() for v in values)


def _read_and_count(store: Store, counter: Counter) -> ReadAndCount | None:
    """The store's read with the counters' hits in one round trip, when the counters are
    on the store's own Redis (its default for them)."""
    get_and_run: ReadAndCount | None = getattr(store, "get_and_run", None)
    # ``shares`` is false on a cluster: there a session and a counter live on different nodes.
    if get_and_run is None or not counter.shares(getattr(store, "rate_limit_storage", None)):
        return None
    return get_and_run


@functools.cache
def _script() -> bytes:
    return resources.files("bastion").joinpath("static/bastion.js").read_bytes()


def _script_response() -> Response:
    return Response(
        _script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
