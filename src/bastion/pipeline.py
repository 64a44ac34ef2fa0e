"""The order of the checks, and nothing else.

Every action call runs these stages, in this order; each lives in its own module.
Cheap, stateless refusals come first, and nothing decoded from the body reaches a
model, a handler or a database before every earlier stage has passed.

    1  route + transport   transport.resolve, transport.body_kind   404 405 415 413
    2  request origin      origin.check                             403
    3  session             sessions.get_session (loaded by the middleware)
    4  CSRF token          csrf.verify (a plain form's token is in  403
                           its flat fields: decoding.read first)    400 413
    5  rate limit          ratelimit.Counter.hit                    429
    6  policy              policy.authorize (loads the user if      401 403
                           the policy needs one)
    7  validation          decoding.validate, then the action's     422 403
                           own check on the validated input
    9  execute             execute.run                              504
    10 output              output.serialize                         500
    11 respond             responses.*, flash.*                     200 303
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope

from . import csrf, decoding, execute, flash, origin, output, policy, responses, transport
from .context import Context
from .errors import ActionError
from .registry import ActionSpec
from .sessions import Session, get_session
from .transport import BodyKind

if TYPE_CHECKING:
    from .app import Bastion

__all__ = ["INTERNAL", "handle"]

logger = logging.getLogger("bastion")

INTERNAL = ActionError("Something went wrong.", code="internal", status=500)
"""What the client learns of any exception outside the ``ActionError`` tree."""


async def handle(bastion: Bastion, scope: Scope, receive: Receive, action_id: str) -> Response:
    headers = Headers(scope=scope)
    session = get_session(scope)
    form_post = False
    body: decoding.Body | None = None
    spec: ActionSpec | None = None
    try:
        spec = transport.resolve(bastion.registry, scope, action_id)
        # Known before any check on the body, so that a browser posting a plain form
        # lands on a page (303) whatever refuses it, a 413 or 415 included.
        form_post = _is_form_post(headers)
        kind = transport.body_kind(spec, headers)
        origin.check(headers, bastion.origins_for(scope), spec.name)
        if form_post:
            body = await decoding.read(spec, kind, headers, receive)
        form_token = body.reserved.get("_csrf") if body is not None else None
        csrf.verify(session, headers, form_token, bastion.keys, spec.name)
        ctx = Context(action=spec.name, scope=scope, session=session, bastion=bastion)
        if spec.rate is not None:
            caller = f"user:{session.user_id}" if session.user_id is not None else ctx.client
            await bastion.counter.hit(spec.rate, "action", spec.name, str(caller))
        if spec.policy.needs_user:
            await ctx.current_user()
        await policy.authorize(spec.policy, ctx)
        if body is None:
            body = await decoding.read(spec, kind, headers, receive)
        data = decoding.validate(spec, body)
        if spec.check is not None:
            await policy.check_object(spec.check, ctx, data)
        result = await execute.run(spec, ctx, data)
        payload = output.serialize(spec, result)
    except origin.CrossOrigin as exc:
        # Never a redirect: a cross-site page must not get a navigable answer.
        return responses.error(exc)
    except ActionError as exc:
        return _refuse(headers, session, form_post, spec, body, exc)
    except Exception as exc:
        digest = secrets.token_hex(8)
        # The traceback goes to the server log only, under the digest the client sees.
        logger.error(
            "action %s failed [digest %s]",
            spec.name if spec else "?",
            digest,
            exc_info=exc,
            extra={"digest": digest},
        )
        debug = {"type": type(exc).__name__, "message": str(exc)} if bastion.debug else None
        return _refuse(headers, session, form_post, spec, body, INTERNAL, digest, debug)
    finally:
        if body is not None:
            body.close()
    if responses.wants_redirect(headers, form_post):
        session.set_flash(flash.success(spec, payload).to_dict())
        # To `_next`, or else back to the page the form was posted from.
        return responses.redirect(
            responses.safe_next(body.reserved.get("_next"))
            or responses.referer_path(headers)
            or "/"
        )
    return responses.success(payload)


def _is_form_post(headers: Headers) -> bool:
    """Whether the body is declared a form (urlencoded or multipart), as a browser sends."""
    media_type, _ = parse_options_header(headers.get("content-type", ""))
    return media_type.decode("latin-1") in (BodyKind.FORM.value, BodyKind.MULTIPART.value)


def _refuse(
    headers: Headers,
    session: Session,
    form_post: bool,
    spec: ActionSpec | None,
    body: decoding.Body | None,
    exc: ActionError,
    digest: str | None = None,
    debug: object = None,
) -> Response:
    if responses.wants_redirect(headers, form_post):
        # A plain form goes back to the page it came from, which shows the flash.
        session.set_flash(flash.failure(spec, exc, body, digest).to_dict())
        return responses.redirect(responses.referer_path(headers) or "/")
    return responses.error(exc, digest=digest, debug=debug)
