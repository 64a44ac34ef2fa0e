"""bastion.crypto.tokens on its own: the masked MAC behind the CSRF token.

tests/test_csrf.py attacks the token through requests; these pin the primitive."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto.tokens import LENGTH, mac, mask, matches, unmask

KEY, OLD, OTHER = (secrets.token_bytes(32) for _ in range(3))
SECRET = secrets.token_bytes(32)


def test_a_token_is_masked_afresh_at_every_render() -> None:
    """BREACH: the same MAC never shows the same bytes twice."""
    raw = mac(KEY, SECRET)
    tokens = {mask(raw) for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == LENGTH and unmask(t) == raw for t in tokens)
    # No position of the token stays fixed across renders.
    assert all(len({t[i] for t in tokens}) > 1 for i in range(LENGTH))


def test_a_token_matches_under_any_key_generation_and_no_other() -> None:
    token = unmask(mask(mac(OLD, SECRET)))
    assert token is not None
    assert matches(token, [KEY, OLD], SECRET)
    assert not matches(token, [KEY, OTHER], SECRET)
    assert not matches(token, [KEY, OLD], secrets.token_bytes(32))  # another session's


def test_anything_not_shaped_like_a_token_unmasks_to_nothing() -> None:
    good = mask(mac(KEY, SECRET))
    for bad in (good[:-1], good + "A", "é" * LENGTH, "!" * LENGTH, ""):
        assert unmask(bad) is None, bad


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=200))
def test_mac_is_hmac_sha256_whatever_key_and_message(key: bytes, message: bytes) -> None:
    """The prepared-state MAC gives the very bytes of a one-shot HMAC-SHA256: session
    storage keys, CSRF tokens and idempotency keys made before it still match."""
    assert mac(key, message) == hmac.digest(key, message, hashlib.sha256)
    assert mac(key, message) == mac(key, message)  # the prepared state is left as it was
