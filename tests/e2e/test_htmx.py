"""docs/guides/htmx.md's app in Chromium with the real htmx 2 (the board's vendored copy,
served by the app itself), under the default CSP of ``add_security_headers`` and the
page's ``{{ htmx_config() }}``:

- a delete swaps its task for the action's fragment, in place;
- a refused delete (another member's task, 403) shows its message in its own form, and
  a refusal from a form without a slot (a task deleted meanwhile, 404) in the page's,
  the task staying where it was; a page with no slot at all is left as it was;
- a slow call's ``.htmx-indicator`` is hidden, shown while the call is in flight, and
  hidden again: htmx's own indicator style applies, by the nonce;
- nothing is refused by the CSP, and the console holds only the browser's and htmx's
  notes of a refusal's status;
- the control: with the nonce taken out of the page's htmx-config, the CSP refuses
  htmx's style and every indicator shows at rest.

Each test gets a fresh server (the app keeps its tasks in memory). Screenshots:
build/screenshots/htmx-*.png.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest
import readme
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect
from services import free_port

from .conftest import REPO, Server, start

GUIDE = REPO / "docs" / "guides" / "htmx.md"
HTMX = REPO / "examples" / "board" / "static" / "vendor" / "htmx.min.js"
APP_FILES = ("app.py", "templates/tasks.html", "templates/deleted.html", "templates/reminded.html")
REFUSED = "You are not allowed to do that."
ACTION_URL = re.compile(r"/_actions/[A-Za-z0-9_-]+")
OBJECT = re.compile(r"\[object \w+\]")
GONE = "This task no longer exists."

# Recorded before any of the page's scripts run: what the CSP refused, and the refusals
# htmx reports (htmx:responseError, with the status) or could not place (targetError).
WATCH = """
window.__violations = [];
window.__htmx = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
["htmx:responseError", "htmx:targetError"].forEach(function (name) {
  document.addEventListener(name, function (e) {
    var xhr = e.detail && e.detail.xhr;
    window.__htmx.push(name + (xhr ? " " + xhr.status : ""));
  });
});
"""

INDICATOR = """(selector) => {
  const style = getComputedStyle(document.querySelector(selector));
  return style.visibility + " " + style.opacity;
}"""


@pytest.fixture
def guide_app(tmp_path: Path) -> Iterator[Server]:
    """The guide's app.py and templates, written out with htmx 2 in static/, and served by
    uvicorn on loopback with a random key and its own origin allowed."""
    if not HTMX.exists():
        pytest.fail(f"{HTMX.relative_to(REPO)} is missing: `make test` installs it (npm)")
    for block in readme.blocks(GUIDE.read_text()):
        if block.file in APP_FILES:
            path = tmp_path / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
    (tmp_path / "static").mkdir()
    shutil.copy(HTMX, tmp_path / "static" / "htmx.min.js")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": secrets.token_hex(32),
        "BASTION_ALLOWED_ORIGINS": url,
        "BASTION_STORE": "memory://",
    }
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers"]
    server = start(command, url, tmp_path / "uvicorn.log", env)
    try:
        server.wait_until_up("/")
        yield server
    finally:
        server.stop()


@dataclass
class Visitor:
    """A signed-in member's tab, and what its console said."""

    page: Page
    console: list[str] = field(default_factory=list)

    def task(self, title: str) -> str:
        """The selector of the list item of the task called ``title``."""
        item = self.page.locator("li", has_text=title)
        expect(item).to_have_count(1)
        return f"#{item.get_attribute('id')}"

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations")
        return found

    def htmx_events(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__htmx")
        return found


def sign_in(context: BrowserContext, server: Server, name: str) -> Visitor:
    """``name`` signs in with the page's own form: htmx posts it, the action answers
    HX-Redirect to its next=, and htmx loads the page again, signed in."""
    context.add_init_script(WATCH)
    page = context.new_page()
    visitor = Visitor(page)
    page.on("console", lambda message: _log(visitor, message))
    page.on("pageerror", lambda error: visitor.console.append(f"pageerror {error}"))
    page.goto(server.url + "/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill("correct horse")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {name}.")).to_be_visible()
    return visitor


def _log(visitor: Visitor, message: ConsoleMessage) -> None:
    # The page names no icon: the browser's own request for one is the app's 404.
    if message.location.get("url", "").endswith("/favicon.ico"):
        return
    if message.type in ("error", "warning"):
        visitor.console.append(f"{message.type} {message.text}")


def clean(visitor: Visitor, refused: int | None = None) -> None:
    """The strict policy refused nothing, and the console holds nothing but, for a
    ``refused`` call, the browser's and htmx's own notes of its status."""
    assert visitor.violations() == []
    expected = []
    if refused is not None:
        reason = HTTPStatus(refused).phrase
        expected = [
            f"error Failed to load resource: the server responded with a status of {refused} "
            f"({reason})",
            f"error Response Status Error Code {refused} from /_actions/…, [object …]",
        ]
    logged = [ACTION_URL.sub("/_actions/…", line) for line in visitor.console]
    assert [OBJECT.sub("[object …]", line) for line in logged] == expected


def test_a_delete_swaps_its_task_for_the_fragment(
    context: BrowserContext, guide_app: Server, screenshots: Path
) -> None:
    """Ada deletes her own task: 200, and htmx swaps the fragment in for the <li>, with no
    page load (a marker set on the page survives)."""
    ada = sign_in(context, guide_app, "ada")
    page = ada.page
    item = ada.task("Water the plants")
    page.evaluate("window.__still_this_page = true")
    with page.expect_response(lambda r: r.request.method == "POST") as sent:
        page.locator(item).get_by_role("button", name="Delete").click()
    assert sent.value.status == 200
    expect(page.locator(item)).to_have_text("Deleted “Water the plants”.")
    expect(page.locator(item)).to_have_attribute("role", "status")
    expect(page.get_by_role("button", name="Delete")).to_have_count(1)  # grace's is left
    assert page.evaluate("window.__still_this_page") is True
    page.screenshot(path=screenshots / "htmx-deleted.png")
    assert ada.htmx_events() == []
    clean(ada)


def test_a_refused_delete_shows_its_message_in_its_form(
    context: BrowserContext, guide_app: Server, screenshots: Path
) -> None:
    """Ada deletes Grace's task: 403, the alert is swapped into that form's own slot, and
    the task stays in the list, whole."""
    ada = sign_in(context, guide_app, "ada")
    page = ada.page
    item = ada.task("Fix the fence")
    with page.expect_response(lambda r: r.request.method == "POST") as sent:
        page.locator(item).get_by_role("button", name="Delete").click()
    assert sent.value.status == 403
    alert = page.locator(f"{item} form [data-bastion-message] p.bastion-error[role=alert]")
    expect(alert).to_have_text(REFUSED)
    expect(alert).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(1)  # there, and nowhere else
    expect(page.locator('[data-bastion-message="page"]')).to_be_empty()
    expect(page.locator(item)).to_contain_text("Fix the fence (grace)")
    expect(page.locator(item).get_by_role("button")).to_have_count(2)
    page.screenshot(path=screenshots / "htmx-refused.png")
    assert ada.htmx_events() == ["htmx:responseError 403"]
    clean(ada, refused=403)


def test_a_refusal_without_a_slot_of_its_own_shows_in_the_pages(
    browser: Browser, context: BrowserContext, guide_app: Server
) -> None:
    """Grace deletes her task in her own browser; Ada's page still shows it and she sends
    a reminder: 404, and the message goes to the page's slot, since Remind's form has none.
    The stale task stays on Ada's page."""
    ada = sign_in(context, guide_app, "ada")
    grace_context = browser.new_context()
    try:
        grace = sign_in(grace_context, guide_app, "grace")
        grace.page.locator(grace.task("Fix the fence")).get_by_role("button", name="Delete").click()
        expect(grace.page.get_by_text("Deleted “Fix the fence”.")).to_be_visible()
        clean(grace)
    finally:
        grace_context.close()
    page = ada.page
    item = ada.task("Fix the fence")
    with page.expect_response(lambda r: r.request.method == "POST") as sent:
        page.locator(item).get_by_role("button", name="Remind").click()
    assert sent.value.status == 404
    expect(page.locator('[data-bastion-message="page"] p[role=alert]')).to_have_text(GONE)
    expect(page.locator(f"{item} output")).to_be_empty()
    expect(page.locator(item)).to_contain_text("Fix the fence (grace)")
    assert ada.htmx_events() == ["htmx:responseError 404"]
    clean(ada, refused=404)


def test_a_page_without_a_slot_is_left_as_it_was(
    context: BrowserContext, guide_app: Server
) -> None:
    """With every slot taken away, a refusal goes into the htmx-config meta tag: nothing
    shows and nothing on the page changes, but htmx still reports the 403 and the form's
    request ends (no htmx-request class left behind, its indicator hidden again)."""
    ada = sign_in(context, guide_app, "ada")
    page = ada.page
    page.evaluate("document.querySelectorAll('[data-bastion-message]').forEach(s => s.remove())")
    before = page.locator("body").inner_html()
    item = ada.task("Fix the fence")
    with page.expect_response(lambda r: r.request.method == "POST") as sent:
        page.locator(item).get_by_role("button", name="Delete").click()
    assert sent.value.status == 403
    page.wait_for_function("window.__htmx.length > 0")
    expect(page.locator(".htmx-request")).to_have_count(0)
    assert page.evaluate(INDICATOR, f"{item} .htmx-indicator") == "hidden 0"
    assert page.locator("body").inner_html() == before
    assert page.locator("meta[name=htmx-config]").inner_text() == REFUSED
    expect(page.get_by_role("alert")).to_have_count(0)
    assert ada.htmx_events() == ["htmx:responseError 403"]
    clean(ada, refused=403)


def test_the_indicator_shows_only_while_its_call_is_in_flight(
    context: BrowserContext, guide_app: Server, screenshots: Path
) -> None:
    """Remind takes half a second. Its "Sending…" is hidden (htmx's style, applied by the
    nonce), shown while the call is in flight, and hidden again when the fragment is in."""
    ada = sign_in(context, guide_app, "ada")
    page = ada.page
    item = ada.task("Water the plants")
    indicator = f"{item} form:has(output) .htmx-indicator"
    assert page.evaluate(INDICATOR, indicator) == "hidden 0"
    with page.expect_response(lambda r: r.request.method == "POST") as sent:
        page.locator(item).get_by_role("button", name="Remind").click()
        page.wait_for_function(f"() => ({INDICATOR})({indicator!r}) === 'visible 1'", polling="raf")
        assert page.locator(f"{item} output").inner_text() == ""  # still in flight
        page.screenshot(path=screenshots / "htmx-indicator.png")
    assert sent.value.status == 200
    expect(page.locator(f"{item} output")).to_have_text("ada reminded ada of “Water the plants”.")
    page.wait_for_function(f"() => ({INDICATOR})({indicator!r}) === 'hidden 0'")
    clean(ada)


def test_without_the_nonce_the_indicator_style_is_refused(
    context: BrowserContext, guide_app: Server
) -> None:
    """The control: the same page with inlineStyleNonce taken out of its htmx-config. The
    CSP refuses htmx's <style>, and every indicator shows while nothing is in flight."""
    context.add_init_script(WATCH)
    page = context.new_page()

    def without_nonce(route: Route) -> None:
        reply = route.fetch()
        html = re.sub(r'"inlineStyleNonce":"[^"]*",', "", reply.text())
        assert html != reply.text()
        route.fulfill(response=reply, body=html)

    page.route(guide_app.url + "/", without_nonce)
    page.goto(guide_app.url + "/")
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__violations") == ["style-src-elem inline"]
    page.get_by_label("Name").fill("ada")
    page.get_by_label("Password").fill("correct horse")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as ada.")).to_be_visible()
    expect(page.get_by_text("Sending…").first).to_be_visible()
    assert page.evaluate(INDICATOR, ".htmx-indicator") == "visible 1"
