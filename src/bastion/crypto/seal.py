"""Sealed values: AES-GCM under a purpose key, in one URL-safe spelling.

    sealed = base64url(nonce ‖ AES-GCM(key, nonce, plaintext, aad))

The associated data names what the value is for, so a value sealed for one purpose
never opens as another. Only the spelling ``seal`` writes is accepted back: Python's
base64 decoder skips unknown characters and ignores a last character's spare bits, and
a sealed value must have one text.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Unsealable", "seal", "unseal"]

_NONCE: Final = 12
_TEXT: Final = re.compile(r"[A-Za-z0-9_-]+")


class Unsealable(Exception):
    """A sealed value that does not open; ``reason`` is for the security log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE)
    return _encode(nonce + AESGCM(key).encrypt(nonce, plaintext, aad))


def unseal(keys: Iterable[bytes], sealed: str, aad: bytes, *, max_chars: int) -> bytes:
    """The plaintext, opened with the first of ``keys`` that sealed it.

    Raises ``Unsealable`` for a malformed value or one no key opens (tampered,
    truncated, or sealed under a key this app does not hold)."""
    if len(sealed) > max_chars or not _TEXT.fullmatch(sealed):
        raise Unsealable("malformed")
    try:
        blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    except (binascii.Error, ValueError):
        raise Unsealable("malformed") from None
    if _encode(blob) != sealed:
        raise Unsealable("malformed")
    nonce, ciphertext = blob[:_NONCE], blob[_NONCE:]
    if len(nonce) != _NONCE or not ciphertext:
        raise Unsealable("malformed")
    for key in keys:
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            continue
    raise Unsealable("not sealed by this app (tampered, truncated or an unknown key)")


def _encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
