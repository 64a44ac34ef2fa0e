"""Dependencies in actions, declared as FastAPI declares them.

A parameter annotated ``Annotated[T, Depends(fn)]`` receives what ``fn`` returns (or
yields), in the handler and in ``check=`` alike::

    async def database() -> AsyncIterator[AsyncSession]:
        async with Session() as session:
            yield session                     # closed when the call is over

    @bastion.action(policy=authenticated, check=owns_post)
    async def delete_post(ref: Annotated[PostRef, Bound],
                          db: Annotated[AsyncSession, Depends(database)]) -> None: ...

``fn`` may be a function, a coroutine function, a generator or an async generator (its
code after ``yield`` runs once the handler and its output are done, with the handler's
exception thrown in if it raised, so a session can roll back). Within one call a
dependency runs once however many parameters name it (``use_cache=False`` for a fresh
value each time). Its own parameters are a ``Context``, a Starlette ``Request`` and other
dependencies — nothing of the body: dependencies run after the policy and validation,
and what they may see is decided here, at registration, with the handler's signature.

FastAPI's own ``Depends`` objects are accepted as they are (recognised by their
``dependency`` and ``use_cache`` attributes, so bastion never imports FastAPI): an app
can share one ``get_db`` between its FastAPI routes and its actions. ``bastion.Depends``
is the same thing for apps without FastAPI.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

from starlette.requests import Request

from bastion.actions.spec import Argument, Dependency
from bastion.context import Context
from bastion.errors import ConfigurationError

__all__ = ["Depends", "declared", "dependency", "is_context"]

Kind = Literal["function", "coroutine", "generator", "async generator"]


class Depends:
    """``Annotated[T, Depends(fn)]``: the parameter receives ``fn``'s value for this call."""

    __slots__ = ("dependency", "use_cache")

    def __init__(self, dependency: Callable[..., Any], *, use_cache: bool = True) -> None:
        if not callable(dependency):
            raise TypeError(f"Depends() takes a callable, not {dependency!r}")
        self.dependency = dependency
        self.use_cache = use_cache

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__qualname__", repr(self.dependency))
        return f"Depends({name})"


def declared(annotation: Any) -> Any | None:
    """The ``Depends`` marker (bastion's or FastAPI's) inside ``Annotated[...]``, if any."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    for extra in typing.get_args(annotation)[1:]:
        if isinstance(extra, Depends):
            return extra
        # FastAPI's fastapi.params.Depends, duck-typed: FastAPI stays optional.
        if type(extra).__name__ == "Depends" and callable(getattr(extra, "dependency", None)):
            return extra
    return None


def is_context(annotation: Any) -> bool:
    """``Context``, or ``Context[AppUser]`` (the same class at run time)."""
    return annotation is Context or typing.get_origin(annotation) is Context


def dependency(marker: Any, where: str, chain: tuple[Callable[..., Any], ...] = ()) -> Dependency:
    """The plan of one dependency and of the dependencies it takes, checked now."""
    fn = marker.dependency
    name = getattr(fn, "__qualname__", repr(fn))
    if fn in chain:
        cycle = " -> ".join(getattr(f, "__qualname__", repr(f)) for f in (*chain, fn))
        raise ConfigurationError(f"{where}: dependencies depend on each other: {cycle}")
    if inspect.isclass(fn):
        target: Any = fn.__init__  # a class: its instance is the value
    elif inspect.isroutine(fn):
        target = fn
    else:
        target = type(fn).__call__  # an object with __call__
    try:
        hints = typing.get_type_hints(target, include_extras=True)
        parameters = inspect.signature(fn).parameters.values()
    except Exception as exc:
        raise ConfigurationError(
            f"{where}: dependency {name}'s signature cannot be read: {exc}"
        ) from exc
    arguments: list[Argument] = []
    for param in parameters:
        annotation = hints.get(param.name)
        inner = declared(annotation)
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"{where}: dependency {name} takes *args or **kwargs")
        if inner is not None:
            arguments.append(
                Argument(param.name, "dependency", dependency(inner, where, (*chain, fn)))
            )
        elif is_context(annotation):
            arguments.append(Argument(param.name, "context"))
        elif annotation is Request:
            arguments.append(Argument(param.name, "request"))
        elif param.default is not param.empty:
            continue  # its own default: nothing to supply
        else:
            raise ConfigurationError(
                f"{where}: dependency {name}'s parameter {param.name!r} must be annotated "
                "with Context, Request or Annotated[T, Depends(...)]: a dependency sees no "
                "body (the action's input reaches the handler and check= only)"
            )
    kind: Kind
    if inspect.isasyncgenfunction(fn):
        kind = "async generator"
    elif inspect.isgeneratorfunction(fn):
        kind = "generator"
    elif inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(target):
        kind = "coroutine"
    else:
        kind = "function"
    return Dependency(fn, tuple(arguments), kind, bool(getattr(marker, "use_cache", True)))
