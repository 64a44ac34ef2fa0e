"""Logs people can read: uvicorn's access line names the action (``ActionNameFilter``),
and a refused call is one line on ``bastion.security`` with its action, stage, code,
client and digest in the record."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette

from bastion import Bastion, public
from bastion.logging import ActionNameFilter
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

ACCESS = '%s - "%s %s HTTP/%s" %d'


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def build() -> tuple[Bastion[Any], Starlette]:
    bastion: Bastion[Any] = Bastion(secret_key=SECRET, store=MemoryStore(), audit_sinks=[])

    @bastion.action(policy=public, rate=None)
    def create_post(data: Note) -> None:
        return None

    app = Starlette()
    bastion.mount(app)
    return bastion, app


def access(path: str) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    args = ("127.0.0.1:5000", "POST", path, "1.1", 200)
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, ACCESS, args, None)


def test_the_access_line_names_the_action() -> None:
    bastion, _ = build()
    action_id = bastion.registry.get("create_post").id
    record = access(f"/_actions/{action_id}?x=1")
    assert ActionNameFilter(bastion).filter(record) is True
    assert record.getMessage() == (
        f'127.0.0.1:5000 - "POST /_actions/{action_id}?x=1 [action create_post] HTTP/1.1" 200'
    )
    assert record.__dict__["action"] == "create_post"
    assert isinstance(record.args, tuple)
    assert len(record.args) == 5


@pytest.mark.parametrize("path", ["/_actions/not-an-id", "/about", "/_actions", "/x/abc"])
def test_other_lines_are_left_as_they_came(path: str) -> None:
    """An unknown ID is the client's text, not a name: nothing is added to it."""
    bastion, _ = build()
    record = access(path)
    assert ActionNameFilter(bastion).filter(record) is True
    assert record.getMessage() == f'127.0.0.1:5000 - "POST {path} HTTP/1.1" 200'
    assert "action" not in record.__dict__


def security(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bastion.security"]


FIELDS = ("action", "stage", "code", "client", "digest")


def test_a_csrf_refusal_is_one_line_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The CSRF check's own words, once, with what only the pipeline knows added."""
    bastion, app = build()
    caplog.set_level(logging.INFO, logger="bastion.security")
    with ActionClient(app, bastion, client_address="203.0.113.9") as client:
        client.token()
        assert client.call("create_post", {"text": "x"}, token=None).status_code == 403
    (record,) = security(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "refused create_post: CSRF token missing"
    assert {name: record.__dict__[name] for name in FIELDS} == {
        "action": "create_post",
        "stage": "CSRF token",
        "code": "csrf_failed",
        "client": "203.0.113.9",
        "digest": None,
    }
    assert (record.__dict__["event"], record.__dict__["reason"]) == ("csrf_refused", "missing")


def test_a_refusal_without_words_of_its_own_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A validation error: the pipeline's words, at INFO (everyday, not an attack)."""
    bastion, app = build()
    caplog.set_level(logging.INFO, logger="bastion.security")
    with ActionClient(app, bastion, client_address="203.0.113.9") as client:
        assert client.call("create_post", {"text": 1}).status_code == 422
    (record,) = security(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == "refused create_post: validation invalid"
    assert {name: record.__dict__[name] for name in FIELDS} == {
        "action": "create_post",
        "stage": "validation",
        "code": "invalid",
        "client": "203.0.113.9",
        "digest": None,
    }


def test_an_accepted_call_leaves_no_security_line(caplog: pytest.LogCaptureFixture) -> None:
    bastion, app = build()
    caplog.set_level(logging.DEBUG, logger="bastion.security")
    with ActionClient(app, bastion) as client:
        assert client.call("create_post", {"text": "x"}).status_code == 200
    assert security(caplog) == []
