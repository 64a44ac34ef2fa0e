"""The schema manifest: every action of an app as an OpenAPI 3.1 document.

``Bastion.schema()`` returns it, ``bastion schema MODULE:ATTR`` prints it, and
``Bastion.serve_schema(policy=...)`` serves it to whom the app's policy allows. Each
action is a ``POST`` at its real path, named by its registered name (``operationId``),
with its input model as the request body, the success envelope around its return type,
and the refusals bastion itself can answer it with, by status and code.

Only what the code decides goes in: the models' JSON Schemas (pydantic's own), the
policy as ``bastion audit`` words it, the rate, the content types, the token scopes.
Never a key, a bound value, a session or a setting read from the environment beyond the
path prefix and the cookie's name — the same facts every page of the app already shows.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from bastion import csrf
from bastion.actions.audit import report
from bastion.actions.policy import public

if TYPE_CHECKING:
    from bastion.actions.spec import ActionSpec

__all__ = ["ERROR_ENVELOPE", "OPENAPI", "document"]

OPENAPI: Final = "3.1.0"
_REFS: Final = "#/components/schemas/{model}"
_TAG: Final = "actions"
_SESSION: Final = "sessionCookie"
_BEARER: Final = "bearerAuth"

ERROR_ENVELOPE: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A refusal: its status, a stable code and a public message.",
    "properties": {
        "ok": {"const": False},
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "422 invalid: why each field was refused, by its path.",
                },
                "digest": {
                    "type": "string",
                    "description": "500: the reference of the traceback in the server log.",
                },
                "page": {
                    "type": "string",
                    "description": "401 reauthentication_required: where to sign in again.",
                },
            },
            "required": ["code", "message"],
        },
    },
    "required": ["ok", "error"],
}
"""``responses.error``'s envelope (``debug`` aside: debug mode refuses non-loopback)."""

_STATUS_WORDS: Final = {
    400: "Bad request",
    401: "Not signed in, or the API token is not valid",
    403: "Refused",
    408: "The body took too long to arrive",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported content type",
    422: "Invalid input",
    429: "Too many requests (see Retry-After)",
    500: "Internal error (generic; its digest is the server log's reference)",
    503: "Unavailable",
    504: "The action took too long",
}


def document(
    specs: Iterable[ActionSpec],
    *,
    prefix: str,
    cookie: str,
    counts_refusals: bool,
    title: str,
    version: str,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``specs``, served at ``{prefix}/{id}``. ``cookie`` is
    the session cookie's name as browsers send it; ``counts_refusals``: the app limits
    how many refused calls one address may make (``refusal_rate``), so any call may be
    429 too."""
    specs = list(specs)
    # One pass over every model: pydantic names each once, two models of one name
    # apart, and hoists what they refer to.
    wanted: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (spec.name, "validation", TypeAdapter(spec.input_model))
        for spec in specs
        if spec.data_param is not None
    ]
    wanted += [(s.name, "serialization", s.output) for s in specs if s.output is not None]
    found, defs = TypeAdapter.json_schemas(wanted, ref_template=_REFS)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["ErrorEnvelope"] = copy.deepcopy(ERROR_ENVELOPE)

    paths: dict[str, Any] = {}
    for spec in specs:
        given = found.get((spec.name, "validation"))
        returned = found.get((spec.name, "serialization"))
        operation = _operation(spec, given, returned, schemas, counts_refusals)
        paths[f"{prefix}/{spec.id}"] = {"post": operation}

    schemes: dict[str, Any] = {
        _SESSION: {
            "type": "apiKey",
            "in": "cookie",
            "name": cookie,
            "description": "The session cookie (HttpOnly): browsers send it, with the "
            "CSRF token bound to it in X-CSRF-Token or the form's _csrf field.",
        }
    }
    if any(spec.tokens is not None for spec in specs):
        schemes[_BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (bst_…) in Authorization, for the actions that "
            "accept one, with a scope the action names; never with the session cookie.",
        }
    return {
        "openapi": OPENAPI,
        "info": {"title": title, "version": version},
        "tags": [{"name": _TAG, "description": "Server actions (bastion)."}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": schemes},
    }


def _operation(
    spec: ActionSpec,
    given: dict[str, Any] | None,
    returned: dict[str, Any] | None,
    schemas: dict[str, Any],
    counts_refusals: bool,
) -> dict[str, Any]:
    audit = report(spec)
    operation: dict[str, Any] = {"operationId": spec.name, "tags": [_TAG]}
    doc = inspect.getdoc(spec.fn)
    if doc:
        summary, _, rest = doc.partition("\n")
        operation["summary"] = summary.strip()
        if rest.strip():
            operation["description"] = rest.strip()
    operation["parameters"] = _parameters(spec)
    operation["requestBody"] = {
        "required": True,
        "content": {
            kind: {"schema": _body(spec, given, schemas, form=kind != "application/json")}
            for kind in audit.content_types
        },
    }
    operation["responses"] = {
        "200": {
            "description": "Done: the action's result in the success envelope.",
            "content": {"application/json": {"schema": _success(spec, returned)}},
        },
        **_refusals(spec, counts_refusals),
    }
    security: list[dict[str, list[str]]] = [{_SESSION: []}]
    if spec.tokens is not None:
        # OpenAPI 3.1 lets a bearer requirement list roles: here, the scopes that grant it.
        security.append({_BEARER: sorted(spec.tokens)})
    operation["security"] = security
    operation["x-bastion"] = {
        "name": spec.name,
        "policy": audit.policy,
        "rate": audit.rate,
        "idempotent": spec.idempotent,
        "tokens": audit.tokens,
        "step_up_seconds": audit.step_up,
        "content_types": audit.content_types,
    }
    return operation


def _parameters(spec: ActionSpec) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "X-CSRF-Token",
            "in": "header",
            # An API token call has no cookie for a cross-site page to ride on.
            "required": spec.tokens is None,
            "description": "The CSRF token bound to the caller's session (a page's "
            "csrf_meta(), bastion.csrf_token(request)); a plain form sends it in _csrf "
            "instead. Every call with the session cookie needs it"
            + ("; a call with an API token sends none." if spec.tokens is not None else "."),
            "schema": {"type": "string"},
        }
    ]
    if spec.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Runs the action once per key; a repeat gets the first "
                "reply (409 while the first still runs, 422 with another body).",
                "schema": {"type": "string", "maxLength": 255},
            }
        )
    return parameters


def _body(
    spec: ActionSpec, given: dict[str, Any] | None, schemas: dict[str, Any], *, form: bool
) -> dict[str, Any]:
    """The body's schema: the input model's, with the reserved fields its content type
    carries (``_csrf``, ``_next`` and ``_idem`` in a form; ``_bound`` in either)."""
    extra: dict[str, Any] = {}
    required: list[str] = []
    if form:
        extra[csrf.FIELD] = {"type": "string", "description": "The CSRF token."}
        extra["_next"] = {
            "type": "string",
            "description": "Where a plain form lands after the call: a same-origin path.",
        }
        if spec.idempotent:
            extra["_idem"] = {"type": "string", "description": "action_form()'s key."}
        required.append(csrf.FIELD)
    if spec.bound is not None:
        extra["_bound"] = {
            "type": "string",
            "description": "The values the server sealed for this action (bastion.seal).",
        }
        required.append("_bound")
    if given is None:
        base: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    elif not extra:
        return given
    else:
        base = copy.deepcopy(_resolve(given, schemas))
    # The model forbids unknown fields, so the reserved ones are added to its own
    # properties rather than beside it (an allOf would refuse them).
    base["properties"] = {**base.get("properties", {}), **extra}
    if required:
        base["required"] = [*base.get("required", []), *required]
    return base


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        found: dict[str, Any] = schemas[ref.removeprefix("#/components/schemas/")]
        return found
    return schema


def _success(spec: ActionSpec, returned: dict[str, Any] | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "ok": {"const": True},
        "data": returned if returned is not None else {"type": "null"},
    }
    if spec.redirects:
        properties["redirect"] = {
            "type": "string",
            "description": "The same-origin path the handler chose: go there next.",
        }
    return {
        "type": "object",
        "properties": properties,
        "required": ["ok", "data"],
        "additionalProperties": False,
    }


def _refusals(spec: ActionSpec, counts_refusals: bool) -> dict[str, Any]:
    """The refusals bastion's stages can answer this action with, by status. A handler's
    own ``ActionError`` adds its own code (and perhaps status): the lists are bastion's."""
    codes: dict[int, list[str]] = {
        400: ["malformed", "forwarding_refused", "token_in_url", "token_with_cookie"],
        403: ["cross_origin", "csrf_failed", "no_session"],
        408: ["request_timeout"],
        413: ["payload_too_large"],
        415: ["unsupported_media_type"],
        500: ["internal"],
        503: ["unavailable"],
        504: ["timeout"],
    }
    if spec.bound is not None:
        codes[400].append("bound_invalid")
    if spec.idempotent:
        codes[400].append("idempotency_key_invalid")
        codes[409] = ["idempotency_in_progress"]
        codes[422] = ["idempotency_key_reused"]
    if spec.data_param is not None:
        codes.setdefault(422, []).insert(0, "invalid")
    unauthorized: list[str] = []
    if spec.policy.wants_sign_in:
        unauthorized.append("unauthorized")
    if spec.policy.step_up is not None:
        unauthorized.append("reauthentication_required")
    if spec.tokens is not None:
        unauthorized.append("invalid_token")
        codes[403].append("insufficient_scope")
    else:
        codes[403].append("token_not_accepted")
    if unauthorized:
        codes[401] = unauthorized
    if spec.policy is not public or spec.check is not None:
        codes[403].append("forbidden")  # the policy or the object check may deny
    if spec.rate is not None or spec.tokens is not None or counts_refusals:
        codes[429] = ["rate_limited"]
    return {
        str(status): {
            "description": f"{_STATUS_WORDS[status]}: {', '.join(codes[status])}.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            },
            "x-bastion-errors": codes[status],
        }
        for status in sorted(codes)
    }
