"""Security headers for the app's pages, added in one line::

    bastion.add_security_headers(app)

Every response gets a Content-Security-Policy with a fresh nonce per request (templates
read it with ``csp_nonce()`` for their inline ``<script>`` and ``<style>``), framing
refused (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff``, a
``Referrer-Policy`` that keeps paths on the site, a ``Permissions-Policy`` that turns off
powerful features, and, over https, ``Strict-Transport-Security``. Headers the app set
itself are left alone.

One policy is strict everywhere unless the app relaxes a path by name. Pages that are not
the app's own, such as FastAPI's ``/docs`` (Swagger UI: scripts and styles from a CDN,
an inline script without a nonce), get a policy of their own for that path and the paths
below it, while every other page keeps the default::

    bastion.add_security_headers(app, csp_for={"/docs": SWAGGER_CSP})

A path names a whole segment: ``/docs`` covers ``/docs`` and ``/docs/oauth2-redirect``,
not ``/docsearch``; the longest path that matches decides. The path compared is the one
the app routes on (below ``root_path``), so a relaxed policy reaches no page the app does
not serve under that path. Only the CSP changes: framing, ``nosniff`` and the rest stay.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import ConfigurationError

__all__ = [
    "NONCE_KEY",
    "Policy",
    "SecurityHeaders",
    "check_paths",
    "check_policy",
    "default_csp",
    "policy_for",
]

Policy: TypeAlias = str | Callable[[str], str]
"""A Content-Security-Policy: a fixed string, or a function of the response's nonce."""

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


def check_policy(policy: Policy, where: str) -> Policy:
    """A fixed policy must be one header value: a CR or LF would end the header early."""
    if isinstance(policy, str):
        if not policy.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in policy):
            raise ConfigurationError(f"{where}: a CSP is one non-empty line of text")
        try:
            policy.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigurationError(f"{where}: a CSP header is Latin-1 text") from None
    elif not callable(policy):
        raise ConfigurationError(f"{where}: a CSP is a string or a function of the nonce")
    return policy


def check_paths(csp_for: Mapping[str, Policy]) -> tuple[tuple[str, Policy], ...]:
    """The relaxed paths, longest first (the most specific one decides)."""
    if isinstance(csp_for, str) or not isinstance(csp_for, Mapping):
        raise ConfigurationError('csp_for maps paths to policies: {"/docs": policy}')
    paths: dict[str, Policy] = {}
    for path, policy in csp_for.items():
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise ConfigurationError(f"csp_for: {path!r} is not a path like /docs")
        if any(c in path for c in "?#\\") or any(ord(c) <= 0x20 for c in path):
            raise ConfigurationError(f"csp_for: {path!r} is not a path like /docs")
        name = path.rstrip("/")
        if not name:
            raise ConfigurationError("csp_for: '/' is every path: give the policy as csp=")
        if name in paths:
            raise ConfigurationError(f"csp_for: {path!r} is given twice")
        paths[name] = check_policy(policy, f"csp_for[{path!r}]")
    return tuple(sorted(paths.items(), key=lambda item: len(item[0]), reverse=True))


def policy_for(path: str, paths: tuple[tuple[str, Policy], ...], default: Policy) -> Policy:
    """The policy of the longest relaxed path that ``path`` is, or is below; else the
    default."""
    for prefix, policy in paths:
        if path == prefix or path.startswith(prefix + "/"):
            return policy
    return default


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        https: Callable[[Scope], bool],
        csp: Policy = default_csp,
        csp_for: Mapping[str, Policy] | None = None,
    ) -> None:
        self.app = app
        self.https = https
        self.csp = check_policy(csp, "csp")
        self.csp_for = check_paths(csp_for if csp_for is not None else {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope[NONCE_KEY] = nonce
        policy = policy_for(_app_path(scope), self.csp_for, self.csp)
        value = policy if isinstance(policy, str) else policy(nonce)
        extra = [
            (b"content-security-policy", value.encode("latin-1")),
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


def _app_path(scope: Scope) -> str:
    """The path the app routes on: below ``root_path`` when the server put it in front."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path
