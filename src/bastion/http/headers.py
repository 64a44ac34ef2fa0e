"""Security headers for the app's pages, added in one line::

    bastion.add_security_headers(app)

Every response gets a Content-Security-Policy with a fresh nonce per request (templates
read it with ``csp_nonce()`` for their inline ``<script>`` and ``<style>``), framing
refused (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff``, a
``Referrer-Policy`` that keeps paths on the site, a ``Permissions-Policy`` that turns off
powerful features, and, over https, ``Strict-Transport-Security``. Headers the app set
itself are left alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["NONCE_KEY", "SecurityHeaders", "default_csp"]

NONCE_KEY: Final = "bastion.csp_nonce"

PERMISSIONS_POLICY: Final = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
HSTS: Final = "max-age=63072000; includeSubDomains"


def default_csp(nonce: str) -> str:
    """Same-origin everything; inline code only with this response's nonce."""
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        https: Callable[[Scope], bool],
        csp: Callable[[str], str] = default_csp,
    ) -> None:
        self.app = app
        self.https = https
        self.csp = csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope[NONCE_KEY] = nonce
        extra = [
            (b"content-security-policy", self.csp(nonce).encode("latin-1")),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"permissions-policy", PERMISSIONS_POLICY.encode("latin-1")),
        ]
        if self.https(scope):
            extra.append((b"strict-transport-security", HSTS.encode("latin-1")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
