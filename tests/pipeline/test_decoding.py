"""Pipeline stage 7: the capped body split into flat fields, then the declared model.

JSON and urlencoded bodies, over the real ASGI stack: each test checks the exact reply,
and for refusals that the handler never ran.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bastion import Bastion, Limits, public
from bastion.testing import ActionClient

MARKER = "MARKER-7f3a9c"
"""A submitted value that must never come back in a reply."""

JSON = {"content-type": "application/json", "accept": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}


def malformed(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "malformed", "message": message}}


def too_large(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "payload_too_large", "message": message}}


def invalid(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields},
    }


NOT_JSON = malformed("The request body is not valid JSON.")
NOT_OBJECT = malformed("The request body must be a JSON object.")
TOO_DEEP = malformed("The JSON is nested too deeply.")
OUT_OF_RANGE = malformed("A number in the JSON is out of range.")
NAME_TOO_LONG = malformed("A field name is too long.")
NOT_UTF8 = malformed("The form is not valid UTF-8.")
HAS_NUL = malformed("The form holds a NUL character.")
TOO_MANY_FIELDS = too_large("Too many fields.")
EXTRA = "Extra inputs are not permitted"
NOT_INT = "Input should be a valid integer, unable to parse string as an integer"


def assert_secure(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_json_reply(response: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert response.status_code == status
    assert response.json() == envelope
    assert response.headers["content-type"] == "application/json"
    assert_secure(response)


# --- models ----------------------------------------------------------------------------


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str
    zip: str = ""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    age: int = 0
    address: Address | None = None
    tags: list[str] = []


class Numbers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[int] = []


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = 0.0


class Anything(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload: JsonValue = None


class Done(BaseModel):
    done: bool = True


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    tags: list[str] = []
    agree: bool = False
    nickname: str | None = None
    age: int | None = None
    labels: Annotated[list[str], Field(max_length=3)] | None = None


class SignupOut(BaseModel):
    name: str
    tags: list[str]
    agree: bool
    nickname: str | None
    age: int | None
    labels: list[str] | None


class Checkbox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agree: bool


class Code(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = ""

    @field_validator("code")
    @classmethod
    def echo_value(cls, value: str) -> str:
        if value:
            raise ValueError(f"bad {value}")
        return value


class AssertedCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = ""

    @field_validator("code")
    @classmethod
    def assert_value(cls, value: str) -> str:
        # Raised by hand: pytest rewrites ``assert`` in test modules, adding its own text.
        if value:
            raise AssertionError(f"{value} is not allowed")
        return value


class Passwords(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str
    confirm: str

    @model_validator(mode="after")
    def same(self) -> Passwords:
        if self.password != self.confirm:
            raise ValueError(f"{self.password} does not match {self.confirm}")
        return self


class TagList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str]

    @field_validator("tags")
    @classmethod
    def echo_list(cls, value: list[str]) -> list[str]:
        raise ValueError(f"bad tags: {value}")


class CustomError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str

    @field_validator("code")
    @classmethod
    def custom(cls, value: str) -> str:
        raise PydanticCustomError("code_taken", "The code {code} is taken", {"code": value})


class Cat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["cat"]


class Dog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["dog"]


class Pet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]


class Polite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = ""
    size: int = 0

    @field_validator("code")
    @classmethod
    def explain(cls, value: str) -> str:
        if value:
            raise ValueError("Pick another code.")
        return value

    @field_validator("size")
    @classmethod
    def check_size(cls, value: int) -> int:
        if value >= 10:
            raise AssertionError("Too big.")
        return value


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """``{"payload": …}`` whose total nesting (the outer object counting 1) is ``depth``."""
    return b'{"payload":' + opener * (depth - 1) + closer * (depth - 1) + b"}"


# --- JSON: syntax ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"name":',
        b"{name: 1}",
        b"{'name': 'a'}",
        b'{"name": "a",}',
        b'{"name": "a"} {}',
        b'{"name": "a"}garbage',
        b"\xef\xbb\xbf{}",
        b'{"name": "\xff"}',
        b'{"name": "\\ud800"}',
        b'{"name": "a\x01"}',
        b'{"age": 01}',
        b'{"age": .5}',
        b"nul",
        b"{",
    ],
)
def test_malformed_json_is_400(bastion: Bastion, client: ActionClient, body: bytes) -> None:
    """Anything that is not strict UTF-8 JSON is 400, with one fixed message."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(save), content=body, headers=JSON)
    assert_json_reply(response, 400, NOT_JSON)
    assert calls == []


@pytest.mark.parametrize("body", [b"[]", b'[{"name": "a"}]', b'"name"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """The input is always one JSON object: lists, strings and scalars are refused."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(save), content=body, headers=JSON)
    assert_json_reply(response, 400, NOT_OBJECT)
    assert calls == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"value": NaN}',
        b'{"value": Infinity}',
        b'{"value": -Infinity}',
        b'{"value": [1, NaN]}',
    ],
)
def test_nan_and_infinity_literals_are_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """``NaN`` and ``Infinity`` are not JSON, even where a float is expected."""
    calls: list[Measure] = []

    @bastion.action(policy=public)
    def measure(data: Measure) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(measure), content=body, headers=JSON)
    assert_json_reply(response, 400, NOT_JSON)
    assert calls == []


@pytest.mark.parametrize(
    "body", [b'{"value": 1e999}', b'{"value": -1e999}', b'{"payload": {"x": [1e400]}}']
)
def test_numbers_that_overflow_to_infinity_are_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """``1e999`` is valid JSON syntax but parses to infinity: refused like ``Infinity``."""
    calls: list[BaseModel] = []

    @bastion.action(policy=public)
    def measure(data: Measure) -> Done:
        calls.append(data)
        return Done()

    @bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    target = anything if b"payload" in body else measure
    response = client.post(client.url(target), content=body, headers=JSON)
    assert_json_reply(response, 400, OUT_OF_RANGE)
    assert calls == []


def test_large_finite_float_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """The range check refuses only what overflowed: ``1e308`` is a float like any other."""
    calls: list[Measure] = []

    @bastion.action(policy=public)
    def measure(data: Measure) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(measure), content=b'{"value": 1e308}', headers=JSON)
    assert_json_reply(response, 200, {"ok": True, "data": {"done": True}})
    assert calls == [Measure(value=1e308)]


def test_whitespace_only_json_body_is_an_empty_object(
    bastion: Bastion, client: ActionClient
) -> None:
    """A JSON body of only whitespace carries no fields: the model's defaults apply."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(save), content=b" \r\n\t ", headers=JSON)
    assert_json_reply(response, 200, {"ok": True, "data": {"done": True}})
    assert calls == [Profile()]


# --- JSON: bounds ----------------------------------------------------------------------


def test_json_at_the_default_depth_limit_is_accepted(
    bastion: Bastion, client: ActionClient
) -> None:
    """Nesting of exactly ``max_json_depth`` (32, the outer object included) is fine."""
    calls: list[Anything] = []

    @bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(anything), content=nested(32), headers=JSON)
    assert_json_reply(response, 200, {"ok": True, "data": {"done": True}})
    assert len(calls) == 1


@pytest.mark.parametrize("depth", [33, 150, 250, 100_000])
def test_json_nested_deeper_than_the_limit_is_400(
    bastion: Bastion, client: ActionClient, depth: int
) -> None:
    """One level over 32, and far past it (100,000 levels), is the same 400: no 500, no
    RecursionError, whether the parser or the bounds check notices first."""
    calls: list[Anything] = []

    @bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(anything), content=nested(depth), headers=JSON)
    assert_json_reply(response, 400, TOO_DEEP)
    assert calls == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"payload":' + b'{"a":' * 40 + b"1" + b"}" * 41,
    ],
)
def test_deep_objects_and_arrays_are_400_too_deep(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """Deep objects, deep arrays and even unclosed deep arrays are all "too deep"."""
    calls: list[Anything] = []

    @bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(anything), content=body, headers=JSON)
    assert_json_reply(response, 400, TOO_DEEP)
    assert calls == []


def test_custom_depth_limit_is_exact() -> None:
    """``Limits(max_json_depth=3)``: depth 3 passes, depth 4 is 400."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_json_depth=3))
    calls: list[Anything] = []

    @app_bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    with ActionClient(mounted(app_bastion), app_bastion) as client:
        accepted = client.post(client.url(anything), content=b'{"payload":[[1]]}', headers=JSON)
        refused = client.post(client.url(anything), content=b'{"payload":[[[1]]]}', headers=JSON)
        refused_obj = client.post(
            client.url(anything), content=b'{"payload":{"a":{"b":{}}}}', headers=JSON
        )
    assert_json_reply(accepted, 200, {"ok": True, "data": {"done": True}})
    assert_json_reply(refused, 400, TOO_DEEP)
    assert_json_reply(refused_obj, 400, TOO_DEEP)
    assert calls == [Anything(payload=[[1]])]


def test_json_with_more_keys_than_max_fields_is_413(bastion: Bastion, client: ActionClient) -> None:
    """1001 keys (the default limit is 1000) is 413, before the model sees them."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    body = json.dumps({f"k{i}": 1 for i in range(1001)}).encode()
    response = client.post(client.url(save), content=body, headers=JSON)
    assert_json_reply(response, 413, TOO_MANY_FIELDS)
    assert calls == []


def test_json_keys_are_counted_across_nested_objects() -> None:
    """``max_fields`` bounds the keys of every object in the body, not only the outer one."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_fields=3))
    calls: list[Anything] = []

    @app_bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    with ActionClient(mounted(app_bastion), app_bastion) as client:
        three = client.post(
            client.url(anything), content=b'{"payload": {"a": 1, "b": 2}}', headers=JSON
        )
        four = client.post(
            client.url(anything), content=b'{"payload": [{"a": 1, "b": 2}, {"c": 3}]}', headers=JSON
        )
    assert_json_reply(three, 200, {"ok": True, "data": {"done": True}})
    assert_json_reply(four, 413, TOO_MANY_FIELDS)
    assert calls == [Anything(payload={"a": 1, "b": 2})]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"k" * 129: 1}).encode(),
        json.dumps({"payload": {"k" * 129: 1}}).encode(),
        json.dumps({"payload": [[{"k" * 500: 1}]]}).encode(),
    ],
)
def test_json_key_longer_than_the_limit_is_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """A key over ``max_field_name_length`` (128) anywhere in the body is 400."""
    calls: list[Anything] = []

    @bastion.action(policy=public)
    def anything(data: Anything) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(anything), content=body, headers=JSON)
    assert_json_reply(response, 400, NAME_TOO_LONG)
    assert MARKER not in response.text
    assert "k" * 129 not in response.text
    assert calls == []


def test_json_key_at_the_length_limit_reaches_the_model(
    bastion: Bastion, client: ActionClient
) -> None:
    """A 128-character key passes the bound; the model then refuses it as unknown."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    key = "k" * 128
    response = client.post(client.url(save), content=json.dumps({key: 1}).encode(), headers=JSON)
    assert_json_reply(response, 422, invalid({key: EXTRA}))
    assert calls == []


def test_duplicate_json_keys_keep_the_last_value(bastion: Bastion, client: ActionClient) -> None:
    """A repeated key is one field (the last value wins), never a list."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(save), content=b'{"name":"a","name":"b"}', headers=JSON)
    assert_json_reply(response, 200, {"ok": True, "data": {"done": True}})
    assert calls == [Profile(name="b")]


# --- JSON: validation ------------------------------------------------------------------


def test_unknown_json_field_is_422_naming_it(bastion: Bastion, client: ActionClient) -> None:
    """A field the model does not declare is refused, never ignored."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {"name": "Ada", "is_admin": True})
    assert_json_reply(response, 422, invalid({"is_admin": EXTRA}))
    assert calls == []


def test_unknown_nested_field_is_422_with_its_path(bastion: Bastion, client: ActionClient) -> None:
    """Nested models forbid unknown fields too, reported under ``parent.child``."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {"address": {"city": "Paris", "street": "x"}})
    assert_json_reply(response, 422, invalid({"address.street": EXTRA}))
    assert calls == []


def test_type_errors_are_422_with_dotted_field_paths(
    bastion: Bastion, client: ActionClient
) -> None:
    """Each bad field is named by its path: ``address.city``, ``tags.1``, ``age``."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {"age": "old", "address": {"city": 5}, "tags": ["ok", 7, None]})
    assert_json_reply(
        response,
        422,
        invalid(
            {
                "age": NOT_INT,
                "address.city": "Input should be a valid string",
                "tags.1": "Input should be a valid string",
                "tags.2": "Input should be a valid string",
            }
        ),
    )
    assert calls == []


def test_missing_required_nested_field_is_422(bastion: Bastion, client: ActionClient) -> None:
    """A required field left out is reported as required, at its path."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {"address": {}})
    assert_json_reply(response, 422, invalid({"address.city": "Field required"}))
    assert calls == []


def test_validation_reports_at_most_50_field_errors(bastion: Bastion, client: ActionClient) -> None:
    """200 bad list items give exactly the first 50 errors."""
    calls: list[Numbers] = []

    @bastion.action(policy=public)
    def numbers(data: Numbers) -> Done:
        calls.append(data)
        return Done()

    response = client.call(numbers, {"values": [f"x{i}" for i in range(200)]})
    assert_json_reply(response, 422, invalid({f"values.{i}": NOT_INT for i in range(50)}))
    assert calls == []


def test_many_unknown_fields_report_at_most_50(bastion: Bastion, client: ActionClient) -> None:
    """Hundreds of unknown fields still give a bounded reply of 50 entries."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {f"f{i:03}": 1 for i in range(300)})
    assert_json_reply(response, 422, invalid({f"f{i:03}": EXTRA for i in range(50)}))
    assert calls == []


# --- no value is ever echoed -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"age": MARKER},
        {"name": [MARKER]},
        {"tags": [MARKER, {"x": MARKER}]},
        {"address": {"city": [MARKER], "zip": {"a": MARKER}}},
        {"address": MARKER},
    ],
)
def test_builtin_error_messages_never_contain_the_submitted_value(
    bastion: Bastion, client: ActionClient, data: dict[str, Any]
) -> None:
    """pydantic's own messages describe the rule; the reply never carries the value."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, data)
    assert response.status_code == 422
    assert MARKER not in response.text
    assert calls == []


def test_field_validator_that_quotes_the_value_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """``ValueError(f"bad {value}")`` is answered "Invalid value.", without the value."""
    calls: list[Code] = []

    @bastion.action(policy=public)
    def code(data: Code) -> Done:
        calls.append(data)
        return Done()

    response = client.call(code, {"code": MARKER})
    assert_json_reply(response, 422, invalid({"code": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_assert_that_quotes_the_value_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """An ``assert`` message with the value in it is withheld the same way."""
    calls: list[AssertedCode] = []

    @bastion.action(policy=public)
    def code(data: AssertedCode) -> Done:
        calls.append(data)
        return Done()

    response = client.call(code, {"code": MARKER})
    assert_json_reply(response, 422, invalid({"code": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_model_validator_that_quotes_values_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """A model-level check whose input is the whole object still never echoes a value
    (here: both passwords)."""
    calls: list[Passwords] = []

    @bastion.action(policy=public)
    def register(data: Passwords) -> Done:
        calls.append(data)
        return Done()

    response = client.call(register, {"password": MARKER + "-1", "confirm": MARKER + "-2"})
    assert_json_reply(response, 422, invalid({"_": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_list_validator_that_quotes_the_list_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """A validator on a list field that prints the list is withheld too."""
    calls: list[TagList] = []

    @bastion.action(policy=public)
    def tags(data: TagList) -> Done:
        calls.append(data)
        return Done()

    response = client.call(tags, {"tags": ["ok", MARKER]})
    assert_json_reply(response, 422, invalid({"tags": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_custom_error_type_that_quotes_the_value_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """A ``PydanticCustomError`` whose template interpolates the value is withheld."""
    calls: list[CustomError] = []

    @bastion.action(policy=public)
    def custom(data: CustomError) -> Done:
        calls.append(data)
        return Done()

    response = client.call(custom, {"code": MARKER})
    assert_json_reply(response, 422, invalid({"code": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_unknown_union_tag_is_not_echoed(bastion: Bastion, client: ActionClient) -> None:
    """pydantic quotes a discriminated union's unknown tag; bastion does not pass it on."""
    calls: list[Pet] = []

    @bastion.action(policy=public)
    def pet(data: Pet) -> Done:
        calls.append(data)
        return Done()

    response = client.call(pet, {"pet": {"kind": MARKER}})
    assert_json_reply(response, 422, invalid({"pet": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


def test_validator_messages_without_the_value_are_passed_on_without_prefix(
    bastion: Bastion, client: ActionClient
) -> None:
    """A custom message that does not quote the input reaches the client as written,
    without pydantic's "Value error, " / "Assertion failed, " prefixes."""
    calls: list[Polite] = []

    @bastion.action(policy=public)
    def polite(data: Polite) -> Done:
        calls.append(data)
        return Done()

    response = client.call(polite, {"code": MARKER, "size": 12})
    assert_json_reply(response, 422, invalid({"code": "Pick another code.", "size": "Too big."}))
    assert MARKER not in response.text
    assert calls == []


def test_form_validator_that_quotes_the_value_becomes_invalid_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """The same rule holds for form posts."""
    calls: list[Code] = []

    @bastion.action(policy=public)
    def code(data: Code) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(code), content=f"code={MARKER}".encode(), headers=FORM)
    assert_json_reply(response, 422, invalid({"code": "Invalid value."}))
    assert MARKER not in response.text
    assert calls == []


# --- forms -----------------------------------------------------------------------------


def post_form(client: ActionClient, action: Any, body: bytes) -> httpx.Response:
    """An urlencoded body from a script: the reply is the JSON envelope."""
    return client.post(client.url(action), content=body, headers=FORM)


def signup_reply(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "",
        "tags": [],
        "agree": False,
        "nickname": None,
        "age": None,
        "labels": None,
        **changes,
    }
    return {"ok": True, "data": data}


@pytest.mark.parametrize(
    ("body", "tags"),
    [
        (b"tags=a&tags=b&tags=c", ["a", "b", "c"]),
        (b"tags=a", ["a"]),
        (b"tags=", [""]),
        (b"", []),
    ],
)
def test_form_repeated_keys_fill_a_list_field(
    bastion: Bastion, client: ActionClient, body: bytes, tags: list[str]
) -> None:
    """A list field collects every value of its key, in order; one value is a list of one."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, body)
    assert_json_reply(response, 200, signup_reply(tags=tags))
    assert calls == [Signup(tags=tags)]


def test_form_list_field_under_annotated_and_optional_is_still_a_list(
    bastion: Bastion, client: ActionClient
) -> None:
    """``Annotated[list[str], Field(...)] | None`` takes a single value as a list of one."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"labels=x")
    assert_json_reply(response, 200, signup_reply(labels=["x"]))
    too_many = post_form(client, signup, b"labels=a&labels=b&labels=c&labels=d")
    assert_json_reply(
        too_many,
        422,
        invalid({"labels": "Should have at most 3 items."}),
    )
    assert calls == [Signup(labels=["x"])]


def test_form_repeated_key_for_a_scalar_field_is_422(
    bastion: Bastion, client: ActionClient
) -> None:
    """Sending one key twice for a one-value field is refused, not silently reduced."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"name=a&name=b")
    assert_json_reply(response, 422, invalid({"name": "Input should be a valid string"}))
    assert calls == []


@pytest.mark.parametrize(
    ("body", "agree"),
    [(b"", False), (b"agree=on", True), (b"agree=true", True), (b"agree=off", False)],
)
def test_form_checkbox(bastion: Bastion, client: ActionClient, body: bytes, agree: bool) -> None:
    """An unchecked box sends nothing, which means ``False``; a checked one sends "on"."""
    calls: list[Checkbox] = []

    @bastion.action(policy=public)
    def accept(data: Checkbox) -> Done:
        calls.append(data)
        return Done()

    response = post_form(client, accept, body)
    assert_json_reply(response, 200, {"ok": True, "data": {"done": True}})
    assert calls == [Checkbox(agree=agree)]


def test_json_absent_bool_is_still_required(bastion: Bastion, client: ActionClient) -> None:
    """The checkbox rule is for forms only: JSON must send a required bool."""
    calls: list[Checkbox] = []

    @bastion.action(policy=public)
    def accept(data: Checkbox) -> Done:
        calls.append(data)
        return Done()

    response = client.call(accept, {})
    assert_json_reply(response, 422, invalid({"agree": "Field required"}))
    assert calls == []


def test_form_empty_optional_fields_are_none(bastion: Bastion, client: ActionClient) -> None:
    """An empty input for an optional field is ``None``; for a plain ``str`` it stays ""."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"name=&nickname=&age=")
    assert_json_reply(response, 200, signup_reply())
    assert calls == [Signup(name="", nickname=None, age=None)]


def test_form_values_are_percent_and_plus_decoded(bastion: Bastion, client: ActionClient) -> None:
    """``+`` is a space and ``%XX`` a UTF-8 byte; ``;`` is not a separator."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"name=Ad%C3%A9+L%2B;x=1&age=%33%36")
    assert_json_reply(response, 200, signup_reply(name="Adé L+;x=1", age=36))
    assert calls == [Signup(name="Adé L+;x=1", age=36)]


def test_form_reserved_fields_are_not_passed_to_the_model(
    bastion: Bastion, client: ActionClient
) -> None:
    """``_next`` and ``_csrf`` are bastion's: the model (which forbids unknown fields)
    never sees them. (``_bound`` is opened by stage 8: see tests/pipeline/test_binding.py.)"""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    token = client.token().encode()
    response = post_form(client, signup, b"name=Ada&_next=%2Fdone&_csrf=" + token)
    assert_json_reply(response, 200, signup_reply(name="Ada"))
    assert calls == [Signup(name="Ada")]


@pytest.mark.parametrize("name", ["_next", "_csrf", "_bound"])
def test_form_reserved_field_sent_twice_is_400(
    bastion: Bastion, client: ActionClient, name: str
) -> None:
    """Two values for a reserved field is ambiguous, so the whole form is refused."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, f"{name}=a&name=Ada&{name}=b".encode())
    assert_json_reply(
        response, 400, malformed(f"The form field {name} must be sent once, as text.")
    )
    assert calls == []


@pytest.mark.parametrize("name", ["_foo", "_", "__csrf", "_CSRF"])
def test_form_other_underscore_fields_are_ordinary_unknown_fields(
    bastion: Bastion, client: ActionClient, name: str
) -> None:
    """Only the three reserved names are special; any other ``_name`` is an unknown field."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    # The token goes in the header: "__csrf" is not the reserved field that carries it.
    response = client.post(
        client.url(signup),
        content=f"{name}=1".encode(),
        headers={**FORM, "X-CSRF-Token": client.token()},
    )
    assert_json_reply(response, 422, invalid({name: EXTRA}))
    assert calls == []


def test_form_unknown_field_is_422(bastion: Bastion, client: ActionClient) -> None:
    """Forms forbid unknown fields just as JSON does."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"name=Ada&is_admin=1")
    assert_json_reply(response, 422, invalid({"is_admin": EXTRA}))
    assert calls == []


@pytest.mark.parametrize(
    "body",
    [b"name=\xff", b"name=%FF", b"name=%C3", b"name=caf\xe9", b"%FF=1", b"na\xc3me=1"],
)
def test_form_invalid_utf8_is_400(bastion: Bastion, client: ActionClient, body: bytes) -> None:
    """Bad UTF-8, raw or percent-encoded, in a name or a value, is 400 (never Latin-1)."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, body)
    assert_json_reply(response, 400, NOT_UTF8)
    assert calls == []


@pytest.mark.parametrize("body", [b"name=a%00b", b"name=%00", b"na%00me=a", b"_next=%2F%00"])
def test_form_nul_character_is_400(bastion: Bastion, client: ActionClient, body: bytes) -> None:
    """A NUL anywhere in a form (name, value, reserved field) is refused."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, body)
    assert_json_reply(response, 400, HAS_NUL)
    assert calls == []


def test_form_with_more_fields_than_max_fields_is_413(
    bastion: Bastion, client: ActionClient
) -> None:
    """1001 form fields (the default limit is 1000) is 413."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    body = "&".join(f"tags={i}" for i in range(1001)).encode()
    response = post_form(client, signup, body)
    assert_json_reply(response, 413, TOO_MANY_FIELDS)
    assert calls == []


def test_form_at_max_fields_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """Exactly 1000 fields is within the limit."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    body = "&".join(f"tags={i}" for i in range(1000)).encode()
    response = post_form(client, signup, body)
    assert_json_reply(response, 200, signup_reply(tags=[str(i) for i in range(1000)]))
    assert len(calls) == 1


def test_form_reserved_fields_count_towards_max_fields() -> None:
    """``_csrf`` and friends are fields like any other for the bound."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_fields=2))
    calls: list[Signup] = []

    @app_bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    with ActionClient(mounted(app_bastion), app_bastion) as client:
        token = client.token().encode()
        two = post_form(client, signup, b"name=a&_csrf=" + token)
        three = post_form(client, signup, b"name=a&_csrf=" + token + b"&_next=%2F")
    assert_json_reply(two, 200, signup_reply(name="a"))
    assert_json_reply(three, 413, TOO_MANY_FIELDS)
    assert calls == [Signup(name="a")]


def test_form_field_name_longer_than_the_limit_is_400(
    bastion: Bastion, client: ActionClient
) -> None:
    """A 129-character name is 400; the name is not repeated in the reply."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = post_form(client, signup, b"n" * 129 + b"=1")
    assert_json_reply(response, 400, NAME_TOO_LONG)
    assert "n" * 129 not in response.text
    assert calls == []


# --- plain form posts (no JavaScript) --------------------------------------------------


def assert_see_other(response: httpx.Response, location: str) -> None:
    assert response.status_code == 303
    assert response.headers["location"] == location
    assert response.content == b""
    assert_secure(response)


@pytest.mark.parametrize(
    ("referer", "location"),
    [
        ("http://127.0.0.1/signup?step=2", "/signup?step=2"),
        ("https://evil.example/phish?x=1", "/phish?x=1"),
        ("/relative/page", "/relative/page"),
        (None, "/"),
        ("//evil.example/x", "/x"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_plain_form_failing_validation_redirects_to_the_referer_path(
    bastion: Bastion, client: ActionClient, referer: str | None, location: str
) -> None:
    """Without ``Accept: application/json`` a refusal is a 303 to the referring page's
    path (its host is never used), or to "/"."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    headers = {"referer": referer} if referer else {}
    response = client.submit(signup, {"age": MARKER}, headers=headers)
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_see_other(response, location)
    assert MARKER not in response.headers["location"]
    assert calls == []


def test_plain_form_malformed_redirects_back_too(bastion: Bastion, client: ActionClient) -> None:
    """A form refused while decoding (a NUL) is also sent back to its page, not shown JSON."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = client.post(
        client.url(signup),
        content=b"name=a%00",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "referer": "http://127.0.0.1/form",
        },
    )
    assert_see_other(response, "/form")
    assert calls == []


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("/done", "/done"),
        ("/posts/1?tab=comments#c5", "/posts/1?tab=comments#c5"),
        ("/with space", "/with%20space"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("done", "/"),
        ("", "/"),
    ],
)
def test_plain_form_success_redirects_to_next(
    bastion: Bastion, client: ActionClient, next_path: str, location: str
) -> None:
    """On success a plain form goes to ``_next`` when it is a same-origin path; an
    unsafe ``_next`` is never followed (with no referer to go back to: "/")."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = client.submit(signup, {"name": "Ada", "agree": "on", "_next": next_path})
    assert_see_other(response, location)
    assert calls == [Signup(name="Ada", agree=True)]


def test_plain_form_success_prefers_next_over_the_referer(
    bastion: Bastion, client: ActionClient
) -> None:
    """A safe ``_next`` decides where a successful plain form lands, whatever the referer."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = client.submit(
        signup, {"name": "Ada", "_next": "/welcome"}, headers={"referer": "http://127.0.0.1/signup"}
    )
    assert_see_other(response, "/welcome")
    assert calls == [Signup(name="Ada")]


def test_plain_form_success_without_next_or_referer_redirects_to_root(
    bastion: Bastion, client: ActionClient
) -> None:
    """With nowhere given to go, a successful plain form lands on "/"."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = client.submit(signup, {"name": "Ada"})
    assert_see_other(response, "/")
    assert calls == [Signup(name="Ada")]


def test_form_post_asking_for_json_gets_the_envelope_not_a_redirect(
    bastion: Bastion, client: ActionClient
) -> None:
    """``Accept: application/json`` turns a form post into a script call: 422 JSON."""
    calls: list[Signup] = []

    @bastion.action(policy=public)
    def signup(data: Signup) -> SignupOut:
        calls.append(data)
        return SignupOut(**data.model_dump())

    response = client.post(
        client.url(signup),
        content=b"age=old&_next=%2Fdone",
        headers={**FORM, "referer": "http://127.0.0.1/signup"},
    )
    assert_json_reply(response, 422, invalid({"age": NOT_INT}))
    assert "location" not in response.headers
    assert calls == []


def test_json_post_without_accept_still_gets_json(bastion: Bastion, client: ActionClient) -> None:
    """Only form bodies are redirected: a JSON body always gets the JSON envelope."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(save), content=b'{"age": "old"}', headers={"content-type": "application/json"}
    )
    assert_json_reply(response, 422, invalid({"age": NOT_INT}))
    assert calls == []


def test_json_body_reserved_names_are_ordinary_unknown_fields(
    bastion: Bastion, client: ActionClient
) -> None:
    """``_next`` etc. are form fields only; in JSON they are unknown fields like any other."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    response = client.call(save, {"_next": "/x", "_csrf": "t"})
    assert_json_reply(response, 422, invalid({"_next": EXTRA, "_csrf": EXTRA}))
    assert calls == []


def test_refusal_reply_never_echoes_values_in_any_field(
    bastion: Bastion, client: ActionClient
) -> None:
    """A body that fails in many ways at once still carries no submitted value back."""
    calls: list[Profile] = []

    @bastion.action(policy=public)
    def save(data: Profile) -> Done:
        calls.append(data)
        return Done()

    body: dict[str, Any] = {
        "name": {"nested": MARKER},
        "age": MARKER,
        "address": {"city": [MARKER], "zip": 1},
        "tags": [MARKER, 1, {"k": MARKER}],
    }
    response = client.call(save, body)
    assert response.status_code == 422
    assert MARKER not in response.text
    assert set(response.json()["error"]["fields"]) == {
        "name",
        "age",
        "address.city",
        "address.zip",
        "tags.1",
        "tags.2",
    }
    assert calls == []


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: SecretStr = Field(min_length=12, max_length=64)


def test_attack_a_validation_message_does_not_tell_a_secrets_length(
    bastion: Bastion, client: ActionClient
) -> None:
    """Someone watching the reply to a sign-up learns how many characters the password
    typed had: pydantic says "not 7". bastion's message states the rule only (and says
    characters, not items)."""

    @bastion.action(policy=public)
    def sign_up(data: NewPassword) -> None: ...

    short = client.call(sign_up, {"password": "x" * 7})
    long = client.call(sign_up, {"password": "x" * 65})
    assert_reply(short, 422, invalid({"password": "Should have at least 12 characters."}))
    assert_reply(long, 422, invalid({"password": "Should have at most 64 characters."}))
    assert "7" not in short.text
    assert "65" not in long.text
