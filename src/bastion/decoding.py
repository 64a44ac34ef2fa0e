"""Pipeline stage 7: the capped body, split into flat fields, then validated.

Two steps, kept apart because later stages sit between them: ``read`` turns the body
into flat fields (a plain form carries its CSRF token in ``_csrf``, which must be
checked before any model is built); ``validate`` builds the declared pydantic model
from them and nothing else: no classes, no references, no object graphs.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.types import Receive

from . import transport
from .config import Limits
from .errors import BadRequest, PayloadTooLarge, ValidationFailed
from .transport import BodyKind
from .uploads import parse_multipart

if typing.TYPE_CHECKING:
    from .registry import ActionSpec

__all__ = ["Body", "FormShape", "form_shape", "read", "validate"]

RESERVED: Final = frozenset({"_csrf", "_next", "_bound"})
"""Form fields bastion reads itself; every other ``_``-name is an ordinary (unknown) field."""

MAX_REPORTED_ERRORS: Final = 50
"""A body can fail in thousands of places; the reply names the first few."""

_CHECKBOX_OFF: Final = "false"


@dataclass(slots=True)
class Body:
    """A request body split into flat fields, before any model is built."""

    kind: BodyKind
    data: dict[str, Any] | list[tuple[str, str | UploadFile]]
    """The JSON object, or the form's (name, value) pairs in order."""
    reserved: dict[str, str] = field(default_factory=dict)
    """``_csrf``, ``_next`` and ``_bound`` from a form."""
    uploads: list[UploadFile] = field(default_factory=list)

    def close(self) -> None:
        """Delete the spooled upload files; safe to call more than once."""
        for upload in self.uploads:
            upload.file.close()


@dataclass(frozen=True, slots=True)
class FormShape:
    """How flat form fields map onto an input model, worked out once per action."""

    lists: frozenset[str] = frozenset()
    """Fields that collect every value of a repeated key."""
    booleans: frozenset[str] = frozenset()
    """Checkbox fields: an unchecked box sends nothing, which means ``False``."""
    optionals: frozenset[str] = frozenset()
    """Fields that accept ``None``: an empty input means ``None``."""


def form_shape(model: type[BaseModel]) -> FormShape:
    lists, booleans, optionals = set(), set(), set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation = info.annotation
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
            optionals.add(key)
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else annotation
        origin = typing.get_origin(annotation) or annotation
        if origin in (list, set, frozenset, tuple) or (
            isinstance(origin, type)
            and issubclass(origin, typing.Sequence | typing.AbstractSet)
            and origin not in (str, bytes)
        ):
            lists.add(key)
        elif annotation is bool:
            booleans.add(key)
    return FormShape(frozenset(lists), frozenset(booleans), frozenset(optionals))


async def read(spec: ActionSpec, kind: BodyKind, headers: Headers, receive: Receive) -> Body:
    """Read the body within the action's limits and split it into flat fields."""
    limits = spec.limits
    if kind is BodyKind.MULTIPART:
        pairs = await parse_multipart(
            headers, transport.stream(receive, limits.max_body_bytes), limits
        )
        body = Body(kind, [], uploads=[v for _, v in pairs if isinstance(v, UploadFile)])
        try:
            body.data, body.reserved = _split_reserved(pairs, limits)
        except BaseException:
            body.close()
            raise
        return body
    raw = await transport.read(receive, limits.max_body_bytes)
    if kind is BodyKind.JSON:
        return Body(kind, _parse_json(raw, limits))
    pairs = _parse_form(raw, limits)
    data, reserved = _split_reserved(pairs, limits)
    return Body(kind, data, reserved)


def validate(spec: ActionSpec, body: Body) -> BaseModel:
    """The action's input model built from the flat fields; 422 names each bad field."""
    data = body.data if isinstance(body.data, dict) else _map_form(body.data, spec.form)
    try:
        return spec.input_model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_field_messages(exc)) from None


# --- JSON -----------------------------------------------------------------------------


def _parse_json(raw: bytes, limits: Limits) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        # pydantic's own parser, straight from bytes. NaN and Infinity are not JSON.
        value = pydantic_core.from_json(raw, allow_inf_nan=False, cache_strings="keys")
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.")
    _check_json_bounds(value, limits)
    return value


def _check_json_bounds(value: dict[str, Any], limits: Limits) -> None:
    """Depth, key count and key length, walked without recursion."""
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        items: Iterable[Any]
        if isinstance(node, dict):
            items = node.values()
            keys += len(node)
            if keys > limits.max_fields:
                raise PayloadTooLarge("Too many fields.")
            if any(len(k) > limits.max_field_name_length for k in node):
                raise BadRequest("A field name is too long.")
        elif isinstance(node, list):
            items = node
        else:
            continue
        if depth > limits.max_json_depth:
            raise BadRequest("The JSON is nested too deeply.")
        stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))


# --- forms ----------------------------------------------------------------------------


def _parse_form(raw: bytes, limits: Limits) -> list[tuple[str, str | UploadFile]]:
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=limits.max_fields,
        )
    except UnicodeDecodeError:
        raise BadRequest("The form is not valid UTF-8.") from None
    except ValueError:  # parse_qsl's "Max number of fields exceeded"
        raise PayloadTooLarge("Too many fields.") from None
    return list(pairs)


def _split_reserved(
    pairs: list[tuple[str, str | UploadFile]], limits: Limits
) -> tuple[list[tuple[str, str | UploadFile]], dict[str, str]]:
    fields: list[tuple[str, str | UploadFile]] = []
    reserved: dict[str, str] = {}
    for name, value in pairs:
        if len(name) > limits.max_field_name_length:
            raise BadRequest("A field name is too long.")
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            raise BadRequest("The form holds a NUL character.")
        if name in RESERVED:
            if name in reserved or not isinstance(value, str):
                raise BadRequest(f"The form field {name} must be sent once, as text.")
            reserved[name] = value
        else:
            fields.append((name, value))
    return fields, reserved


def _map_form(pairs: list[tuple[str, str | UploadFile]], shape: FormShape) -> dict[str, Any]:
    """Flat pairs onto a model's fields: repeated keys → lists, checkboxes → bool,
    empty optional inputs → None. A key repeated for a field that takes one value
    stays a list, and the model then refuses it."""
    grouped: dict[str, list[Any]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(
            None if value == "" and name in shape.optionals else value
        )
    data: dict[str, Any] = {
        name: values if name in shape.lists or len(values) > 1 else values[0]
        for name, values in grouped.items()
    }
    for name in shape.booleans:
        data.setdefault(name, _CHECKBOX_OFF)
    return data


def _field_messages(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False)[:MAX_REPORTED_ERRORS]:
        path = ".".join(str(part) for part in error["loc"]) or "_"
        fields.setdefault(path, _safe_message(error))
    return fields


def _safe_message(error: Any) -> str:
    """pydantic's message, unless it would repeat what the client sent.

    Built-in messages describe the rule ("at most 50 characters"); a custom
    validator's may interpolate the value, which must never be echoed back.
    """
    message: str = error["msg"]
    submitted = error.get("input")
    if isinstance(submitted, str | int | float) and not isinstance(submitted, bool):
        text = str(submitted)
        if text and text in message and error["type"] in ("value_error", "assertion_error"):
            return "Invalid value."
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
