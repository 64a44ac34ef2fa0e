"""Stage 9, execute: the handler runs with its context and input, within its time limit."""

import asyncio
import logging
import re
import threading
import time
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict

from bastion import (
    ActionError,
    Bastion,
    ConfigurationError,
    Context,
    Forbidden,
    NotFound,
    ValidationFailed,
    public,
)
from bastion.testing import ActionClient

TIMEOUT_504 = {"ok": False, "error": {"code": "timeout", "message": "The action took too long."}}
DIGEST = re.compile(r"[0-9a-f]{16}")


class Name(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Echo(BaseModel):
    name: str
    action: str


class Done(BaseModel):
    done: bool


def assert_internal(response: httpx.Response) -> str:
    """The generic 500 envelope, exactly; returns its digest."""
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


# --- timeouts ---------------------------------------------------------------------------


def test_async_handler_over_its_timeout_gets_504_and_is_cancelled(
    bastion: Bastion, client: ActionClient
) -> None:
    """An async handler still running at its deadline is cancelled; the caller gets 504."""
    seen: list[str] = []

    @bastion.action(policy=public, timeout=0.2)
    async def slow() -> Done:
        seen.append("started")
        try:
            await anyio.sleep(60)
            seen.append("finished")
        finally:
            seen.append("cleaned up")
        return Done(done=True)

    assert_reply(client.call(slow), 504, TIMEOUT_504)
    assert seen == ["started", "cleaned up"]


def test_sync_handler_over_its_timeout_gets_504_and_finishes_alone(
    bastion: Bastion, client: ActionClient
) -> None:
    """A sync handler cannot be stopped: the caller gets 504, its thread runs on alone."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    @bastion.action(policy=public, timeout=0.2)
    def slow_sync() -> Done:
        entered.set()
        release.wait(30)
        finished.set()
        return Done(done=True)

    try:
        assert_reply(client.call(slow_sync), 504, TIMEOUT_504)
        assert entered.is_set()
        assert not finished.is_set()
    finally:
        release.set()
    assert finished.wait(10)


def test_sync_handler_blocking_in_time_sleep_gets_504(
    bastion: Bastion, client: ActionClient
) -> None:
    """A sync handler stuck in a blocking call still yields a 504 to the caller."""

    @bastion.action(policy=public, timeout=0.2)
    def sleepy() -> None:
        time.sleep(1.5)

    assert_reply(client.call(sleepy), 504, TIMEOUT_504)


def test_timeout_is_per_action(bastion: Bastion, client: ActionClient) -> None:
    """A short timeout on one action does not apply to another."""

    @bastion.action(policy=public, timeout=0.2)
    async def slow() -> None:
        await anyio.sleep(60)

    @bastion.action(policy=public)
    async def fast() -> Done:
        await anyio.sleep(0)
        return Done(done=True)

    assert_reply(client.call(slow), 504, TIMEOUT_504)
    assert_reply(client.call(fast), 200, {"ok": True, "data": {"done": True}})


def test_504_is_not_logged_as_an_internal_error(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A timeout is a refusal with its own code, not an exception with a digest."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public, timeout=0.2)
    async def slow() -> None:
        await anyio.sleep(60)

    assert_reply(client.call(slow), 504, TIMEOUT_504)
    assert error_records(caplog) == []


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True, "1"])
def test_invalid_per_action_timeout_is_refused_at_registration(
    bastion: Bastion, timeout: Any
) -> None:
    """A timeout that is not a positive finite number of seconds stops registration."""
    with pytest.raises(ConfigurationError, match=r"action 'bad': timeout must be"):

        @bastion.action(policy=public, name="bad", timeout=timeout)
        async def bad() -> None: ...

    assert len(bastion.registry) == 0


# --- the handler's own exceptions -----------------------------------------------------------


def test_timeout_error_raised_by_async_handler_is_500_not_504(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A TimeoutError the handler raises itself is its own failure: 500 internal."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public, timeout=30)
    async def own_timeout() -> None:
        raise TimeoutError("upstream API did not answer")

    digest = assert_internal(client.call(own_timeout))
    [record] = error_records(caplog)
    assert record.getMessage() == f"action own_timeout failed [digest {digest}]"
    assert record.exc_info is not None
    assert record.exc_info[0] is TimeoutError


def test_timeout_error_raised_by_sync_handler_is_500_not_504(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The same for a sync handler: its own TimeoutError is a 500."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public, timeout=30)
    def own_timeout_sync() -> None:
        raise TimeoutError("socket timed out")

    digest = assert_internal(client.call(own_timeout_sync))
    [record] = error_records(caplog)
    assert record.getMessage() == f"action own_timeout_sync failed [digest {digest}]"
    assert record.exc_info is not None
    assert record.exc_info[0] is TimeoutError


def test_handler_own_anyio_deadline_expiring_is_500_not_504(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A deadline inside the handler (anyio.fail_after) is not bastion's: 500."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public, timeout=30)
    async def inner_deadline() -> None:
        with anyio.fail_after(0.05):
            await anyio.sleep(30)

    assert_internal(client.call(inner_deadline))
    [record] = error_records(caplog)
    assert record.exc_info is not None
    assert record.exc_info[0] is TimeoutError


def test_handler_own_asyncio_timeout_expiring_is_500_not_504(
    bastion: Bastion, client: ActionClient
) -> None:
    """asyncio.wait_for inside the handler timing out is a 500 as well."""

    @bastion.action(policy=public, timeout=30)
    async def inner_wait_for() -> None:
        await asyncio.wait_for(asyncio.sleep(30), timeout=0.05)

    assert_internal(client.call(inner_wait_for))


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_action_error_from_handler_is_sent_as_is(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """ActionError("That title is taken.", code="title_taken", status=409) reaches the
    client with its own status, code and message, and is not logged as a failure."""
    caplog.set_level(logging.ERROR, logger="bastion")
    refusal = ActionError("That title is taken.", code="title_taken", status=409)

    if kind == "async":

        @bastion.action(policy=public, name="create")
        async def create_async() -> None:
            raise refusal

    else:

        @bastion.action(policy=public, name="create")
        def create_sync() -> None:
            raise refusal

    assert_reply(
        client.call("create"),
        409,
        {"ok": False, "error": {"code": "title_taken", "message": "That title is taken."}},
    )
    assert error_records(caplog) == []


def test_action_error_with_5xx_status_and_headers_from_handler(
    bastion: Bastion, client: ActionClient
) -> None:
    """A handler's own 5xx refusal keeps its status, code, message and extra headers."""

    @bastion.action(policy=public)
    async def maintenance() -> None:
        raise ActionError(
            "Back in five minutes.", code="maintenance", status=503, headers={"Retry-After": "300"}
        )

    response = client.call(maintenance)
    assert_reply(
        response,
        503,
        {"ok": False, "error": {"code": "maintenance", "message": "Back in five minutes."}},
    )
    assert response.headers["retry-after"] == "300"


def test_builtin_refusals_from_handler_keep_their_defaults(
    bastion: Bastion, client: ActionClient
) -> None:
    """Forbidden() and NotFound("No such post.") raised in handlers: their status and code."""

    @bastion.action(policy=public)
    async def not_yours() -> None:
        raise Forbidden()

    @bastion.action(policy=public)
    def missing() -> None:
        raise NotFound("No such post.")

    assert_reply(
        client.call(not_yours),
        403,
        {"ok": False, "error": {"code": "forbidden", "message": "You are not allowed to do that."}},
    )
    assert_reply(
        client.call(missing),
        404,
        {"ok": False, "error": {"code": "not_found", "message": "No such post."}},
    )


def test_validation_failed_from_handler_sends_its_fields(
    bastion: Bastion, client: ActionClient
) -> None:
    """A post-validation check raising ValidationFailed answers 422 with its field messages."""

    @bastion.action(policy=public)
    async def register(data: Name) -> None:
        raise ValidationFailed({"name": "That name is taken."}, message="Pick another name.")

    assert_reply(
        client.call(register, {"name": "Ada"}),
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Pick another name.",
                "fields": {"name": "That name is taken."},
            },
        },
    )


@pytest.mark.parametrize("status", [0, 100, 200, 204, 302, 399, 600, 999, -400])
def test_action_error_rejects_a_status_outside_4xx_5xx(status: int) -> None:
    """ActionError(status=...) only takes 400-599: a refusal is never a success or redirect."""
    expected = rf"^an ActionError status must be 4xx or 5xx, not {status}$"
    with pytest.raises(ValueError, match=expected):
        ActionError("nope", status=status)


@pytest.mark.parametrize("status", [400, 409, 418, 499, 500, 503, 599])
def test_action_error_accepts_every_4xx_and_5xx_status(status: int) -> None:
    """The bounds 400 and 599 are both accepted."""
    assert ActionError("ok", status=status).status == status


# --- what the handler is given ----------------------------------------------------------------


def test_handler_gets_context_and_validated_input_by_annotation(
    bastion: Bastion, client: ActionClient
) -> None:
    """Parameters are matched by annotation, not by name or position."""

    @bastion.action(policy=public, name="echo")
    async def echo(payload: Name, c: Context) -> Echo:
        assert isinstance(payload, Name)
        return Echo(name=payload.name, action=c.action)

    assert_reply(
        client.call(echo, {"name": "Ada"}),
        200,
        {"ok": True, "data": {"name": "Ada", "action": "echo"}},
    )


def test_sync_handler_gets_context_and_input(bastion: Bastion, client: ActionClient) -> None:
    """A sync handler is called with the same keyword arguments as an async one."""

    @bastion.action(policy=public)
    def echo_sync(ctx: Context, data: Name) -> Echo:
        return Echo(name=data.name, action=ctx.action)

    assert_reply(
        client.call(echo_sync, {"name": "Grace"}),
        200,
        {"ok": True, "data": {"name": "Grace", "action": "echo_sync"}},
    )


def test_handler_without_parameters_is_called_with_no_arguments(
    bastion: Bastion, client: ActionClient
) -> None:
    """An action that declares neither input nor context is called with no arguments."""
    calls: list[str] = []

    @bastion.action(policy=public)
    async def ping() -> Done:
        calls.append("ping")
        return Done(done=True)

    assert_reply(client.call(ping), 200, {"ok": True, "data": {"done": True}})
    assert calls == ["ping"]


def test_handler_with_only_context(bastion: Bastion, client: ActionClient) -> None:
    """A handler that takes only the context is not handed the (empty) input."""

    @bastion.action(policy=public)
    async def who(ctx: Context) -> Echo:
        return Echo(name=str(ctx.client), action=ctx.action)

    expected = {"ok": True, "data": {"name": client.client_address, "action": "who"}}
    assert_reply(client.call(who), 200, expected)


def test_sync_handler_runs_off_the_event_loop_thread(
    bastion: Bastion, client: ActionClient
) -> None:
    """A sync handler runs in a worker thread, so it cannot block the event loop."""
    threads: dict[str, int] = {}

    @bastion.action(policy=public)
    async def on_loop() -> None:
        threads["async"] = threading.get_ident()

    @bastion.action(policy=public)
    def in_worker() -> None:
        threads["sync"] = threading.get_ident()

    assert_reply(client.call(on_loop), 200, {"ok": True, "data": None})
    assert_reply(client.call(in_worker), 200, {"ok": True, "data": None})
    assert threads["async"] != threads["sync"]


def test_handler_does_not_run_when_input_is_invalid(bastion: Bastion, client: ActionClient) -> None:
    """No handler code runs for a call that failed validation."""
    ran: list[str] = []

    @bastion.action(policy=public)
    async def greet(data: Name) -> None:
        ran.append(data.name)

    response = client.call(greet, {"name": 5})
    assert_reply(
        response,
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Some fields are invalid.",
                "fields": {"name": "Input should be a valid string"},
            },
        },
    )
    assert ran == []
