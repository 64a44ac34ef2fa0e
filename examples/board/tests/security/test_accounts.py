"""Signed-in attacks on the board's accounts and limits (issue 12, findings 2 and 4).

2. A look-alike account resets the admin's log-in throttle: sign-up spelled addresses one
   way (NFC + lower) and the throttle another (NFKC + casefold), so ``admin@…`` with a
   full-width ``a`` made a second account whose throttle window was the admin's. Now
   sign-up, log-in and the throttle share bastion's one spelling, and sign-up refuses a
   look-alike of another script.
4. Per-address limits stopped applying once signed in: a public action's limit is now
   counted per address whoever calls.

The board is imported as uvicorn imports it (the ``board`` fixture), on SQLite: what is
tested here is bastion's one spelling and its limits, which no database changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bastion.testing import ActionClient

from ..inprocess import ADMIN_PASSWORD, PASSWORD, Board, invalid, new_email

ADMIN = "admin@board.example"
EMAIL_TAKEN = "An account with this email already exists."
LOOKALIKE = "This mixes letters of different alphabets that look alike: type it in one alphabet."
LOGIN_FAILED = {
    "ok": False,
    "error": {"code": "login_failed", "message": "Wrong email or password."},
}


def sign_up(client: ActionClient, email: str) -> Any:
    reply = client.call("signup", {"name": "Mallory", "email": email, "password": PASSWORD})
    return reply.status_code, reply.json()


@pytest.mark.parametrize(
    "spelling",
    [
        "\uff41dmin@board.example",  # full-width a
        "\uff21\uff24\uff2d\uff29\uff2e@board.example",  # full-width capitals
        "ADMIN@Board.Example",
        " admin@board.example ",
    ],
)
def test_other_spellings_of_the_admins_address_are_taken(board: Board, spelling: str) -> None:
    """Attack: sign up with another spelling of the admin's address. It is the same
    address in bastion's one spelling: 422 "taken", and no second account."""
    with board.client() as client:
        assert sign_up(client, spelling) == (422, invalid({"email": EMAIL_TAKEN}))
    assert board_accounts_like(board, "dmin@board.example") == [ADMIN]


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u0430dmin@board.example",  # Cyrillic a
        "adm\u0456n@board.example",  # Cyrillic i
        "\u03b1dmin@board.example",  # Greek alpha
        "admin@b\u03bfard.example",  # Greek omicron in the domain
        "\u0570dmin@board.example",  # Armenian
    ],
)
def test_mixed_script_look_alikes_of_an_address_are_refused(board: Board, lookalike: str) -> None:
    """Attack: sign up with the admin's address written with a letter of another script
    that looks the same. Refused (422) with a sentence, and no account is made."""
    with board.client() as client:
        assert sign_up(client, lookalike) == (422, invalid({"email": LOOKALIKE}))
    assert board_accounts_like(board, lookalike) == []


def board_accounts_like(board: Board, fragment: str) -> list[str]:
    Account = board.db_module.Account
    with board.core.db.session() as session:
        emails = session.scalars(select(Account.email).where(Account.email.contains(fragment)))
        return sorted(emails)


def test_a_look_alike_log_in_cannot_reset_the_admins_throttle(board: Board) -> None:
    """The report's attack: a look-alike sign-up, then three rounds of four wrong admin
    passwords and a log-in to the look-alike. Before: 12 failures and no 429 (the
    look-alike's successful log-in cleared the admin's window). Now the look-alike does not
    exist, its log-in is the admin's fifth failure, and the sixth attempt is 429."""
    with board.client() as client:
        assert sign_up(client, "\uff41dmin@board.example")[0] == 422
        statuses = []
        for _ in range(3):
            for _ in range(4):
                statuses.append(client.call("login", {"email": ADMIN, "password": "not it"}))
            statuses.append(
                client.call("login", {"email": "\uff41dmin@board.example", "password": PASSWORD})
            )
        assert [(r.status_code, r.json()) for r in statuses[:5]] == [(401, LOGIN_FAILED)] * 5
        assert [r.status_code for r in statuses[5:]] == [429] * 10
        # The admin's own password is refused too until the window ends.
        right = client.call("login", {"email": ADMIN, "password": ADMIN_PASSWORD})
        assert right.status_code == 429


def test_log_in_finds_the_account_in_any_spelling(board: Board) -> None:
    """Log-in reads the address in the same spelling as sign-up: the admin signs in with a
    full-width, upper-case spelling of their address."""
    with board.client() as client:
        reply = client.call(
            "login", {"email": "\uff21DMIN@BOARD.example", "password": ADMIN_PASSWORD}
        )
    assert reply.status_code == 200, reply.text


def test_a_spent_sign_up_limit_holds_for_signed_in_sessions_from_that_address(
    board: Board,
) -> None:
    """The report's attack (finding 4): ten anonymous sign-ups from one address meet 429;
    sign-up calls from a signed-in session at that address used to go on (e-mail probing
    continued). A public action's limit holds per address whoever calls: still 429."""
    address = ("10.99.0.4", 5000)
    member = board.account("reader")
    with ActionClient(board.app, board.bastion, client=address) as anonymous:
        for _ in range(10):
            assert sign_up(anonymous, "x")[0] == 422
        assert sign_up(anonymous, new_email())[0] == 429
    with ActionClient(board.app, board.bastion, client=address) as signed_in:
        login = signed_in.call("login", {"email": member.email, "password": member.password})
        assert login.status_code == 200, login.text
        probe = signed_in.call(
            "signup", {"name": "Probe", "email": new_email(), "password": PASSWORD}
        )
    assert probe.status_code == 429
    assert probe.json()["error"]["code"] == "rate_limited"
