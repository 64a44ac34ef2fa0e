"""Bastion's exceptions.

Two families, kept apart on purpose::

    BastionError
    ├── ConfigurationError        a mistake in the app's set-up, raised at start-up
    └── ActionError               a refusal sent to the client: status, code, public message
        ├── BadRequest            400 malformed
        ├── Unauthorized          401 unauthorized
        ├── Forbidden             403 forbidden
        ├── NotFound              404 not_found
        ├── MethodNotAllowed      405 method_not_allowed
        ├── PayloadTooLarge       413 payload_too_large
        ├── UnsupportedMediaType  415 unsupported_media_type
        ├── ValidationFailed      422 invalid, with a message per field
        ├── RateLimited           429 rate_limited, with Retry-After
        ├── ServiceUnavailable    503 unavailable
        └── Timeout               504 timeout

An ``ActionError``'s message is public: it is sent to the client as it is, so it must
never carry a submitted value, a secret or an internal detail. bastion's own messages
come from ``bastion.messages.CATALOG``, which an app can replace or translate. Handlers
raise ``ActionError("That title is taken.", code="title_taken", status=409)`` to refuse
with their own words. Any exception outside this tree becomes a generic 500 whose only
link to the traceback in the server log is its digest.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.messages import CATALOG

__all__ = [
    "ActionError",
    "BadRequest",
    "BastionError",
    "ConfigurationError",
    "Forbidden",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ReauthenticationRequired",
    "ServiceUnavailable",
    "Timeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class BastionError(Exception):
    """The root of every exception bastion raises."""


class ConfigurationError(BastionError):
    """The app is set up in a way bastion refuses to run: fix the code or the environment."""


class ActionError(BastionError):
    """A refusal the client is told about.

    ``message`` is public and sent as it is; ``code`` is a stable machine-readable
    word; ``status`` is the HTTP status of the reply.
    """

    status: int = 400
    code: str = "bad_request"
    message: str = CATALOG["bad_request"]

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            if not 400 <= status <= 599:
                raise ValueError(f"an ActionError status must be 4xx or 5xx, not {status}")
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r})"


class BadRequest(ActionError):
    status = 400
    code = "malformed"
    message = CATALOG["malformed"]


class Unauthorized(ActionError):
    status = 401
    code = "unauthorized"
    message = CATALOG["unauthorized"]


class ReauthenticationRequired(ActionError):
    """The action needs a recent log-in (``recent_login(...)``) and this session's is
    older: the caller confirms who they are (signs in again), then retries. A plain form
    is sent to ``page`` (with ``?next=`` the page it came from) when the policy names one."""

    status = 401
    code = "reauthentication_required"
    message = CATALOG["reauthentication_required"]

    def __init__(self, page: str | None = None) -> None:
        super().__init__()
        self.page = page


class Forbidden(ActionError):
    status = 403
    code = "forbidden"
    message = CATALOG["forbidden"]


class NotFound(ActionError):
    status = 404
    code = "not_found"
    message = CATALOG["not_found"]


class MethodNotAllowed(ActionError):
    status = 405
    code = "method_not_allowed"
    message = CATALOG["method_not_allowed"]

    def __init__(self) -> None:
        super().__init__(headers={"Allow": "POST"})


class PayloadTooLarge(ActionError):
    status = 413
    code = "payload_too_large"
    message = CATALOG["payload_too_large"]


class UnsupportedMediaType(ActionError):
    status = 415
    code = "unsupported_media_type"
    message = CATALOG["unsupported_media_type"]


class ValidationFailed(ActionError):
    """The input did not match the action's model; ``fields`` maps each field path to why."""

    status = 422
    code = "invalid"
    message = CATALOG["invalid"]

    def __init__(self, fields: Mapping[str, str], message: str | None = None) -> None:
        super().__init__(message)
        self.fields: dict[str, str] = dict(fields)


class RateLimited(ActionError):
    status = 429
    code = "rate_limited"
    message = CATALOG["rate_limited"]

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after)))})
        self.retry_after = retry_after


class ServiceUnavailable(ActionError):
    status = 503
    code = "unavailable"
    message = CATALOG["unavailable"]


class Timeout(ActionError):
    status = 504
    code = "timeout"
    message = CATALOG["timeout"]


class Internal(ActionError):
    """What a caller is told of any failure outside this tree: a generic 500, whose digest
    is the link to the traceback in the server log. Not raised by apps."""

    status = 500
    code = "internal"
    message = CATALOG["internal"]
