"""The order of the checks, and nothing else.

Every action call runs these stages, in this order; each lives in its own module.
Cheap, stateless refusals come first, and nothing decoded from the body reaches a
model, a handler or a database before every earlier stage has passed.

    1  route + transport   transport.resolve, check_method,         404 405 415 413
                           network.check_forwarding, body_kind      400
    2  request origin      origin.check                             403
    3  session             sessions.get_session (loaded by the middleware)
    4  CSRF token          csrf.verify (a plain form's token is in  403
                           its flat fields: decoding.read first)    400 413
    5  rate limit          ratelimit.Counter.hit                    429
    6  policy              policy.authorize (loads the user if      401 403
                           the policy needs one)
    7  validation          sessions.confirm (the session still      403
                           exists after a slow body), then
                           decoding.validate                        422
    8  bound arguments     binding.open_bound, then the action's    400 403
                           own check on the validated input
    9  execute             execute.run                              504
    10 output              output.serialize, then the taint guard   500
    11 respond             responses.*, flash.*                     200 303
    -- audit               one events.AuditEvent per call, whatever its outcome
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope

from . import (
    binding,
    csrf,
    decoding,
    events,
    execute,
    flash,
    network,
    origin,
    output,
    policy,
    responses,
    transport,
)
from .context import Context
from .errors import ActionError, ServiceUnavailable
from .events import AuditEvent
from .registry import ActionSpec
from .sessions import Session, get_session
from .taint import TaintedOutput
from .transport import BodyKind

if TYPE_CHECKING:
    from limits import RateLimitItem

    from .app import Bastion

__all__ = ["INTERNAL", "handle"]

logger = logging.getLogger("bastion")

INTERNAL = ActionError("Something went wrong.", code="internal", status=500)
"""What the client learns of any exception outside the ``ActionError`` tree."""

UNAVAILABLE = ServiceUnavailable()
"""What the client learns when a handler's backend is down (``unavailable_errors``)."""


async def handle(bastion: Bastion, scope: Scope, receive: Receive, action_id: str) -> Response:
    """Run one call through every stage; then the taint guard and the audit event."""
    call = _Call(Headers(scope=scope), get_session(scope), time.time())
    started = time.perf_counter()
    response = _guard(bastion, call, await _run(bastion, scope, receive, action_id, call))
    spec = call.spec
    # Who called: the user signed in when the call arrived (a log-out call is theirs).
    user_id = call.principal if call.principal is not None else call.session.user_id
    event = AuditEvent(
        timestamp=call.started,
        action=spec.name if spec else None,
        action_id=spec.id if spec else None,
        principal=None if user_id is None else str(user_id),
        # Worked out once per call: the context has it when the call got that far.
        client=call.ctx.client if call.ctx is not None else bastion.client_address(scope),
        outcome=events.outcome_of(call.error),
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        digest=call.digest,
    )
    await events.emit(bastion.audit_sinks, event)
    return response


@dataclass(slots=True)
class _Call:
    """What one call has learnt so far, for the reply, the guard and the audit event."""

    headers: Headers
    session: Session
    started: float
    spec: ActionSpec | None = None
    form_post: bool = False
    body: decoding.Body | None = None
    ctx: Context | None = None
    error: ActionError | None = None
    digest: str | None = None
    flash: dict[str, Any] | None = None
    principal: Any = None


async def _run(
    bastion: Bastion, scope: Scope, receive: Receive, action_id: str, call: _Call
) -> Response:
    headers, session = call.headers, call.session
    try:
        spec = call.spec = transport.resolve(bastion.registry, action_id)
        transport.check_method(scope)
        network.check_forwarding(scope, bastion.trusted_proxies)
        # Known before any check on the body, so that a browser posting a plain form
        # lands on a page (303) whatever refuses it, a 413 or 415 included.
        call.form_post = _is_form_post(headers)
        kind = transport.body_kind(spec, headers)
        origin.check(headers, bastion.origins_for(scope), spec.name)
        if call.form_post:
            call.body = await decoding.read(spec, kind, headers, receive)
        form_token = call.body.reserved.get(csrf.FIELD) if call.body is not None else None
        csrf.verify(session, headers, form_token, bastion.keys, spec.name)
        ctx = call.ctx = Context(action=spec.name, scope=scope, session=session, bastion=bastion)
        call.principal = session.user_id
        if spec.rate is not None:
            await _count(bastion, spec, spec.rate, session, ctx.client)
        if spec.policy.needs_user:
            await ctx.current_user()
        await policy.authorize(spec.policy, ctx)
        if call.body is None:
            call.body = await decoding.read(spec, kind, headers, receive)
        # A body that took its time may have arrived after a log-out ended the session
        # (and the token) it was sent with: the handler must not run for it.
        if not await bastion.session_manager.confirm(session):
            raise csrf.CsrfFailed()
        data = decoding.validate(spec, call.body)
        sealed = call.body.reserved.get("_bound")
        ctx.bound = binding.open_bound(bastion.keys, spec, sealed, session)
        if spec.check is not None:
            await policy.check_object(spec.check, ctx, data)
        result = await execute.run(spec, ctx, data)
        payload = output.serialize(spec, result)
        # Rendered here, so that a broken fragment template is a 500 with a digest too.
        fragment = (
            bastion.render_fragment(spec, scope, payload) if responses.is_htmx(headers) else None
        )
    except origin.CrossOrigin as exc:
        call.error = exc
        # Never a redirect: a cross-site page must not get a navigable answer.
        return responses.error(exc)
    except ActionError as exc:
        call.error = exc
        return _refuse(call, exc)
    except Exception as exc:
        # A backend that is down (the app's database, say) is "try again later", not a bug.
        failure = UNAVAILABLE if isinstance(exc, bastion.unavailable_errors) else INTERNAL
        call.error, call.digest = failure, _log_failure(call, exc)
        debug = {"type": type(exc).__name__, "message": str(exc)} if bastion.debug else None
        return _refuse(call, failure, debug)
    finally:
        if call.body is not None:
            call.body.close()
    next_path = responses.safe_next(call.body.reserved.get("_next"))
    if responses.is_htmx(headers):
        return responses.htmx_success(fragment, next_path)
    if responses.wants_redirect(headers, call.form_post):
        _flash(call, flash.success(spec, payload))
        # To `_next`, or else back to the page the form was posted from.
        return responses.redirect(next_path or responses.referer_path(headers) or "/")
    return responses.success(payload)


async def _count(
    bastion: Bastion, spec: ActionSpec, rate: RateLimitItem, session: Session, client: str | None
) -> None:
    """Stage 5: one call counted per signed-in user, and per client address for every
    anonymous call and every call of an action anyone may call: signing in (with any
    account) must not lift a public action's limit for an address that spent it."""
    user_id = session.user_id
    if user_id is not None:
        await bastion.counter.hit(rate, "action", spec.name, f"user:{user_id}")
    if user_id is None or spec.policy.admits_anonymous:
        await bastion.counter.hit(rate, "action", spec.name, str(client))


def _log_failure(call: _Call, exc: BaseException) -> str:
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


def _guard(bastion: Bastion, call: _Call, response: Response) -> Response:
    """Stage 10's last word: no reply, flash or redirect carries a tainted value."""
    taints = [t for t in (bastion.taints, call.ctx.taints if call.ctx else None) if t]
    if not taints:
        return response  # nothing tainted: nothing to search
    flash_json = json.dumps(call.flash) if call.flash is not None else None
    location = response.headers.get("location")
    body = bytes(response.body)
    for found in (t.find(body, location, flash_json) for t in taints):
        if found is not None:
            if call.flash is not None:
                call.session.pop_flash()
            call.error, call.digest = INTERNAL, _log_failure(call, TaintedOutput(found))
            return responses.error(INTERNAL, digest=call.digest)
    return response


def _is_form_post(headers: Headers) -> bool:
    """Whether the body is declared a form (urlencoded or multipart), as a browser sends."""
    media_type, _ = transport.content_type(headers.get("content-type", ""))
    return media_type in (BodyKind.FORM.value, BodyKind.MULTIPART.value)


def _flash(call: _Call, outcome: flash.Flash) -> None:
    call.flash = outcome.to_dict()
    call.session.set_flash(call.flash)


def _refuse(call: _Call, exc: ActionError, debug: object = None) -> Response:
    if responses.is_htmx(call.headers):
        return responses.htmx_error(exc, digest=call.digest)
    if responses.wants_redirect(call.headers, call.form_post):
        # A plain form goes back to the page it came from, which shows the flash.
        _flash(call, flash.failure(call.spec, exc, call.body, call.digest))
        return responses.redirect(responses.referer_path(call.headers) or "/")
    return responses.error(exc, digest=call.digest, debug=debug)
