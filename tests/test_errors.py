"""Errors: the exception tree, and what the client and the server log see of each failure."""

import logging
import re
from typing import Any

import httpx2 as httpx
import pytest
from conftest import OTHER_SECRET, SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict

import bastion as bastion_pkg
from bastion import (
    ActionError,
    BadRequest,
    Bastion,
    BastionError,
    ConfigurationError,
    Context,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ReauthenticationRequired,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    errors,
    public,
)
from bastion.testing import ActionClient

DIGEST = re.compile(r"[0-9a-f]{16}")


class Name(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def assert_internal(response: httpx.Response) -> str:
    """Exactly {"ok": false, "error": {"code": "internal", "message": ..., "digest": <16 hex>}}."""
    digest = response.json()["error"].get("digest", "")
    assert DIGEST.fullmatch(digest)
    assert_reply(
        response,
        500,
        {
            "ok": False,
            "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
        },
    )
    return digest


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bastion" and r.levelno == logging.ERROR]


def record_for(caplog: pytest.LogCaptureFixture, digest: str) -> logging.LogRecord:
    [record] = [r for r in error_records(caplog) if digest in r.getMessage()]
    return record


# --- the tree --------------------------------------------------------------------------------

REFUSALS: list[tuple[type[ActionError], int, str, str]] = [
    (BadRequest, 400, "malformed", "The request body is malformed."),
    (Unauthorized, 401, "unauthorized", "Please sign in first."),
    (
        ReauthenticationRequired,
        401,
        "reauthentication_required",
        "Please confirm it is you: sign in again to do this.",
    ),
    (Forbidden, 403, "forbidden", "You are not allowed to do that."),
    (NotFound, 404, "not_found", "Not found."),
    (MethodNotAllowed, 405, "method_not_allowed", "Actions are called with POST."),
    (PayloadTooLarge, 413, "payload_too_large", "The request is too large."),
    (
        UnsupportedMediaType,
        415,
        "unsupported_media_type",
        "This content type is not accepted here.",
    ),
    (ValidationFailed, 422, "invalid", "Some fields are invalid."),
    (RateLimited, 429, "rate_limited", "Too many requests. Try again later."),
    (ServiceUnavailable, 503, "unavailable", "The service is unavailable. Try again later."),
    (Timeout, 504, "timeout", "The action took too long."),
]


def make(cls: type[ActionError]) -> ActionError:
    """An instance with the class's defaults (some constructors need an argument)."""
    if cls is ValidationFailed:
        return ValidationFailed({"name": "Field required"})
    if cls is RateLimited:
        return RateLimited(60)
    return cls()


def test_root_families() -> None:
    """BastionError is an Exception; ConfigurationError and ActionError are separate families."""
    assert issubclass(BastionError, Exception)
    assert issubclass(ConfigurationError, BastionError)
    assert issubclass(ActionError, BastionError)
    assert not issubclass(ConfigurationError, ActionError)
    assert not issubclass(ActionError, ConfigurationError)


@pytest.mark.parametrize(("cls", "status", "code", "message"), REFUSALS)
def test_each_refusal_class(cls: type[ActionError], status: int, code: str, message: str) -> None:
    """Each ActionError subclass: its place in the tree, status, code and public message."""
    assert issubclass(cls, ActionError)
    assert issubclass(cls, BastionError)
    assert not issubclass(cls, ConfigurationError)
    assert (cls.status, cls.code, cls.message) == (status, code, message)
    exc = make(cls)
    assert (exc.status, exc.code, exc.message) == (status, code, message)
    assert str(exc) == message
    assert repr(exc) == f"{cls.__name__}(status={status}, code={code!r})"


def test_tree_lists_every_class_and_the_package_exports_them() -> None:
    """errors.__all__ is the tree above, and bastion re-exports each class itself."""
    expected = {"ActionError", "BastionError", "ConfigurationError"} | {
        cls.__name__ for cls, *_ in REFUSALS
    }
    assert set(errors.__all__) == expected
    for name in expected:
        assert getattr(bastion_pkg, name) is getattr(errors, name)
        assert name in bastion_pkg.__all__


def test_action_error_defaults() -> None:
    """A bare ActionError is a 400 bad_request with a generic message and no headers."""
    exc = ActionError()
    assert (exc.status, exc.code, exc.message, exc.headers) == (
        400,
        "bad_request",
        "The request could not be processed.",
        {},
    )


def test_action_error_overrides_are_per_instance() -> None:
    """Message, code and status given to one instance do not change the class."""
    exc = Forbidden("Only the author may edit.", code="not_author", status=409)
    assert (exc.status, exc.code, exc.message) == (409, "not_author", "Only the author may edit.")
    assert (Forbidden.status, Forbidden.code, Forbidden.message) == (
        403,
        "forbidden",
        "You are not allowed to do that.",
    )
    assert Forbidden().message == "You are not allowed to do that."


def test_action_error_copies_its_headers() -> None:
    """The headers mapping is copied: changing the caller's dict later changes nothing."""
    given = {"X-Reason": "a"}
    exc = ActionError(headers=given)
    given["X-Reason"] = "b"
    assert exc.headers == {"X-Reason": "a"}


@pytest.mark.parametrize("status", [200, 301, 399, 600])
def test_action_error_rejects_non_error_status(status: int) -> None:
    """A status outside 400-599 is a programming error, refused at once."""
    with pytest.raises(ValueError, match="must be 4xx or 5xx"):
        ActionError(status=status)


@pytest.mark.parametrize(
    ("retry_after", "header"), [(30, "30"), (1, "1"), (0, "1"), (-5, "1"), (2.9, "2")]
)
def test_rate_limited_retry_after_header(retry_after: float, header: str) -> None:
    """Retry-After is a whole number of seconds, at least 1."""
    exc = RateLimited(retry_after)  # type: ignore[arg-type]
    assert exc.headers == {"Retry-After": header}
    assert exc.retry_after == retry_after


def test_rate_limited_custom_message() -> None:
    exc = RateLimited(10, "Slow down.")
    assert (exc.status, exc.code, exc.message) == (429, "rate_limited", "Slow down.")


def test_method_not_allowed_allow_header() -> None:
    """MethodNotAllowed always says Allow: POST."""
    assert MethodNotAllowed().headers == {"Allow": "POST"}


def test_validation_failed_fields_are_copied() -> None:
    fields = {"title": "Too long."}
    exc = ValidationFailed(fields, message="Check the form.")
    fields["body"] = "added later"
    assert exc.fields == {"title": "Too long."}
    assert exc.message == "Check the form."


# --- each refusal on the wire ---------------------------------------------------------------


@pytest.mark.parametrize(("cls", "status", "code", "message"), REFUSALS)
def test_each_refusal_raised_by_a_handler_on_the_wire(
    bastion: Bastion,
    client: ActionClient,
    caplog: pytest.LogCaptureFixture,
    cls: type[ActionError],
    status: int,
    code: str,
    message: str,
) -> None:
    """A handler raising each class gets its status, code, message (and fields/headers),
    and a refusal is not logged as an error."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public)
    async def refuse() -> None:
        raise make(cls)

    response = client.call(refuse)
    error: dict[str, Any] = {"code": code, "message": message}
    if cls is ValidationFailed:
        error["fields"] = {"name": "Field required"}
    assert_reply(response, status, {"ok": False, "error": error})
    if cls is RateLimited:
        assert response.headers["retry-after"] == "60"
    else:
        assert "retry-after" not in response.headers
    if cls is MethodNotAllowed:
        assert response.headers["allow"] == "POST"
    else:
        assert "allow" not in response.headers
    assert error_records(caplog) == []


def test_rate_limited_on_the_wire(bastion: Bastion, client: ActionClient) -> None:
    """429 with Retry-After: 120 and the rate_limited envelope."""

    @bastion.action(policy=public)
    async def limited() -> None:
        raise RateLimited(120)

    response = client.call(limited)
    assert_reply(
        response,
        429,
        {
            "ok": False,
            "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
        },
    )
    assert response.headers["retry-after"] == "120"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_with_allow_post(
    bastion: Bastion, client: ActionClient, method: str
) -> None:
    """A known action called with another method: 405, Allow: POST, and the handler not run."""
    ran: list[bool] = []

    @bastion.action(policy=public)
    async def ping() -> None:
        ran.append(True)

    response = client.request(method, client.url(ping))
    assert_reply(
        response,
        405,
        {
            "ok": False,
            "error": {"code": "method_not_allowed", "message": "Actions are called with POST."},
        },
    )
    assert response.headers["allow"] == "POST"
    assert ran == []


@pytest.mark.parametrize(
    "path", ["/_actions/unknown", "/_actions/AAAAAAAAAAAAAAAAAAAAAAAA", "/_actions/a/b"]
)
def test_unknown_action_is_a_bare_404(bastion: Bastion, client: ActionClient, path: str) -> None:
    """Unknown IDs answer 404 with no hint, whatever the method."""

    @bastion.action(policy=public)
    async def ping() -> None: ...

    for method in ("POST", "GET"):
        response = client.request(method, path, json={})
        assert_reply(
            response, 404, {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
        )
        assert "allow" not in response.headers


def test_action_id_under_another_secret_is_404(bastion: Bastion, client: ActionClient) -> None:
    """The ID another secret gives the same function is unknown here."""

    async def ping() -> None: ...

    other = Bastion(secret_key=OTHER_SECRET)
    other.action(policy=public)(ping)
    bastion.action(policy=public)(ping)
    assert other.url_for(ping) != bastion.url_for(ping)
    response = client.post(other.url_for(ping), json={})
    assert_reply(
        response, 404, {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
    )


def test_policy_denial_is_403(bastion: Bastion, client: ActionClient) -> None:
    """A policy answering anything but True refuses with 403, before the handler."""
    ran: list[bool] = []

    @bastion.action(policy=lambda ctx: "yes")  # type: ignore[arg-type, return-value]
    async def guarded() -> None:
        ran.append(True)

    assert_reply(
        client.call(guarded),
        403,
        {"ok": False, "error": {"code": "forbidden", "message": "You are not allowed to do that."}},
    )
    assert ran == []


# --- anything else is a 500 with a digest -------------------------------------------------


class LeakyError(Exception):
    def __str__(self) -> str:
        return "token=sk_live_hunter2 in /srv/app/secrets.py"


FAILURES: list[BaseException] = [
    RuntimeError("database connection lost: postgresql://app:hunter2@db/prod"),
    KeyError("password"),
    ValueError("hunter2"),
    ZeroDivisionError("division by zero"),
    LeakyError(),
    PermissionError(13, "Permission denied", "/etc/shadow"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_unexpected_exception_is_exactly_the_generic_500(
    bastion: Bastion,
    client: ActionClient,
    caplog: pytest.LogCaptureFixture,
    failure: BaseException,
    kind: str,
) -> None:
    """Any non-ActionError: the exact generic envelope; its type, message and traceback
    only in the server log, under the same digest."""
    caplog.set_level(logging.ERROR, logger="bastion")

    if kind == "async":

        @bastion.action(policy=public, name="fails")
        async def fails_async() -> None:
            raise failure

    else:

        @bastion.action(policy=public, name="fails")
        def fails_sync() -> None:
            raise failure

    response = client.call("fails")
    digest = assert_internal(response)
    for leaked in ("hunter2", "password", "Traceback", 'File "', ".py", type(failure).__name__):
        assert leaked not in response.text

    record = record_for(caplog, digest)
    assert record.getMessage() == f"action fails failed [digest {digest}]"
    assert record.digest == digest  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert record.exc_info[1] is failure
    formatted = logging.Formatter().formatException(record.exc_info)
    assert formatted.startswith("Traceback (most recent call last):")
    assert f"{type(failure).__name__}: {failure}" in formatted
    assert digest in caplog.text
    assert "Traceback" in caplog.text


def test_every_call_gets_its_own_digest(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Five failing calls: five different digests, each logged once with its traceback."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public)
    async def flaky() -> None:
        raise RuntimeError("always")

    digests = [assert_internal(client.call(flaky)) for _ in range(5)]
    assert len(set(digests)) == 5
    records = error_records(caplog)
    assert [r.digest for r in records] == digests  # type: ignore[attr-defined]
    for record, digest in zip(records, digests, strict=True):
        assert record.getMessage() == f"action flaky failed [digest {digest}]"
        assert record.exc_info is not None
        assert "Traceback" in logging.Formatter().formatException(record.exc_info)


def test_exception_in_a_policy_is_the_generic_500(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy that crashes fails closed: 500 with a digest, and the handler never runs."""
    caplog.set_level(logging.ERROR, logger="bastion")
    ran: list[bool] = []

    def broken_policy(ctx: Context) -> bool:
        raise LookupError("role table missing")

    @bastion.action(policy=broken_policy)
    async def guarded() -> None:
        ran.append(True)

    digest = assert_internal(client.call(guarded))
    record = record_for(caplog, digest)
    assert record.exc_info is not None
    assert record.exc_info[0] is LookupError
    assert ran == []


def test_debug_mode_adds_type_and_message(caplog: pytest.LogCaptureFixture) -> None:
    """Under debug (loopback only) the 500 also carries the exception type and message."""
    caplog.set_level(logging.ERROR, logger="bastion")
    debug = Bastion(secret_key=SECRET, debug=True)

    @debug.action(policy=public)
    async def boom() -> None:
        raise RuntimeError("disk full")

    with ActionClient(mounted(debug), debug) as client:
        response = client.call(boom)
    digest = response.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    assert_reply(
        response,
        500,
        {
            "ok": False,
            "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
            "debug": {"type": "RuntimeError", "message": "disk full"},
        },
    )
    assert record_for(caplog, digest).exc_info is not None


def test_refusal_headers_cannot_drop_the_security_headers(
    bastion: Bastion, client: ActionClient
) -> None:
    """An ActionError's own headers are added, but never replace no-store and nosniff."""

    @bastion.action(policy=public)
    async def cached() -> None:
        raise ActionError(
            "Gone.",
            code="gone",
            status=410,
            headers={
                "Cache-Control": "public, max-age=3600",
                "X-Content-Type-Options": "",
                "X-Reason": "archived",
            },
        )

    response = client.call(cached)
    assert_reply(response, 410, {"ok": False, "error": {"code": "gone", "message": "Gone."}})
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers["x-reason"] == "archived"


def test_validation_failure_of_input_is_422_not_500(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad input is the client's error: 422 with fields, nothing logged."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public)
    async def greet(data: Name) -> None: ...

    assert_reply(
        client.call(greet, {}),
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Some fields are invalid.",
                "fields": {"name": "Field required"},
            },
        },
    )
    assert error_records(caplog) == []
