"""Registering actions: what a handler takes and returns, checked once, at import time.

Everything the pipeline needs per call (the input model, the output serialiser, the
form shape, the limits) is built here, when ``@bastion.action`` runs, so a request
pays for none of it and a mistake stops the app before it serves anything.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import hashlib
import hmac
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, TypeAdapter
from starlette.datastructures import UploadFile

from bastion.actions.depends import declared, dependency, is_context
from bastion.actions.introspect import (
    form_shape,
    is_model,
    leaves,
    mentions,
    record_fields,
    unannotated,
)
from bastion.actions.policy import Policy, predicate
from bastion.actions.spec import ActionSpec, Argument, Bound, Check, Fragment, Redirect
from bastion.config import Limits
from bastion.errors import ConfigurationError, NotFound

if TYPE_CHECKING:
    from limits import RateLimitItem

__all__ = ["ActionSpec", "Check", "PolicyLike", "Registry", "build_spec"]


class NoInput(BaseModel):
    """The input of an action that declares none: an empty object, nothing else."""

    # Built when the first action without input is registered, not when bastion is imported.
    model_config = ConfigDict(extra="forbid", defer_build=True)


def action_ids(name: str, keys: tuple[bytes, ...]) -> tuple[str, ...]:
    """Opaque IDs: an HMAC of the action's registered name, so they are stable across
    processes sharing the secret, differ under another secret, and reveal nothing.

    The name, not the function's import path: names are unique in a registry, while
    two handlers made by one factory share their ``__qualname__``.
    """
    return tuple(
        base64.urlsafe_b64encode(
            hmac.new(key, name.encode("utf-8"), hashlib.sha256).digest()[:18]
        ).decode()
        for key in keys
    )


PolicyLike = Policy | Callable[[Any], bool | Awaitable[bool]]


def build_spec(
    fn: Callable[..., Any],
    *,
    name: str,
    policy: PolicyLike | None,
    limits: Limits,
    timeout: float,
    keys: tuple[bytes, ...],
    rate: RateLimitItem | None = None,
    check: Check | None = None,
    fragment: str | None = None,
    file_cap_declared: bool = False,
    body_cap_declared: bool = False,
    idempotent: bool = False,
    tokens: bool | str | Iterable[str] = False,
) -> ActionSpec:
    where = f"action {name!r}"
    if policy is None:
        raise ConfigurationError(
            f"{where} declares no policy: pass policy=public, or a policy that says who may call it"
        )
    if not callable(policy):
        raise ConfigurationError(f"{where}: policy must be callable, not {policy!r}")
    if not isinstance(policy, Policy):
        policy = predicate(policy)  # a plain callable of the context
    if check is not None and not callable(check):
        raise ConfigurationError(f"{where}: check must be callable, not {check!r}")
    if not isinstance(idempotent, bool):
        raise ConfigurationError(f"{where}: idempotent must be True or False, not {idempotent!r}")
    scopes = _token_scopes(where, name, tokens)
    if not callable(fn) or not (inspect.isfunction(fn) or inspect.iscoroutinefunction(fn)):
        raise ConfigurationError(f"{where}: an action must be a plain function, not {fn!r}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: its annotations cannot be resolved: {exc}") from exc

    context_param: str | None = None
    data_param: str | None = None
    bound_param: str | None = None
    bound_model: type[BaseModel] | None = None
    input_model: type[BaseModel] = NoInput
    arguments: list[Argument] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"{where}: *args and **kwargs are not allowed")
        if param.kind is param.POSITIONAL_ONLY:
            # The handler is called with keyword arguments.
            raise ConfigurationError(
                f"{where}: parameter {param.name!r} is positional-only; remove the '/'"
            )
        annotation = hints.get(param.name)
        sealed = _bound_model(annotation)
        marker = declared(annotation)
        if marker is not None:
            arguments.append(Argument(param.name, "dependency", dependency(marker, where)))
        elif sealed is not None and bound_param is None:
            bound_param, bound_model = param.name, sealed
            _check_input(sealed, where)
            arguments.append(Argument(param.name, "bound"))
        elif is_context(annotation) and context_param is None:
            context_param = param.name
            arguments.append(Argument(param.name, "context"))
        elif is_model(annotation) and data_param is None:
            data_param = param.name
            input_model = annotation
            arguments.append(Argument(param.name, "data"))
        else:
            raise ConfigurationError(
                f"{where}: parameter {param.name!r} must be annotated with Context, a pydantic "
                "model, Annotated[Model, Bound] (one of each at most) or "
                "Annotated[T, Depends(...)]"
            )
    _complete(input_model, where)
    _check_input(input_model, where)
    check_arguments = (
        _check_plan(check, where, input_model, data_param is not None, bound_model)
        if check is not None
        else None
    )

    if "return" not in hints:
        raise ConfigurationError(
            f"{where} has no return annotation: declare the model it returns, or -> None"
        )
    returns = hints["return"]
    output: TypeAdapter[Any] | None = None
    redirects, renders = returns is Redirect, returns is Fragment
    for outcome, whole in ((Redirect, redirects), (Fragment, renders)):
        if not whole and mentions(returns, outcome):
            # Inside a union or a model it would be sent as data, not acted on.
            name = outcome.__name__
            raise ConfigurationError(
                f"{where}: {name} is a whole return type (-> {name}), not part of one"
            )
    if renders and fragment is not None:
        raise ConfigurationError(
            f"{where}: -> Fragment chooses its template; fragment= would never be used"
        )
    if returns not in (None, type(None)) and not (redirects or renders):
        _complete(returns, where)
        _check_output(returns, where)
        output = _adapter(returns, where)

    accepts_uploads = mentions(input_model, UploadFile)
    if accepts_uploads:
        limits = _agreeing_caps(limits, where, file_cap_declared, body_cap_declared)

    return ActionSpec(
        name=name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        policy=policy,
        input_model=input_model,
        data_param=data_param,
        context_param=context_param,
        output=output,
        limits=limits,
        timeout=timeout,
        accepts_uploads=accepts_uploads,
        form=form_shape(input_model),
        ids=action_ids(name, keys),
        rate=rate,
        check=check,
        file_cap_declared=file_cap_declared,
        bound=bound_model,
        bound_param=bound_param,
        fragment=fragment,
        arguments=tuple(arguments),
        redirects=redirects,
        renders=renders,
        check_arguments=check_arguments,
        idempotent=idempotent,
        tokens=scopes,
        takes_dependencies=any(
            a.dependency is not None for a in (*arguments, *(check_arguments or ()))
        ),
    )


def _token_scopes(
    where: str, name: str, tokens: bool | str | Iterable[str]
) -> frozenset[str] | None:
    """``tokens=``: ``False``, no API token; ``True``, a token holding the action's name
    as a scope; scopes (a string or several), a token holding the name or one of them."""
    if tokens is False:
        return None
    if tokens is True:
        return frozenset((name,))
    if isinstance(tokens, str):
        listed: tuple[object, ...] = (tokens,)
    else:
        listed = tuple(tokens) if isinstance(tokens, Iterable) else ()
    if not listed or not all(isinstance(scope, str) and scope for scope in listed):
        raise ConfigurationError(
            f"{where}: tokens is True, False or the scopes a token needs, not {tokens!r}"
        )
    return frozenset((name, *(str(scope) for scope in listed)))


class Registry:
    """The app's actions, found by ID (requests), by function or by name (templates, tests)."""

    def __init__(self) -> None:
        self._by_id: dict[str, ActionSpec] = {}
        self._by_fn: dict[Callable[..., Any], ActionSpec] = {}
        self._by_name: dict[str, ActionSpec] = {}

    def add(self, spec: ActionSpec) -> None:
        if spec.fn in self._by_fn:
            first = self._by_fn[spec.fn].name
            raise ConfigurationError(
                f"action {spec.name!r} is registered twice: "
                f"{_path(spec.fn)} is already the action {first!r}"
            )
        if spec.name in self._by_name:
            other = self._by_name[spec.name].fn
            raise ConfigurationError(
                f"two actions are named {spec.name!r} ({_path(other)} and {_path(spec.fn)}): "
                "pass name= to one of them"
            )
        if any(i in self._by_id for i in spec.ids):
            # Only an HMAC collision gets here; refuse rather than shadow an action.
            raise ConfigurationError(f"action {spec.name!r}: its ID is already taken")
        self._by_name[spec.name] = spec
        self._by_fn[spec.fn] = spec
        for action_id in spec.ids:
            self._by_id[action_id] = spec

    def by_id(self, action_id: str) -> ActionSpec | None:
        return self._by_id.get(action_id)

    def resolve(self, action_id: str) -> ActionSpec:
        """Stage 1: the action for this ID. Unknown IDs get a bare 404, no hint."""
        spec = self._by_id.get(action_id)
        if spec is None:
            raise NotFound()
        return spec

    def get(self, action: Callable[..., Any] | str) -> ActionSpec:
        """The spec of a registered function or name; ``LookupError`` otherwise."""
        found = self._by_name.get(action) if isinstance(action, str) else self._by_fn.get(action)
        if found is None:
            raise LookupError(f"{action!r} is not a registered action")
        return found

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def _path(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


# --- checks -----------------------------------------------------------------------------


def _bound_model(annotation: Any) -> type[BaseModel] | None:
    """``Model`` for ``Annotated[Model, Bound]``, else ``None``."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    inner, *extras = typing.get_args(annotation)
    if not any(extra is Bound for extra in extras):
        return None
    if not is_model(inner):
        raise ConfigurationError(f"Annotated[..., Bound] takes a pydantic model, not {inner!r}")
    return inner


def _agreeing_caps(
    limits: Limits, where: str, file_cap_declared: bool, body_cap_declared: bool
) -> Limits:
    """An upload action's body cap, made to carry the file cap it declares: the body cap
    counts every byte, so a file cap above it would refuse as too large a file it
    promised to take (413 for 1.5 MiB under ``max_file_bytes=2 MiB``)."""
    if file_cap_declared and not body_cap_declared:
        # One file at its cap, and the app's usual room for the form's other fields.
        carried = limits.max_file_bytes + limits.max_body_bytes
        return dataclasses.replace(limits, max_body_bytes=max(limits.max_body_bytes, carried))
    if limits.max_file_bytes <= limits.max_body_bytes:
        return limits
    if file_cap_declared:
        raise ConfigurationError(
            f"{where}: max_file_bytes={limits.max_file_bytes} cannot arrive within "
            f"max_body_bytes={limits.max_body_bytes}: raise max_body_bytes, or leave it out "
            "to have it follow the file cap"
        )
    # Neither declared: the app-wide file cap is over the body cap (10 MiB and 1 MiB by
    # default), and the body cap is the one that holds. Say so in the spec.
    return dataclasses.replace(limits, max_file_bytes=limits.max_body_bytes)


def _check_plan(
    check: Check,
    where: str,
    input_model: type[BaseModel],
    has_input: bool,
    bound: type[BaseModel] | None,
) -> tuple[Argument, ...] | None:
    """What ``check=`` takes, from its annotations: the context, the input model, the
    bound model, dependencies. ``None`` for a check of two unannotated parameters, called
    ``check(ctx, data)`` (lambdas) — refused where ``data`` would be an empty input."""
    try:
        signature = inspect.signature(check)
        target = check if inspect.isroutine(check) else type(check).__call__
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: check='s signature cannot be read: {exc}") from exc
    params = list(signature.parameters.values())
    if all(p.name not in hints for p in params):
        if len(params) != 2 or any(
            p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        ):
            raise ConfigurationError(
                f"{where}: check= takes (ctx, data), or parameters annotated as a "
                "handler's are (ctx: Context, data: Model, ref: BoundModel, Depends)"
            )
        if not has_input and bound is not None:
            # The call it was written for would fail at run time on the empty input.
            raise ConfigurationError(
                f"{where}: check(ctx, data) gets no input here (the action takes only "
                f"bound values): annotate its parameters, e.g. (ctx: Context, "
                f"ref: {bound.__name__})"
            )
        return None
    arguments: list[Argument] = []
    for param in params:
        annotation = hints.get(param.name)
        marker = declared(annotation)
        inner = unannotated(annotation)
        if marker is not None:
            arguments.append(Argument(param.name, "dependency", dependency(marker, where)))
        elif is_context(annotation):
            arguments.append(Argument(param.name, "context"))
        elif bound is not None and (inner is bound or _bound_model(annotation) is bound):
            arguments.append(Argument(param.name, "bound"))
        elif has_input and inner is input_model:
            arguments.append(Argument(param.name, "data"))
        else:
            offered = ["Context"]
            if has_input:
                offered.append(input_model.__name__)
            if bound is not None:
                offered.append(bound.__name__)
            raise ConfigurationError(
                f"{where}: check='s parameter {param.name!r} must be annotated with one "
                f"of {', '.join(offered)} or Annotated[T, Depends(...)]"
            )
        if param.kind is param.VAR_POSITIONAL or param.kind is param.VAR_KEYWORD:
            raise ConfigurationError(f"{where}: check= takes no *args or **kwargs")
    return tuple(arguments)


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    return (t for t in leaves(tp) if is_model(t))


def _extra(t: Any) -> object:
    """The ``extra`` setting pydantic applies to a model, dataclass or TypedDict."""
    if is_model(t):
        return t.model_config.get("extra")
    config = getattr(t, "__pydantic_config__", None)
    return config.get("extra") if isinstance(config, dict) else None


def _complete(tp: Any, where: str) -> None:
    """Resolve the forward references of every model in ``tp`` now, so that a model
    that cannot be built fails here and not on every call."""
    for model in list(_models_in(tp)):
        if model.__pydantic_complete__:
            continue
        try:
            model.model_rebuild(raise_errors=True)
        except Exception as exc:
            raise ConfigurationError(
                f"{where}: the model {model.__name__} is not fully defined: {exc}"
            ) from exc


def _adapter(returns: Any, where: str) -> TypeAdapter[Any]:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(returns)
        if not adapter.pydantic_complete:
            adapter.rebuild(raise_errors=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: its return type is not usable: {exc}") from exc
    return adapter


def _check_input(model: type[BaseModel], where: str) -> None:
    for sub in leaves(model):
        # A NamedTuple is positional: pydantic refuses extra items on its own.
        record = record_fields(sub) is not None and not issubclass(sub, tuple)
        if (is_model(sub) or record) and _extra(sub) != "forbid":
            fix = (
                'add model_config = ConfigDict(extra="forbid")'
                if is_model(sub)
                else 'decorate it with @pydantic.with_config(ConfigDict(extra="forbid"))'
            )
            raise ConfigurationError(
                f"{where}: input type {sub.__name__} must forbid unknown fields: {fix}"
            )


def _is_bare(t: Any) -> bool:
    """A container that does not say what it holds: it would send whatever it is given."""
    origin = typing.get_origin(t) or t
    if typing.get_args(t) or not isinstance(origin, type):
        return False
    if origin is object:
        return True
    if issubclass(origin, str | bytes | bytearray | BaseModel):
        return False
    if record_fields(origin) is not None:
        return False
    return issubclass(origin, collections.abc.Iterable)


def _check_output(returns: Any, where: str) -> None:
    for t in leaves(returns):
        if t is Any:
            raise ConfigurationError(
                f"{where} returns untyped data (Any): declare a model, so only its fields leave"
            )
        if _is_bare(t):
            # A bare dict or list would send whatever the handler put in it.
            name = getattr(t, "__name__", None) or repr(t)
            raise ConfigurationError(
                f"{where} returns a bare {name}: declare a model or a typed container"
            )
        if isinstance(t, type) and issubclass(t, SecretStr | SecretBytes):
            raise ConfigurationError(
                f"{where}: its return type holds a {t.__name__} field; secrets are never "
                "sent to clients, remove the field from the output model"
            )
        if _extra(t) == "allow":
            # Extra attributes of a returned instance would be serialised with it.
            raise ConfigurationError(
                f"{where}: its output type {t.__name__} allows extra fields, which would "
                'be sent too; use extra="ignore" or "forbid"'
            )
