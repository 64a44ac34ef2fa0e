"""Pipeline stages 4, 9 and 10: the capped body, split into flat fields, then validated.

Three steps, kept apart because other stages sit between them: ``read_form_start``
reads a plain form only as far as its CSRF token (``_csrf``, one of its fields), within
``Limits.max_pre_token_bytes``, keeping what it read for later; ``read`` turns the whole
body into flat fields once the token has passed; ``validate`` builds the declared
pydantic model from them and nothing else: no classes, no references, no object graphs.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.types import Message, Receive

from bastion.actions.introspect import record_names
from bastion.actions.spec import BodyKind, FormShape
from bastion.config import Limits
from bastion.csrf import FIELD as CSRF_FIELD
from bastion.errors import ActionError, BadRequest, PayloadTooLarge, ValidationFailed
from bastion.http.multipart import FieldScan, parse_multipart
from bastion.messages import CATALOG, DEFAULT, Messages
from bastion.pipeline.stages import transport
from bastion.timeouts import DeadlinePassed, within

if typing.TYPE_CHECKING:
    from bastion.actions.spec import ActionSpec

__all__ = ["Body", "read", "read_form_start", "validate"]

RESERVED: Final = frozenset({CSRF_FIELD, "_next", "_bound", "_idem"})
"""Form fields bastion reads itself; every other ``_``-name is an ordinary (unknown) field."""

MAX_REPORTED_ERRORS: Final = 50
"""A body can fail in thousands of places; the reply names the first few."""

_CHECKBOX_OFF: Final = "false"

_TOO_DEEP: Final = "The JSON is nested too deeply."
_JSON_NUL: Final = "The JSON holds a NUL character."

_BUILTIN_ERRORS: Final = frozenset(typing.get_args(pydantic_core.core_schema.ErrorType))
_ECHOING_ERRORS: Final = frozenset({"value_error", "assertion_error", "union_tag_invalid"})
"""pydantic's error types whose message may quote what was submitted: a custom validator's
own words, and the discriminator tag of a union. Custom error types may too."""

_MAX_SCANNED: Final = 10_000
"""Submitted values compared with one message; past this, the message is withheld."""

_NAMING_A_CLASS: Final = {
    "model_type": "Input should be a valid dictionary",
    "dataclass_type": "Input should be a valid dictionary",
    "dataclass_exact_type": "Input should be a valid dictionary",
    "is_instance_of": "Input is not of the expected type",
    "is_subclass_of": "Input is not of the expected type",
}
"""pydantic's messages that name one of the app's classes ("… or instance of Address"),
in words that do not."""


class BodyTimeout(ActionError):
    """The body did not arrive within the action's timeout."""

    status = 408
    code = "request_timeout"
    message = CATALOG["request_timeout"]


@dataclass(slots=True)
class Body:
    """A request body split into flat fields, before any model is built."""

    kind: BodyKind
    data: dict[str, Any] | list[tuple[str, str | UploadFile]]
    """The JSON object, or the form's (name, value) pairs in order."""
    reserved: dict[str, str] = field(default_factory=dict)
    """``_csrf``, ``_next`` and ``_bound`` from a form."""
    uploads: list[UploadFile] = field(default_factory=list)
    partial: bool = False
    """Only the fields that came before the pre-token cap (``read_form_start``): enough
    to check the token and to fill a refused form again, never to validate."""

    def close(self) -> None:
        """Delete the spooled upload files; safe to call more than once."""
        for upload in self.uploads:
            upload.file.close()


async def read(spec: ActionSpec, kind: BodyKind, headers: Headers, receive: Receive) -> Body:
    """Read the body within the action's limits and split it into flat fields.

    The body must arrive within the action's timeout (408 after it): one that trickles
    in, or stops short of its end without the client leaving, would hold the call, and
    a form's is read before its token is checked.
    """
    try:
        return await within(spec.timeout, lambda: _read(spec, kind, headers, receive))
    except DeadlinePassed:
        raise BodyTimeout() from None


async def read_form_start(
    spec: ActionSpec, kind: BodyKind, headers: Headers, receive: Receive
) -> tuple[Body, Receive]:
    """A plain form's body as far as its token: whole if it is no longer than
    ``Limits.max_pre_token_bytes``, else (``Body.partial``) the fields complete within
    those bytes, which must include ``_csrf``. Also the ``receive`` that gives the whole
    body again, what was read here first, for ``read`` once the token has passed.

    A flood of forms without a valid token so costs at most the pre-token cap each, not
    ``max_body_bytes``; the body's timeout applies as in ``read``.
    """
    received: list[Message] = []
    try:
        body = await within(
            spec.timeout, lambda: _read_start(spec, kind, headers, receive, received)
        )
    except DeadlinePassed:
        raise BodyTimeout() from None
    return body, transport.replaying(received, receive)


async def _read_start(
    spec: ActionSpec, kind: BodyKind, headers: Headers, receive: Receive, received: list[Message]
) -> Body:
    limits = spec.limits
    cap = min(limits.max_pre_token_bytes, limits.max_body_bytes)
    first = await receive()
    received.append(first)
    if (
        first["type"] == "http.request"
        and not first.get("more_body", False)
        and len(first.get("body", b"")) <= cap
    ):
        # The usual case: a small form in one message, read whole (the one pass).
        return await _read(spec, kind, headers, transport.replaying([first], receive))
    scan = FieldScan(headers, limits) if kind is BodyKind.MULTIPART else _FormScan(limits)
    try:
        message, size = first, 0
        while True:
            if message["type"] == "http.disconnect":
                raise BadRequest("The request body was cut short.")
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and size + len(chunk) <= cap:
                # Short after all, in several messages: read whole, as above.
                return await _read(spec, kind, headers, transport.replaying(received, receive))
            pairs = scan.feed(chunk[: cap - size])
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise PayloadTooLarge()
            if size >= cap or any(name == CSRF_FIELD for name, _ in pairs):
                data, reserved = _split_reserved(pairs, limits)
                return Body(kind, data, reserved, partial=True)
            message = await receive()
            received.append(message)
    finally:
        scan.close()


class _FormScan:
    """The start of an urlencoded form: the fields complete in it so far (each ended by
    ``&``), parsed as ``read`` parses the whole form."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._scanned = 0
        self._pairs: list[tuple[str, str | UploadFile]] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str | UploadFile]]:
        self._buffer += chunk
        end = self._buffer.rfind(b"&")
        if end >= self._scanned:
            complete = bytes(self._buffer[self._scanned : end])
            self._pairs += _parse_form(complete, self._limits)
            self._scanned = end + 1
        return self._pairs

    def close(self) -> None:
        self._buffer.clear()


async def _read(spec: ActionSpec, kind: BodyKind, headers: Headers, receive: Receive) -> Body:
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
        obj = _parse_json(raw, limits)
        sealed = obj.pop("_bound", None)  # a script sends the sealed values it was given
        if sealed is not None and not isinstance(sealed, str):
            raise BadRequest("The _bound field must be text.")
        return Body(kind, obj, {"_bound": sealed} if sealed is not None else {})
    pairs = _parse_form(raw, limits)
    data, reserved = _split_reserved(pairs, limits)
    return Body(kind, data, reserved)


def validate(spec: ActionSpec, body: Body, messages: Messages = DEFAULT) -> BaseModel:
    """The action's input model built from the flat fields; 422 names each bad field,
    in the app's ``messages``."""
    data = body.data if isinstance(body.data, dict) else _map_form(body.data, spec.form)
    try:
        validated: BaseModel = spec.input_model.__pydantic_validator__.validate_python(data)
        return validated
    except ValidationError as exc:
        raise ValidationFailed(_field_messages(exc, spec.input_model, messages)) from None


# --- JSON -----------------------------------------------------------------------------


def _parse_json(raw: bytes, limits: Limits) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        # pydantic's own parser, straight from bytes. NaN and Infinity are not JSON.
        value = pydantic_core.from_json(raw, allow_inf_nan=False, cache_strings="keys")
    except ValueError as exc:
        # The parser stops at its own depth limit (about 200): still "too deep", not a 500.
        if str(exc).startswith("recursion limit exceeded"):
            raise BadRequest(_TOO_DEEP) from None
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.")
    _check_json_bounds(value, limits)
    return value


def _check_json_bounds(value: dict[str, Any], limits: Limits) -> None:
    """Depth, key count, key length, finite numbers and no NUL, walked without recursion.

    Every call's body passes here, so each node is checked with C-level loops (``max``,
    ``join``) and exact type tests: pydantic-core's parser gives plain dicts, lists, strs,
    ints, floats, bools and ``None``, never subclasses."""
    keys = 0
    max_depth, max_fields = limits.max_json_depth, limits.max_fields
    max_name = limits.max_field_name_length
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(_TOO_DEEP)
        items: Iterable[Any]
        if type(node) is dict:
            keys += len(node)
            if keys > max_fields:
                raise PayloadTooLarge("Too many fields.")
            if node and max(map(len, node)) > max_name:
                raise BadRequest("A field name is too long.")
            if "\x00" in "".join(node):
                raise BadRequest(_JSON_NUL)
            items = node.values()
        else:
            items = node
        for item in items:
            if type(item) is str:
                if "\x00" in item:
                    # As in forms: a NUL truncates C strings and PostgreSQL refuses it in text.
                    raise BadRequest(_JSON_NUL)
            elif type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))
            elif type(item) is float and not math.isfinite(item):
                # 1e999 parses to infinity: refused like the NaN and Infinity literals.
                raise BadRequest("A number in the JSON is out of range.")


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
    pairs: Sequence[tuple[str, str | UploadFile]], limits: Limits
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
    empty optional inputs → None, file inputs left empty → no file. A key repeated
    for a field that takes one value stays a list, and the model then refuses it."""
    grouped: dict[str, list[Any]] = {}
    for name, value in pairs:
        if (
            name in shape.uploads
            and isinstance(value, UploadFile)
            and not value.filename
            and not value.size
        ):
            # A file input left empty: browsers send a part with filename="" and no bytes.
            # It means "no file" (an empty list, None, or a missing field), not an empty file.
            if name in shape.lists:
                grouped.setdefault(name, [])
            elif name in shape.optionals:
                grouped.setdefault(name, []).append(None)
            continue
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


def _field_messages(
    exc: ValidationError, model: type[BaseModel], messages: Messages
) -> dict[str, str]:
    fields: dict[str, str] = {}
    classes = record_names(model)
    # The context is read for lengths only (_length_message), never sent as it is.
    for error in exc.errors(include_url=False)[:MAX_REPORTED_ERRORS]:
        # pydantic names a union's member in the path ("address.InternalAddress.city",
        # "code.function-after[check(), str]"): the app's classes and functions, left out.
        parts = (
            str(part)
            for part in error["loc"]
            if not (isinstance(part, str) and (part in classes or "[" in part))
        )
        fields.setdefault(".".join(parts) or "_", _safe_message(error, messages))
    return fields


def _safe_message(error: Any, messages: Messages) -> str:
    """pydantic's message, unless it would repeat what the client sent.

    Built-in messages describe the rule ("at most 50 characters"); a custom
    validator's may interpolate the value, which must never be echoed back. Its
    input may be a whole object (a model validator), so every submitted value in
    it is looked for, not only the input itself.
    """
    message: str = error["msg"]
    kind: str = error["type"]
    if kind in _NAMING_A_CLASS:
        return messages.field(_NAMING_A_CLASS[kind])
    if kind in ("too_short", "too_long"):
        return _length_message(kind, error, messages)
    if kind in _ECHOING_ERRORS or kind not in _BUILTIN_ERRORS:
        for seen, text in enumerate(_submitted_texts(error.get("input"))):
            if seen >= _MAX_SCANNED or text in message:
                return messages.text("invalid_value")
    return messages.field(message.removeprefix("Value error, ").removeprefix("Assertion failed, "))


def _length_message(kind: str, error: Any, messages: Messages) -> str:
    """The rule alone. pydantic's own message ends with the length sent ("not 3"), which
    for a ``SecretStr`` tells an onlooker how long the password typed was, and calls its
    characters "items"."""
    ctx = error.get("ctx") or {}
    unit = messages.text("characters" if isinstance(error.get("input"), str) else "items")
    limit = ctx.get("min_length" if kind == "too_short" else "max_length")
    return messages.text(kind).format(limit=limit, unit=unit)


def _submitted_texts(value: Any) -> Iterator[str]:
    """The text of every scalar inside a submitted value (and uploaded file names)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)
        elif isinstance(node, UploadFile):
            if node.filename:
                yield node.filename
        elif isinstance(node, str | int | float) and not isinstance(node, bool):
            text = str(node)
            if text:
                yield text
