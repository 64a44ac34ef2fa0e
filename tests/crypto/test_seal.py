"""bastion.crypto.seal on its own: AES-GCM over bytes, one spelling, every key tried.

The binding stage's tests (tests/pipeline/test_binding.py) attack sealed values through
forms; these pin the primitive underneath, with no request, session or action."""

from __future__ import annotations

import secrets

import pytest

from bastion.crypto.seal import Unsealable, seal, unseal

KEY, OLD, OTHER = (secrets.token_bytes(32) for _ in range(3))
AAD = b"bastion/test/v1"


def test_a_sealed_value_opens_with_its_key_and_label() -> None:
    sealed = seal(KEY, b'{"post": 42}', AAD)
    assert unseal([KEY], sealed, AAD, max_chars=1000) == b'{"post": 42}'
    assert seal(KEY, b'{"post": 42}', AAD) != sealed  # a fresh nonce every time


def test_after_rotation_the_previous_key_still_opens_it() -> None:
    sealed = seal(OLD, b"v", AAD)
    assert unseal([KEY, OLD], sealed, AAD, max_chars=1000) == b"v"


def test_attack_a_value_sealed_for_another_purpose_does_not_open() -> None:
    """The same key, another label: a value sealed as one thing is never another."""
    sealed = seal(KEY, b"v", b"bastion/other/v1")
    with pytest.raises(Unsealable) as refused:
        unseal([KEY], sealed, AAD, max_chars=1000)
    assert refused.value.reason.startswith("not sealed by this app")


def test_attack_a_key_the_app_does_not_hold() -> None:
    with pytest.raises(Unsealable) as refused:
        unseal([KEY, OLD], seal(OTHER, b"v", AAD), AAD, max_chars=1000)
    assert refused.value.reason.startswith("not sealed by this app")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), "not sealed by this app"),  # a bit
        (lambda s: s[:32], "not sealed by this app"),  # truncated inside the tag
        (lambda s: s[:10], "malformed"),  # shorter than a nonce
        (lambda s: s + "=", "malformed"),  # padding: another spelling
        (lambda s: s[:5] + "+" + s[6:], "malformed"),  # not URL-safe base64
        (lambda s: s + "x" * 2000, "malformed"),  # over the cap, before any decoding
        (lambda s: "", "malformed"),
    ],
    ids=["bit", "truncated", "short", "padded", "alphabet", "long", "empty"],
)
def test_attack_a_changed_sealed_value_is_refused(change: object, reason: str) -> None:
    sealed = seal(KEY, b"some sealed value", AAD)
    with pytest.raises(Unsealable) as refused:
        unseal([KEY], change(sealed), AAD, max_chars=1000)  # type: ignore[operator]
    assert refused.value.reason.startswith(reason)


def test_attack_the_same_bytes_in_another_spelling() -> None:
    """A last character whose spare bits differ decodes to the same bytes in Python;
    only the spelling seal() wrote is accepted, so a value has one text."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sealed = seal(KEY, secrets.token_bytes(7), AAD)  # 35 bytes: 47 characters, 2 spare bits
    assert len(sealed) % 4 == 3
    # The lowest bit of the last character is one it does not use.
    twin = sealed[:-1] + alphabet[alphabet.index(sealed[-1]) ^ 1]
    assert twin != sealed
    with pytest.raises(Unsealable) as refused:
        unseal([KEY], twin, AAD, max_chars=1000)
    assert refused.value.reason == "malformed"
