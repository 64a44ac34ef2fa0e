"""Configuration: frozen, keyword-only dataclasses with the secure choice as the default.

Every field has a docstring; every invalid value raises ``ConfigurationError`` when
the object is built, so a mistake stops the app at start-up instead of at the first
request.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.crypto.keys import Secret
from bastion.errors import ConfigurationError

__all__ = ["Config", "Environment", "Limits", "SessionConfig"]

KiB = 1024
MiB = 1024 * KiB

# Segments of unreserved URL characters only: no '{…}' (a Starlette path parameter),
# no '?', '#', '%' or spaces, and no empty, '.' or '..' segment.
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = re.compile(r"(?:/(?!\.{1,2}(?:/|$))[A-Za-z0-9._~-]+)+")


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Bounds on what one call may make bastion read, parse or hold.

    A hostile body costs at most these; each excess is refused before any handler runs.
    """

    max_body_bytes: int = 1 * MiB
    """Bytes of request body read for one call, whatever the content type, counted while
    streaming (a missing or lying ``Content-Length`` changes nothing). Excess: 413."""

    max_pre_token_bytes: int = 64 * KiB
    """Bytes of a plain form read before its CSRF token is checked. A form carries its
    token in the ``_csrf`` field, so some of its body must be read first; the field must
    come within these bytes (``csrf_input()`` first in the form, as browsers send fields
    in the page's order), else the call is refused 403 having read no more. A form of
    this size or less is read whole. A script's token is a header: nothing of its body
    is read before the check."""

    max_fields: int = 1000
    """Form fields, multipart parts or JSON object keys in one body. Excess: 413."""

    max_field_name_length: int = 128
    """Characters in one field name. Longer names: 400."""

    max_json_depth: int = 32
    """Nesting of JSON arrays and objects. Deeper: 400."""

    max_files: int = 10
    """Uploaded files in one multipart body (only for inputs that declare uploads). Excess: 413."""

    max_file_bytes: int = 10 * MiB
    """Bytes of one uploaded file. Excess: 413. The body cap applies too, so an action
    taking large files raises ``max_body_bytes`` as well."""

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_pre_token_bytes",
            "max_fields",
            "max_field_name_length",
            "max_json_depth",
            "max_files",
            "max_file_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Limits.{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionConfig:
    """The session cookie and how long a session lives."""

    cookie_name: str = "bastion_session"
    """The cookie's name. Over https it gets the ``__Host-`` prefix, which browsers
    only accept from a secure origin, for ``Path=/`` and without a ``Domain``."""

    idle_timeout: float = 24 * 3600.0
    """Seconds without a request after which the session is gone."""

    absolute_timeout: float = 7 * 24 * 3600.0
    """Seconds after creation after which the session is gone, however active."""

    max_per_user: int = 1000
    """Signed-in sessions one user may have at once. Each is listed under its user so
    that ``end_sessions`` can end them all, on every host; a sign-in past this ends the
    user's oldest session rather than leave one that could not be ended."""

    def __post_init__(self) -> None:
        value = self.max_per_user
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(
                f"SessionConfig.max_per_user must be a positive integer, not {value!r}"
            )
        if not (isinstance(self.cookie_name, str) and _COOKIE_NAME.fullmatch(self.cookie_name)):
            raise ConfigurationError(
                f"SessionConfig.cookie_name must be letters, digits, '_' or '-', "
                f"not {self.cookie_name!r}"
            )
        check_timeout(self.idle_timeout, "SessionConfig.idle_timeout")
        check_timeout(self.absolute_timeout, "SessionConfig.absolute_timeout")


def check_timeout(timeout: float, where: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"{where} must be a number of seconds, not {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"{where} must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """Everything a ``Bastion`` is set up with, resolved and checked."""

    secret_key: Secret
    """The root secret (at least 32 bytes). Every purpose key is derived from it with
    HKDF, so an action ID can never verify as anything else."""

    secret_key_fallbacks: tuple[Secret, ...] = ()
    """Older root secrets, newest first: they still verify and open what they made,
    so a key can be rotated without breaking forms already rendered."""

    debug: bool = False
    """Adds the exception type and message to 500 replies under ``debug`` and allows an
    ephemeral key. Refused unless the server listens on a loopback address."""

    prefix: str = "/_actions"
    """Where actions are mounted: an action answers at ``POST {prefix}/{action_id}``."""

    limits: Limits = field(default_factory=Limits)
    """The default bounds for every action; an action may override some of them."""

    timeout: float = 30.0
    """Seconds a handler may run before the call is answered 504."""

    allowed_origins: tuple[str, ...] = ()
    """The origins (``scheme://host:port``) pages that call actions are served from.
    A call whose ``Origin`` (or ``Referer``) is not one of them is refused. Required
    outside debug mode; in debug mode, the loopback origin being served."""

    trusted_hosts: tuple[str, ...] | None = None
    """When set, a request whose ``Host`` is not listed gets 400. Unset, ``Host``
    decides nothing at all."""

    https: bool | None = None
    """Whether the app is served over https (``Secure`` and ``__Host-`` cookies).
    ``None``: from the connection's own scheme, which only a TLS listener or a proxy
    the server is told to trust sets; never from a client header."""

    sessions: SessionConfig = field(default_factory=SessionConfig)
    """The session cookie and timeouts."""

    def __post_init__(self) -> None:
        if not (isinstance(self.prefix, str) and _PREFIX.fullmatch(self.prefix)):
            raise ConfigurationError(
                "prefix must be a plain path that starts with '/' and does not end with one "
                f"(letters, digits, '-', '_', '.', '~' between slashes), not {self.prefix!r}"
            )
        check_timeout(self.timeout, "timeout")


_TRUE: frozenset[str] = frozenset({"1", "true", "yes", "on"})
_FALSE: frozenset[str] = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Environment:
    """What bastion takes from the environment, read in this one place.

    ``Bastion()`` reads it once (``Environment.read()``) and uses each value only for an
    argument the app did not pass: ``Bastion(store=...)`` wins over ``BASTION_STORE``.
    So the quickstart, the demo board and an app of your own are configured alike, and
    a process started with the same variables behaves the same whichever app it serves.
    Unset or empty variables are ``None``; a value that cannot mean anything stops the
    app at start-up, naming the variable.
    """

    secret_key: str | None = None
    """``BASTION_SECRET_KEY``: the root secret (``bastion keygen`` makes one)."""

    secret_key_fallbacks: tuple[str, ...] | None = None
    """``BASTION_SECRET_KEY_FALLBACKS``: older secrets, comma separated, newest first,
    which still verify what they made (rotation without signing anyone out)."""

    allowed_origins: tuple[str, ...] | None = None
    """``BASTION_ALLOWED_ORIGINS``: comma separated (``https://board.example``)."""

    trusted_hosts: tuple[str, ...] | None = None
    """``BASTION_TRUSTED_HOSTS``: comma separated host names (``*`` for any); by
    default the hosts of the allowed origins."""

    trusted_proxies: tuple[str, ...] | None = None
    """``BASTION_TRUSTED_PROXIES``: comma separated addresses or CIDR networks whose
    ``X-Forwarded-For`` is believed (the reverse proxy in front of the app)."""

    https: bool | None = None
    """``BASTION_HTTPS``: ``true`` or ``false`` (also ``1``/``0``, ``yes``/``no``): the
    app is served over https, behind a proxy that terminates TLS."""

    store: str | None = None
    """``BASTION_STORE``: ``redis://…`` or ``redis+cluster://host:port[,…]`` (several
    processes or hosts), ``memory://``, ``sqlite:///dir``; unset, SQLite in the data
    directory. Anything else stops the app."""

    data_dir: str | None = None
    """``BASTION_DATA_DIR``: where the default SQLite store keeps its file (``data``)."""

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The ``BASTION_*`` variables of ``environ`` (by default ``os.environ``)."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def listed(name: str) -> tuple[str, ...] | None:
            value = text(name)
            if value is None:
                return None
            return tuple(part.strip() for part in value.split(",") if part.strip())

        https = text("BASTION_HTTPS")
        if https is not None and https.lower() not in _TRUE | _FALSE:
            raise ConfigurationError(
                f"BASTION_HTTPS must be true or false (or 1/0, yes/no), not {https!r}"
            )
        return cls(
            secret_key=text("BASTION_SECRET_KEY"),
            secret_key_fallbacks=listed("BASTION_SECRET_KEY_FALLBACKS"),
            allowed_origins=listed("BASTION_ALLOWED_ORIGINS"),
            trusted_hosts=listed("BASTION_TRUSTED_HOSTS"),
            trusted_proxies=listed("BASTION_TRUSTED_PROXIES"),
            https=None if https is None else https.lower() in _TRUE,
            store=text("BASTION_STORE"),
            data_dir=text("BASTION_DATA_DIR"),
        )
