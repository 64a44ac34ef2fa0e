"""``@bastion.action``: what a handler may take and return, checked at import time.

These tests keep their annotations evaluated (no ``from __future__ import annotations``),
so models defined inside a test are real objects when the decorator reads them.
"""

import dataclasses
import enum
import inspect
import os
import re
import subprocess
import sys
import threading
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest
from conftest import OTHER_SECRET, SECRET, mounted
from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr, with_config
from typing_extensions import TypeAliasType, TypedDict  # TypedDict: pydantic needs it on 3.11

from bastion import Bastion, ConfigurationError, Context, public
from bastion.testing import ActionClient

OK_NULL = {"ok": True, "data": None}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=20)


class Item(BaseModel):
    id: int
    title: str


# --- what is refused ---------------------------------------------------------------------


def test_action_without_policy_is_refused(bastion: Bastion) -> None:
    """No policy, no action: deny by default, decided at import time."""
    with pytest.raises(ConfigurationError, match=r"^action 'no_policy' declares no policy"):

        @bastion.action()
        def no_policy() -> None: ...

    assert len(bastion.registry) == 0


def test_policy_that_is_not_callable_is_refused(bastion: Bastion) -> None:
    """A policy is a callable; anything else is refused, naming the action."""
    with pytest.raises(ConfigurationError, match=r"^action 'odd': policy must be callable"):

        @bastion.action(policy="public")  # type: ignore[arg-type]
        def odd() -> None: ...


def test_input_model_without_extra_forbid_is_refused(bastion: Bastion) -> None:
    """An input model that ignores unknown fields is refused, naming action and model."""

    class Loose(BaseModel):
        name: str

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def take(data: Loose) -> None: ...

    assert str(caught.value) == (
        "action 'take': input type Loose must forbid unknown fields: "
        'add model_config = ConfigDict(extra="forbid")'
    )


def test_input_model_with_extra_allow_is_refused(bastion: Bastion) -> None:
    """extra="allow" is as bad as the default: only "forbid" passes."""

    class Allowing(BaseModel):
        model_config = ConfigDict(extra="allow")

    with pytest.raises(ConfigurationError, match=r"^action 'take': input type Allowing must"):

        @bastion.action(policy=public)
        def take(data: Allowing) -> None: ...


def test_nested_input_model_without_extra_forbid_is_refused(bastion: Bastion) -> None:
    """A model nested inside the input (here in a list) must forbid unknown fields too."""

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Inner]

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def nested(data: Outer) -> None: ...

    assert str(caught.value).startswith(
        "action 'nested': input type Inner must forbid unknown fields"
    )


def test_nested_typeddict_and_dataclass_inputs_must_forbid_extra(bastion: Bastion) -> None:
    """TypedDicts and dataclasses in the input ignore unknown keys unless configured."""

    class Point(TypedDict):
        x: int

    @dataclasses.dataclass
    class Size:
        w: int

    class WithPoint(BaseModel):
        model_config = ConfigDict(extra="forbid")
        point: Point

    class WithSize(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: Size

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def point(data: WithPoint) -> None: ...

    assert str(caught.value) == (
        "action 'point': input type Point must forbid unknown fields: "
        'decorate it with @pydantic.with_config(ConfigDict(extra="forbid"))'
    )
    with pytest.raises(ConfigurationError, match=r"^action 'size': input type Size must"):

        @bastion.action(policy=public)
        def size(data: WithSize) -> None: ...


def test_typeddict_input_configured_to_forbid_refuses_unknown_keys(
    bastion: Bastion, client: ActionClient
) -> None:
    """A TypedDict with extra="forbid" registers, and an unknown nested key is a 422."""

    @with_config(ConfigDict(extra="forbid"))
    class Point(TypedDict):
        x: int

    class WithPoint(BaseModel):
        model_config = ConfigDict(extra="forbid")
        point: Point

    @bastion.action(policy=public)
    def point(data: WithPoint) -> int:
        return data.point["x"]

    assert client.call(point, {"point": {"x": 3}}).json() == {"ok": True, "data": 3}
    reply = client.call(point, {"point": {"x": 3, "y": 4}})
    assert reply.status_code == 422
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "invalid",
            "message": "Some fields are invalid.",
            "fields": {"point.y": "Extra inputs are not permitted"},
        },
    }


def test_missing_return_annotation_is_refused(bastion: Bastion) -> None:
    """Without a return annotation nothing says what may leave: refused."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def unannotated():  # type: ignore[no-untyped-def]
            return 1

    assert str(caught.value) == (
        "action 'unannotated' has no return annotation: declare the model it returns, or -> None"
    )


@pytest.mark.parametrize(
    "returns",
    [Any, dict[str, Any], list[Any], typing.Optional[Any], dict[str, list[Any]]],  # noqa: UP045
    ids=["Any", "dict[str, Any]", "list[Any]", "Optional[Any]", "dict[str, list[Any]]"],
)
def test_return_type_with_any_anywhere_is_refused(bastion: Bastion, returns: Any) -> None:
    """Any in the return type, however deep, would send whatever the handler returns."""

    def untyped() -> None: ...

    untyped.__annotations__["return"] = returns
    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(untyped)
    assert str(caught.value) == (
        "action 'untyped' returns untyped data (Any): declare a model, so only its fields leave"
    )


def test_any_inside_a_returned_model_is_refused(bastion: Bastion) -> None:
    """A model field typed Any is untyped data too."""

    class Loose(BaseModel):
        extra: Any

    with pytest.raises(ConfigurationError, match=r"^action 'loose' returns untyped data \(Any\)"):

        @bastion.action(policy=public)
        def loose() -> Loose: ...


@pytest.mark.parametrize(
    ("returns", "shown"),
    [
        (dict, "dict"),
        (typing.Dict, "Dict"),  # noqa: UP006
        (list, "list"),
        (typing.List, "List"),  # noqa: UP006
        (tuple, "tuple"),
        (set, "set"),
        (object, "object"),
        (Mapping, "Mapping"),
        (typing.Sequence, "Sequence"),
    ],
)
def test_bare_container_return_is_refused(bastion: Bastion, returns: Any, shown: str) -> None:
    """A container that does not say what it holds is refused, naming action and type."""

    def bare() -> None: ...

    bare.__annotations__["return"] = returns
    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(bare)
    assert str(caught.value) == (
        f"action 'bare' returns a bare {shown}: declare a model or a typed container"
    )


def test_bare_container_behind_a_type_alias_is_refused(bastion: Bastion) -> None:
    """A TypeAliasType is looked through: an alias of a bare dict is still bare."""
    Payload = TypeAliasType("Payload", dict)

    def aliased() -> None: ...

    aliased.__annotations__["return"] = Payload
    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(aliased)
    assert str(caught.value) == (
        "action 'aliased' returns a bare dict: declare a model or a typed container"
    )


def test_return_model_with_secretstr_is_refused(bastion: Bastion) -> None:
    """A SecretStr field in the output model would be sent: refused."""

    class Account(BaseModel):
        name: str
        password: SecretStr

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def account() -> Account: ...

    assert str(caught.value) == (
        "action 'account': its return type holds a SecretStr field; secrets are never "
        "sent to clients, remove the field from the output model"
    )


def test_return_model_with_nested_secretbytes_is_refused(bastion: Bastion) -> None:
    """SecretBytes nested two models deep, inside an Optional list, is still found."""

    class Key(BaseModel):
        raw: SecretBytes

    class Holder(BaseModel):
        keys: list[Key] | None = None

    with pytest.raises(ConfigurationError, match=r"^action 'keys': .* holds a SecretBytes field"):

        @bastion.action(policy=public)
        def keys() -> list[Holder]: ...


def test_secret_inside_a_returned_dataclass_is_refused(bastion: Bastion) -> None:
    """Dataclasses in the return type are walked field by field, as models are."""

    @dataclasses.dataclass
    class Row:
        token: SecretStr

    with pytest.raises(ConfigurationError, match=r"^action 'row': .* holds a SecretStr field"):

        @bastion.action(policy=public)
        def row() -> Row: ...


def test_return_model_allowing_extra_fields_is_refused(bastion: Bastion) -> None:
    """An output model with extra="allow" would serialise undeclared attributes."""

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def open_() -> Open: ...

    assert str(caught.value) == (
        "action 'open_': its output type Open allows extra fields, which would be sent too; "
        'use extra="ignore" or "forbid"'
    )


def test_return_type_pydantic_cannot_serialise_is_refused(bastion: Bastion) -> None:
    """A return type with no pydantic schema is a ConfigurationError, not pydantic's."""

    class Plain:
        pass

    with pytest.raises(ConfigurationError, match=r"^action 'plain': its return type is not usable"):

        @bastion.action(policy=public)
        def plain() -> Plain: ...


def test_input_model_with_unresolvable_forward_reference_is_refused(bastion: Bastion) -> None:
    """A model that cannot be built fails at registration, not as a 500 on every call."""

    class Dangling(BaseModel):
        model_config = ConfigDict(extra="forbid")
        child: "Missing"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def dangling(data: Dangling) -> None: ...

    assert str(caught.value).startswith(
        "action 'dangling': the model Dangling is not fully defined: "
    )


@pytest.mark.parametrize("annotation", [str, int, "untyped", typing.Optional[Strict]])  # noqa: UP045
def test_parameter_not_context_or_model_is_refused(bastion: Bastion, annotation: Any) -> None:
    """Only Context and a pydantic model may be parameters (unannotated ones neither)."""

    def handler(value) -> None:  # type: ignore[no-untyped-def]
        ...

    if annotation != "untyped":
        handler.__annotations__["value"] = annotation
    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(handler)
    assert str(caught.value) == (
        "action 'handler': parameter 'value' must be annotated with Context, a pydantic "
        "model, Annotated[Model, Bound] (one of each at most) or Annotated[T, Depends(...)]"
    )


def test_two_input_models_are_refused(bastion: Bastion) -> None:
    """One input model at most: a second model parameter is refused."""
    with pytest.raises(ConfigurationError, match=r"^action 'two': parameter 'b' must be"):

        @bastion.action(policy=public)
        def two(a: Strict, b: Strict) -> None: ...


def test_two_context_parameters_are_refused(bastion: Bastion) -> None:
    """One Context at most."""
    with pytest.raises(ConfigurationError, match=r"^action 'two_ctx': parameter 'other' must be"):

        @bastion.action(policy=public)
        def two_ctx(ctx: Context, other: Context) -> None: ...


def test_var_positional_is_refused(bastion: Bastion) -> None:
    """*args has no place in an action's signature."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def star(*args: Strict) -> None: ...

    assert str(caught.value) == "action 'star': *args and **kwargs are not allowed"


def test_var_keyword_is_refused(bastion: Bastion) -> None:
    """**kwargs has no place in an action's signature."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def starstar(ctx: Context, **kwargs: Strict) -> None: ...

    assert str(caught.value) == "action 'starstar': *args and **kwargs are not allowed"


def test_positional_only_parameter_is_refused(bastion: Bastion) -> None:
    """Handlers are called by keyword, so a positional-only parameter would fail every call."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def positional(ctx: Context, /) -> None: ...

    assert str(caught.value) == (
        "action 'positional': parameter 'ctx' is positional-only; remove the '/'"
    )


def test_non_function_is_refused(bastion: Bastion) -> None:
    """Only plain functions register: a callable object is refused, naming it."""

    class Callable_:
        __name__ = "callable_object"

        def __call__(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"^action 'callable_object': an action must be"):
        bastion.action(policy=public)(Callable_())


def test_unresolvable_annotation_is_refused(bastion: Bastion) -> None:
    """A string annotation that names nothing is a ConfigurationError naming the action."""

    def ghost(data: "Nowhere") -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    with pytest.raises(ConfigurationError, match=r"^action 'ghost': its annotations cannot be"):
        bastion.action(policy=public)(ghost)


def test_two_actions_with_the_same_name_are_refused_naming_both(bastion: Bastion) -> None:
    """Two functions under one name: the message names both functions."""

    @bastion.action(policy=public)
    def greet() -> None: ...

    first = greet

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public)
        def greet() -> None: ...

    module = first.__module__
    qualname = first.__qualname__
    assert str(caught.value) == (
        f"two actions are named 'greet' ({module}.{qualname} and {module}.{qualname}): "
        "pass name= to one of them"
    )


def test_explicit_name_clash_names_both_functions(bastion: Bastion) -> None:
    """name= clashing with another action's name is refused, naming both functions."""

    @bastion.action(policy=public)
    def greet() -> None: ...

    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public, name="greet")
        def salute() -> None: ...

    where = f"{__name__}.test_explicit_name_clash_names_both_functions.<locals>"
    assert str(caught.value) == (
        f"two actions are named 'greet' ({where}.greet and {where}.salute): "
        "pass name= to one of them"
    )


def test_same_function_registered_twice_is_refused(bastion: Bastion) -> None:
    """The same function registered again (even under another name) is refused."""

    @bastion.action(policy=public)
    def once() -> None: ...

    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public)(once)
    assert str(caught.value) == (
        f"action 'once' is registered twice: {once.__module__}.{once.__qualname__} "
        "is already the action 'once'"
    )
    with pytest.raises(ConfigurationError, match=r"^action 'again' is registered twice"):
        bastion.action(policy=public, name="again")(once)
    assert len(bastion.registry) == 1


def test_empty_or_non_string_name_is_refused(bastion: Bastion) -> None:
    """name= must be a non-empty string."""
    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public, name="")
    assert str(caught.value) == "an action's name must be a non-empty string, not ''"
    with pytest.raises(ConfigurationError, match=r"not 7$"):
        bastion.action(policy=public, name=7)  # type: ignore[arg-type]


def test_handlers_made_by_one_factory_register_under_their_names(
    bastion: Bastion, client: ActionClient
) -> None:
    """Two handlers sharing a __qualname__ (a factory) get distinct IDs and both work."""

    def make(word: str) -> None:
        @bastion.action(policy=public, name=f"say_{word}")
        def say() -> str:
            return word

    make("hi")
    make("bye")
    assert client.url("say_hi") != client.url("say_bye")
    assert client.call("say_hi").json() == {"ok": True, "data": "hi"}
    assert client.call("say_bye").json() == {"ok": True, "data": "bye"}


def test_invalid_limit_override_names_the_action(bastion: Bastion) -> None:
    """A per-action limit override that is not positive is refused, naming the action."""
    with pytest.raises(ConfigurationError) as caught:

        @bastion.action(policy=public, max_body_bytes=0)
        def tiny() -> None: ...

    assert str(caught.value) == (
        "action 'tiny': Limits.max_body_bytes must be a positive integer, not 0"
    )


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True])
def test_invalid_action_timeout_names_the_action(bastion: Bastion, timeout: float) -> None:
    """A per-action timeout must be a positive finite number of seconds."""
    with pytest.raises(ConfigurationError, match=r"^action 'slow': timeout must be a"):

        @bastion.action(policy=public, timeout=timeout)
        def slow() -> None: ...


# --- what is accepted ------------------------------------------------------------------


def test_decorator_returns_the_function_unchanged(bastion: Bastion) -> None:
    """@action hands back the very same function, with its signature intact."""

    def create(ctx: Context, data: Strict) -> Item:
        return Item(id=1, title=data.name)

    before = inspect.signature(create)
    registered = bastion.action(policy=public)(create)
    assert registered is create
    assert inspect.signature(registered) == before
    assert registered.__name__ == "create"


def test_decorated_function_is_still_directly_callable(bastion: Bastion) -> None:
    """The function stays a plain function: calling it directly bypasses nothing of bastion."""

    @bastion.action(policy=public)
    def double(data: Strict) -> str:
        return data.name * 2

    assert double(Strict(name="ab")) == "abab"


def test_none_return_replies_null(bastion: Bastion, client: ActionClient) -> None:
    """-> None: the reply's data is null whatever the handler returned."""

    @bastion.action(policy=public)
    def nothing() -> None:
        return "leaked?"  # type: ignore[return-value]

    reply = client.call(nothing)
    assert reply.status_code == 200
    assert reply.json() == OK_NULL


def test_str_return_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """-> str replies with the string as data."""

    @bastion.action(policy=public)
    def hello(data: Strict) -> str:
        return f"Hello, {data.name}!"

    assert client.call(hello, {"name": "Ada"}).json() == {"ok": True, "data": "Hello, Ada!"}


def test_list_of_models_return_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """-> list[Model] serialises each element through the model only."""

    @bastion.action(policy=public)
    def items() -> list[Item]:
        return [Item(id=1, title="a"), Item(id=2, title="b")]

    assert client.call(items).json() == {
        "ok": True,
        "data": [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}],
    }


def test_typed_containers_and_namedtuples_are_accepted(
    bastion: Bastion, client: ActionClient
) -> None:
    """dict[str, int], a NamedTuple and an Enum say what they hold: accepted."""

    class Pair(NamedTuple):
        left: int
        right: int

    class Colour(enum.Enum):
        RED = "red"

    @bastion.action(policy=public)
    def counts() -> dict[str, int]:
        return {"a": 1}

    @bastion.action(policy=public)
    def pair() -> Pair:
        return Pair(1, 2)

    @bastion.action(policy=public)
    def colour() -> Colour:
        return Colour.RED

    assert client.call(counts).json() == {"ok": True, "data": {"a": 1}}
    assert client.call(pair).json() == {"ok": True, "data": [1, 2]}
    assert client.call(colour).json() == {"ok": True, "data": "red"}


def test_forward_reference_resolved_at_registration(bastion: Bastion) -> None:
    """A model whose forward reference is defined by registration time is rebuilt then."""
    spec = bastion.registry.get(bastion.action(policy=public)(_uses_later))
    assert spec.input_model is _Later
    assert _Later.__pydantic_complete__


class _Later(BaseModel):
    model_config = ConfigDict(extra="forbid")
    child: "_Child"


class _Child(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


def _uses_later(data: _Later) -> None: ...


def test_async_handler_runs(bastion: Bastion, client: ActionClient) -> None:
    """An async handler is awaited and its result serialised."""

    @bastion.action(policy=public)
    async def shout(data: Strict) -> str:
        return data.name.upper()

    assert client.call(shout, {"name": "ada"}).json() == {"ok": True, "data": "ADA"}


def test_handler_without_input_accepts_empty_json_body(
    bastion: Bastion, client: ActionClient
) -> None:
    """No input model: an empty application/json body is an empty object."""

    @bastion.action(policy=public)
    def ping() -> str:
        return "pong"

    reply = client.post(
        client.url(ping),
        content=b"",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": "pong"}


def test_handler_without_input_accepts_empty_object(bastion: Bastion, client: ActionClient) -> None:
    """No input model: {} is accepted."""

    @bastion.action(policy=public)
    def ping() -> str:
        return "pong"

    reply = client.call(ping, {})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": "pong"}


def test_handler_without_input_accepts_no_body_at_all(
    bastion: Bastion, client: ActionClient
) -> None:
    """No input model: a POST without body or content type is an empty object."""

    @bastion.action(policy=public)
    def ping() -> str:
        return "pong"

    reply = client.post(client.url(ping), headers={"Accept": "application/json"})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": "pong"}


def test_handler_without_input_refuses_any_field(bastion: Bastion, client: ActionClient) -> None:
    """No input model: any field is unknown, a 422 that names it."""

    @bastion.action(policy=public)
    def ping() -> str:
        return "pong"

    reply = client.call(ping, {"admin": True})
    assert reply.status_code == 422
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "invalid",
            "message": "Some fields are invalid.",
            "fields": {"admin": "Extra inputs are not permitted"},
        },
    }


def test_handler_with_only_context(bastion: Bastion, client: ActionClient) -> None:
    """A handler taking only the Context gets it, under whatever parameter name."""

    @bastion.action(policy=public)
    def whoami(request_context: Context) -> str:
        return request_context.action

    assert client.call(whoami).json() == {"ok": True, "data": "whoami"}


def test_context_carries_action_name_headers_and_client(
    bastion: Bastion, client: ActionClient
) -> None:
    """Context: the registered name (not the function's), the headers, the peer address."""
    seen: dict[str, Any] = {}

    @bastion.action(policy=public, name="renamed")
    def inspect_ctx(ctx: Context, data: Strict) -> None:
        seen.update(
            action=ctx.action,
            header=ctx.headers.get("x-trace"),
            client=ctx.client,
            repr=repr(ctx),
        )

    reply = client.call("renamed", {"name": "x"}, headers={"X-Trace": "abc"})
    assert reply.json() == OK_NULL
    assert seen == {
        "action": "renamed",
        "header": "abc",
        "client": client.client_address,  # this test client's own address
        "repr": f"Context(action='renamed', client={client.client_address!r})",
    }


def test_sync_handler_runs_in_a_worker_thread(bastion: Bastion, client: ActionClient) -> None:
    """A sync handler runs off the event loop (the policy runs on the loop)."""
    threads: dict[str, int] = {}

    def on_loop(ctx: Context) -> bool:
        threads["loop"] = threading.get_ident()
        return True

    @bastion.action(policy=on_loop)
    def blocking() -> None:
        threads["handler"] = threading.get_ident()

    assert client.call(blocking).json() == OK_NULL
    assert set(threads) == {"loop", "handler"}
    assert threads["handler"] != threads["loop"]
    assert threads["handler"] != threading.get_ident()


def test_async_handler_runs_on_the_event_loop(bastion: Bastion, client: ActionClient) -> None:
    """An async handler runs on the loop's thread, the one its policy ran on."""
    threads: dict[str, int] = {}

    def on_loop(ctx: Context) -> bool:
        threads["loop"] = threading.get_ident()
        return True

    @bastion.action(policy=on_loop)
    async def nonblocking() -> None:
        threads["handler"] = threading.get_ident()

    assert client.call(nonblocking).json() == OK_NULL
    assert threads["handler"] == threads["loop"]


def test_registry_finds_actions_by_function_name_and_id(bastion: Bastion) -> None:
    """The registry answers by function, by name and by ID; LookupError otherwise."""

    @bastion.action(policy=public, name="alias")
    def target() -> None: ...

    spec = bastion.registry.get(target)
    assert bastion.registry.get("alias") is spec
    assert bastion.registry.by_id(spec.id) is spec
    assert bastion.registry.by_id("nope") is None
    assert [s.name for s in bastion.registry] == ["alias"]
    assert len(bastion.registry) == 1
    with pytest.raises(LookupError, match=r"^'target' is not a registered action$"):
        bastion.registry.get("target")


def test_url_for_unregistered_function_raises_lookup_error(bastion: Bastion) -> None:
    """url_for of something never registered is a LookupError naming it."""

    def stray() -> None: ...

    with pytest.raises(LookupError, match=r"stray.* is not a registered action$"):
        bastion.url_for(stray)


# --- action IDs -----------------------------------------------------------------------

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{24}")

PROBE = """
from bastion import Bastion, Context, public

bastion = Bastion()

@bastion.action(policy=public)
def publish_article(ctx: Context) -> None: ...

URL = bastion.url_for(publish_article)
"""


def _probe_url() -> str:
    namespace: dict[str, Any] = {"__name__": "shop.actions"}
    exec(PROBE, namespace)  # noqa: S102  # the same source the subprocess runs
    return str(namespace["URL"])


def _register_probe(bastion: Bastion) -> str:
    @bastion.action(policy=public)
    def publish_article(ctx: Context) -> None: ...

    return bastion.url_for(publish_article)


def test_action_id_is_opaque_and_url_safe(bastion: Bastion) -> None:
    """The ID names neither the function nor its module and is 24 URL-safe characters."""
    url = _register_probe(bastion)
    prefix, action_id = url.rsplit("/", 1)
    assert prefix == "/_actions"
    assert ID_PATTERN.fullmatch(action_id)
    for hint in ("publish", "article", "test_registry", __name__, "shop"):
        assert hint.lower() not in action_id.lower()


def test_action_id_is_stable_across_instances_with_one_secret() -> None:
    """Two Bastion instances with the same secret give the same ID."""
    assert _register_probe(Bastion(secret_key=SECRET)) == _register_probe(
        Bastion(secret_key=SECRET)
    )


def test_action_id_differs_under_another_secret() -> None:
    """Another secret, another ID for the same action."""
    assert _register_probe(Bastion(secret_key=SECRET)) != _register_probe(
        Bastion(secret_key=OTHER_SECRET)
    )


def test_action_id_is_stable_across_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh Python process with the same BASTION_SECRET_KEY computes the same ID."""
    monkeypatch.setenv("BASTION_SECRET_KEY", SECRET)
    here = _probe_url()
    script = (
        "namespace = {'__name__': 'shop.actions'}\n"
        f"exec({PROBE!r}, namespace)\n"
        "print(namespace['URL'])\n"
    )

    def run(key: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "BASTION_SECRET_KEY": key},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert run(SECRET) == here
    assert run(OTHER_SECRET) != here
    assert ID_PATTERN.fullmatch(here.rsplit("/", 1)[1])


def test_fallback_key_still_resolves_old_ids() -> None:
    """After rotation the old ID still answers, while url_for gives the new one."""
    old_url = _register_probe(Bastion(secret_key=OTHER_SECRET))
    new_url = _register_probe(Bastion(secret_key=SECRET))
    rotated = Bastion(secret_key=SECRET, secret_key_fallbacks=[OTHER_SECRET])
    assert _register_probe(rotated) == new_url
    assert old_url != new_url
    with ActionClient(mounted(rotated), rotated) as client:
        for url in (new_url, old_url):
            reply = client.post(url, json={}, headers={"Accept": "application/json"})
            assert reply.status_code == 200
            assert reply.json() == OK_NULL


def test_id_under_an_unknown_key_is_not_found() -> None:
    """An ID made under a key the app does not hold answers a bare 404."""
    foreign_url = _register_probe(Bastion(secret_key=OTHER_SECRET))
    app_bastion = Bastion(secret_key=SECRET)
    _register_probe(app_bastion)
    with ActionClient(mounted(app_bastion), app_bastion) as client:
        reply = client.post(foreign_url, json={}, headers={"Accept": "application/json"})
    assert reply.status_code == 404
    assert reply.json() == {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
