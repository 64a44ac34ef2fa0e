"""The root secret and the purpose keys derived from it."""

import base64
import logging
import re

import pytest
from conftest import OTHER_SECRET, SECRET
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion import Bastion, ConfigurationError, Secret, generate_secret_key
from bastion.crypto.keys import KeyRing, resolve_secret

NO_KEY = (
    "No secret key: pass secret_key= or set BASTION_SECRET_KEY. Generate one with `bastion keygen`."
)
EPHEMERAL = (
    "bastion: no secret key configured; using an ephemeral one (debug mode only). "
    "Action IDs and tokens change at every restart."
)
DIVERSE_32 = "0123456789abcdefghijklmnopqrstuv"


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)


# --- where the key comes from ---------------------------------------------------------


@pytest.mark.usefixtures("no_env_key")
def test_secret_key_is_required() -> None:
    """No argument and no BASTION_SECRET_KEY: the app refuses to start."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion()
    assert str(caught.value) == NO_KEY


def test_empty_environment_variable_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """BASTION_SECRET_KEY set to "" is no key at all."""
    monkeypatch.setenv("BASTION_SECRET_KEY", "")
    with pytest.raises(ConfigurationError) as caught:
        Bastion()
    assert str(caught.value) == NO_KEY


def test_environment_variable_is_used_when_no_key_is_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BASTION_SECRET_KEY is the root secret when secret_key= is not given."""
    monkeypatch.setenv("BASTION_SECRET_KEY", SECRET)
    assert Bastion().config.secret_key == Secret(SECRET.encode())


def test_passed_key_wins_over_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit secret_key= takes precedence over BASTION_SECRET_KEY."""
    monkeypatch.setenv("BASTION_SECRET_KEY", OTHER_SECRET)
    assert Bastion(secret_key=SECRET).config.secret_key == Secret(SECRET.encode())


def test_weak_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key from the environment is checked like a passed one."""
    monkeypatch.setenv("BASTION_SECRET_KEY", "short")
    with pytest.raises(ConfigurationError, match=r"^secret_key is too short: 5 bytes"):
        Bastion()


def test_str_bytes_and_secret_keys_are_equivalent() -> None:
    """A key as str (UTF-8), bytes or Secret gives the same root secret and key ring."""
    as_str = Bastion(secret_key=SECRET)
    as_bytes = Bastion(secret_key=SECRET.encode())
    as_secret = Bastion(secret_key=Secret(SECRET.encode()))
    assert as_str.config.secret_key == as_bytes.config.secret_key == as_secret.config.secret_key
    assert (
        as_str.keys.all("action-id")
        == as_bytes.keys.all("action-id")
        == as_secret.keys.all("action-id")
    )


# --- how strong it must be ------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "x" * 0, DIVERSE_32[:31], DIVERSE_32[:31].encode()])
def test_key_shorter_than_32_bytes_is_refused(key: str | bytes) -> None:
    """Fewer than 32 bytes is refused, saying how many there were."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=key)
    assert str(caught.value) == (
        f"secret_key is too short: {len(key)} bytes, at least 32 are needed. "
        "Generate one with `bastion keygen`."
    )


def test_key_length_counts_utf8_bytes() -> None:
    """The length is counted in bytes: 16 two-byte characters make 32 bytes."""
    key = "àéîõüçñßøåæœðþĳŀ"
    assert len(key) == 16
    assert Bastion(secret_key=key).config.secret_key == Secret(key.encode())


def test_key_of_exactly_32_diverse_bytes_is_accepted() -> None:
    """32 bytes with enough distinct values is the minimum accepted."""
    assert Bastion(secret_key=DIVERSE_32).config.secret_key.reveal() == DIVERSE_32.encode()


@pytest.mark.parametrize("key", ["a" * 64, "changeme" * 4, "ab" * 40, b"\x00" * 64])
def test_low_entropy_key_is_refused(key: str | bytes) -> None:
    """Long but repetitive keys are guessable: refused."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=key)
    assert str(caught.value) == "secret_key is too weak. Generate one with `bastion keygen`."


def test_weak_key_is_refused_even_in_debug() -> None:
    """Debug only excuses a missing key, never a weak one."""
    with pytest.raises(ConfigurationError, match=r"^secret_key is too weak"):
        Bastion(secret_key="a" * 64, debug=True)


@pytest.mark.parametrize("key", [12345, 1.5, ["k"]])
def test_key_of_wrong_type_is_refused(key: object) -> None:
    """Only str, bytes and Secret are keys."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=key)  # type: ignore[arg-type]
    assert str(caught.value) == f"secret_key must be str or bytes, not {type(key).__name__}"


def test_fallbacks_must_be_a_list() -> None:
    """One key passed as secret_key_fallbacks (a str is a sequence) is refused."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, secret_key_fallbacks=OTHER_SECRET)
    assert str(caught.value) == "secret_key_fallbacks must be a list of keys, not one key"
    with pytest.raises(ConfigurationError, match=r"^secret_key_fallbacks must be a list"):
        Bastion(secret_key=SECRET, secret_key_fallbacks=OTHER_SECRET.encode())


def test_weak_fallback_is_refused() -> None:
    """Fallback keys are checked like the current one."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, secret_key_fallbacks=["short"])
    assert str(caught.value) == (
        "a key in secret_key_fallbacks is too short: 5 bytes, at least 32 are needed. "
        "Generate one with `bastion keygen`."
    )


def test_fallbacks_are_kept_in_order() -> None:
    """Fallbacks are stored newest first, as given, as Secrets."""
    third = "yet-another-secret-key-!@#$%^&*()-0123456789"
    config = Bastion(secret_key=SECRET, secret_key_fallbacks=[OTHER_SECRET, third]).config
    assert config.secret_key_fallbacks == (Secret(OTHER_SECRET.encode()), Secret(third.encode()))


# --- debug mode -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_env_key")
def test_debug_without_key_uses_an_ephemeral_key_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """debug=True without a key: a random 48-byte key, and a warning in the log."""
    with caplog.at_level(logging.WARNING, logger="bastion"):
        first = Bastion(debug=True)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("bastion", logging.WARNING, EPHEMERAL)
    ]
    second = Bastion(debug=True)
    assert len(first.config.secret_key.reveal()) == 48
    assert first.config.secret_key != second.config.secret_key
    assert first.debug is True


@pytest.mark.usefixtures("no_env_key")
def test_debug_with_key_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """A configured key in debug mode is used as it is, without the warning."""
    with caplog.at_level(logging.DEBUG, logger="bastion"):
        bastion = Bastion(secret_key=SECRET, debug=True)
    assert caplog.records == []
    assert bastion.config.secret_key == Secret(SECRET.encode())


@pytest.mark.usefixtures("no_env_key")
def test_ephemeral_key_never_appears_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """The warning about the ephemeral key does not print the key."""
    with caplog.at_level(logging.DEBUG, logger="bastion"):
        bastion = Bastion(debug=True)
    raw = bastion.config.secret_key.reveal()
    assert raw.hex() not in caplog.text
    assert base64.urlsafe_b64encode(raw).decode() not in caplog.text


# --- Secret ---------------------------------------------------------------------------


def test_secret_repr_and_str_are_masked() -> None:
    """repr, str and f-strings of a Secret show a fixed mask."""
    secret = Secret(SECRET.encode())
    assert repr(secret) == "Secret('**********')"
    assert str(secret) == "Secret('**********')"
    assert f"{secret}" == "Secret('**********')"
    assert secret.reveal() == SECRET.encode()


def test_secret_equality_and_hash_follow_the_value() -> None:
    """Two Secrets are equal when their bytes are; never equal to raw bytes."""
    assert Secret(b"one" * 11) == Secret(b"one" * 11)
    assert Secret(b"one" * 11) != Secret(b"two" * 11)
    assert Secret(b"one" * 11) != b"one" * 11
    assert hash(Secret(b"one" * 11)) == hash(Secret(b"one" * 11))
    assert len({Secret(b"one" * 11), Secret(b"one" * 11)}) == 1


def test_secret_in_a_container_repr_stays_masked() -> None:
    """Printing a list or dict holding a Secret does not reveal it."""
    secret = Secret(SECRET.encode())
    assert repr([secret]) == "[Secret('**********')]"
    assert SECRET not in repr({"key": secret})


# --- derived keys ---------------------------------------------------------------------


def _reference_hkdf(root: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"bastion-v1", info=info).derive(root)


def test_purpose_key_is_hkdf_sha256_of_the_root() -> None:
    """The action-ID key is HKDF-SHA256(root, salt "bastion-v1", info "action-id")."""
    ring = KeyRing(Secret(SECRET.encode()))
    key = ring.current("action-id")
    assert key == _reference_hkdf(SECRET.encode(), b"action-id")
    assert len(key) == 32
    assert key != SECRET.encode()[:32]


def test_purpose_keys_differ_per_root_secret() -> None:
    """Another root secret derives another purpose key."""
    one = KeyRing(Secret(SECRET.encode())).current("action-id")
    other = KeyRing(Secret(OTHER_SECRET.encode())).current("action-id")
    assert one != other


def test_purpose_keys_are_deterministic() -> None:
    """The same root derives the same keys in every KeyRing (and every process)."""
    assert KeyRing(Secret(SECRET.encode())).all("action-id") == KeyRing(
        Secret(SECRET.encode())
    ).all("action-id")


def test_key_ring_lists_current_then_fallbacks() -> None:
    """all() is the current key first, then one per fallback, in order."""
    ring = KeyRing(Secret(SECRET.encode()), [Secret(OTHER_SECRET.encode())])
    assert ring.all("action-id") == (
        _reference_hkdf(SECRET.encode(), b"action-id"),
        _reference_hkdf(OTHER_SECRET.encode(), b"action-id"),
    )
    assert ring.current("action-id") == ring.all("action-id")[0]


def test_key_ring_repr_shows_no_key_material() -> None:
    """repr(KeyRing) names purposes and generations only."""
    ring = KeyRing(Secret(SECRET.encode()), [Secret(OTHER_SECRET.encode())])
    assert repr(ring) == (
        "KeyRing(purposes=['action-id', 'csrf', 'session', 'bound', 'idempotency'], generations=2)"
    )


def test_bastion_key_ring_follows_its_config() -> None:
    """Bastion's key ring is derived from its configured secret and fallbacks."""
    bastion = Bastion(secret_key=SECRET, secret_key_fallbacks=[OTHER_SECRET])
    assert bastion.keys.all("action-id") == (
        _reference_hkdf(SECRET.encode(), b"action-id"),
        _reference_hkdf(OTHER_SECRET.encode(), b"action-id"),
    )


def test_resolve_secret_returns_checked_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_secret gives the root secret and the fallbacks as Secrets."""
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)
    assert resolve_secret(SECRET, [OTHER_SECRET], debug=False) == (
        Secret(SECRET.encode()),
        (Secret(OTHER_SECRET.encode()),),
    )


# --- generate_secret_key --------------------------------------------------------------


def test_generated_key_is_48_random_urlsafe_bytes() -> None:
    """A generated key is 64 URL-safe characters (48 bytes) that Bastion accepts."""
    key = generate_secret_key()
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", key)
    assert len(base64.urlsafe_b64decode(key)) == 48
    assert Bastion(secret_key=key).config.secret_key == Secret(key.encode())


def test_generated_keys_differ() -> None:
    """Every call makes a new key."""
    assert len({generate_secret_key() for _ in range(20)}) == 20
