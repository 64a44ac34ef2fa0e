"""Every word bastion says to a caller, in one catalog an app can replace or translate.

``CATALOG`` maps each refusal's stable ``code`` to its English message; the exception
classes take their messages from it, so this is the one list there is. An app changes
the words with ``Bastion(messages=Messages(...))``::

    Messages(overrides={"forbidden": "Only the author may do that."})
    Messages(translate=translations.gettext)     # gettext or Babel: msgid -> text

``translate`` receives the English text as its msgid (``CATALOG``'s values are what to
put in a ``.pot`` file) and is called while the request is being answered, so a
``gettext`` that picks the request's locale from a context variable (as Starlette and
FastAPI i18n middlewares set one) answers each caller in their language. Field messages
of a 422 go through it too: bastion's own (in ``CATALOG``) and pydantic's.

A message an app writes itself (``ActionError("That title is taken.")``) is sent as it
is: the app chose those words, in its own language.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["CATALOG", "Messages"]

CATALOG: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bad_request": "The request could not be processed.",
        "malformed": "The request body is malformed.",
        "unauthorized": "Please sign in first.",
        "reauthentication_required": "Please confirm it is you: sign in again to do this.",
        "forbidden": "You are not allowed to do that.",
        "not_found": "Not found.",
        "method_not_allowed": "Actions are called with POST.",
        "payload_too_large": "The request is too large.",
        "unsupported_media_type": "This content type is not accepted here.",
        "invalid": "Some fields are invalid.",
        "rate_limited": "Too many requests. Try again later.",
        "unavailable": "The service is unavailable. Try again later.",
        "timeout": "The action took too long.",
        "internal": "Something went wrong.",
        "request_timeout": "The request took too long to arrive.",
        "csrf_failed": "This form has expired. Reload the page and try again.",
        "no_session": "Your session has ended or cookies are off. Reload the page and try again.",
        "cross_origin": "This request did not come from an allowed origin.",
        "forwarding_refused": "This request's forwarding headers are not accepted here.",
        "bound_invalid": "This form is no longer valid. Reload the page and try again.",
        "idempotency_in_progress": "This request is already being processed. Try again shortly.",
        "idempotency_key_reused": "This idempotency key was used for another request.",
        "idempotency_key_invalid": "This form is no longer valid. Reload the page and try again.",
        "invalid_token": "The API token is not valid: it is unknown, expired or revoked.",
        "insufficient_scope": "The API token's scopes do not include this action.",
        "token_not_accepted": "This action cannot be called with an API token.",
        "token_with_cookie": "Send an API token or a session cookie, not both.",
        "token_in_url": "API tokens go in the Authorization header, never in the URL.",
        "passkey_invalid": "This passkey could not be verified. Try again.",
        "passkey_no_challenge": "This passkey request is no longer valid. Start again.",
        "passkey_expired": "This passkey request took too long. Start again.",
        "passkey_rejected": "This passkey was not accepted.",
        "untrusted_host": "Invalid host header",
        # Field messages of a 422 that bastion writes (pydantic writes the others).
        "invalid_value": "Invalid value.",
        "too_short": "Should have at least {limit} {unit}.",
        "too_long": "Should have at most {limit} {unit}.",
        "characters": "characters",
        "items": "items",
    }
)


class Messages:
    """The words of every refusal: ``CATALOG``, with an app's ``overrides`` (by code)
    and ``translate`` (a gettext-style function) applied."""

    __slots__ = ("_overrides", "_translate")

    def __init__(
        self,
        *,
        overrides: Mapping[str, str] | None = None,
        translate: Callable[[str], str] | None = None,
    ) -> None:
        unknown = sorted(set(overrides or {}) - set(CATALOG))
        if unknown:
            # A misspelt code would silently change nothing.
            raise ValueError(f"Messages: no such message codes: {', '.join(unknown)}")
        self._overrides = dict(overrides or {})
        self._translate = translate

    def text(self, code: str) -> str:
        """The words for ``code``: overridden, then translated."""
        words = self._overrides.get(code, CATALOG[code])
        return self._translate(words) if self._translate is not None else words

    def of(self, code: str, message: str, default: str | None) -> str:
        """A refusal's message: the catalog's for ``code`` when ``message`` is its class's
        ``default`` (bastion's words), else the app's own ``message`` as it is."""
        if message == default and code in CATALOG:
            return self.text(code)
        return message

    def field(self, message: str) -> str:
        """A field message of a 422 (pydantic's English, or bastion's), translated."""
        return self._translate(message) if self._translate is not None else message


DEFAULT: Final = Messages()
"""The catalog as it is: English, no overrides."""
