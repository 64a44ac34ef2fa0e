"""The order of the checks, as data: ``STAGES``, walked by ``run()``.

Every action call runs these stages, in this order; each is one small function here
that calls the module doing the work. Cheap, stateless refusals come first, and nothing
decoded from the body reaches a model, a handler or a database before every earlier
stage has passed. The session is read once the checks that need no state (the CSRF
token included: it is bound to the cookie's session ID) have passed, and on a Redis that
also holds the counters its read and the rate-limit hit are one round trip. The first
stage to refuse ends the call with its refusal; a refusal that came before the rate
limit is counted against the caller's address instead; the taint guard and the audit
event run whatever happened.
(``tests/pipeline/test_pipeline_order.py`` holds this table, the tuple, each module's
first line and the security model's table to one order.)

    1  route            transport        action, method, forwarding, content     404 405 400
                                         type, declared length                   415 413
    2  origin           origin           Sec-Fetch-Site, Origin, Referer         403
    3  API token        tokens           a Bearer token: not in the URL, no      400 401 403
                                         cookie too, accepted and scoped, live   429 503
    4  form fields      decoding         a plain form's body as far as its       400 408 413
                                         token (the pre-token cap)
    5  CSRF token       csrf             bound to the cookie's session ID        403
                                         (every call with a cookie)
    6  session          sessions         the cookie's session, read from the     503 403
                                         store (with stage 7's hit, on Redis)
    7  rate limit       ratelimit        per address and per user                429
    8  policy           policy           who may call (loads the user if needed) 401 403
    9  body             decoding         a script's capped body; the session     400 408 413
                                         still exists after a slow one           403
    10 validation       decoding         into the action's pydantic model        422
    11 bound values     binding          sealed values opened                    400
    12 dependencies     depends          Depends(...) values, within the timeout 504
    13 object check     policy           the action's check= on the call         403
    14 execute          execute          the handler, within its timeout; once   504 409 422
                                         per idempotency key
    15 output           output           through the return type (and fragment)  500
    16 refusals         ratelimit        a call refused before stage 7, counted  429
                                         per address (refusal_rate)
    17 release          depends          generator dependencies closed, after    500 503
                                         output and before the reply
    18 respond          responses        JSON, 303 + flash, or htmx              200 303
    19 taint guard      taint            no tainted value in reply, flash, URL   500
    20 flash            flash            the flash kept in the session (read
                                         now for a call refused before stage 6)
    21 idempotency      idempotency      an idempotent call's reply kept for its
                                         repeats (or its key released)
    22 audit            events           one AuditEvent per call
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlencode

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope

from bastion import csrf, events, idempotency, tokens
from bastion.actions import policy
from bastion.actions.spec import ActionSpec, BodyKind
from bastion.context import Context
from bastion.errors import (
    ActionError,
    Internal,
    RateLimited,
    ReauthenticationRequired,
    ServiceUnavailable,
)
from bastion.events import AuditEvent
from bastion.http import network, origin, responses
from bastion.http.incoming import RequestHeaders
from bastion.pipeline import flash
from bastion.pipeline.stages import binding, decoding, depends, execute, output, transport
from bastion.sessions import SCOPE_KEY, Pending, Session, get_session
from bastion.sessions import UNKNOWN as NOT_SEEN
from bastion.taint import TaintedOutput
from bastion.telemetry import UNKNOWN, Outcome, Telemetry

if TYPE_CHECKING:
    from limits import RateLimitItem

    from bastion.pipeline.runtime import Runtime

__all__ = ["INTERNAL", "STAGES", "Call", "Stage", "handle", "run"]

logger = logging.getLogger("bastion")

INTERNAL = Internal()
"""What the client learns of any exception outside the ``ActionError`` tree."""

UNAVAILABLE = ServiceUnavailable()
"""What the client learns when a handler's backend is down (``unavailable_errors``)."""


@dataclass(slots=True)
class Call:
    """What one call has learnt so far: each stage reads and adds to it."""

    scope: Scope
    receive: Receive
    action_id: str
    headers: Headers
    started: float
    clock: float
    session: Session | None = None
    spec: ActionSpec | None = None
    kind: BodyKind | None = None
    form_post: bool = False
    body: decoding.Body | None = None
    ctx: Context[Any] | None = None
    data: Any = None
    resources: depends.Resources | None = None
    """What the call's dependencies gave (only for an action that takes some)."""
    raised: BaseException | None = None
    """The exception that ended the checks, handed to the dependencies' cleanup."""
    result: Any = None
    output: Any = None
    """The result as its return type sees it (what an htmx fragment renders)."""
    payload: bytes = b""
    redirect: str | None = None
    fragment: str | None = None
    response: Response | None = None
    error: ActionError | None = None
    stage: str | None = None
    """The stage that refused or failed (the audit line, telemetry)."""
    digest: str | None = None
    flash: dict[str, Any] | None = None
    principal: Any = None
    counted: bool = False
    """Whether the rate-limit stage was reached (a refusal after it is not counted again)."""
    read: bool = False
    """Whether the session stage ran (a store that failed it is not asked again)."""
    ahead: Ahead | None = None
    """The rate-limit hits sent with the session's read (one round trip), for stage 7."""
    claim: idempotency.Claim | None = None
    """The idempotency key this call holds (an ``idempotent=True`` action's)."""
    ran: bool = False
    """Whether the handler returned: from then on, running it again could write twice."""
    token: tokens.ApiToken | None = None
    """The API token the call is made with (no cookie, no CSRF token)."""
    held: events.Held | None = None
    """The words the module that refused the call gave for the security log's line."""


StageFn = Callable[[Call, "Runtime"], Awaitable[None] | None]
"""A stage: a plain function for the checks that wait for nothing (most of them, and
no coroutine made for each), or one returning what the call must wait for."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of every call: a name (the docs' table), the module that does the work,
    when it runs, and the function."""

    name: str
    module: str
    run: StageFn
    when: Literal["checks", "refused", "release", "reply", "always"] = "checks"
    """``checks``: until one refuses; ``refused``: only when one did; ``release``: after
    the checks, whatever happened (a failure there is the call's failure); ``reply``: only
    when nothing refused; ``always``: last."""


@dataclass(frozen=True, slots=True)
class Ahead:
    """Rate-limit hits sent with the session's read: the storage key read, the user they
    were keyed by (the session's when this process last read or wrote it), the keys,
    and what the counters answered."""

    key: str
    user: Any
    keys: list[tuple[str, ...]]
    replies: list[Any]


# --- the stages, in their order -------------------------------------------------------


def _route(call: Call, runtime: Runtime) -> None:
    spec = call.spec = runtime.registry.resolve(call.action_id)
    transport.check_method(call.scope)
    network.check_forwarding(call.scope, runtime.trusted_proxies)
    # Known before any check on the body, so that a browser posting a plain form lands
    # on a page (303) whatever refuses it, a 413 or 415 included.
    call.form_post = _is_form_post(call.headers)
    call.kind = transport.body_kind(spec, call.headers)


def _origin(call: Call, runtime: Runtime) -> None:
    origin.check(call.headers, runtime.origins_for(call.scope), _spec(call).name)


def _api_token(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    spec = _spec(call)
    secret = tokens.presented(
        call.headers,
        call.scope.get("query_string", b""),
        runtime.config.sessions.cookie_name,
        spec.tokens,
        spec.name,
    )
    return None if secret is None else _authenticate(call, runtime, secret)


async def _authenticate(call: Call, runtime: Runtime, secret: str) -> None:
    spec = _spec(call)
    token = await tokens.check(runtime.tokens, secret, spec.tokens, spec.name)
    # Counted before anything else is done for it: a leaked token in a loop.
    await runtime.counter.hit(runtime.token_rate, "token", token.id)
    call.token = token
    call.session = Session.for_token(token.id, token.user_id)


def _form_fields(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    # A plain form's token is one of its flat fields: its body is read as far as the
    # token, within the smaller pre-token cap; the rest waits for the token to pass.
    return _read_form_start(call) if call.form_post else None


async def _read_form_start(call: Call) -> None:
    call.body, call.receive = await decoding.read_form_start(
        _spec(call), _kind(call), call.headers, call.receive
    )


def _csrf(call: Call, runtime: Runtime) -> None:
    if call.token is not None:
        return  # no cookie, so nothing a cross-site page could make the browser send
    form_token = call.body.reserved.get(csrf.FIELD) if call.body is not None else None
    csrf.verify(_cookie_session_id(call), call.headers, form_token, runtime.keys, _spec(call).name)


def _session(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    call.read = True
    if call.token is not None:
        return None  # the API token's own session (a token call sends no cookie)
    held = call.scope.get(SCOPE_KEY)
    if isinstance(held, Pending) and held.session is None:
        return _load_session(call, runtime, held)
    call.session = get_session(call.scope)  # the middleware loaded it (or the pipeline)
    return None


async def _load_session(call: Call, runtime: Runtime, held: Pending) -> None:
    spec, sessions = _spec(call), runtime.sessions
    try:
        read_and_count, rate = runtime.read_and_count, spec.rate
        hint = None if read_and_count is None or rate is None else sessions.hint(held.sid)
        if read_and_count is None or rate is None or hint is None or hint[1] is NOT_SEEN:
            session = await sessions.load(held.sid)
        else:
            # One round trip: the session's read and the hits of stage 7, keyed by the
            # user this session had (a session ID's user never changes).
            key, user = hint
            keys = _count_keys(spec, user, runtime.client_address(call.scope))
            raw, replies = await read_and_count(key, runtime.counter.scripts(rate, keys))
            call.ahead = Ahead(key, user, keys, replies)
            session = await sessions.load(held.sid, (key, raw))
    except Exception:
        # Fail closed: without its session, the call does not go on.
        logger.exception("bastion: the session store failed to load a session")
        raise ServiceUnavailable() from None
    held.session = call.session = session
    if session.id is None:
        # The token (stage 5) was made for the cookie's session, which has ended since.
        csrf.session_ended(spec.name)


def _rate_limit(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    call.counted = True
    spec = _spec(call)
    ctx = _context(call, runtime)
    if spec.rate is None:
        return None
    ahead, user = call.ahead, ctx.session.user_id
    if ahead is not None:
        if ahead.user == user and type(ahead.user) is type(user):
            return runtime.counter.settle(spec.rate, ahead.keys, ahead.replies)
        # The session ended since (or this process's note of it was wrong): counted
        # again as what it is now; the hits sent ahead stay on the counters they named.
        runtime.sessions.forget(ahead.key)
    return _count(runtime, spec, spec.rate, _count_keys(spec, user, ctx.client))


async def _policy(call: Call, runtime: Runtime) -> None:
    spec, ctx = _spec(call), _context(call, runtime)
    if spec.policy.needs_user:
        await ctx.current_user()
    await policy.authorize(spec.policy, ctx)


async def _body(call: Call, runtime: Runtime) -> None:
    if call.body is None or call.body.partial:
        call.body = await decoding.read(_spec(call), _kind(call), call.headers, call.receive)
    # A body that took its time may have arrived after a log-out ended the session (and
    # the token) it was sent with: the handler must not run for it.
    if not await runtime.sessions.confirm(_session_of(call)):
        raise csrf.CsrfFailed()


def _validation(call: Call, runtime: Runtime) -> None:
    call.data = decoding.validate(_spec(call), _body_of(call), runtime.messages)


def _bound(call: Call, runtime: Runtime) -> None:
    sealed = _body_of(call).reserved.get("_bound")
    ctx = _context(call, runtime)
    ctx.bound = binding.open_bound(runtime.keys, _spec(call), sealed, ctx.session)


def _dependencies(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    spec = _spec(call)
    if not spec.takes_dependencies:
        return None
    call.resources = depends.Resources()
    return depends.open_all(spec, _context(call, runtime), call.resources)


def _object_check(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    spec = _spec(call)
    if spec.check is None:
        return None
    ctx = _context(call, runtime)
    if spec.check_arguments is None:  # check(ctx, data), by position
        return policy.check_object(spec.check, (ctx, call.data), {})
    values = call.resources.check if call.resources is not None else {}
    kwargs = depends.bind(spec.check_arguments, ctx, call.data, values)
    return policy.check_object(spec.check, (), kwargs)


async def _execute(call: Call, runtime: Runtime) -> None:
    spec, ctx = _spec(call), _context(call, runtime)
    if spec.idempotent:
        body = _body_of(call)
        key = idempotency.key_of(runtime.keys, spec, ctx.session, call.headers, body.reserved)
        if key is not None:
            from_form = idempotency.FIELD in body.reserved
            held = await idempotency.claim(
                runtime.store,
                runtime.keys,
                spec,
                ctx.session,
                key,
                body.data,
                body.reserved,
                wait=min(idempotency.FORM_WAIT, spec.timeout) if from_form else 0.0,
            )
            if isinstance(held, Response):
                call.response = held  # a repeat: the first call's reply, and nothing runs
                return
            call.claim = held
    values = call.resources.handler if call.resources is not None else {}
    call.result = await execute.run(spec, ctx, call.data, values)
    call.ran = True


async def _output(call: Call, runtime: Runtime) -> None:
    spec = _spec(call)
    call.redirect = output.destination(spec, call.result)
    chosen = output.chosen_fragment(spec, call.result)
    call.output, call.payload = output.serialize(spec, call.result)
    # Rendered here, so that a broken fragment template is a 500 with a digest too.
    if (spec.fragment is not None or chosen is not None) and responses.is_htmx(call.headers):
        user = await _context(call, runtime).current_user()
        if chosen is not None:
            call.fragment = runtime.fragments.render_chosen(spec, call.scope, chosen, user)
        else:
            call.fragment = runtime.render_fragment(spec, call.scope, call.output, user)


async def _refusals(call: Call, runtime: Runtime) -> None:
    # Refused before the action's limit counted it (an unknown action, another origin, a
    # forged token): counted per address here, so that a flood of forged calls meets 429
    # as a flood of real ones does. Failures of bastion's own (5xx) are not the caller's.
    rate, error = runtime.refusal_rate, call.error
    if rate is None or call.counted or error is None or error.status >= 500:
        return
    client = runtime.client_address(call.scope)
    try:
        await runtime.counter.hit(rate, "refused", str(client))
    except RateLimited as limited:
        # Never a redirect for a cross-site call, as for its own refusal.
        if isinstance(error, origin.CrossOrigin):
            call.response = responses.error(limited, message=_words(runtime, limited))
        else:
            call.response = _refuse(call, runtime, limited)
        call.error, call.stage = limited, "refusals"
    except ActionError:
        pass  # the counters' storage is down (logged): the call stays refused as it was


def _release(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    if call.resources is None:
        return None
    return depends.release(call.resources, call.raised)


def _respond(call: Call, runtime: Runtime) -> None:
    headers = call.headers
    # Where the handler sends the caller (-> Redirect), else the form's `_next`.
    next_path = call.redirect or responses.safe_next(_body_of(call).reserved.get("_next"))
    if responses.is_htmx(headers):
        call.response = responses.htmx_success(call.fragment, next_path)
    elif responses.wants_redirect(headers, call.form_post):
        _flash(call, flash.success(_spec(call), call.payload))
        # There, or else back to the page the form was posted from.
        call.response = responses.redirect(next_path or responses.referer_path(headers) or "/")
    else:
        call.response = responses.success(call.payload, redirect=call.redirect)


def _taint_guard(call: Call, runtime: Runtime) -> None:
    if call.response is not None:
        call.response = _guard(runtime, call, call.response)


def _keep_flash(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    if call.session is None and call.token is None and not call.read:
        return _session_after_refusal(call, runtime)
    if call.flash is not None:
        if call.session is None:  # the store failed the session's read (a 503 already)
            _flash_lost(call, runtime)
        else:
            call.session.set_flash(call.flash)
    return None


def _flash_lost(call: Call, runtime: Runtime) -> None:
    """No session to keep the flash in: the page the reply sends the browser to could not
    show why, so the reply is the 503 itself."""
    call.flash, call.error, call.stage = None, UNAVAILABLE, "flash"
    call.response = responses.error(UNAVAILABLE, message=_words(runtime, UNAVAILABLE))


async def _session_after_refusal(call: Call, runtime: Runtime) -> None:
    """A call refused before stage 6 (an unknown action, another origin, a forged
    token): its session now, for its flash and its audit line's user."""
    held = call.scope.get(SCOPE_KEY)
    try:
        if isinstance(held, Pending):
            if held.session is None:
                held.session = await runtime.sessions.load(held.sid)
            call.session = held.session
        elif held is not None:
            call.session = held
    except Exception:
        logger.exception("bastion: the session store failed to load a session")
        if call.flash is not None:
            _flash_lost(call, runtime)
        return
    if call.flash is not None and call.session is not None:
        call.session.set_flash(call.flash)


def _idempotency(call: Call, runtime: Runtime) -> Awaitable[None] | None:
    held = call.claim
    return None if held is None else _keep(call, runtime, held)


async def _keep(call: Call, runtime: Runtime, held: idempotency.Claim) -> None:
    try:
        await idempotency.keep(runtime.store, held, call.response, call.error, call.ran, call.flash)
    except Exception:
        # The reply stands; the claim stays until it expires, so a repeat gets 409 and
        # never a second run.
        logger.exception("bastion: the store failed to keep an idempotent call's reply")


async def _audit(call: Call, runtime: Runtime) -> None:
    spec, ctx = call.spec, call.ctx
    session_user = call.session.user_id if call.session is not None else None
    # Who called: the user signed in when the call arrived (a log-out call is theirs).
    user_id = call.principal if call.principal is not None else session_user
    event = AuditEvent(
        timestamp=call.started,
        action=spec.name if spec else None,
        action_id=spec.id if spec else None,
        principal=None if user_id is None else str(user_id),
        # Worked out once per call: the context has it when the call got that far.
        client=ctx.client if ctx is not None else runtime.client_address(call.scope),
        outcome=events.outcome_of(call.error),
        status=call.response.status_code if call.response is not None else 500,
        duration_ms=round((time.perf_counter() - call.clock) * 1000, 3),
        digest=call.digest,
        token_id=call.token.id if call.token is not None else None,
    )
    await events.emit(runtime.audit_sinks, event)
    error = call.error
    if error is not None and error.status < 500:
        # The refusal's one line; a 5xx has had its own, with the traceback, on `bastion`.
        events.log_refusal(
            call.held,
            action=spec.name if spec else UNKNOWN,
            stage=call.stage or UNKNOWN,
            code=error.code,
            outcome=event.outcome,
            client=event.client,
            digest=call.digest,
        )


STAGES: Final[tuple[Stage, ...]] = (
    Stage("route", "pipeline.stages.transport", _route),
    Stage("origin", "http.origin", _origin),
    Stage("API token", "tokens", _api_token),
    Stage("form fields", "pipeline.stages.decoding", _form_fields),
    Stage("CSRF token", "csrf", _csrf),
    Stage("session", "sessions", _session),
    Stage("rate limit", "ratelimit", _rate_limit),
    Stage("policy", "actions.policy", _policy),
    Stage("body", "pipeline.stages.decoding", _body),
    Stage("validation", "pipeline.stages.decoding", _validation),
    Stage("bound values", "pipeline.stages.binding", _bound),
    Stage("dependencies", "pipeline.stages.depends", _dependencies),
    Stage("object check", "actions.policy", _object_check),
    Stage("execute", "pipeline.stages.execute", _execute),
    Stage("output", "pipeline.stages.output", _output),
    Stage("refusals", "ratelimit", _refusals, "refused"),
    Stage("release", "pipeline.stages.depends", _release, "release"),
    Stage("respond", "http.responses", _respond, "reply"),
    Stage("taint guard", "taint", _taint_guard, "always"),
    Stage("flash", "pipeline.flash", _keep_flash, "always"),
    Stage("idempotency", "idempotency", _idempotency, "always"),
    Stage("audit", "events", _audit, "always"),
)
"""Every call, in this order (the table above)."""


async def handle(
    runtime: Runtime,
    scope: Scope,
    receive: Receive,
    action_id: str,
    stages: tuple[Stage, ...] = STAGES,
) -> Response:
    """Run one call through ``stages`` (``STAGES``; the bench times each one); its reply."""
    headers = RequestHeaders.of(scope)
    call = Call(scope, receive, action_id, headers, time.time(), time.perf_counter())
    call.held, held = events.hold()
    try:
        if runtime.telemetry is None:  # off: this check is all it costs
            await run(stages, call, runtime)
        else:
            await _observed(runtime.telemetry, stages, call, runtime)
    finally:
        events.release(held)
    if call.response is None:  # pragma: no cover - every path sets one
        raise RuntimeError("a call ended without a reply")
    return call.response


async def _observed(
    telemetry: Telemetry, stages: tuple[Stage, ...], call: Call, runtime: Runtime
) -> None:
    """``run()`` inside the call's span; its outcome recorded on the span and the metrics."""
    # Named by the action's name from the start (samplers see it), never by the ID sent.
    spec = runtime.registry.by_id(call.action_id)
    name = spec.name if spec is not None else UNKNOWN
    with telemetry.span(name, spec.policy.describe() if spec else None, call.headers) as span:
        await run(stages, call, runtime)
        status = call.response.status_code if call.response is not None else 500
        telemetry.record(
            span, name, Outcome(call.error, status, call.stage, call.digest, call.clock)
        )


async def run(stages: tuple[Stage, ...], call: Call, runtime: Runtime) -> None:
    """The checks until one refuses (its refusal is the reply), the reply if none did,
    then the stages that always run."""
    # By identity for the usual tuple: hashing 21 frozen Stage records for the cache's key
    # cost ~3 µs a call.
    groups = _STAGE_GROUPS if stages is STAGES else _groups(stages)
    stage = None
    try:
        for stage in groups["checks"]:
            pending = stage.run(call, runtime)
            if pending is not None:
                await pending
            if call.response is not None:
                break  # the stage answered the call itself: an idempotent repeat
    except Exception as exc:
        call.stage = stage.name if stage is not None else None
        _fail(call, runtime, exc)
    finally:
        if call.body is not None:
            call.body.close()
    if call.response is not None:
        for stage in groups["refused"]:
            await _step(stage, call, runtime)
    for stage in groups["release"]:
        try:
            pending = stage.run(call, runtime)
            if pending is not None:
                await pending
        except Exception as exc:
            if call.response is None:
                call.stage = stage.name
                _fail(call, runtime, exc)
            else:  # the call had failed already: its first error is the reply
                _log_failure(call, exc)
    if call.response is None:
        for stage in groups["reply"]:
            pending = stage.run(call, runtime)
            if pending is not None:
                await pending
    for stage in groups["always"]:
        pending = stage.run(call, runtime)
        if pending is not None:
            await pending


async def _step(stage: Stage, call: Call, runtime: Runtime) -> None:
    pending = stage.run(call, runtime)
    if pending is not None:
        await pending


@functools.lru_cache(maxsize=8)
def _groups(stages: tuple[Stage, ...]) -> dict[str, tuple[Stage, ...]]:
    """The stages of each ``when``, in their order (worked out once per tuple)."""
    whens = ("checks", "refused", "release", "reply", "always")
    return {when: tuple(s for s in stages if s.when == when) for when in whens}


_STAGE_GROUPS: Final = _groups(STAGES)


def _fail(call: Call, runtime: Runtime, exc: Exception) -> None:
    """The reply for the exception that ended the call."""
    call.raised = exc
    if isinstance(exc, origin.CrossOrigin):
        call.error = exc
        # Never a redirect: a cross-site page must not get a navigable answer.
        call.response = responses.error(exc, message=_words(runtime, exc))
    elif isinstance(exc, ActionError):
        call.error = exc
        call.response = _refuse(call, runtime, exc)
    else:
        # A backend that is down (the app's database, say) is "try again later", not a bug.
        failure = UNAVAILABLE if isinstance(exc, runtime.unavailable_errors) else INTERNAL
        call.error, call.digest = failure, _log_failure(call, exc)
        debug = {"type": type(exc).__name__, "message": str(exc)} if runtime.debug else None
        call.response = _refuse(call, runtime, failure, debug)


# --- what the stages share --------------------------------------------------------------


def _spec(call: Call) -> ActionSpec:
    if call.spec is None:  # pragma: no cover - the route stage sets it or refuses
        raise RuntimeError("no action resolved yet")
    return call.spec


def _kind(call: Call) -> BodyKind:
    if call.kind is None:  # pragma: no cover - the route stage sets it or refuses
        raise RuntimeError("no body kind yet")
    return call.kind


def _cookie_session_id(call: Call) -> str | None:
    """The session ID the call's cookie names (its session not read yet, or read by the
    middleware: then its ID, ``None`` if it had ended)."""
    held = call.scope.get(SCOPE_KEY)
    if isinstance(held, Pending):
        return held.sid if held.session is None else held.session.id
    return get_session(call.scope).id


def _session_of(call: Call) -> Session:
    if call.session is None:  # pragma: no cover - the session stage comes first
        raise RuntimeError("no session yet")
    return call.session


def _body_of(call: Call) -> decoding.Body:
    if call.body is None:  # pragma: no cover - the body stage reads it or refuses
        raise RuntimeError("no body read yet")
    return call.body


def _context(call: Call, runtime: Runtime) -> Context:
    """The handler's Context, made once, when the call has passed the CSRF check."""
    if call.ctx is None:
        session = _session_of(call)
        call.ctx = runtime.context(_spec(call).name, call.scope, session)
        call.principal = session.user_id
    return call.ctx


def _count_keys(spec: ActionSpec, user_id: Any, client: str | None) -> list[tuple[str, ...]]:
    """Stage 7's counters: one per signed-in user, and one per client address for every
    anonymous call and every call of an action anyone may call: signing in (with any
    account) must not lift a public action's limit for an address that spent it."""
    keys: list[tuple[str, ...]] = []
    if user_id is not None:
        keys.append(("action", spec.name, f"user:{user_id}"))
    if user_id is None or spec.policy.admits_anonymous:
        keys.append(("action", spec.name, str(client)))
    return keys


async def _count(
    runtime: Runtime, spec: ActionSpec, rate: RateLimitItem, keys: list[tuple[str, ...]]
) -> None:
    for key in keys:
        await runtime.counter.hit(rate, *key)


def _log_failure(call: Call, exc: BaseException) -> str:
    digest = secrets.token_hex(8)
    # The traceback goes to the server log only, under the digest the client sees.
    logger.error(
        "action %s failed [digest %s]",
        call.spec.name if call.spec else "?",
        digest,
        exc_info=exc,
        extra={"digest": digest},
    )
    return digest


def _guard(runtime: Runtime, call: Call, response: Response) -> Response:
    taints = [t for t in (runtime.taints, call.ctx.taints if call.ctx else None) if t]
    if not taints:
        return response  # nothing tainted: nothing to search
    flash_json = json.dumps(call.flash) if call.flash is not None else None
    location = response.headers.get("location")
    body = bytes(response.body)
    for found in (t.find(body, location, flash_json) for t in taints):
        if found is not None:
            call.flash = None  # never kept: it holds the tainted value
            call.error, call.digest = INTERNAL, _log_failure(call, TaintedOutput(found))
            call.stage = "taint guard"
            return responses.error(INTERNAL, digest=call.digest, message=_words(runtime, INTERNAL))
    return response


def _is_form_post(headers: Headers) -> bool:
    """Whether the body is declared a form (urlencoded or multipart), as a browser sends."""
    media_type, _ = transport.content_type(headers.get("content-type", ""))
    return media_type in (BodyKind.FORM.value, BodyKind.MULTIPART.value)


def _flash(call: Call, outcome: flash.Flash) -> None:
    # Kept in the session after the taint guard (stage 20).
    call.flash = outcome.to_dict()


def _words(runtime: Runtime, exc: ActionError) -> str:
    """A refusal's message in the app's catalog (``Bastion(messages=...)``)."""
    return runtime.messages.of(exc.code, exc.message, type(exc).message)


def _refuse(call: Call, runtime: Runtime, exc: ActionError, debug: object = None) -> Response:
    message = _words(runtime, exc)
    if responses.is_htmx(call.headers):
        return responses.htmx_error(exc, digest=call.digest, message=message)
    if responses.wants_redirect(call.headers, call.form_post):
        # A plain form goes back to the page it came from, which shows the flash.
        _flash(call, flash.failure(call.spec, exc, call.body, call.digest, message))
        back = responses.referer_path(call.headers) or "/"
        if isinstance(exc, ReauthenticationRequired) and exc.page is not None:
            # First to the page where the user signs in again, which sends them back.
            return responses.redirect(f"{exc.page}?{urlencode({'next': back})}")
        return responses.redirect(back)
    return responses.error(exc, digest=call.digest, debug=debug, message=message)
