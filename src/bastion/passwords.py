"""Password hashing with argon2id (argon2-cffi), and the dummy check that hides which
accounts exist.

argon2 is deliberately slow and memory-hard: in an async handler, run ``hash_password``
through ``anyio.to_thread.run_sync``; ``ctx.check_password`` already verifies in a worker
thread, behind the log-in throttle.
"""

from __future__ import annotations

import functools

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["hash_password", "needs_rehash", "verify_in_thread", "verify_password"]

_hasher: PasswordHasher = PasswordHasher()
"""argon2id with the library's current recommended costs. Only ``swap_hasher`` replaces
it (``bastion.testing.fast_passwords()``, for the length of a test)."""


def swap_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Hash with ``hasher`` from now on, process-wide; returns the one used until now, to
    put back. For ``bastion.testing.fast_passwords()``, not for apps: a hash made under any
    hasher still verifies under every other, since argon2 reads its costs from the hash."""
    global _hasher
    previous, _hasher = _hasher, hasher
    return previous


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """Verified against when the account is unknown, so that a login for a missing account
    takes as long as one with a wrong password and its timing reveals nothing. Made on
    first use: hashing costs ~130 ms and 64 MiB, which ``import bastion`` must not pay.
    One per hasher, so that under cheap test costs an unknown account is cheap too."""
    return hasher.hash("bastion: an account that does not exist")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, to store."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``. With ``None`` (no such account),
    a dummy hash is verified all the same and the answer is ``False``."""
    # Made by the first check, whichever the account: same timing.
    dummy = _dummy_hash(_hasher)
    if stored_hash is None:
        _verify(dummy, password)
        return False
    return _verify(stored_hash, password)


async def verify_in_thread(stored_hash: str | None, password: str) -> bool:
    """``verify_password`` off the event loop."""
    return await anyio.to_thread.run_sync(verify_password, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than today's: hash the password
    again after a successful login and store the new hash."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    except UnicodeEncodeError:
        # argon2 reads the hash as ASCII: a corrupted, non-ASCII one is malformed too.
        return False
