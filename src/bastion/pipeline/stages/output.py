"""Pipeline stage 15: only what the return type declares leaves the server.

The result goes through the declared type's validator (reading attributes, so an
ORM row or any object works) and then its serialiser: an attribute the model does
not name (a password hash, an email) is never read into the reply.

An instance of the declared model is not validated again (pydantic passes it
through), so one built with ``model_construct`` or changed after it was made may
hold anything in a declared field. Its serialiser is therefore run strictly: a value
the declared type cannot serialise is a 500, never sent as whatever it happens to be.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from bastion.actions.spec import ActionSpec, Fragment, Redirect
from bastion.http.responses import safe_next

__all__ = ["OutputMismatch", "chosen_fragment", "destination", "serialize"]

security_log = logging.getLogger("bastion.security")


class OutputMismatch(Exception):
    """The handler returned something its declared type does not accept (a bug: 500)."""


def chosen_fragment(spec: ActionSpec, result: Any) -> Fragment | None:
    """The template and values a ``-> Fragment`` handler chose; ``None`` for any other."""
    if not spec.renders:
        return None
    if not isinstance(result, Fragment):
        raise OutputMismatch(
            f"action {spec.name!r} is declared -> Fragment but returned {type(result).__name__}"
        )
    return result


def destination(spec: ActionSpec, result: Any) -> str | None:
    """Where a ``-> Redirect`` handler sends the caller: its path if same-origin and
    relative, else ``/``; ``None`` for any other action."""
    if not spec.redirects:
        return None
    if not isinstance(result, Redirect):
        raise OutputMismatch(
            f"action {spec.name!r} is declared -> Redirect but returned {type(result).__name__}"
        )
    path = safe_next(result.to)
    if path is None:
        # A path the handler built from input can point off-site: never followed.
        security_log.warning(
            "action %s: redirect refused, sent to /",
            spec.name,
            extra={"event": "redirect_refused", "action": spec.name},
        )
        return "/"
    return path


def serialize(spec: ActionSpec, result: Any) -> tuple[Any, bytes]:
    """The result as its declared type sees it, and its JSON; ``(None, b"null")`` for
    ``-> None``, ``-> Redirect`` and ``-> Fragment``."""
    if spec.output is None:
        # Declared to return nothing: whatever came back stays on the server.
        return None, b"null"
    # The problem is raised outside the ``except`` blocks: pydantic's exceptions carry the
    # returned values (the very secrets withheld), and must not ride along as __context__
    # into the server log or an error reporter.
    problem: str
    try:
        # The core validator and serialiser directly: TypeAdapter's own methods add ~1.5 µs
        # a call of argument handling this path does not use.
        value = spec.output.validator.validate_python(result, from_attributes=True)
    except ValidationError as exc:
        # Field paths and error types only.
        problem = "returned a value its return type rejects: " + ", ".join(
            f"{'.'.join(map(str, e['loc'])) or '_'} ({e['type']})"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
    else:
        try:
            # "error": a value of the wrong type in a declared field is refused, where
            # pydantic would only warn (with the value in the warning) and send it.
            return value, spec.output.serializer.to_json(value, warnings="error")
        except PydanticSerializationError:
            problem = (
                "returned an instance whose fields hold values its return type cannot "
                "serialise (built with model_construct or changed after validation?)"
            )
    raise OutputMismatch(f"action {spec.name!r} {problem}")
