"""What one registered action is, as data: the ``ActionSpec`` every stage reads.

Data only: building one (reading the handler's signature) is ``registry.py``'s work, so
every stage can import the type without importing the machinery that makes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from limits import RateLimitItem
    from pydantic import BaseModel, TypeAdapter

    from bastion.actions.policy import Policy
    from bastion.config import Limits

__all__ = [
    "ActionSpec",
    "Argument",
    "BodyKind",
    "Bound",
    "Check",
    "Dependency",
    "FormShape",
    "Fragment",
    "Redirect",
]


class BodyKind(Enum):
    """The bodies an action reads: a script's JSON, a plain form, a form with files."""

    JSON = "application/json"
    FORM = "application/x-www-form-urlencoded"
    MULTIPART = "multipart/form-data"


class _BoundMarker:
    """Marks the handler parameter that receives the sealed values:
    ``ref: Annotated[PostRef, Bound]``."""

    def __repr__(self) -> str:
        return "Bound"


Bound: Final = _BoundMarker()


@dataclass(frozen=True, slots=True)
class Redirect:
    """What a handler returns (``-> Redirect``) to choose where the caller goes next:
    a same-origin path, checked as ``_next`` is (anything else goes to ``/``).

    A plain form lands there (303, with the success flash); a script gets
    ``{"ok": true, "data": null, "redirect": path}``; htmx gets ``HX-Redirect``."""

    to: str


@dataclass(frozen=True, slots=True, init=False)
class Fragment:
    """What a handler returns (``-> Fragment``) to answer htmx with a template of its
    choosing: ``Fragment("rows.html", rows=rows, total=total)``.

    htmx gets the template rendered with these values, ``user`` and ``request`` (the
    app's templates, ``bastion.templates()``); a script gets ``{"ok": true, "data":
    null}`` and a plain form its 303 and flash, as for ``-> None``: only htmx asked for
    HTML. The values go to the template only, never into a JSON reply."""

    template: str
    values: Mapping[str, Any]

    def __init__(self, template: str, /, **values: Any) -> None:
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "values", values)


@dataclass(frozen=True, slots=True)
class FormShape:
    """How flat form fields map onto an input model, worked out once per action."""

    lists: frozenset[str] = frozenset()
    """Fields that collect every value of a repeated key."""
    booleans: frozenset[str] = frozenset()
    """Checkbox fields: an unchecked box sends nothing, which means ``False``."""
    optionals: frozenset[str] = frozenset()
    """Fields that accept ``None``: an empty input means ``None``."""
    uploads: frozenset[str] = frozenset()
    """File fields: a file input left empty sends an empty part, which means no file."""


@dataclass(frozen=True, slots=True)
class Dependency:
    """A function whose value a parameter receives (``Annotated[T, Depends(fn)]``)."""

    fn: Callable[..., Any]
    arguments: tuple[Argument, ...]
    """What ``fn`` itself takes."""
    kind: Literal["function", "coroutine", "generator", "async generator"]
    use_cache: bool = True
    """Once per call however many parameters name it (``False``: once per parameter)."""


@dataclass(frozen=True, slots=True)
class Argument:
    """How one parameter of a handler, a check or a dependency gets its value."""

    name: str
    source: Literal["context", "request", "data", "bound", "dependency"]
    dependency: Dependency | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSpec:
    """One registered action, as the pipeline sees it."""

    name: str
    """Unique among the app's actions; what templates and the test client refer to."""
    fn: Callable[..., Any]
    is_async: bool
    policy: Policy
    input_model: type[BaseModel]
    data_param: str | None
    context_param: str | None
    output: TypeAdapter[Any] | None
    """Serialises the result through the declared return type; ``None`` for ``-> None``."""
    limits: Limits
    timeout: float
    accepts_uploads: bool
    form: FormShape
    ids: tuple[str, ...]
    """The action ID under the current key first, then under each fallback key."""
    rate: RateLimitItem | None = None
    """Calls allowed per caller (``None``: unlimited, which ``bastion audit`` flags)."""
    check: Check | None = None
    """Runs after validation with the context and the input; ``False`` denies (403)."""
    file_cap_declared: bool = False
    """Whether the action named its own ``max_file_bytes`` (``bastion audit`` asks it)."""
    bound: type[BaseModel] | None = None
    """The model of the values sealed into its forms (``Annotated[Model, Bound]``)."""
    bound_param: str | None = None
    fragment: str | None = None
    """The template an htmx request gets back (rendered with ``data``)."""
    arguments: tuple[Argument, ...] = ()
    """The handler's parameters, in order, and where each one's value comes from."""
    redirects: bool = False
    """Declared ``-> Redirect``: the handler chooses the caller's next page."""
    renders: bool = False
    """Declared ``-> Fragment``: the handler chooses the template htmx gets."""
    takes_dependencies: bool = False
    """Whether the handler or its check names a ``Depends``: stages 12 and 17 do
    nothing for an action that does not."""
    idempotent: bool = False
    """Declared ``idempotent=True``: a call with an idempotency key runs once, and its
    repeats get the first reply (``bastion.idempotency``)."""
    tokens: frozenset[str] | None = None
    """The scopes that let an API token call it: its own name and what ``tokens=``
    listed; ``None`` when it accepts no token (the default)."""
    check_arguments: tuple[Argument, ...] | None = None
    """``check=``'s parameters, read from its annotations; ``None`` for a check taking
    ``(ctx, data)`` by position."""

    @property
    def id(self) -> str:
        return self.ids[0]


Check = Callable[..., bool | Awaitable[bool]]
"""An object-level decision on the validated call: its parameters are named by type as a
handler's are (``ctx: Context``, the input model, the bound model, dependencies), or it
takes ``(ctx, data)`` by position."""
