"""The order of the checks, and nothing else.

Every action call runs these stages, in this order; each lives in its own module.
Cheap, stateless refusals come first, and nothing decoded from the body reaches a
model, a handler or a database before every earlier stage has passed.

    1  route + transport   transport.resolve, transport.body_kind   404 405 415 413
    7a flat fields         decoding.read                            400 413
    6  policy              policy.authorize                         403
    7b validation          decoding.validate                        422
    9  execute             execute.run                              504
    10 output              output.serialize                         500
    11 respond             responses.*                              200 303
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope

from . import decoding, execute, output, policy, responses, transport
from .context import Context
from .errors import ActionError
from .transport import BodyKind

if TYPE_CHECKING:
    from .app import Bastion

__all__ = ["INTERNAL", "handle"]

logger = logging.getLogger("bastion")

INTERNAL = ActionError("Something went wrong.", code="internal", status=500)
"""What the client learns of any exception outside the ``ActionError`` tree."""


async def handle(bastion: Bastion, scope: Scope, receive: Receive, action_id: str) -> Response:
    headers = Headers(scope=scope)
    form_post = False
    body: decoding.Body | None = None
    spec = None
    try:
        spec = transport.resolve(bastion.registry, scope, action_id)
        # Known before any check on the body, so that a browser posting a plain form
        # lands on a page (303) whatever refuses it, a 413 or 415 included.
        form_post = _is_form_post(headers)
        kind = transport.body_kind(spec, headers)
        ctx = Context(action=spec.name, scope=scope)
        body = await decoding.read(spec, kind, headers, receive)
        await policy.authorize(spec.policy, ctx)
        data = decoding.validate(spec, body)
        result = await execute.run(spec, ctx, data)
        payload = output.serialize(spec, result)
    except ActionError as exc:
        return _refuse(headers, form_post, exc)
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
        return _refuse(headers, form_post, INTERNAL, digest=digest, debug=debug)
    finally:
        if body is not None:
            body.close()
    if responses.wants_redirect(headers, form_post):
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
    form_post: bool,
    exc: ActionError,
    *,
    digest: str | None = None,
    debug: object = None,
) -> Response:
    if responses.wants_redirect(headers, form_post):
        # A plain form goes back to the page it came from.
        return responses.redirect(responses.referer_path(headers) or "/")
    return responses.error(exc, digest=digest, debug=debug)
