"""Passkeys in Chromium, with its virtual authenticator (the DevTools protocol's WebAuthn
domain: a platform authenticator that holds resident keys and verifies its user).

WebAuthn takes no IP address for a site, so this board is served (uvicorn on 127.0.0.1,
as ever) for the origin ``http://localhost:PORT`` (its one allowed origin, so its
relying party), and the browser visits it there: a secure context, like https.

- A member signs in with their password, adds a passkey on the profile, signs out, and
  signs back in with the passkey alone: no address, no password typed.
- The answer Chromium sent, replayed in the same session, is refused (400, no challenge
  left); after a new begin, it answers a challenge that is not the one pending (401).

Every page is saved in build/screenshots/board-passkey-*.png.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.chromium import EXPECT_TIMEOUT
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, expect
from services import free_port

from ..databases import sqlite_url
from ..served import ADMIN, ADMIN_PASSWORD, AUTHOR, AUTHOR_PASSWORD, BoardServer

AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


@dataclass
class LocalBoard:
    server: BoardServer
    url: str
    """``http://localhost:PORT``: where the browser opens it."""


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBoard]:
    """The board as `make demo HOST=localhost` serves it: allowed origin and relying party
    ``localhost`` (127.0.0.1 stays a trusted host, for the server's readiness check)."""
    directory = tmp_path_factory.mktemp("board")
    port = free_port()
    url = f"http://localhost:{port}"
    env = {"BASTION_ALLOWED_ORIGINS": url, "BASTION_TRUSTED_HOSTS": "localhost,127.0.0.1"}
    server = BoardServer(
        directory, sqlite_url(directory / "data" / "board.sqlite3"), port=port, env=env
    )
    try:
        server.wait_ready()
        yield LocalBoard(server, url)
    finally:
        server.stop()


@dataclass
class Device:
    """A browser context with a virtual authenticator plugged in."""

    context: BrowserContext
    page: Page
    cdp: CDPSession
    authenticator: str

    def credentials(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator}
        )["credentials"]
        return found


@pytest.fixture
def device(browser: Browser) -> Iterator[Device]:
    context = browser.new_context()
    context.set_default_timeout(EXPECT_TIMEOUT * 2)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    try:
        yield Device(context, page, cdp, added["authenticatorId"])
    finally:
        context.close()


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=screenshots / f"board-passkey-{name}.png", full_page=True)


def sign_in(page: Page, board: LocalBoard, email: str, password: str) -> None:
    page.goto(board.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(board.url + "/")


def test_a_member_signs_in_with_a_passkey_alone(
    board: LocalBoard, device: Device, screenshots: Path
) -> None:
    page = device.page
    sign_in(page, board, AUTHOR, AUTHOR_PASSWORD)

    page.goto(board.url + "/me")
    section = page.locator("#passkeys")
    expect(section.get_by_text("No passkeys yet.")).to_be_visible()
    section.get_by_label("Name").fill("Chromium")
    section.get_by_role("button", name="Add a passkey").click()
    expect(section.locator("li", has_text="Chromium")).to_contain_text("never used")
    (credential,) = device.credentials()
    assert credential["isResidentCredential"] is True
    assert credential["rpId"] == "localhost"
    shot(page, screenshots, "profile")

    page.locator("#sign-out").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(board.url + "/login")
    shot(page, screenshots, "login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(board.url + "/")
    expect(page.locator(".signed-in")).to_have_text("Ada author")
    (used,) = device.credentials()
    assert used["signCount"] > credential["signCount"]
    page.goto(board.url + "/me")
    expect(page.locator("#passkeys li", has_text="Chromium")).to_contain_text("last used")
    shot(page, screenshots, "signed-in")


def test_chromiums_answer_replayed_is_refused(board: LocalBoard, device: Device) -> None:
    """A real authenticator's answer, captured as it left the page and sent again from
    the same session (its cookies, a valid CSRF token): 400 passkey_no_challenge; sent
    after a new begin, 401 passkey_rejected. The session is no one's afterwards."""
    page = device.page
    sign_in(page, board, ADMIN, ADMIN_PASSWORD)
    page.goto(board.url + "/me")
    page.locator("#passkeys").get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkeys li")).not_to_have_count(0)
    page.locator("#sign-out").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(board.url + "/login")

    box = page.locator("[data-passkey-sign-in]")
    begin, finish = box.get_attribute("data-begin"), box.get_attribute("data-finish")
    assert begin is not None
    assert finish is not None
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith(finish)) as sent:
        page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(board.url + "/")
    answer = sent.value.post_data
    assert answer is not None
    assert json.loads(answer)["credential"]

    page.locator("#sign-out").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(board.url + "/login")
    token = page.locator('input[name="_csrf"]').first.get_attribute("value")
    assert token

    def post(path: str, body: str) -> tuple[int, Any]:
        reply = device.context.request.post(
            board.url + path,
            data=body,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Origin": board.url,
                "X-CSRF-Token": token,
            },
        )
        return reply.status, reply.json()

    status, body = post(finish, answer)
    assert (status, body["error"]["code"]) == (400, "passkey_no_challenge")
    assert post(begin, "{}")[0] == 200
    status, body = post(finish, answer)
    assert (status, body["error"]["code"]) == (401, "passkey_rejected")
    page.goto(board.url + "/me")
    expect(page).to_have_url(board.url + "/login?next=%2Fme")
