"""Pipeline stage 18: the reply, in the form the caller asked for.

Scripts get the JSON envelope; a plain HTML form (no JavaScript) gets ``303 See
Other`` so the browser lands on a page, never on raw JSON. Every reply carries
``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import functools
import html
import json
from typing import Any, Final
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response

from bastion.errors import ActionError, ReauthenticationRequired, ValidationFailed

__all__ = [
    "error",
    "htmx_error",
    "htmx_success",
    "is_htmx",
    "redirect",
    "safe_next",
    "success",
    "wants_redirect",
]

_SECURITY_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_MAX_NEXT: Final = 2048


def is_htmx(headers: Headers) -> bool:
    """A request htmx sent: it swaps HTML into the page, so it gets HTML back."""
    return headers.get("hx-request") == "true"


def wants_redirect(headers: Headers, form_post: bool) -> bool:
    """A browser's plain form post, as opposed to a script asking for JSON (or htmx)."""
    return (
        form_post and "application/json" not in headers.get("accept", "") and not is_htmx(headers)
    )


def htmx_success(fragment: str | None, next_path: str | None) -> Response:
    """What htmx swaps in after a success, by one rule: the action's fragment, if it has
    one (``next_path`` is then for the same form posted without htmx, answered 303 there);
    else ``HX-Redirect`` to ``next_path`` (a ``-> Redirect`` handler's path, else the
    form's checked ``_next``), which htmx follows with a page load; else an empty 200,
    which an ``outerHTML`` swap turns into removing its target. Never a 3xx: the browser
    would follow it inside htmx's request and swap the next page into the target."""
    if fragment is not None:
        return Response(fragment, 200, _SECURITY_HEADERS, media_type="text/html")
    headers = dict(_SECURITY_HEADERS)
    if next_path is not None:
        headers["HX-Redirect"] = next_path
    return Response(b"", 200, headers, media_type="text/html")


def htmx_error(
    exc: ActionError, *, digest: str | None = None, message: str | None = None
) -> Response:
    """The public message (``message``: in the app's words) as a small alert, with the
    refusal's own status, so htmx and the page's scripts see a refusal as one. htmx swaps
    no 4xx/5xx by default; the page's ``htmx_config()`` has it put this one in the
    ``data-bastion-message`` slot of the form that was sent. No ``HX-Retarget`` or
    ``HX-Reswap``: where the message belongs is the page's to say, not the server's."""
    reference = f" (reference {digest})" if digest else ""
    text = html.escape(exc.message if message is None else message)
    body = f'<p class="bastion-error" role="alert">{text}{reference}</p>'
    response = Response(body, exc.status, _SECURITY_HEADERS, media_type="text/html")
    response.headers.update(exc.headers)
    response.headers.update(_SECURITY_HEADERS)
    return response


def success(data: bytes, *, redirect: str | None = None) -> Response:
    """The success envelope; with ``redirect``, the path a ``-> Redirect`` handler chose
    (the script follows it, as ``bastion.js`` does)."""
    if redirect is None:
        return _json(200, b'{"ok":true,"data":' + data + b"}")
    return _json(
        200, b'{"ok":true,"data":' + data + b',"redirect":' + json.dumps(redirect).encode() + b"}"
    )


def error(
    exc: ActionError,
    *,
    digest: str | None = None,
    debug: Any = None,
    message: str | None = None,
) -> Response:
    """The error envelope; ``message`` is the refusal's words as the app's catalog has
    them (``bastion.messages``), by default the exception's own."""
    words = exc.message if message is None else message
    if (
        digest is None
        and debug is None
        and not isinstance(exc, ValidationFailed | ReauthenticationRequired)
        and exc.message == type(exc).message
    ):
        # A refusal in its class's own words (the catalog's, the app's): the same bytes
        # every time, kept. Words a handler wrote itself (which may quote input) are not.
        response = _json(exc.status, _plain_envelope(exc.code, words))
    else:
        response = _json(exc.status, _envelope(exc, words, digest, debug))
    if exc.headers:
        response.headers.update(exc.headers)
        # An error's own headers (Retry-After, Allow) never undo the two every reply carries.
        response.headers.update(_SECURITY_HEADERS)
    return response


@functools.lru_cache(maxsize=256)
def _plain_envelope(code: str, message: str) -> bytes:
    return _COMPACT.encode({"ok": False, "error": {"code": code, "message": message}}).encode()


def _envelope(exc: ActionError, message: str, digest: str | None, debug: Any) -> bytes:
    body: dict[str, Any] = {
        "code": exc.code,
        "message": message,
    }
    if digest is not None:
        body["digest"] = digest
    if isinstance(exc, ValidationFailed):
        body["fields"] = exc.fields
    elif isinstance(exc, ReauthenticationRequired) and exc.page is not None:
        # Where the caller signs in again (recent_login(page=...)); bastion.js goes there.
        body["page"] = exc.page
    envelope: dict[str, Any] = {"ok": False, "error": body}
    if debug is not None:
        envelope["debug"] = debug
    return _COMPACT.encode(envelope).encode()


_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(..., separators=...)`` builds an encoder on every call; this one is made
once (a refusal's envelope is on the path a flood of forged calls takes)."""


def redirect(location: str) -> Response:
    return Response(status_code=303, headers={"Location": location, **_SECURITY_HEADERS})


class _JSON(Response):
    """A JSON reply with its headers laid out once: the same bytes Starlette would write,
    without parsing a header mapping on every call (``headers`` still reads and updates
    them, as on any ``Response``)."""

    media_type = "application/json"

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]


_JSON_HEADERS: Final = (
    *((name.lower().encode(), value.encode()) for name, value in _SECURITY_HEADERS.items()),
    (b"content-type", b"application/json"),
)


def _json(status: int, body: bytes) -> Response:
    return _JSON(status, body)


def safe_next(value: str | None) -> str | None:
    """A same-origin relative path, or ``None``.

    Only ``/path?query#fragment`` passes. Refused: absolute URLs, ``//host`` and
    ``/\\host`` (browsers read both as another host), any scheme, backslashes,
    control characters (CR/LF would split headers), and anything over 2 KiB.
    A URL is never built from ``Host`` or ``X-Forwarded-*``.
    """
    if not value or len(value) > _MAX_NEXT or not value.startswith("/"):
        return None
    if value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    # Location is a Latin-1 header: percent-encode the rest (spaces, non-ASCII).
    return quote(value, safe="/?#[]@!$&'()*+,;=%:-._~")


def referer_path(headers: Headers) -> str | None:
    """The path of the page the form was posted from (its host is never used)."""
    referer = headers.get("referer")
    if not referer:
        return None
    try:
        parts = urlsplit(referer)
    except ValueError:
        return None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return safe_next(path)
