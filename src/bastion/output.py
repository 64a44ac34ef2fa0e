"""Pipeline stage 10: only what the return type declares leaves the server.

The result goes through the declared type's validator (reading attributes, so an
ORM row or any object works) and then its serialiser: an attribute the model does
not name (a password hash, an email) is never read into the reply.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .registry import ActionSpec

__all__ = ["OutputMismatch", "serialize"]


class OutputMismatch(Exception):
    """The handler returned something its declared type does not accept (a bug: 500)."""


def serialize(spec: ActionSpec, result: Any) -> bytes:
    """The JSON of the result, as its declared type sees it; ``null`` for ``-> None``."""
    if spec.output is None:
        # Declared to return nothing: whatever came back stays on the server.
        return b"null"
    try:
        value = spec.output.validate_python(result, from_attributes=True)
    except ValidationError as exc:
        # Field paths and error types only: the values may be the very secrets we withhold.
        where = ", ".join(
            f"{'.'.join(map(str, e['loc'])) or '_'} ({e['type']})"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise OutputMismatch(
            f"action {spec.name!r} returned a value its return type rejects: {where}"
        ) from None
    return spec.output.dump_json(value)
