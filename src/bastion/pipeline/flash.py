"""Pipeline stage 20: the flash, what a plain form post (no JavaScript) left for the next page.

A browser that posts a form gets a 303 and then loads a page; the outcome travels
in the session and is shown once. It holds the public message, the field errors,
the result of a success, and what the user typed, so the form re-renders filled in,
except secrets: fields typed ``SecretStr``/``SecretBytes`` or named like a password,
a token or a key are never kept.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, SecretBytes, SecretStr
from starlette.datastructures import UploadFile

from bastion.actions.introspect import mentions
from bastion.actions.spec import ActionSpec
from bastion.errors import ActionError, ValidationFailed
from bastion.pipeline.stages.decoding import Body

__all__ = ["Flash", "failure", "success"]

_SECRET_NAME: Final = re.compile(
    # Long words anywhere in the name; short ones only as a whole segment, so that
    # "shipping" or "passenger" are not taken for a PIN or a pass.
    r"pass(word|wd|phrase)|secret|token|api.?key|private.?key|credit.?card|card.?number"
    r"|(^|[^a-z])(pass|pwd|pw|pin|otp|ssn|cvc|cvv)($|[^a-z])",
    re.IGNORECASE,
)

MAX_KEPT: Final = 64 * 1024
"""Characters of typed values kept, at most. The flash lives in the session store, and a
refused form may come from anyone, token or not: a megabyte of junk fields must not
become a megabyte stored for a day. A form's own fields, a long text included, fit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Flash:
    """The outcome of the last plain form post, as templates see it (``flash('greet')``)."""

    action: str | None
    """The action's name."""
    ok: bool
    """Whether it succeeded."""
    data: Any = None
    """What it returned (through its return type), on success."""
    code: str | None = None
    """The error code, on failure."""
    message: str | None = None
    """The public error message, on failure."""
    fields: dict[str, str] = field(default_factory=dict)
    """A message per invalid field."""
    values: dict[str, str | list[str]] = field(default_factory=dict)
    """What was typed, secrets left out: to fill the form again."""
    digest: str | None = None
    """The reference of an internal error, as in the server log."""

    def to_dict(self) -> dict[str, Any]:
        """What the session stores (plain JSON)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Flash:
        return cls(**{k: v for k, v in stored.items() if k in cls.__dataclass_fields__})


def success(spec: ActionSpec, payload: bytes) -> Flash:
    return Flash(action=spec.name, ok=True, data=json.loads(payload))


def failure(
    spec: ActionSpec | None,
    exc: ActionError,
    body: Body | None,
    digest: str | None,
    message: str | None = None,
) -> Flash:
    return Flash(
        action=spec.name if spec else None,
        ok=False,
        code=exc.code,
        message=exc.message if message is None else message,
        fields=exc.fields if isinstance(exc, ValidationFailed) else {},
        values=_typed_values(spec, body) if spec else {},
        digest=digest,
    )


def _typed_values(spec: ActionSpec, body: Body | None) -> dict[str, str | list[str]]:
    """What the user typed, to fill the form again: text fields only, no secrets, only
    the fields the form has (its input model's), at most ``MAX_KEPT`` characters."""
    if body is None or isinstance(body.data, dict):
        return {}
    secret = _secret_fields(spec.input_model)
    declared = _declared_fields(spec.input_model)
    values: dict[str, str | list[str]] = {}
    kept = 0
    for name, value in body.data:
        if isinstance(value, UploadFile) or name in secret or _SECRET_NAME.search(name):
            continue
        if name not in declared or kept + len(value) > MAX_KEPT:
            continue
        kept += len(value)
        if name in values:
            previous = values[name]
            values[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            values[name] = value
    return values


@functools.cache
def _declared_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(info.alias or name for name, info in model.model_fields.items())


@functools.cache
def _secret_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        info.alias or name
        for name, info in model.model_fields.items()
        if mentions(info.annotation, SecretStr, SecretBytes)
    )
