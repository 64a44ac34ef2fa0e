"""What many test modules check the same way: one definition each."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

__all__ = ["CROSS_ORIGIN", "CSRF_FAILED", "NO_SESSION", "assert_reply"]

# The refusals of the origin and CSRF guards, word for word: what actions, protected
# routes and the test client are all held to.
CROSS_ORIGIN = {
    "ok": False,
    "error": {
        "code": "cross_origin",
        "message": "This request did not come from an allowed origin.",
    },
}
CSRF_FAILED = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}
NO_SESSION = {
    "ok": False,
    "error": {
        "code": "no_session",
        "message": "Your session has ended or cookies are off. Reload the page and try again.",
    },
}


def assert_reply(response: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    """An action's JSON reply, exactly: the status, the envelope, and the headers every
    envelope carries (JSON, never cached, never sniffed)."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == envelope
