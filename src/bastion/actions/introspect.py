"""The one walker over type annotations: every type an annotation names.

Registration (what an action takes and returns), decoding (which fields are forms),
flash (which fields are secret) and ``bastion audit`` all read annotations through it,
so a new kind of annotation (a type alias, a TypedDict) is learnt in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Sequence, Set
from typing import Any

from pydantic import BaseModel
from starlette.datastructures import UploadFile

from bastion.actions.spec import FormShape

__all__ = [
    "form_shape",
    "is_model",
    "leaves",
    "mentions",
    "record_fields",
    "record_names",
    "unannotated",
]


def is_model(annotation: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def record_fields(t: Any) -> dict[str, Any] | None:
    """The field types of a dataclass, TypedDict or NamedTuple (pydantic reads them
    field by field, as it does a model's); ``None`` for anything else."""
    if not isinstance(t, type):
        return None
    if not (
        dataclasses.is_dataclass(t)
        or (issubclass(t, dict) and hasattr(t, "__required_keys__"))  # TypedDict
        or (issubclass(t, tuple) and hasattr(t, "_fields"))  # NamedTuple
    ):
        return None
    try:
        return typing.get_type_hints(t, include_extras=True)
    except Exception:
        return {}  # unresolvable: the TypeAdapter built from it refuses it


def leaves(tp: Any) -> Iterator[Any]:
    """Every type named inside ``tp``, through unions, containers, Annotated, type
    aliases, models, dataclasses, TypedDicts and NamedTuples."""
    seen: set[Any] = set()

    def walk(t: Any) -> Iterator[Any]:
        yield t
        if is_model(t):
            if t in seen:
                return
            seen.add(t)
            for field in t.model_fields.values():
                yield from walk(field.annotation)
            return
        record = record_fields(t)
        if record is not None:
            if t in seen:
                return
            seen.add(t)
            for annotation in record.values():
                yield from walk(annotation)
            return
        if type(t).__name__ == "TypeAliasType":  # typing's or typing_extensions'
            if t in seen:
                return
            seen.add(t)
            yield from walk(t.__value__)
            return
        for arg in typing.get_args(t):
            yield from walk(arg)

    return walk(tp)


def mentions(tp: Any, *classes: type) -> bool:
    """Whether ``tp`` names one of ``classes`` (or a subclass) anywhere inside it: an
    upload field, a secret field."""
    return any(isinstance(t, type) and issubclass(t, classes) for t in leaves(tp))


def unannotated(annotation: Any) -> Any:
    """``Annotated[list[str], Field(...)]`` is a list all the same."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


@functools.cache
def record_names(model: type[BaseModel]) -> frozenset[str]:
    """The names of the records (models, dataclasses, TypedDicts, NamedTuples) a model is
    made of: pydantic names them in error paths, which bastion leaves out of replies."""
    return frozenset(
        t.__name__ for t in leaves(model) if is_model(t) or record_fields(t) is not None
    )


def form_shape(model: type[BaseModel]) -> FormShape:
    """How an input model's fields read from flat form fields (worked out at registration)."""
    lists, booleans, optionals, uploads = set(), set(), set(), set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation = unannotated(info.annotation)
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
            optionals.add(key)
            rest = [a for a in args if a is not type(None)]
            annotation = unannotated(rest[0]) if len(rest) == 1 else annotation
        origin = typing.get_origin(annotation) or annotation
        if origin in (list, set, frozenset, tuple) or (
            isinstance(origin, type)
            and issubclass(origin, Sequence | Set)
            and not issubclass(origin, str | bytes | bytearray)
        ):
            lists.add(key)
        elif annotation is bool:
            booleans.add(key)
        if mentions(annotation, UploadFile):
            uploads.add(key)
    return FormShape(
        frozenset(lists), frozenset(booleans), frozenset(optionals), frozenset(uploads)
    )
