"""bastion.passkeys: the relying party comes from configuration, and each challenge is
bound to its session and purpose, used once, and expires.

The browser and the passkey are tests/passkey_authenticator.py's software authenticator;
the board's browser test (examples/board/tests/e2e/test_passkeys.py) uses Chromium's.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from conftest import SECRET, mounted
from passkey_authenticator import SoftAuthenticator, b64url, unb64url
from pydantic import BaseModel, ConfigDict, Field

from bastion import Bastion, Config, ConfigurationError, Context, Secret, public
from bastion.passkeys import (
    CHALLENGE_KEY,
    PasskeyAuthentication,
    PasskeyChallengeExpired,
    PasskeyChallengeMissing,
    PasskeyCredential,
    PasskeyError,
    PasskeyRejected,
    Passkeys,
)
from bastion.sessions import Session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

ORIGIN = "http://localhost:8000"


@pytest.fixture
def passkeys() -> Passkeys:
    return Passkeys("localhost", "Team board", ORIGIN)


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator(ORIGIN)


def signed_in(user_id: int = 7) -> Session:
    session = Session()
    session.login(user_id)
    return session


@dataclass
class Store:
    """The app's table of passkeys, as ``credential_lookup`` reads it."""

    rows: dict[bytes, PasskeyCredential]

    def __call__(self, credential_id: bytes) -> PasskeyCredential | None:
        return self.rows.get(credential_id)


def register(
    passkeys: Passkeys, authenticator: SoftAuthenticator, session: Session
) -> tuple[PasskeyCredential, Store]:
    options = passkeys.registration_options(session, user_id=7, user_name="ada@board.example")
    credential = passkeys.verify_registration(session, authenticator.create(options))
    return credential, Store({credential.id: credential})


# --- the options ----------------------------------------------------------------------------


def test_registration_options_are_the_configured_relying_party_and_require_verification(
    passkeys: Passkeys,
) -> None:
    """The JSON for navigator.credentials.create(): rp from configuration, the user handle,
    a 64-byte random challenge, resident key and user verification required, no
    attestation, the user's passkeys excluded, the browser's timeout the challenge's."""
    session = signed_in()
    options = json.loads(
        passkeys.registration_options(
            session,
            user_id=7,
            user_name="ada@board.example",
            existing_credential_ids=[b"\x01\x02\x03"],
            display_name="Ada",
        )
    )
    assert options["rp"] == {"id": "localhost", "name": "Team board"}
    assert options["user"] == {
        "id": b64url(b"7"),
        "name": "ada@board.example",
        "displayName": "Ada",
    }
    assert len(unb64url(options["challenge"])) == 64
    assert options["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "required",
    }
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == [{"id": b64url(b"\x01\x02\x03"), "type": "public-key"}]
    assert options["timeout"] == 300_000
    assert {p["alg"] for p in options["pubKeyCredParams"]} >= {-7, -8, -257}


def test_authentication_options_require_verification_and_list_allowed_credentials(
    passkeys: Passkeys,
) -> None:
    session = Session()
    options = json.loads(passkeys.authentication_options(session))
    assert options["rpId"] == "localhost"
    assert options["userVerification"] == "required"
    assert options["allowCredentials"] == []
    assert len(unb64url(options["challenge"])) == 64
    only = json.loads(passkeys.authentication_options(session, [b"\x09"]))
    assert only["allowCredentials"] == [{"id": b64url(b"\x09"), "type": "public-key"}]


def test_each_challenge_is_random_and_kept_in_the_session_with_purpose_and_expiry(
    passkeys: Passkeys,
) -> None:
    session = signed_in()
    before = time.time()
    first = json.loads(passkeys.registration_options(session, user_id=7, user_name="ada"))
    record = session[CHALLENGE_KEY]
    assert record["challenge"] == first["challenge"]
    assert record["purpose"] == "registration"
    assert record["user"] == 7
    assert before + 300 <= record["expires"] <= time.time() + 300
    second = json.loads(passkeys.authentication_options(session))
    assert second["challenge"] != first["challenge"]
    assert session[CHALLENGE_KEY]["purpose"] == "authentication"  # the newest replaces it


def test_a_user_handle_longer_than_64_bytes_is_refused(passkeys: Passkeys) -> None:
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        passkeys.registration_options(signed_in(), 7, "ada", user_handle=bytes(65))


# --- the ceremonies -------------------------------------------------------------------------


def test_a_registered_passkey_signs_in(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """The whole round: the credential record (id, public key, counter, transports, user
    handle), then a sign-in that finds it and reports the new counter."""
    credential, store = register(passkeys, authenticator, signed_in())
    assert credential.id == authenticator.keys[0].id
    assert credential.sign_count == 0
    assert credential.transports == ("hybrid", "internal")
    assert credential.user_handle == b"7"

    session = Session()
    options = passkeys.authentication_options(session)
    verified = passkeys.verify_authentication(session, authenticator.get(options), store)
    assert isinstance(verified, PasskeyAuthentication)
    assert verified.credential is credential
    assert verified.credential_id == credential.id
    assert verified.sign_count == 1
    assert CHALLENGE_KEY not in session


def test_a_replayed_registration_is_refused(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    session = signed_in()
    response = authenticator.create(passkeys.registration_options(session, 7, "ada"))
    passkeys.verify_registration(session, response)
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_registration(session, response)


def test_a_replayed_assertion_is_refused_even_under_a_new_challenge(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """The same assertion twice: no challenge is left for it (400); sent after a new
    begin, it names the old challenge (401)."""
    _credential, store = register(passkeys, authenticator, signed_in())
    session = Session()
    assertion = authenticator.get(passkeys.authentication_options(session))
    passkeys.verify_authentication(session, assertion, store)
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_authentication(session, assertion, store)
    passkeys.authentication_options(session)
    with pytest.raises(PasskeyRejected):
        passkeys.verify_authentication(session, assertion, store)


def test_a_finish_without_a_begin_is_refused(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    _credential, store = register(passkeys, authenticator, signed_in())
    forged = json.dumps({"rp": {"id": "localhost"}, "rpId": "localhost", "challenge": "AAAA"})
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_authentication(Session(), authenticator.get(forged), store)
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_registration(signed_in(), "{}")


def test_a_challenge_of_one_purpose_does_not_serve_the_other(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """A registration's challenge answered as a sign-in, and the other way round: refused,
    and the challenge is spent (the right finish afterwards is refused too)."""
    _credential, store = register(passkeys, authenticator, signed_in())
    session = signed_in()
    options = passkeys.registration_options(session, 7, "ada")
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_authentication(
            session, authenticator.get(options, rp_id="localhost"), store
        )
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_registration(session, authenticator.create(options))

    options = passkeys.authentication_options(session)
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_registration(session, "{}")
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_authentication(session, authenticator.get(options), store)


def test_an_expired_challenge_is_refused_and_spent(
    passkeys: Passkeys, authenticator: SoftAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _credential, store = register(passkeys, authenticator, signed_in())
    session = Session()
    assertion = authenticator.get(passkeys.authentication_options(session))
    later = time.time() + 301
    monkeypatch.setattr("bastion.passkeys.time.time", lambda: later)
    with pytest.raises(PasskeyChallengeExpired):
        passkeys.verify_authentication(session, assertion, store)
    assert CHALLENGE_KEY not in session
    monkeypatch.undo()
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_authentication(session, assertion, store)


def test_a_challenge_is_bound_to_its_session(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """An answer to one session's challenge, sent in another session that has a pending
    challenge of its own: its challenge is not the one signed (401)."""
    _credential, store = register(passkeys, authenticator, signed_in())
    victim, attacker = Session(), Session()
    assertion = authenticator.get(passkeys.authentication_options(victim))
    passkeys.authentication_options(attacker)
    with pytest.raises(PasskeyRejected):
        passkeys.verify_authentication(attacker, assertion, store)


def test_a_registration_is_finished_by_the_user_who_began_it(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """Begun by user 7, who signed out and user 8 in on the same browser (the data of a
    session survives a log-in): refused."""
    session = signed_in(7)
    response = authenticator.create(passkeys.registration_options(session, 7, "ada"))
    session.login(8)
    with pytest.raises(PasskeyChallengeMissing):
        passkeys.verify_registration(session, response)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        pytest.param({"origin": "https://evil.example"}, PasskeyError, id="another-origin"),
        pytest.param({"origin": "http://localhost:8001"}, PasskeyError, id="another-port"),
        pytest.param({"rp_id": "evil.example"}, PasskeyError, id="another-rp-id"),
        pytest.param({"verified": False}, PasskeyError, id="user-not-verified"),
        pytest.param({"challenge": b64url(bytes(64))}, PasskeyError, id="another-challenge"),
    ],
)
def test_a_registration_made_elsewhere_or_unverified_is_refused(
    passkeys: Passkeys, authenticator: SoftAuthenticator, change: dict[str, Any], refusal: type
) -> None:
    session = signed_in()
    options = passkeys.registration_options(session, 7, "ada")
    with pytest.raises(refusal) as raised:
        passkeys.verify_registration(session, authenticator.create(options, **change))
    assert (raised.value.status, raised.value.code) == (400, "passkey_invalid")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"origin": "https://evil.example"}, id="another-origin"),
        pytest.param({"rp_id": "evil.example"}, id="another-rp-id"),
        pytest.param({"verified": False}, id="user-not-verified"),
        pytest.param({"challenge": b64url(bytes(64))}, id="another-challenge"),
        pytest.param({"count": 0}, id="counter-went-back"),
        pytest.param({"user_handle": b"8"}, id="another-user-handle"),
    ],
)
def test_a_sign_in_made_elsewhere_or_unverified_is_refused(
    passkeys: Passkeys, authenticator: SoftAuthenticator, change: dict[str, Any]
) -> None:
    credential, store = register(passkeys, authenticator, signed_in())
    store.rows[credential.id] = replace(credential, sign_count=3)  # it was used before
    authenticator.keys[0].count = 3
    session = Session()
    assertion = authenticator.get(passkeys.authentication_options(session), **change)
    with pytest.raises(PasskeyRejected) as raised:
        passkeys.verify_authentication(session, assertion, store)
    assert (raised.value.status, raised.value.code) == (401, "passkey_rejected")


def test_a_passkey_that_does_not_count_signs_in_each_time(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    """A synced passkey leaves its counter at 0: no counter to check, no refusal."""
    authenticator.counting = False
    _credential, store = register(passkeys, authenticator, signed_in())
    for _ in range(2):
        session = Session()
        options = passkeys.authentication_options(session)
        verified = passkeys.verify_authentication(session, authenticator.get(options), store)
        assert verified.sign_count == 0


def test_an_unknown_or_not_allowed_credential_is_refused(
    passkeys: Passkeys, authenticator: SoftAuthenticator
) -> None:
    credential, store = register(passkeys, authenticator, signed_in())
    session = Session()
    assertion = authenticator.get(passkeys.authentication_options(session))
    with pytest.raises(PasskeyRejected):
        passkeys.verify_authentication(session, assertion, Store({}))
    assertion = authenticator.get(passkeys.authentication_options(session, [b"another"]))
    with pytest.raises(PasskeyRejected):
        passkeys.verify_authentication(session, assertion, store)
    assertion = authenticator.get(passkeys.authentication_options(session, [credential.id]))
    assert passkeys.verify_authentication(session, assertion, store).credential is credential


@pytest.mark.parametrize(
    "response",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="not-an-object"),
        pytest.param(json.dumps({"id": "AA", "rawId": "AA", "type": "x"}), id="no-response"),
        pytest.param("x" * (64 * 1024 + 1), id="too-long"),
    ],
)
def test_a_malformed_answer_is_refused_cleanly_and_spends_the_challenge(
    passkeys: Passkeys, response: str
) -> None:
    session = signed_in()
    passkeys.registration_options(session, 7, "ada")
    with pytest.raises(PasskeyError) as raised:
        passkeys.verify_registration(session, response)
    assert type(raised.value) is PasskeyError
    assert CHALLENGE_KEY not in session
    passkeys.authentication_options(session)
    with pytest.raises(PasskeyRejected):
        passkeys.verify_authentication(session, response, Store({}))
    assert CHALLENGE_KEY not in session


def test_why_a_response_was_refused_is_logged_not_told(
    passkeys: Passkeys, authenticator: SoftAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    session = signed_in()
    options = passkeys.registration_options(session, 7, "ada")
    with caplog.at_level(logging.INFO, "bastion.security"), pytest.raises(PasskeyError) as raised:
        passkeys.verify_registration(session, authenticator.create(options, origin="https://x.io"))
    assert "https://x.io" in caplog.text
    assert raised.value.message == "This passkey could not be verified. Try again."


def test_the_refusals_are_action_errors_with_their_status_and_code() -> None:
    assert [(e.status, e.code) for e in (PasskeyError(), PasskeyChallengeMissing())] == [
        (400, "passkey_invalid"),
        (400, "passkey_no_challenge"),
    ]
    assert (PasskeyChallengeExpired.status, PasskeyChallengeExpired.code) == (
        400,
        "passkey_expired",
    )
    assert (PasskeyRejected.status, PasskeyRejected.code) == (401, "passkey_rejected")


# --- the relying party is configuration -------------------------------------------------------


def test_origins_are_kept_as_browsers_write_them() -> None:
    """Default ports dropped, host lower-cased; an origin below the rp_id is allowed."""
    passkeys = Passkeys(
        "board.example", "Board", ["https://board.example:443", "https://EU.board.example"]
    )
    assert passkeys.origins == ("https://board.example", "https://eu.board.example")


@pytest.mark.parametrize(
    ("rp_id", "origin", "problem"),
    [
        pytest.param("127.0.0.1", "http://127.0.0.1:8000", "IP address", id="ip-rp-id"),
        pytest.param("Board.Example", "https://board.example", "lower-case", id="upper-case"),
        pytest.param("board.example", "https://evil.example", "not at board.example", id="off"),
        pytest.param("example", "https://board.example", "", id="parent-ok"),
        pytest.param("board.example", "http://board.example", "secure context", id="http"),
        pytest.param("board.example", "https://board.example/path", "not an origin", id="path"),
        pytest.param("board.example", "https://board.example:99999", "not an origin", id="port"),
        pytest.param("board.example", [], "at least one origin", id="none"),
    ],
)
def test_a_relying_party_that_cannot_work_is_refused_at_start_up(
    rp_id: str, origin: str | list[str], problem: str
) -> None:
    if not problem:
        assert Passkeys(rp_id, "Board", origin).rp_id == rp_id
        return
    with pytest.raises(ConfigurationError, match=problem):
        Passkeys(rp_id, "Board", origin)


def config(*origins: str) -> Config:
    return Config(secret_key=Secret(SECRET.encode()), allowed_origins=origins)


def test_from_config_takes_the_first_allowed_origin_with_a_host_name() -> None:
    passkeys = Passkeys.from_config(
        config("http://127.0.0.1:8000", "http://localhost:8000", "https://board.example:443"),
        "Board",
    )
    assert passkeys.rp_id == "localhost"
    assert passkeys.origins == ("http://localhost:8000",)
    chosen = Passkeys.from_config(config("https://board.example:443"), "Board", rp_id="example")
    assert chosen.origins == ("https://board.example",)


def test_from_config_without_a_host_name_says_what_to_serve_at() -> None:
    with pytest.raises(ConfigurationError, match="BASTION_ALLOWED_ORIGINS=http://localhost"):
        Passkeys.from_config(config("http://127.0.0.1:8000"), "Board")


def test_without_py_webauthn_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "webauthn", None)
    with pytest.raises(ImportError, match=r"pip install 'bastion\[passkeys\]'"):
        Passkeys("localhost", "Board", ORIGIN)


# --- through an app: Host decides nothing -----------------------------------------------------


class Options(BaseModel):
    options: str


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: str = Field(max_length=64 * 1024)


class Done(BaseModel):
    user: str


@pytest.fixture
def app(passkeys: Passkeys, authenticator: SoftAuthenticator) -> Iterator[ActionClient]:
    """An app that accepts any Host (``trusted_hosts=["*"]``), a passkey registered, and
    a client whose every request names the attacker's host (``Host``, ``X-Forwarded-*``)."""
    bastion = Bastion(
        secret_key=SECRET,
        allowed_origins=[ORIGIN],
        trusted_hosts=["*"],
        store=MemoryStore(),
        default_rate="1000/minute",
    )
    _credential, store = register(passkeys, authenticator, signed_in())

    @bastion.action(policy=public)
    def begin(ctx: Context) -> Options:
        return Options(options=passkeys.authentication_options(ctx.session))

    @bastion.action(policy=public)
    def finish(ctx: Context, data: Answer) -> Done:
        verified = passkeys.verify_authentication(ctx.session, data.credential, store)
        return Done(user=verified.credential.user_handle.decode())

    headers = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    with ActionClient(
        mounted(bastion), bastion, origin=ORIGIN, base_url="http://evil.example", headers=headers
    ) as client:
        yield client


def test_the_rp_id_is_configured_whatever_host_the_request_names(
    app: ActionClient, authenticator: SoftAuthenticator
) -> None:
    """The options name the configured rp_id, not the Host; an assertion the attacker's
    site obtained (its origin, its rp_id) is refused; the real one passes."""
    reply = app.call("begin", {})
    assert reply.status_code == 200
    options = reply.json()["data"]["options"]
    assert json.loads(options)["rpId"] == "localhost"
    assert "evil.example" not in options
    for forged in (
        authenticator.get(options, origin="http://evil.example"),
        authenticator.get(options, rp_id="evil.example", origin="http://evil.example"),
    ):
        refused = app.call("finish", {"credential": forged})
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "passkey_rejected")
        options = app.call("begin", {}).json()["data"]["options"]
    assert app.call("finish", {"credential": authenticator.get(options)}).json() == {
        "ok": True,
        "data": {"user": "7"},
    }


def test_a_refusal_is_the_action_envelope(app: ActionClient) -> None:
    """A finish with no begin, through the pipeline: 400 and the error's own words."""
    reply = app.call("finish", {"credential": "{}"})
    assert reply.status_code == 400
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "passkey_no_challenge",
            "message": "This passkey request is no longer valid. Start again.",
        },
    }
