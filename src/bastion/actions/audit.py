"""The action inventory: every action an app exposes, and what is wrong with each.

``bastion audit MODULE:ATTR`` prints it and exits 1 on any violation, so CI can hold an
app to the rules below; ``inventory(bastion)`` gives the same data to a page.

Violations:

- a public action without a rate limit;
- a ``str``, ``bytes`` or collection input field without a maximum length;
- an upload without a declared size cap (``max_file_bytes=``);
- an input model that allows unknown fields, and a handler returning untyped data
  (both refused at registration: the audit reports the refusal instead of stopping).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from starlette.datastructures import UploadFile

from bastion.actions.introspect import record_fields
from bastion.actions.spec import BodyKind

if TYPE_CHECKING:
    from bastion.actions.registry import Registry
    from bastion.actions.spec import ActionSpec

__all__ = ["ActionReport", "FieldReport", "inventory"]

_SIZED_SCALARS = (str, bytes, bytearray, SecretStr, SecretBytes)


@dataclass(frozen=True, slots=True)
class FieldReport:
    path: str
    type: str
    bounds: dict[str, Any]


@dataclass(slots=True)
class ActionReport:
    name: str
    id: str | None
    policy: str
    rate: str | None
    content_types: list[str]
    timeout: float | None
    max_body_bytes: int | None
    max_file_bytes: int | None
    bound_arguments: list[str]
    fields: list[FieldReport] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HasRegistry(Protocol):
    """What the inventory reads of an app: its actions (``Bastion`` has them)."""

    @property
    def registry(self) -> Registry: ...


def inventory(bastion: _HasRegistry, refused: Sequence[tuple[str, str]] = ()) -> list[ActionReport]:
    """One report per registered action, then one per refused registration."""
    reports = [_report(spec) for spec in bastion.registry]
    for name, reason in refused:
        reports.append(
            ActionReport(
                name=name,
                id=None,
                policy="?",
                rate=None,
                content_types=[],
                timeout=None,
                max_body_bytes=None,
                max_file_bytes=None,
                bound_arguments=[],
                violations=[f"refused at registration: {reason}"],
            )
        )
    return reports


def _report(spec: ActionSpec) -> ActionReport:
    content_types = [BodyKind.JSON.value, BodyKind.FORM.value]
    if spec.accepts_uploads:
        content_types.append(BodyKind.MULTIPART.value)
    report = ActionReport(
        name=spec.name,
        id=spec.id,
        policy=spec.policy.describe(),
        rate=_rate(spec),
        content_types=content_types,
        timeout=spec.timeout,
        max_body_bytes=spec.limits.max_body_bytes,
        max_file_bytes=spec.limits.max_file_bytes if spec.accepts_uploads else None,
        bound_arguments=list(spec.bound.model_fields) if spec.bound is not None else [],
        fields=list(_fields(spec.input_model, "", frozenset({spec.input_model}))),
    )
    if spec.rate is None and spec.policy.admits_anonymous:
        report.violations.append("public action without a rate limit")  # anyone may call
    for f in report.fields:
        if f.bounds.get("unbounded"):
            report.violations.append(f"field {f.path!r} ({f.type}) has no maximum length")
    if spec.accepts_uploads and not spec.file_cap_declared:
        report.violations.append("accepts uploads without a declared max_file_bytes")
    return report


def _rate(spec: ActionSpec) -> str | None:
    if spec.rate is None:
        return None
    amount, multiples, unit = spec.rate.amount, spec.rate.multiples, spec.rate.GRANULARITY.name
    if multiples == 1:
        return f"{amount}/{unit}"
    return f"{amount}/{multiples} {unit}s"


def _fields(model: type[BaseModel], prefix: str, seen: frozenset[Any]) -> Iterator[FieldReport]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        yield from _field(path, info.annotation, list(info.metadata), seen)


def _record(t: type) -> list[tuple[str, Any, list[Any]]]:
    """``(name, annotation, metadata)`` of each field of a dataclass, TypedDict or
    NamedTuple, with the constraints of a ``= Field(...)`` default."""
    pydantic_fields = getattr(t, "__pydantic_fields__", None)
    if isinstance(pydantic_fields, dict):  # a pydantic dataclass: fields already collected
        return [
            (info.alias or name, info.annotation, list(info.metadata))
            for name, info in pydantic_fields.items()
        ]
    hints = record_fields(t) or {}
    if not dataclasses.is_dataclass(t):
        return [(name, hint, []) for name, hint in hints.items()]
    found: list[tuple[str, Any, list[Any]]] = []
    for f in dataclasses.fields(t):
        default = f.default
        metadata = list(default.metadata) if isinstance(default, FieldInfo) else []
        found.append((f.name, hints.get(f.name, Any), metadata))
    return found


def _field(
    path: str, annotation: Any, metadata: list[Any], seen: frozenset[Any] = frozenset()
) -> Iterator[FieldReport]:
    annotation, extra = _strip(annotation)
    metadata = metadata + extra
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _field(path, arg, metadata, seen)
        return
    if type(annotation).__name__ == "TypeAliasType":  # `type X = ...` (typing or typing_extensions)
        if annotation not in seen:
            yield from _field(path, annotation.__value__, metadata, seen | {annotation})
        return
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or record_fields(annotation) is not None
    ):
        if annotation in seen:
            # A recursive model: its fields are listed above; its depth is bounded by
            # the decoder (max_json_depth).
            yield FieldReport(path, annotation.__name__, {"recursive": True})
            return
        inner = seen | {annotation}
        if issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{path}.", inner)
        else:
            for name, hint, meta in _record(annotation):
                yield from _field(f"{path}.{name}", hint, meta, inner)
        return
    bounds = _bounds(metadata)
    base = origin or annotation
    if isinstance(base, type) and issubclass(base, UploadFile):
        yield FieldReport(path, "upload", bounds)
        return
    if base is Any or base is object:
        # Takes any JSON value: strings and arrays of any length.
        if "max_length" not in bounds:
            bounds = {**bounds, "unbounded": True}
        yield FieldReport(path, _type_name(annotation), bounds)
        return
    if not isinstance(base, type) or issubclass(base, enum.Enum):
        # Literal values, enums (a str enum's values are fixed), and other special forms.
        yield FieldReport(path, _type_name(annotation), bounds)
        return
    scalar = issubclass(base, _SIZED_SCALARS)
    collection = not scalar and issubclass(base, collections.abc.Iterable)
    fixed_tuple = base is tuple and bool(args) and args[-1] is not Ellipsis
    if (scalar or collection) and not fixed_tuple and "max_length" not in bounds:
        bounds = {**bounds, "unbounded": True}
    yield FieldReport(path, _type_name(annotation), bounds)
    if not collection:
        return
    if issubclass(base, collections.abc.Mapping):
        key, value = args if len(args) == 2 else (Any, Any)
        yield from _field(path + "{key}", key, [], seen)
        yield from _field(path + "{}", value, [], seen)
    elif fixed_tuple:
        for i, arg in enumerate(args):
            yield from _field(f"{path}[{i}]", arg, [], seen)
    else:
        yield from _field(path + "[]", args[0] if args else Any, [], seen)


_FIELD_WRAPPERS = frozenset({"Required", "NotRequired", "ReadOnly"})
"""TypedDict key qualifiers (typing's or typing_extensions'), found by name."""


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``Annotated`` (and a TypedDict's ``Required`` …), and the metadata."""
    extra: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *found = typing.get_args(annotation)
            for item in found:
                extra.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif getattr(origin, "_name", None) in _FIELD_WRAPPERS:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, extra


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        for key in ("max_length", "min_length", "gt", "ge", "lt", "le", "pattern"):
            value = getattr(item, key, None)
            if value is not None:
                # A compiled pattern is shown (and sent as JSON) as its source.
                bounds[key] = value.pattern if isinstance(value, re.Pattern) else value
    return bounds


def _type_name(annotation: Any) -> str:
    """``list[str]``, ``dict[str, int]``, ``upload``: the type without its metadata."""
    annotation, _ = _strip(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return "Any"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, UploadFile):
        return "upload"
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if not args:
            return name
        shown = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{name}[{shown}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
