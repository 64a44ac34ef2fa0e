"""Password hashing with argon2id: the hash format, verification, malformed hashes,
rehashing after a parameter change, and the dummy check for unknown accounts."""

from __future__ import annotations

import re

import anyio
import pytest
from argon2 import PasswordHasher, Type

from bastion import hash_password, needs_rehash, verify_password
from bastion.passwords import verify_in_thread

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD)
ARGON2ID = re.compile(
    r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}"
)


def test_hash_is_argon2id_with_the_library_recommended_costs() -> None:
    """The hash is a PHC string for argon2id (v=19), with argon2-cffi's default costs."""
    match = ARGON2ID.fullmatch(HASH)
    assert match, HASH
    defaults = PasswordHasher()
    assert tuple(map(int, match.groups())) == (
        defaults.memory_cost,
        defaults.time_cost,
        defaults.parallelism,
    )
    assert PASSWORD not in HASH


def test_same_password_hashes_differently_each_time() -> None:
    """A fresh salt per hash: equal passwords do not give equal hashes."""
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


def test_verify_accepts_the_right_password() -> None:
    assert verify_password(HASH, PASSWORD) is True


@pytest.mark.parametrize(
    "attempt",
    [
        "",
        "correct horse battery stapl",
        "Correct horse battery staple",
        PASSWORD + " ",
        PASSWORD + "\x00",
    ],
)
def test_verify_refuses_any_other_password(attempt: str) -> None:
    """Near misses, case, a trailing space or NUL: False, never an exception."""
    assert verify_password(HASH, attempt) is False


def test_verify_handles_unicode_passwords() -> None:
    """A non-ASCII password hashes and verifies; another spelling of it does not match."""
    stored = hash_password("pässwörd ✓")
    assert verify_password(stored, "pässwörd ✓") is True
    assert verify_password(stored, "passwörd ✓") is False


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-hash", id="text"),
        pytest.param("$argon2id$", id="prefix-only"),
        pytest.param("$argon2id$v=19$m=65536,t=3,p=4$bad", id="no-digest"),
        pytest.param(HASH[:-6], id="truncated"),
        pytest.param(HASH + "AAAA", id="extended"),
        pytest.param(HASH.replace("$argon2id$", "$argon2i$"), id="wrong-type"),
        pytest.param("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", id="bcrypt"),
        pytest.param(HASH[:30] + "é" + HASH[31:], id="non-ascii"),
        pytest.param("\x00", id="nul"),
    ],
)
def test_malformed_hash_verifies_false(stored: str) -> None:
    """A stored hash that is not a valid argon2 hash never matches, and never raises
    (a corrupted row must not turn a log-in into a 500)."""
    assert verify_password(stored, PASSWORD) is False


def test_needs_rehash_is_false_for_todays_parameters() -> None:
    assert needs_rehash(HASH) is False


def test_needs_rehash_for_a_hash_made_with_other_parameters() -> None:
    """A hash from cheaper settings (or another argon2 type) still verifies, so the log-in
    succeeds, and needs_rehash says to store a new one."""
    cheap = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    argon2i = PasswordHasher(type=Type.I).hash(PASSWORD)
    for old in (cheap, argon2i):
        assert verify_password(old, PASSWORD) is True
        assert needs_rehash(old) is True
        assert needs_rehash(hash_password(PASSWORD)) is False


@pytest.mark.parametrize("stored", ["", "not-a-hash", "$argon2id$v=19$m=65536,t=3,p=4$bad"])
def test_needs_rehash_for_a_malformed_hash(stored: str) -> None:
    """An unreadable hash needs replacing too (it cannot be compared to anything)."""
    assert needs_rehash(stored) is True


def test_unknown_account_verifies_false() -> None:
    """No stored hash (no such account): False, after the dummy verification."""
    assert verify_password(None, PASSWORD) is False
    assert verify_password(None, "") is False


def test_dummy_hash_password_never_signs_anyone_in() -> None:
    """Even the very password the dummy hash was made from is refused for an unknown
    account: the dummy check only spends the time, its answer is always False."""
    assert verify_password(None, "bastion: an account that does not exist") is False


def test_verify_in_thread_answers_as_verify_password() -> None:
    """The off-loop variant gives the same answers, the dummy check included."""

    async def answers() -> tuple[bool, bool, bool, bool]:
        return (
            await verify_in_thread(HASH, PASSWORD),
            await verify_in_thread(HASH, "wrong"),
            await verify_in_thread(None, PASSWORD),
            await verify_in_thread("not-a-hash", PASSWORD),
        )

    assert anyio.run(answers) == (True, False, False, False)
