"""The root secret, and the purpose keys derived from it.

One secret is configured; each purpose gets its own key through HKDF-SHA256 with the
purpose as ``info``, so a value made for one purpose (an action ID) can never pass as
another's (a CSRF token). Older secrets in ``secret_key_fallbacks`` derive their own
purpose keys, which still verify: the newest key makes, every key checks.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.errors import ConfigurationError

__all__ = ["KeyRing", "Purpose", "Secret", "generate_secret_key", "resolve_secret"]

logger = logging.getLogger("bastion")

MIN_SECRET_BYTES: Final = 32
ENV_VAR: Final = "BASTION_SECRET_KEY"

Purpose = Literal["action-id", "csrf", "session", "bound", "idempotency"]
"""What a derived key is for. Each purpose is one ``info`` string for HKDF."""

_PURPOSES: Final[tuple[Purpose, ...]] = ("action-id", "csrf", "session", "bound", "idempotency")


class Secret:
    """Key material that never prints itself: ``repr`` and ``str`` show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def generate_secret_key() -> str:
    """A fresh root secret: 48 random bytes, URL-safe text (what ``bastion keygen`` prints)."""
    return secrets.token_urlsafe(48)


def _as_secret(value: str | bytes | Secret, what: str) -> Secret:
    if isinstance(value, Secret):
        raw = value.reveal()
    elif isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise ConfigurationError(f"{what} must be str or bytes, not {type(value).__name__}")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{what} is too short: {len(raw)} bytes, at least {MIN_SECRET_BYTES} are needed. "
            "Generate one with `bastion keygen`."
        )
    # Long but repetitive ("aaaa…", "changeme" four times) is still guessable.
    if len(set(raw)) < 8:
        raise ConfigurationError(f"{what} is too weak. Generate one with `bastion keygen`.")
    return Secret(raw)


def resolve_secret(
    secret_key: str | bytes | Secret | None,
    fallbacks: Sequence[str | bytes | Secret],
    *,
    debug: bool,
) -> tuple[Secret, tuple[Secret, ...]]:
    """The root secret (the argument, or ``BASTION_SECRET_KEY`` as ``Environment``
    read it), checked.

    Without one, only debug mode gets an ephemeral key (action IDs and anything
    signed change at every restart); production refuses to start.
    """
    if isinstance(fallbacks, str | bytes):
        raise ConfigurationError("secret_key_fallbacks must be a list of keys, not one key")
    checked = tuple(_as_secret(f, "a key in secret_key_fallbacks") for f in fallbacks)
    if secret_key is None:
        if not debug:
            raise ConfigurationError(
                f"No secret key: pass secret_key= or set {ENV_VAR}. "
                "Generate one with `bastion keygen`."
            )
        logger.warning(
            "bastion: no secret key configured; using an ephemeral one (debug mode only). "
            "Action IDs and tokens change at every restart."
        )
        return Secret(secrets.token_bytes(48)), checked
    return _as_secret(secret_key, "secret_key"), checked


class KeyRing:
    """Purpose keys for the current secret and every fallback, derived once at start-up."""

    __slots__ = ("_keys",)

    def __init__(self, secret: Secret, fallbacks: Sequence[Secret] = ()) -> None:
        roots = (secret, *fallbacks)
        self._keys: dict[Purpose, tuple[bytes, ...]] = {
            purpose: tuple(_derive(root, purpose) for root in roots) for purpose in _PURPOSES
        }

    def current(self, purpose: Purpose) -> bytes:
        """The key that makes new values for ``purpose``."""
        return self._keys[purpose][0]

    def all(self, purpose: Purpose) -> tuple[bytes, ...]:
        """Every key that still verifies values for ``purpose``, newest first."""
        return self._keys[purpose]

    def __repr__(self) -> str:
        return f"KeyRing(purposes={list(self._keys)}, generations={len(self._keys['action-id'])})"


def _derive(root: Secret, purpose: Purpose) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"bastion-v1",
        info=purpose.encode("ascii"),
    )
    return hkdf.derive(root.reveal())
