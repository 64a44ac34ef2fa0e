"""Test your own actions over the real ASGI stack, by function rather than by ID.

::

    from bastion.testing import ActionClient

    def test_greet():
        client = ActionClient(app, bastion)
        reply = client.call(greet, {"name": "Ada"})
        assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx2 as httpx
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from .app import Bastion

__all__ = ["ActionClient"]


class ActionClient(TestClient):
    """A Starlette ``TestClient`` that knows the app's actions.

    It talks to ``http://127.0.0.1`` (a loopback server, so debug mode is allowed)
    and never follows redirects, so a plain form post's 303 can be inspected.
    """

    def __init__(self, app: ASGIApp, bastion: Bastion, **kwargs: Any) -> None:
        kwargs.setdefault("base_url", "http://127.0.0.1")
        kwargs.setdefault("follow_redirects", False)
        super().__init__(app, **kwargs)
        self.bastion = bastion

    def url(self, action: Callable[..., Any] | str) -> str:
        return self.bastion.url_for(action)

    def call(
        self,
        action: Callable[..., Any] | str,
        data: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call an action as a script does: a JSON body, a JSON reply."""
        return self.post(
            self.url(action),
            json=dict(data or {}),
            headers={"Accept": "application/json", **(headers or {})},
        )

    def submit(
        self,
        action: Callable[..., Any] | str,
        fields: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Post a form as a browser without JavaScript does: the reply is a 303."""
        return self.post(self.url(action), data=dict(fields or {}), files=files, headers=headers)
