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

import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import annotated_types
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from starlette.datastructures import UploadFile

from .policy import public
from .transport import BodyKind

if TYPE_CHECKING:
    from .app import Bastion
    from .registry import ActionSpec

__all__ = ["ActionReport", "FieldReport", "inventory"]

_SIZED_SCALARS = (str, bytes, SecretStr, SecretBytes)
_COLLECTIONS = (list, set, frozenset, tuple, dict)


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


def inventory(bastion: Bastion, refused: Sequence[tuple[str, str]] = ()) -> list[ActionReport]:
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
    types = [BodyKind.JSON.value, BodyKind.FORM.value]
    if spec.accepts_uploads:
        types.append(BodyKind.MULTIPART.value)
    report = ActionReport(
        name=spec.name,
        id=spec.id,
        policy=spec.policy.describe(),
        rate=_rate(spec),
        content_types=types,
        timeout=spec.timeout,
        max_body_bytes=spec.limits.max_body_bytes,
        max_file_bytes=spec.limits.max_file_bytes if spec.accepts_uploads else None,
        bound_arguments=[],
        fields=list(_fields(spec.input_model, "")),
    )
    if spec.rate is None and spec.policy is public:
        report.violations.append("public action without a rate limit")
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


def _fields(model: type[BaseModel], prefix: str) -> Iterator[FieldReport]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        yield from _field(path, info.annotation, list(info.metadata))


def _field(path: str, annotation: Any, metadata: list[Any]) -> Iterator[FieldReport]:
    annotation, extra = _strip(annotation)
    metadata = metadata + extra
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _field(path, arg, metadata)
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _fields(annotation, f"{path}.")
        return
    bounds = _bounds(metadata)
    base = origin or annotation
    if isinstance(base, type) and issubclass(base, UploadFile):
        yield FieldReport(path, "upload", bounds)
        return
    sized = isinstance(base, type) and issubclass(base, _SIZED_SCALARS + _COLLECTIONS)
    if sized and "max_length" not in bounds:
        bounds = {**bounds, "unbounded": True}
    yield FieldReport(path, _type_name(annotation), bounds)
    if base in _COLLECTIONS:
        for i, arg in enumerate(args):
            if arg is not Ellipsis:
                item = "[]" if base is not dict else ("{key}" if i == 0 else "{}")
                yield from _field(path + item, arg, [])


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    extra: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *found = typing.get_args(annotation)
        for item in found:
            extra.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, extra


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        for attr, key in (
            ("max_length", "max_length"),
            ("min_length", "min_length"),
            ("gt", "gt"),
            ("ge", "ge"),
            ("lt", "lt"),
            ("le", "le"),
            ("pattern", "pattern"),
        ):
            value = getattr(item, attr, None)
            if value is not None:
                bounds[key] = value
        if isinstance(item, annotated_types.MaxLen):
            bounds["max_length"] = item.max_length
    return bounds


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
