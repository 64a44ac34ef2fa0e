"""Attacks on the board's passkeys, over HTTP: replayed answers, a finish with no begin,
answers made for another origin or relying party, expired challenges, a cloned
authenticator, and another member's passkey removed with a leaked seal.

The board is imported as uvicorn imports it, served (for WebAuthn, which takes no IP
address) at ``http://localhost``: its allowed origin, so its relying party. The browser
and the passkey are tests/passkey_authenticator.py's software authenticator, which can
say what an attacker's page would; Chromium's own is in e2e/test_passkeys.py. Each
refusal is asserted exactly, and nobody is signed in by one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import count
from typing import Any, Final

import httpx2 as httpx
import pytest
from passkey_authenticator import SoftAuthenticator
from sqlalchemy import select

import bastion.passkeys
from bastion.testing import ActionClient

from .. import inprocess
from ..inprocess import Board, Person, html, imported_board, sign_in

ORIGIN: Final = "http://localhost"

NO_CHALLENGE: Final = {
    "ok": False,
    "error": {
        "code": "passkey_no_challenge",
        "message": "This passkey request is no longer valid. Start again.",
    },
}
EXPIRED: Final = {
    "ok": False,
    "error": {
        "code": "passkey_expired",
        "message": "This passkey request took too long. Start again.",
    },
}
REJECTED: Final = {
    "ok": False,
    "error": {"code": "passkey_rejected", "message": "This passkey was not accepted."},
}
INVALID: Final = {
    "ok": False,
    "error": {
        "code": "passkey_invalid",
        "message": "This passkey could not be verified. Try again.",
    },
}
GONE: Final = {
    "ok": False,
    "error": {"code": "passkey_gone", "message": "This passkey no longer exists."},
}

_addresses = count(1)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """The board in process with ``BASTION_ALLOWED_ORIGINS=http://localhost``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inprocess, "ORIGIN", ORIGIN)
        with imported_board(tmp_path_factory.mktemp("board-data")) as loaded:
            yield loaded


def browser(board: Board) -> ActionClient:
    """A new browser on the page at http://localhost, at an address of its own."""
    return ActionClient(
        board.app,
        board.bastion,
        origin=ORIGIN,
        base_url=ORIGIN,
        client=(f"10.8.0.{next(_addresses)}", 5000),
    )


def reply(response: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert (response.status_code, response.json()) == (status, envelope)


def signed_in_as(client: ActionClient) -> Any:
    """The user ID of the client's session (``None``: nobody)."""

    async def load() -> Any:
        session = await client.bastion.session_manager.load(client.session_id)
        return session.user_id

    with client._portal_factory() as portal:
        return portal.call(load)


def options(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    data: str = response.json()["data"]["options"]
    return data


def registered(board: Board, name: str = "Laptop") -> tuple[Person, SoftAuthenticator]:
    """A new author with one passkey, added through the actions as the profile adds it."""
    person = board.account("author", "Passkey")
    authenticator = SoftAuthenticator(ORIGIN)
    with browser(board) as client:
        sign_in(client, person)
        made = options(client.call("begin_passkey_registration"))
        answer = authenticator.create(made)
        added = client.call("finish_passkey_registration", {"credential": answer, "name": name})
        assert added.status_code == 200, added.text
        assert added.json()["data"]["message"] == f"Passkey “{name}” added."
    return person, authenticator


def passkey_ids(board: Board, person: Person) -> list[int]:
    Passkey = board.app_module.passkeys.Passkey
    with board.core.db.session() as session:
        return list(session.scalars(select(Passkey.id).where(Passkey.account_id == person.id)))


# --- the way it works -------------------------------------------------------------------------


def test_a_member_adds_a_passkey_and_signs_in_with_it_alone(board: Board) -> None:
    """The relying party is the allowed origin's host; the sign-in needs no address and no
    password, rotates the session, and the profile lists the passkey as used."""
    person, authenticator = registered(board)
    with browser(board) as client:
        made = options(client.call("begin_passkey_sign_in"))
        assert json.loads(made)["rpId"] == "localhost"
        before = client.session_id
        done = client.call("finish_passkey_sign_in", {"credential": authenticator.get(made)})
        reply(
            done, 200, {"ok": True, "data": {"name": "Passkey", "message": "Signed in as Passkey."}}
        )
        assert client.session_id != before
        assert signed_in_as(client) == person.id
        profile = html(client, "/me").text
        assert "<strong>Laptop</strong>" in profile
        assert "last used" in profile


# --- attacks ----------------------------------------------------------------------------------


def test_a_replayed_sign_in_is_refused(board: Board) -> None:
    """The same answer twice in the browser that got it: no challenge is left for it
    (400); after a new begin, it answers the old challenge (401). Nobody is signed in,
    and a fresh answer still works."""
    _person, authenticator = registered(board)
    with browser(board) as victim:
        made = options(victim.call("begin_passkey_sign_in"))
        answer = authenticator.get(made)
        assert victim.call("finish_passkey_sign_in", {"credential": answer}).status_code == 200
        victim.call("logout")
        reply(victim.call("finish_passkey_sign_in", {"credential": answer}), 400, NO_CHALLENGE)
        options(victim.call("begin_passkey_sign_in"))
        reply(victim.call("finish_passkey_sign_in", {"credential": answer}), 401, REJECTED)
        assert signed_in_as(victim) is None


def test_a_captured_answer_is_refused_in_another_browser(board: Board) -> None:
    """An answer to the victim's challenge, sent from the attacker's own session (with a
    challenge of its own pending, or none): refused, the attacker is not signed in."""
    _person, authenticator = registered(board)
    with browser(board) as victim, browser(board) as attacker:
        answer = authenticator.get(options(victim.call("begin_passkey_sign_in")))
        reply(attacker.call("finish_passkey_sign_in", {"credential": answer}), 400, NO_CHALLENGE)
        options(attacker.call("begin_passkey_sign_in"))
        reply(attacker.call("finish_passkey_sign_in", {"credential": answer}), 401, REJECTED)
        assert signed_in_as(attacker) is None


def test_a_finish_with_no_begin_is_refused(board: Board) -> None:
    person, authenticator = registered(board)
    made = json.dumps({"rpId": "localhost", "challenge": "bm90LWlzc3VlZA"})
    with browser(board) as client:
        forged = authenticator.get(made)
        reply(client.call("finish_passkey_sign_in", {"credential": forged}), 400, NO_CHALLENGE)
        sign_in(client, person)
        answer = SoftAuthenticator(ORIGIN).create(
            json.dumps({"rp": {"id": "localhost"}, "user": {"id": "Nw"}, "challenge": "AA"})
        )
        finish = client.call("finish_passkey_registration", {"credential": answer})
        reply(finish, 400, NO_CHALLENGE)
    assert len(passkey_ids(board, person)) == 1


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param({"origin": "http://evil.example"}, id="another-origin"),
        pytest.param({"origin": "http://localhost:8080"}, id="another-port"),
        pytest.param({"rp_id": "evil.example"}, id="another-rp"),
        pytest.param({"verified": False}, id="user-not-verified"),
        pytest.param({"user_handle": b"1"}, id="another-user-handle"),
    ],
)
def test_a_sign_in_made_for_another_site_is_refused(board: Board, forgery: dict[str, Any]) -> None:
    """A phishing page at another origin (or claiming another relying party) that got the
    member to use their passkey there: its answer does not sign in here."""
    _person, authenticator = registered(board)
    with browser(board) as client:
        answer = authenticator.get(options(client.call("begin_passkey_sign_in")), **forgery)
        reply(client.call("finish_passkey_sign_in", {"credential": answer}), 401, REJECTED)
        assert signed_in_as(client) is None


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param({"origin": "http://evil.example"}, id="another-origin"),
        pytest.param({"rp_id": "evil.example"}, id="another-rp"),
    ],
)
def test_a_passkey_made_for_another_site_is_not_added(
    board: Board, forgery: dict[str, Any]
) -> None:
    person = board.account("author", "Phished")
    with browser(board) as client:
        sign_in(client, person)
        made = options(client.call("begin_passkey_registration"))
        answer = SoftAuthenticator(ORIGIN).create(made, **forgery)
        reply(client.call("finish_passkey_registration", {"credential": answer}), 400, INVALID)
    assert passkey_ids(board, person) == []


class Later:
    """``time`` for bastion.passkeys only, ``seconds`` ahead."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time(self) -> float:
        return time.time() + self.seconds


def test_an_expired_challenge_is_refused(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five minutes and a second after the begin: refused (and spent), for a sign-in and
    for a registration."""
    person, authenticator = registered(board)
    with browser(board) as client:
        answer = authenticator.get(options(client.call("begin_passkey_sign_in")))
        with monkeypatch.context() as later:
            later.setattr(bastion.passkeys, "time", Later(301))
            reply(client.call("finish_passkey_sign_in", {"credential": answer}), 400, EXPIRED)
        reply(client.call("finish_passkey_sign_in", {"credential": answer}), 400, NO_CHALLENGE)
        assert signed_in_as(client) is None

        sign_in(client, person)
        made = authenticator.create(options(client.call("begin_passkey_registration")))
        with monkeypatch.context() as later:
            later.setattr(bastion.passkeys, "time", Later(301))
            reply(client.call("finish_passkey_registration", {"credential": made}), 400, EXPIRED)
    assert len(passkey_ids(board, person)) == 1


def test_a_cloned_authenticator_is_refused_by_its_counter(board: Board) -> None:
    """A copy of the passkey, used after the original: its counter is not above the one
    stored, so its sign-in is refused."""
    _person, authenticator = registered(board)
    for _ in range(2):
        with browser(board) as client:
            answer = authenticator.get(options(client.call("begin_passkey_sign_in")))
            assert client.call("finish_passkey_sign_in", {"credential": answer}).status_code == 200
    with browser(board) as clone:
        answer = authenticator.get(options(clone.call("begin_passkey_sign_in")), count=1)
        reply(clone.call("finish_passkey_sign_in", {"credential": answer}), 401, REJECTED)
        assert signed_in_as(clone) is None


def test_a_registration_begun_by_one_member_is_not_finished_by_another(board: Board) -> None:
    """Ada begins adding a passkey, signs out; Mallory signs in on the same browser and
    sends the answer: refused, nobody gets it."""
    ada, mallory = board.account("author", "Ada"), board.account("author", "Mallory")
    with browser(board) as client:
        sign_in(client, ada)
        answer = SoftAuthenticator(ORIGIN).create(
            options(client.call("begin_passkey_registration"))
        )
        sign_in(client, mallory)
        reply(client.call("finish_passkey_registration", {"credential": answer}), 400, NO_CHALLENGE)
    assert passkey_ids(board, ada) == passkey_ids(board, mallory) == []


def test_adding_and_removing_a_passkey_need_a_recent_log_in(board: Board) -> None:
    """The profile's step-up rule (``STEP_UP``), as for changing the password."""
    registry, step_up = board.bastion.registry, board.actions.STEP_UP
    for name in ("begin_passkey_registration", "finish_passkey_registration", "delete_passkey"):
        assert registry.get(name).policy is step_up


def test_another_members_passkey_is_not_removed_with_a_leaked_seal(board: Board) -> None:
    """A seal of Ada's passkey, tied to no session (as if it had leaked), sent by Mallory:
    404, as for a passkey that does not exist; Ada's own removal works, and the passkey
    no longer signs in."""
    ada, authenticator = registered(board)
    mallory = board.account("author", "Mallory")
    (passkey_id,) = passkey_ids(board, ada)
    leaked = board.sealed("delete_passkey", {"passkey_id": passkey_id})
    with browser(board) as client:
        sign_in(client, mallory)
        reply(client.call("delete_passkey", {"_bound": leaked}), 404, GONE)
    assert passkey_ids(board, ada) == [passkey_id]
    with browser(board) as client:
        sign_in(client, ada)
        removed = client.call("delete_passkey", {"_bound": leaked})
        reply(removed, 200, {"ok": True, "data": {"message": "Passkey “Laptop” removed."}})
        client.call("logout")
        answer = authenticator.get(options(client.call("begin_passkey_sign_in")))
        reply(client.call("finish_passkey_sign_in", {"credential": answer}), 401, REJECTED)
    assert passkey_ids(board, ada) == []
