"""docs/guides/scripts.md's page in Chromium: the guide's own app, template and inline
script, served by uvicorn as a reader would serve them. The page's script renames its
post with ``bastion.call`` (the token from ``csrf_meta()``, the sealed post ID sent back
as ``_bound``) under the strict CSP, and a copy of the page in a second browser profile
(another visitor) is refused with the action's message.

Screenshots: build/screenshots/scripts-*.png.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import readme
from playwright.sync_api import Browser, BrowserContext, expect
from services import free_port

from .conftest import REPO, Server, start

GUIDE = REPO / "docs" / "guides" / "scripts.md"

WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def guide_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The guide's app.py and templates/post.html, written out and served by uvicorn."""
    root = tmp_path_factory.mktemp("scripts-guide")
    for block in readme.blocks(GUIDE.read_text()):
        if block.file in ("app.py", "templates/post.html"):
            path = root / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": secrets.token_hex(32),
        "BASTION_ALLOWED_ORIGINS": url,
        "BASTION_STORE": "memory://",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(root),
        "app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = start(command, url, root / "uvicorn.log", env)
    try:
        server.wait_until_up("/posts/1")
        yield server
    finally:
        server.stop()


def test_the_guides_page_renames_its_post_with_bastion_call(
    context: BrowserContext, guide_app: Server, screenshots: Path
) -> None:
    """Click Rename: the title changes in place and after a reload (the server has it);
    the strict policy refused nothing."""
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.goto(guide_app.url + "/posts/1")
    page.get_by_label("New title").fill("Renamed in Chromium")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("#message")).to_have_text("Saved.")
    expect(page.locator("#title")).to_have_text("Renamed in Chromium")
    assert page.evaluate("window.__violations") == []
    page.screenshot(path=screenshots / "scripts-guide-renamed.png")
    page.reload()
    expect(page.locator("#title")).to_have_text("Renamed in Chromium")


def test_a_page_copied_to_another_visitor_is_refused(
    browser: Browser, context: BrowserContext, guide_app: Server, screenshots: Path
) -> None:
    """Attack: Mallory saves Ada's page (its sealed post ID) and opens it in her own
    browser, with her own session and token. The call is refused and the page shows the
    action's message; the post keeps its title."""
    ada = context.new_page()
    ada.goto(guide_app.url + "/posts/2")
    adas_html = ada.content()
    sealed = re.search(r'data-post="([^"]+)"', adas_html)
    assert sealed is not None

    mallory_context = browser.new_context()
    try:
        mallory = mallory_context.new_page()
        mallory.goto(guide_app.url + "/posts/1")  # her own session and token
        mallory.evaluate("(sealed) => { document.body.dataset.post = sealed; }", sealed.group(1))
        mallory.get_by_label("New title").fill("Taken over")
        mallory.get_by_role("button", name="Rename").click()
        expect(mallory.locator("#message")).to_have_text(
            "This form is no longer valid. Reload the page and try again."
        )
        mallory.screenshot(path=screenshots / "scripts-guide-replay-refused.png")
    finally:
        mallory_context.close()
    ada.reload()
    expect(ada.locator("#title")).to_have_text("Second post")
