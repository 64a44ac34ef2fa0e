"""What many test modules check the same way: one definition each."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

__all__ = ["assert_reply"]


def assert_reply(response: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    """An action's JSON reply, exactly: the status, the envelope, and the headers every
    envelope carries (JSON, never cached, never sniffed)."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == envelope
