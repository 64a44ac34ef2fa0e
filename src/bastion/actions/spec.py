"""What one registered action is, as data: the ``ActionSpec`` every stage reads.

Data only: building one (reading the handler's signature) is ``registry.py``'s work, so
every stage can import the type without importing the machinery that makes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from limits import RateLimitItem
    from pydantic import BaseModel, TypeAdapter

    from bastion.actions.policy import Policy
    from bastion.config import Limits

__all__ = ["ActionSpec", "BodyKind", "Bound", "Check", "FormShape"]


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

    @property
    def id(self) -> str:
        return self.ids[0]


Check = Callable[[Any, Any], bool | Awaitable[bool]]
"""``check(ctx, data)``: an object-level decision on the validated input."""
