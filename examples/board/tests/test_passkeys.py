"""The board's passkeys where they cannot work: served at an IP address (``make demo``'s
``http://127.0.0.1:8000``), which WebAuthn takes for no site. The board starts all the
same, offers no passkey, and its passkey actions say why; what passkeys do where they
work is in security/test_passkeys.py and e2e/test_passkeys.py."""

from __future__ import annotations

from .inprocess import Board, html

UNAVAILABLE = {
    "ok": False,
    "error": {
        "code": "passkeys_unavailable",
        "message": "Passkeys need the board served at a host name (such as localhost), "
        "not an IP address.",
    },
}


def test_at_an_ip_address_the_board_offers_no_passkey(board: Board) -> None:
    assert board.app_module.passkeys.RELYING_PARTY is None
    with board.client() as client:
        login = html(client, "/login").text
        assert "data-passkey-sign-in" not in login
        assert "/static/passkeys.js" not in login
        refused = client.call("begin_passkey_sign_in")
        assert (refused.status_code, refused.json()) == (404, UNAVAILABLE)


def test_at_an_ip_address_the_profile_says_what_to_do(board: Board) -> None:
    person = board.member("passkey-less", "author")
    with board.browser(person, reuse=True) as client:
        profile = html(client, "/me").text
        assert "Passkeys need the board served at a host name" in profile
        assert "data-passkey-register" not in profile
        refused = client.call("begin_passkey_registration")
        assert (refused.status_code, refused.json()) == (404, UNAVAILABLE)
