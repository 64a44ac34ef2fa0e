"""The app's lifespan: bastion's start-up checks before the first request, its store
closed at shutdown; mounted on Starlette or served on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import jinja2
from conftest import SECRET
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message

from bastion import Bastion, ConfigurationError, public
from bastion.stores import MemoryStore, SQLiteStore


class Out(BaseModel):
    text: str


def with_fragment(bastion: Bastion) -> None:
    @bastion.action(policy=public, fragment="card.html")
    def card() -> Out:
        return Out(text="x")


def start(app: ASGIApp) -> tuple[list[Message], BaseException | None]:
    """Send the ASGI lifespan start-up to ``app`` as a server does; what it answered, and
    what it raised."""
    sent: list[Message] = []
    raised: list[BaseException] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            raise _Started

    async def run() -> None:
        try:
            await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        except _Started:
            pass
        except Exception as exc:
            raised.append(exc)

    anyio.run(run)
    return sent, raised[0] if raised else None


class _Started(Exception):
    """Stops the lifespan once start-up is complete (a server would wait for shutdown)."""


def test_a_fragment_without_templates_stops_the_mounted_app_at_start_up() -> None:
    """An action names an htmx fragment but templates() was never called: the app does not
    start (before, its first htmx call was a 500)."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    with_fragment(bastion)
    app = Starlette()
    bastion.mount(app)
    sent, raised = start(app)
    assert isinstance(raised, ConfigurationError)
    assert str(raised).startswith("action 'card' names a fragment: call bastion.templates(")
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]


def test_a_fragment_without_templates_stops_bastion_served_alone() -> None:
    """Served on its own, the server is told start-up failed, with the reason."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    with_fragment(bastion)
    sent, raised = start(bastion)
    assert raised is None
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "action 'card' names a fragment: call bastion.templates(...) "
            "before the app starts",
        }
    ]


def test_with_templates_the_app_starts() -> None:
    """Control: the same app with templates() given starts."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    with_fragment(bastion)
    bastion.templates(jinja2.Environment(autoescape=True))
    app = Starlette()
    bastion.mount(app)
    sent, _ = start(app)
    # (Starlette reports the test's own way of stopping after it as a failure: ignored.)
    assert sent[0] == {"type": "lifespan.startup.complete"}


def test_the_store_is_closed_at_shutdown_after_the_apps_own_lifespan(tmp_path: Path) -> None:
    """The app's own lifespan runs inside bastion's: it starts after the checks and ends
    before the store is closed (its shutdown may still need sessions)."""
    events: list[str] = []
    store = SQLiteStore(tmp_path)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        events.append("app started")
        yield
        events.append(f"app stopped, store open: {store._db is not None}")

    bastion = Bastion(secret_key=SECRET, store=store)
    app = Starlette(lifespan=lifespan)
    bastion.mount(app)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/_actions/health").status_code == 200
    assert events == ["app started", "app stopped, store open: True"]
    assert store._db is None  # closed
