"""The action inventory: every action an app exposes, and what is wrong with each.

``bastion audit MODULE:ATTR`` prints it and exits 1 on any error that no waiver covers,
so CI can hold an app to the rules below; ``inventory(bastion)`` gives the same data to
a page. Each finding names its rule (``RULES``: an id, a name, a one-line reason and a
level), in the text, the JSON and the SARIF output; docs/audit.md has the table.

Errors (``level="error"``):

- B001 a ``str``, ``bytes`` or collection input field without a maximum length;
- B002 a public action without a rate limit (``rate=None``);
- B003 an upload without a declared size cap (``max_file_bytes=``);
- B004 a registration the app refuses (an input model that allows unknown fields, a
  handler returning untyped data, …), reported instead of stopping the audit;
- B007 caps that cannot agree: a declared file cap its declared body cap cannot carry
  (refused at registration), or a pre-token cap above the body cap it lives in;
- B008 an htmx fragment (``fragment=``, ``-> Fragment``) when no templates are configured
  (``bastion.templates(...)``): the app would refuse to start;
- B011 a ``Decimal`` field without ``max_digits`` (``1e999999`` is a valid value).

Warnings (shown, but not a failure unless ``--fail-on warning``: each may be a choice):

- B005 an action that accepts API tokens (``tokens=True``) without scopes of its own;
- B006 an action whose name looks sensitive (password, e-mail, token, role, delete)
  without a step-up policy (``recent_login``): a stolen session could do it;
- B009 an upload without its own ``max_files`` (it takes the app-wide count);
- B010 an ``int``, ``float`` or ``Decimal`` field without a range (``ge``/``le``/…);
- B012 a public action without a rate limit of its own (it shares ``default_rate``);
- B013 a waiver that matched no finding.

A waiver (``[tool.bastion.audit] waive = [{rule, action, reason}]`` in the app's
``pyproject.toml``) keeps its finding in the report, marked with its reason, and takes
it out of the failures.

A field's bounds are the ones pydantic enforces, read from the input model's core schema
(``__pydantic_core_schema__``), not from the annotation's metadata: a constraint pydantic
drops (one before a ``PlainValidator``, an object that merely has a ``max_length``) is
not a bound, and one it applies without metadata (a model's ``str_max_length``, a
type's own schema) is. The annotation gives each field its path and type name.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from starlette.datastructures import UploadFile

from bastion.actions.introspect import record_fields, unannotated
from bastion.actions.spec import BodyKind
from bastion.sarif import Level, Rule

if TYPE_CHECKING:
    from bastion.actions.registry import Registry
    from bastion.actions.spec import ActionSpec
    from bastion.config import Limits

__all__ = [
    "RULES",
    "ActionReport",
    "FieldReport",
    "Finding",
    "Waiver",
    "WaiverError",
    "inventory",
    "report",
    "waive",
    "waivers",
]

_SIZED_SCALARS = (str, bytes, bytearray, SecretStr, SecretBytes)
_SENSITIVE = re.compile(r"password|e_?mail|token|role|delete", re.IGNORECASE)


RULES: tuple[Rule, ...] = (
    Rule("B001", "unbounded-field", "a field without max_length takes all the body cap lets in"),
    Rule("B002", "no-rate-limit", "a public action without a rate limit can be called without end"),
    Rule(
        "B003", "upload-without-file-cap", "an upload without max_file_bytes takes the app-wide one"
    ),
    Rule("B004", "refused", "a registration the app refuses stops it at start-up"),
    Rule(
        "B005",
        "token-without-scope",
        "a token can call it only by its name: scopes were not thought about",
        "warning",
    ),
    Rule(
        "B006",
        "no-step-up",
        "it looks sensitive, and a stolen session could do it (recent_login)",
        "warning",
    ),
    Rule("B007", "caps-disagree", "one cap can never be reached under another"),
    Rule(
        "B008",
        "fragment-without-templates",
        "an htmx fragment with no templates configured: the app refuses to start",
    ),
    Rule(
        "B009",
        "upload-without-max-files",
        "an upload without max_files takes as many files as the app allows",
        "warning",
    ),
    Rule(
        "B010",
        "unbounded-number",
        "a number without ge/le takes any value the type can hold",
        "warning",
    ),
    Rule("B011", "unbounded-decimal", "a Decimal without max_digits takes 1e999999"),
    Rule(
        "B012",
        "shared-rate-limit",
        "a public action without a rate of its own shares default_rate",
        "warning",
    ),
    Rule("B013", "unused-waiver", "a waiver that matched no finding", "warning"),
)
"""Every rule of the audit, by id (``bastion audit`` and docs/audit.md list them)."""

_RULES = {rule.id: rule for rule in RULES}
_NUMBERS = frozenset({"int", "float", "Decimal"})
_RANGE = ("gt", "ge", "lt", "le")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding of a rule: about an action (``None``: about the audit's configuration)."""

    rule: str
    action: str | None
    message: str
    level: Level
    waived: str | None = None
    """The waiver's reason: shown, and no failure."""

    @property
    def name(self) -> str:
        return _RULES[self.rule].name

    def text(self) -> str:
        """``B001 unbounded-field: field 'title' (str) has no maximum length``."""
        return f"{self.rule} {self.name}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "action": self.action,
            "level": self.level,
            "message": self.message,
            "waived": self.waived,
        }


@dataclass(frozen=True, slots=True)
class Waiver:
    """``{rule = "B002", action = "login", reason = "…"}``; no action: every action."""

    rule: str
    action: str | None
    reason: str

    def covers(self, finding: Finding) -> bool:
        return finding.rule == self.rule and self.action in (None, finding.action)


class WaiverError(ValueError):
    """A waiver that cannot be taken: no reason, an unknown rule or key, a wrong type."""


def waivers(table: Mapping[str, Any], where: str) -> list[Waiver]:
    """The waivers of a ``[tool.bastion.audit]`` table; ``where`` names it in errors."""
    unknown = sorted(set(table) - {"waive"})
    if unknown:
        raise WaiverError(f"{where}: unknown key {unknown[0]!r} (only 'waive' is read)")
    entries = table.get("waive", [])
    if not isinstance(entries, list):
        raise WaiverError(f"{where}: waive must be a list of tables")
    found: list[Waiver] = []
    for i, entry in enumerate(entries):
        label = f"{where} waive[{i}]"
        if not isinstance(entry, dict):
            raise WaiverError(f"{label}: each waiver is a table {{rule, action, reason}}")
        label = f"{label} ({', '.join(f'{k}={v!r}' for k, v in entry.items() if k != 'reason')})"
        extra = sorted(set(entry) - {"rule", "action", "reason"})
        if extra:
            raise WaiverError(f"{label}: unknown key {extra[0]!r} (rule, action, reason)")
        rule, action, reason = entry.get("rule"), entry.get("action"), entry.get("reason")
        if not isinstance(rule, str) or rule not in _RULES or rule == "B013":
            raise WaiverError(f"{label}: {rule!r} is not a rule that can be waived (B001…B012)")
        if action is not None and (not isinstance(action, str) or not action):
            raise WaiverError(f"{label}: action must be an action's name")
        if not isinstance(reason, str) or not reason.strip():
            raise WaiverError(f'{label}: a waiver needs a reason (reason = "why this is safe")')
        found.append(Waiver(rule, action, reason.strip()))
    return found


def waive(reports: Sequence[ActionReport], given: Sequence[Waiver]) -> list[Finding]:
    """Mark each finding a waiver covers as waived (out of ``violations`` and
    ``warnings``); answer a B013 finding for each waiver that covered none."""
    used: set[int] = set()
    for r in reports:
        for i, finding in enumerate(r.findings):
            match = next((n for n, w in enumerate(given) if w.covers(finding)), None)
            if match is None or finding.waived is not None:
                continue
            used.add(match)
            r.findings[i] = dataclasses.replace(finding, waived=given[match].reason)
            shown = r.violations if finding.level == "error" else r.warnings
            if finding.message in shown:
                shown.remove(finding.message)
    unused = []
    for n, w in enumerate(given):
        if n not in used:
            target = f"action {w.action!r}" if w.action is not None else "any action"
            message = f"the waiver of {w.rule} for {target} matched no finding"
            unused.append(Finding("B013", w.action, message, "warning"))
    return unused


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
    idempotent: bool = False
    """Declared ``idempotent=True``: runs once per idempotency key."""
    tokens: list[str] | None = None
    """The scopes that let an API token call it (``None``: no token may)."""
    step_up: float | None = None
    """How recent a log-in its policy wants, in seconds (``recent_login``)."""
    check: str | None = None
    """The object-level check (``check=``), by name."""
    max_files: int | None = None
    """How many files one call may upload (only for an action taking uploads)."""
    fragment: str | None = None
    """The template htmx requests get back (``fragment=``; ``-> Fragment``: the handler's)."""
    fields: list[FieldReport] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    """The messages of the errors no waiver covers."""
    warnings: list[str] = field(default_factory=list)
    """The messages of the warnings no waiver covers."""
    findings: list[Finding] = field(default_factory=list)
    """Every finding, by rule, waived or not."""

    def add(self, rule: str, message: str) -> None:
        level = _RULES[rule].level
        self.findings.append(Finding(rule, self.name, message, level))
        (self.violations if level == "error" else self.warnings).append(message)

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["findings"] = [f.as_dict() for f in self.findings]
        return shown


class _HasRegistry(Protocol):
    """What the inventory reads of an app: its actions (``Bastion`` has them)."""

    @property
    def registry(self) -> Registry: ...


@dataclass(frozen=True, slots=True)
class _App:
    """What the rules read of the app besides its actions (all unknown for a bare
    registry): its limits, its default rate, whether templates render fragments."""

    limits: Limits | None = None
    default_rate: object = None
    templates: bool | None = None

    @classmethod
    def of(cls, bastion: object) -> _App:
        config = getattr(bastion, "config", None)
        fragments = getattr(getattr(bastion, "runtime", None), "fragments", None)
        return cls(
            limits=getattr(config, "limits", None),
            default_rate=getattr(bastion, "default_rate", None),
            templates=None if fragments is None else getattr(fragments, "env", None) is not None,
        )


def inventory(bastion: _HasRegistry, refused: Sequence[tuple[str, str]] = ()) -> list[ActionReport]:
    """One report per registered action, then one per refused registration."""
    app = _App.of(bastion)
    reports = [report(spec, app) for spec in bastion.registry]
    for name, reason in refused:
        refusal = ActionReport(
            name=name,
            id=None,
            policy="?",
            rate=None,
            content_types=[],
            timeout=None,
            max_body_bytes=None,
            max_file_bytes=None,
            bound_arguments=[],
        )
        # The caps a registration refuses to let disagree: B007, not a bare refusal.
        rule = "B007" if "cannot arrive within" in reason else "B004"
        refusal.add(rule, f"refused at registration: {reason}")
        reports.append(refusal)
    return reports


def report(spec: ActionSpec, app: _App | None = None) -> ActionReport:
    """The report of one registered action (what ``bastion schema`` words it with too);
    with ``app``, the rules that compare the action with the app's settings too."""
    app = app or _App()
    content_types = [BodyKind.JSON.value, BodyKind.FORM.value]
    if spec.accepts_uploads:
        content_types.append(BodyKind.MULTIPART.value)
    result = ActionReport(
        name=spec.name,
        id=spec.id,
        policy=spec.policy.describe(),
        rate=_rate(spec),
        content_types=content_types,
        timeout=spec.timeout,
        max_body_bytes=spec.limits.max_body_bytes,
        max_file_bytes=spec.limits.max_file_bytes if spec.accepts_uploads else None,
        bound_arguments=list(spec.bound.model_fields) if spec.bound is not None else [],
        idempotent=spec.idempotent,
        tokens=sorted(spec.tokens) if spec.tokens is not None else None,
        step_up=spec.policy.step_up,
        check=_callable_name(spec.check) if spec.check is not None else None,
        max_files=spec.limits.max_files if spec.accepts_uploads else None,
        fragment=spec.fragment or ("(the handler's: -> Fragment)" if spec.renders else None),
        fields=list(
            _fields(
                spec.input_model,
                "",
                frozenset({spec.input_model}),
                _own_members(spec.input_model),
            )
        ),
    )
    limits = spec.limits
    if spec.policy.admits_anonymous:  # anyone may call
        if spec.rate is None:
            result.add("B002", "public action without a rate limit")
        elif app.default_rate is not None and spec.rate is app.default_rate:
            result.add("B012", f"public action without a rate limit of its own ({result.rate})")
    for f in result.fields:
        if f.bounds.get("unbounded"):
            result.add("B001", f"field {f.path!r} ({f.type}) has no maximum length")
        if f.type in _NUMBERS and not any(key in f.bounds for key in _RANGE):
            result.add("B010", f"field {f.path!r} ({f.type}) has no range (ge, le, gt or lt)")
        if f.type == "Decimal" and "max_digits" not in f.bounds:
            result.add("B011", f"field {f.path!r} (Decimal) has no max_digits")
    if spec.accepts_uploads and not spec.file_cap_declared:
        result.add("B003", "accepts uploads without a declared max_file_bytes")
    if spec.accepts_uploads and app.limits is not None and limits.max_files == app.limits.max_files:
        result.add("B009", f"accepts uploads without its own max_files ({limits.max_files})")
    if limits.max_pre_token_bytes > limits.max_body_bytes and (
        app.limits is None or limits.max_body_bytes >= app.limits.max_body_bytes
    ):
        # Only where the app's caps disagree: an action lowering its own body cap
        # under the pre-token cap is tightening, not contradicting.
        result.add(
            "B007",
            f"max_pre_token_bytes={limits.max_pre_token_bytes} is above "
            f"max_body_bytes={limits.max_body_bytes}: the pre-token cap never applies",
        )
    if (spec.fragment is not None or spec.renders) and app.templates is False:
        result.add(
            "B008", "renders an htmx fragment, but no templates are configured (bastion.templates)"
        )
    if spec.tokens is not None and spec.tokens == {spec.name}:
        result.add("B005", "accepts API tokens without scopes of its own (tokens=True)")
    if _SENSITIVE.search(spec.name) and spec.policy.step_up is None:
        result.add("B006", "looks sensitive but needs no recent log-in (recent_login)")

    return result


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _rate(spec: ActionSpec) -> str | None:
    if spec.rate is None:
        return None
    amount, multiples, unit = spec.rate.amount, spec.rate.multiples, spec.rate.GRANULARITY.name
    if multiples == 1:
        return f"{amount}/{unit}"
    return f"{amount}/{multiples} {unit}s"


def _fields(
    model: type[BaseModel], prefix: str, seen: frozenset[Any], members: _Members
) -> Iterator[FieldReport]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        place = members.get(name) if members is not None else None
        yield from _field(path, info.annotation, list(info.metadata), place, seen)


def _record(t: type) -> list[tuple[str, str, Any, list[Any]]]:
    """``(name shown, name in the schema, annotation, metadata)`` of each field of a
    dataclass, TypedDict or NamedTuple, with the constraints of a ``= Field(...)`` default."""
    pydantic_fields = getattr(t, "__pydantic_fields__", None)
    if isinstance(pydantic_fields, dict):  # a pydantic dataclass: fields already collected
        return [
            (info.alias or name, name, info.annotation, list(info.metadata))
            for name, info in pydantic_fields.items()
        ]
    hints = record_fields(t) or {}
    if not dataclasses.is_dataclass(t):
        return [(name, name, hint, []) for name, hint in hints.items()]
    found: list[tuple[str, str, Any, list[Any]]] = []
    for f in dataclasses.fields(t):
        default = f.default
        metadata = list(default.metadata) if isinstance(default, FieldInfo) else []
        found.append((f.name, f.name, hints.get(f.name, Any), metadata))
    return found


def _field(
    path: str,
    annotation: Any,
    metadata: list[Any],
    place: _Place | None,
    seen: frozenset[Any] = frozenset(),
) -> Iterator[FieldReport]:
    """The reports of one field: the annotation gives its path and type name, ``place``
    (where pydantic's core schema validates it) its bounds."""
    annotation, extra = _strip(annotation)
    metadata = metadata + extra
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = [arg for arg in args if arg is not type(None)]
        for arm, arm_place in zip(arms, _arms(place, arms), strict=True):
            yield from _field(path, arm, metadata, arm_place, seen)
        return
    if type(annotation).__name__ == "TypeAliasType":  # `type X = ...` (typing or typing_extensions)
        if annotation not in seen:
            yield from _field(path, annotation.__value__, metadata, place, seen | {annotation})
        return
    leaf = _resolve(place) if place is not None else None
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or record_fields(annotation) is not None
    ):
        if annotation in seen:
            # A recursive model: its fields are listed above; its depth is bounded by
            # the decoder (max_json_depth).
            yield FieldReport(path, annotation.__name__, {"recursive": True})
            return
        inner = seen | {annotation}
        members = _members(leaf) if leaf is not None else None
        if members is None:
            members = _own_members(annotation)
        if issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{path}.", inner, members)
        else:
            for name, schema_key, hint, meta in _record(annotation):
                member = members.get(schema_key) if members is not None else None
                yield from _field(f"{path}.{name}", hint, meta, member, inner)
        return
    # The bounds pydantic enforces, read from its schema. Only where the field's place in
    # the schema was not found (an unmatched union arm, a schema shape not known here) are
    # they read from the annotation's metadata instead.
    bounds = _ordered(leaf.bounds) if leaf is not None else _bounds(metadata)
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
    # A type that is not str or a collection by its annotation (a NewType of str, a class
    # with its own __get_pydantic_core_schema__) but that pydantic validates as one, value
    # unchanged, takes as many characters or items as it is sent.
    sized_schema = leaf is not None and not leaf.transformed and _sized(leaf.schema)
    if not isinstance(base, type) or issubclass(base, enum.Enum):
        # Literal values, enums (a str enum's values are fixed), and other special forms.
        if sized_schema and "max_length" not in bounds:
            bounds = {**bounds, "unbounded": True}
        yield FieldReport(path, _type_name(annotation), bounds)
        return
    scalar = issubclass(base, _SIZED_SCALARS)
    collection = not scalar and issubclass(base, collections.abc.Iterable)
    fixed_tuple = base is tuple and bool(args) and args[-1] is not Ellipsis
    sized = scalar or collection or sized_schema
    if sized and not fixed_tuple and "max_length" not in bounds:
        bounds = {**bounds, "unbounded": True}
    yield FieldReport(path, _type_name(annotation), bounds)
    if not collection:
        return
    if issubclass(base, collections.abc.Mapping):
        key, value = args if len(args) == 2 else (Any, Any)
        yield from _field(path + "{key}", key, [], _child(leaf, "keys_schema"), seen)
        yield from _field(path + "{}", value, [], _child(leaf, "values_schema"), seen)
    elif fixed_tuple:
        for i, arg in enumerate(args):
            yield from _field(f"{path}[{i}]", arg, [], _child(leaf, "items_schema", i), seen)
    else:
        item = args[0] if args else Any
        yield from _field(path + "[]", item, [], _child(leaf, "items_schema"), seen)


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
    """The bounds the metadata names: the fallback where the schema is not found."""
    bounds: dict[str, Any] = {}
    for item in metadata:
        for key in _BOUND_KEYS:
            value = getattr(item, key, None)
            if value is not None:
                # A compiled pattern is shown (and sent as JSON) as its source.
                bounds[key] = value.pattern if isinstance(value, re.Pattern) else value
    return bounds


# --- bounds from pydantic's core schema ---------------------------------------------------
#
# A schema is read as the plain dicts pydantic-core takes (``CoreSchema`` is a union of
# TypedDicts): each node by its "type". Input is validated in Python mode (the decoder
# hands ``model_validate`` a dict), so of a "json-or-python" node the Python branch is read.

_Schema = Mapping[str, Any]
_Members = Mapping[str, "_Place"] | None

_BOUND_KEYS = (
    "min_length",
    "max_length",
    "gt",
    "ge",
    "lt",
    "le",
    "max_digits",
    "decimal_places",
    "pattern",
)
"""The bounds reported, in the order they are shown."""

_TIGHTEST: dict[str, Callable[[Any, Any], Any]] = {
    "min_length": max,
    "gt": max,
    "ge": max,
    "max_length": min,
    "lt": min,
    "le": min,
    "max_digits": min,
    "decimal_places": min,
}
"""Two layers of the schema that both check a bound (a constraint pydantic wraps around
a validator, over one inside it): the value must pass both, so the tighter holds."""

_VALIDATORS = frozenset({"function-before", "function-after", "function-wrap"})
"""Validator functions around an inner schema, which still runs."""

_SIZED = frozenset({"str", "bytes", "list", "set", "frozenset", "dict", "generator", "any"})
"""Schemas whose values are as long as the input makes them (and a variadic "tuple")."""


@dataclass(frozen=True, slots=True)
class _Place:
    """A node of pydantic's core schema, with the definitions its references name and the
    config in force (a model's ``str_max_length``, down to the next model)."""

    schema: _Schema
    definitions: Mapping[str, _Schema]
    config: _Schema
    outer: _Schema = field(default_factory=dict)
    """Bounds checked around a union, which hold for each of its arms."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    """What a field is validated as once wrappers are looked through: the node that
    decides the value's shape, and the bounds checked on the way to it."""

    schema: _Schema
    definitions: Mapping[str, _Schema]
    config: _Schema
    bounds: dict[str, Any]
    transformed: bool
    """A validator function of the app's (or of a type's) runs on the way: the value
    may not be what the leaf schema makes of the input."""


def _resolve(place: _Place, *, unions: bool = True) -> _Leaf:
    """Look through references, defaults, nullables, validator functions and the
    json/python and lax/strict choices to the node that validates the value (and,
    with ``unions``, through a union that only one choice can take input for)."""
    node, definitions, config = place.schema, place.definitions, place.config
    bounds: dict[str, Any] = {}
    _tighten(bounds, place.outer)
    transformed = False
    followed: set[str] = set()
    while True:
        kind = node.get("type")
        if kind == "definitions":
            definitions = {
                **definitions,
                **{d["ref"]: d for d in node["definitions"] if "ref" in d},
            }
            node = node["schema"]
        elif kind == "definition-ref":
            ref = node.get("schema_ref")
            if not isinstance(ref, str) or ref not in definitions or ref in followed:
                break
            followed.add(ref)
            node = definitions[ref]  # validated under the config where it is referred to
        elif kind in ("default", "nullable"):
            node = node["schema"]
        elif kind in _VALIDATORS:
            constraint = _constraint(node.get("function"))
            if constraint is None:
                transformed = True
            else:
                _tighten(bounds, constraint)
            node = node["schema"]
        elif kind == "json-or-python":
            node = node["python_schema"]
        elif kind == "lax-or-strict":
            strict = node.get("strict", config.get("strict", False))
            node = node["strict_schema" if strict else "lax_schema"]
        elif kind == "chain":
            # Every step runs on the previous one's value: each one's bounds hold; the
            # last step that is more than an isinstance check gives the shape.
            steps = [
                _resolve(_Place(step, definitions, config), unions=unions) for step in node["steps"]
            ]
            for step in steps:
                _tighten(bounds, step.bounds)
                transformed = transformed or step.transformed
            shaped = [s for s in steps if s.schema.get("type") != "is-instance"] or steps
            last = shaped[-1]
            return _Leaf(last.schema, last.definitions, last.config, bounds, transformed)
        elif kind == "union" and unions:
            # SecretStr's Python schema: an instance as it is, or a str made one. Input
            # from a request is never an instance, so the other choice is what checks it.
            choices = [c for c in _choices(node) if c.get("type") != "is-instance"]
            if len(choices) != 1:
                break
            node = choices[0]
        else:
            break
    _tighten(bounds, _own_bounds(node, config))
    return _Leaf(node, definitions, config, bounds, transformed)


def _constraint(function: Any) -> dict[str, Any] | None:
    """The bounds a validator function checks if it is one pydantic adds for a
    constraint the inner schema cannot hold (``max_length`` on a ``SecretStr``):
    ``partial(max_length_validator, max_length=…)``. ``None`` for any other function,
    which may change the value."""
    check = function.get("function") if isinstance(function, Mapping) else None
    if not isinstance(check, functools.partial):
        return None
    if not getattr(check.func, "__module__", "").startswith("pydantic."):
        return None
    return {k: v for k, v in check.keywords.items() if k in _BOUND_KEYS and v is not None}


def _own_bounds(node: _Schema, config: _Schema) -> dict[str, Any]:
    """The bounds a node checks itself; a "str" node without its own lengths takes the
    config's ``str_max_length`` and ``str_min_length`` (as pydantic-core does)."""
    found = {key: node[key] for key in _BOUND_KEYS if node.get(key) is not None}
    if node.get("type") == "str":
        for key in ("max_length", "min_length"):
            if key not in found and config.get(f"str_{key}") is not None:
                found[key] = config[f"str_{key}"]
    pattern = found.get("pattern")
    if isinstance(pattern, re.Pattern):  # shown (and sent as JSON) as its source
        found["pattern"] = pattern.pattern
    return found


def _tighten(bounds: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if key in bounds and key in _TIGHTEST:
            with contextlib.suppress(TypeError):  # bounds that do not compare: the inner one
                value = _TIGHTEST[key](bounds[key], value)
        bounds[key] = value


def _ordered(bounds: Mapping[str, Any]) -> dict[str, Any]:
    return {key: bounds[key] for key in _BOUND_KEYS if key in bounds}


def _choices(node: _Schema) -> list[_Schema]:
    """A union's choices (a choice may be ``(schema, label)``); a tagged union's, once each."""
    raw = node.get("choices", ())
    if isinstance(raw, Mapping):
        unique: dict[int, _Schema] = {id(c): c for c in raw.values()}
        raw = list(unique.values())
    return [c[0] if isinstance(c, tuple) else c for c in raw]


def _arms(place: _Place | None, arms: list[Any]) -> list[_Place | None]:
    """The place of each arm of a union annotation (``None`` taken out) in the schema."""
    if place is None:
        return [None] * len(arms)
    if len(arms) == 1:  # `X | None`: a nullable, looked through as X is resolved
        return [place]
    leaf = _resolve(place, unions=False)
    node = leaf.schema
    if node.get("type") not in ("union", "tagged-union"):
        return [None] * len(arms)
    choices = [_Place(c, leaf.definitions, leaf.config, leaf.bounds) for c in _choices(node)]
    if node.get("type") == "union" and len(choices) == len(arms):
        return list(choices)
    # Otherwise (a tagged union is keyed by tag, not by arm) a model arm is found by its class.
    found: list[_Place | None] = []
    for arm in arms:
        match = [c for c in choices if _resolve(c).schema.get("cls") is unannotated(arm)]
        found.append(match[0] if len(match) == 1 else None)
    return found


def _child(leaf: _Leaf | None, key: str, index: int | None = None) -> _Place | None:
    """The place of a collection's keys, values or items (item ``index`` of a tuple)."""
    if leaf is None:
        return None
    node = leaf.schema.get(key)
    if isinstance(node, list):  # a tuple's items: one per position, or one repeated
        position = index if index is not None else leaf.schema.get("variadic_item_index")
        node = node[position] if isinstance(position, int) and position < len(node) else None
    if not isinstance(node, Mapping):
        return None
    return _Place(node, leaf.definitions, leaf.config)


def _sized(node: _Schema) -> bool:
    kind = node.get("type")
    return kind in _SIZED or (kind == "tuple" and node.get("variadic_item_index") is not None)


def _members(leaf: _Leaf) -> _Members:
    """The place of each field of a model, dataclass, TypedDict or NamedTuple node, by
    field name; ``None`` if the node is none of these."""
    node, definitions, config = leaf.schema, leaf.definitions, leaf.config
    kind = node.get("type")
    if kind in ("model", "dataclass"):  # fields inside, maybe under a model validator
        inner = _resolve(_Place(node["schema"], definitions, node.get("config", config)))
        node, definitions, config = inner.schema, inner.definitions, inner.config
    elif kind == "typed-dict":
        config = node.get("config", config)
    elif kind == "call":  # a NamedTuple, in pydantic versions without "named-tuple"
        arguments = node.get("arguments_schema")
        node = arguments if isinstance(arguments, Mapping) else {}
    fields: Any
    kind = node.get("type")
    if kind in ("model-fields", "typed-dict"):
        fields = node.get("fields", {}).items()
    elif kind in ("dataclass-args", "named-tuple"):
        fields = [(f["name"], f) for f in node.get("fields", ())]
    elif kind == "arguments":
        fields = [(f["name"], f) for f in node.get("arguments_schema", ())]
    else:
        return None
    return {name: _Place(f["schema"], definitions, config) for name, f in fields}


def _own_members(t: type) -> _Members:
    """A model's (or pydantic dataclass's) fields in its own schema, as it is validated."""
    schema = getattr(t, "__pydantic_core_schema__", None)
    if not isinstance(schema, dict):  # absent, or a mock of a model not yet complete
        return None
    return _members(_resolve(_Place(schema, {}, {})))


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
    if isinstance(annotation, type | typing.NewType):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
