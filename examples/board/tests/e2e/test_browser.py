"""The demo board in a real browser (Debian's Chromium through Playwright), with
JavaScript on and off, and from a script that keeps its own cookies.

- A newcomer signs up, signs in, publishes, edits and deletes a post, and signs out.
- An author can neither edit nor delete another's post: no button for it, a 403 page,
  and neither a forged post ID nor a sealed one replayed from elsewhere gets through
  (in the browser, and at the HTTP level, with exact statuses). An admin can.
- A visitor who is not signed in is sent to log in, and back afterwards.
- The report page shows a digest, and the server log has the error under the same one.
- The inline delete uses htmx, served by the board itself; without htmx the same form
  still works as a plain post.

Every page the tests pass through is saved in build/screenshots/board-*.png.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from e2e.chromium import EXPECT_TIMEOUT
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, Request, expect

from ..inprocess import EXAMPLES
from ..test_board import ACTIONS
from .conftest import Board

REPO = EXAMPLES.parent
HTMX = EXAMPLES / "board" / "static" / "vendor" / "htmx.min.js"
PASSWORD = "correct horse battery staple"
COOKIE = "board_session"
DIGEST = re.compile(r"[0-9a-f]{16}")
BOUND_INVALID = "This form is no longer valid. Reload the page and try again."
MODES = [pytest.param(True, id="js"), pytest.param(False, id="no-js")]


# --- a script with its own cookie jar -------------------------------------------------------------


@dataclass
class Form:
    """An action form of a page: where it posts, and its hidden fields."""

    action: str
    hidden: dict[str, str]


class Visitor:
    """What someone with a script and a session of their own can send: cookies kept,
    ``Origin`` set as a browser on the page would, redirects not followed."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.email: str | None = None
        self.http = httpx.Client(
            base_url=board.url,
            headers={"Origin": board.url},
            follow_redirects=False,
            trust_env=False,  # loopback only, never through a proxy from the environment
        )

    def close(self) -> None:
        self.http.close()

    @property
    def cookie(self) -> str:
        value = self.http.cookies.get(COOKIE)
        assert value, "not signed in"
        return str(value)

    def page(self, path: str, status: int = 200) -> str:
        response = self.http.get(path, headers={"Accept": "text/html"})
        assert response.status_code == status, (path, response.status_code)
        return response.text

    def form(self, path: str, within: str = "main") -> Form:
        """The one action form inside the element with id ``within`` on page ``path``."""
        element = _element(self.page(path), within)
        found = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', element, re.S)
        assert len(found) == 1, f"{len(found)} forms in #{within} of {path}"
        action, inner = found[0]
        fields = re.findall(r'<input type="hidden" name="(_\w+)" value="([^"]*)">', inner)
        return Form(action, dict(fields))

    def send(self, form: Form, fields: dict[str, str]) -> httpx.Response:
        """Post the form with ``fields`` (overriding its hidden ones), asking for JSON."""
        return self.http.post(
            form.action, data={**form.hidden, **fields}, headers={"Accept": "application/json"}
        )

    def sign_in(self, email: str, password: str) -> None:
        reply = self.send(self.form("/login"), {"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        self.email = email

    def sign_out(self) -> None:
        reply = self.send(self.form("/", within="sign-out"), {})
        assert reply.status_code == 200, reply.text

    def sign_up(self, name: str, email: str, password: str) -> None:
        fields = {"name": name, "email": email, "password": password}
        reply = self.send(self.form("/signup"), fields)
        assert reply.status_code == 200, reply.text

    def post(self, post_id: int) -> str:
        """The post's card on the board, as this visitor sees it."""
        return _element(self.page("/"), f"post-{post_id}")

    def publish(self, title: str, body: str = "Written by a script.") -> int:
        reply = self.send(self.form("/", within="compose"), {"title": title, "body": body})
        assert reply.status_code == 200, reply.text
        post_id: int = reply.json()["data"]["id"]
        return post_id


def _element(html: str, element_id: str) -> str:
    found = re.search(rf'<(\w+)[^>]* id="{re.escape(element_id)}"[^>]*>.*?</\1>', html, re.S)
    assert found is not None, f"no #{element_id}"
    return found.group(0)


@pytest.fixture(scope="module")
def people(board: Board) -> Iterator[dict[str, Visitor]]:
    """Signed-in scripts for the seeded admin (Grace) and author (Ada), and for Mallory,
    an author who signs up here. Their cookies also sign in browser contexts."""
    visitors = {name: Visitor(board) for name in ("grace", "ada", "mallory")}
    try:
        visitors["grace"].sign_in(Board.ADMIN, board.admin_password)
        visitors["ada"].sign_in(Board.AUTHOR, board.author_password)
        mallory = f"mallory-{secrets.token_hex(3)}@board.example"
        visitors["mallory"].sign_up("Mallory", mallory, PASSWORD)
        visitors["mallory"].sign_in(mallory, PASSWORD)
        yield visitors
    finally:
        for visitor in visitors.values():
            visitor.close()


# --- browsers -------------------------------------------------------------------------------------


@contextmanager
def browsing(
    browser: Browser, board: Board, javascript: bool, as_: Visitor | None = None
) -> Iterator[Page]:
    """A fresh browser profile, JavaScript on or off, signed in with ``as_``'s session."""
    context: BrowserContext = browser.new_context(java_script_enabled=javascript)
    context.set_default_timeout(EXPECT_TIMEOUT)
    if as_ is not None:
        context.add_cookies([{"name": COOKIE, "value": as_.cookie, "url": board.url}])
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, screenshots: Path, name: str, javascript: bool | None = None) -> None:
    suffix = "" if javascript is None else ("-js" if javascript else "-no-js")
    page.screenshot(path=screenshots / f"board-{name}{suffix}.png")


def notice(page: Page) -> Locator:
    """The message a plain form post left for the page (no JavaScript)."""
    return page.locator("main > .notice")


def post_card(page: Page, title: str) -> Locator:
    return page.locator("article.post").filter(has=page.get_by_role("heading", name=title))


def accept(dialog: Dialog) -> None:
    dialog.accept()


# --- the journey ------------------------------------------------------------------------------


@pytest.mark.parametrize("javascript", MODES)
def test_sign_up_log_in_create_edit_delete(
    browser: Browser, board: Board, screenshots: Path, javascript: bool
) -> None:
    """The whole life of a post, through the pages' own forms. Without JavaScript every
    step is a plain post answered 303, with its message shown once on the next page;
    with it, bastion.js sends the forms and htmx deletes the post in place."""
    mode = "js" if javascript else "no-js"
    email = f"pat-{mode}-{secrets.token_hex(3)}@board.example"
    title = f"Stand-up notes ({mode})"
    with browsing(browser, board, javascript) as page:
        page.goto(board.url + "/signup")
        page.get_by_label("Name").fill("Pat")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        shot(page, screenshots, "signup", javascript)
        page.get_by_role("button", name="Create account").click()

        expect(page).to_have_url(board.url + "/login?welcome=1")
        expect(page.get_by_role("status")).to_contain_text("Your account is ready: sign in.")
        if javascript:
            page.get_by_label("Email").fill(email)
        else:  # the flash of the sign-up fills it in
            expect(page.get_by_label("Email")).to_have_value(email)
        page.get_by_label("Password").fill(PASSWORD)
        shot(page, screenshots, "login", javascript)
        page.get_by_role("button", name="Sign in").click()

        expect(page).to_have_url(board.url + "/")
        expect(page.locator(".signed-in")).to_have_text("Pat author")
        compose = page.locator("#compose")
        compose.get_by_label("Title").fill(title)
        compose.get_by_label("Post").fill("Shipped the export.\n\nNext: the admin page.")
        compose.get_by_role("button", name="Publish").click()
        post = post_card(page, title)
        expect(post).to_be_visible()
        expect(post.locator(".author")).to_have_text("Pat")
        if not javascript:
            expect(notice(page)).to_have_text(f"Published “{title}”.")
        post_id = (post.get_attribute("id") or "").removeprefix("post-")
        assert post_id.isdigit()
        shot(page, screenshots, "board", javascript)

        post.get_by_role("link", name="Edit").click()
        expect(page).to_have_url(f"{board.url}/posts/{post_id}/edit")
        expect(page.get_by_label("Title")).to_have_value(title)
        edited = title + ", edited"
        page.get_by_label("Title").fill(edited)
        shot(page, screenshots, "edit", javascript)
        page.get_by_role("button", name="Save changes").click()
        expect(page).to_have_url(f"{board.url}/#post-{post_id}")
        post = post_card(page, edited)
        expect(post).to_be_visible()
        expect(post.locator(".meta")).to_contain_text("edited")

        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.once("dialog", accept)  # htmx asks first (hx-confirm)
        delete = f"{board.url}/_actions/"
        with page.expect_request(lambda r: r.url.startswith(delete)) as sent:
            post.get_by_role("button", name="Delete").click()
        if javascript:
            assert sent.value.header_value("hx-request") == "true"
            gone = page.locator(f"#post-{post_id}")
            expect(gone).to_have_text(f"Deleted “{edited}”.")
            assert navigations == []  # swapped in place by htmx
            shot(page, screenshots, "deleted", javascript)
        else:
            assert sent.value.header_value("hx-request") is None
            expect(notice(page)).to_have_text(f"Deleted “{edited}”.")
        page.reload()
        expect(post_card(page, edited)).to_have_count(0)

        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(board.url + "/login")
        page.goto(board.url + "/")
        expect(page).to_have_url(board.url + "/login")


@pytest.mark.parametrize("javascript", MODES)
def test_a_refused_sign_up_shows_its_message_beside_the_field(
    browser: Browser, board: Board, screenshots: Path, javascript: bool
) -> None:
    """A password under 12 characters, past the browser's own check: the server refuses
    it and says so next to the field. Without JavaScript the page comes back with the
    name and email typed, never the password."""
    with browsing(browser, board, javascript) as page:
        page.goto(board.url + "/signup")
        password = page.get_by_label("Password")
        # Lifted through DevTools, as any visitor can: only the server stands in the way.
        password.evaluate("input => input.removeAttribute('minlength')")
        page.get_by_label("Name").fill("Sam")
        page.get_by_label("Email").fill("sam@board.example")
        password.fill("too short")
        page.get_by_role("button", name="Create account").click()

        error = page.locator('[data-bastion-error="password"]')
        expect(error).to_have_text("Should have at least 12 characters.")
        expect(password).to_have_attribute("aria-invalid", "true")
        expect(page).to_have_url(board.url + "/signup")
        expect(page.get_by_label("Name")).to_have_value("Sam")
        expect(page.get_by_label("Email")).to_have_value("sam@board.example")
        if javascript:
            expect(page.locator("[data-form-error]")).to_have_text("Some fields are invalid.")
        else:
            expect(notice(page)).to_have_text("Some fields are invalid.")
            expect(password).to_have_value("")
            assert "too short" not in page.content()
        shot(page, screenshots, "signup-refused", javascript)


# --- another's post ------------------------------------------------------------------------------


@pytest.mark.parametrize("javascript", MODES)
def test_an_author_cannot_edit_or_delete_anothers_post_in_the_browser(
    browser: Browser,
    board: Board,
    people: dict[str, Visitor],
    screenshots: Path,
    javascript: bool,
) -> None:
    """Mallory sees no Edit or Delete on Ada's post, gets a 403 page at its edit URL,
    and when she puts Ada's sealed post ID into her own edit form, the server refuses
    it: the form says why, and Ada's post has not changed."""
    ada, mallory = people["ada"], people["mallory"]
    target = f"Ada's plan ({'js' if javascript else 'no-js'})"
    ada_post = ada.publish(target)
    own_post = mallory.publish(f"Mallory's note ({'js' if javascript else 'no-js'})")
    adas_seal = ada.form(f"/posts/{ada_post}/edit").hidden["_bound"]

    with browsing(browser, board, javascript, as_=mallory) as page:
        page.goto(board.url + "/")
        card = post_card(page, target)
        expect(card).to_be_visible()
        expect(card.get_by_role("link", name="Edit")).to_have_count(0)
        expect(card.get_by_role("button", name="Delete")).to_have_count(0)

        response = page.goto(f"{board.url}/posts/{ada_post}/edit")
        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(page.locator("main")).to_contain_text("Only its author or an admin can edit")
        shot(page, screenshots, "forbidden", javascript)

        page.goto(f"{board.url}/posts/{own_post}/edit")
        page.locator('input[name="_bound"]').evaluate(
            "(input, v) => { input.value = v; }", adas_seal
        )
        page.get_by_label("Title").fill("Mallory was here")
        page.get_by_role("button", name="Save changes").click()
        if javascript:
            expect(page.locator("[data-form-error]")).to_have_text(BOUND_INVALID)
        else:
            expect(notice(page)).to_have_text(BOUND_INVALID)
        expect(page).to_have_url(f"{board.url}/posts/{own_post}/edit")
        shot(page, screenshots, "replay-refused", javascript)

    on_the_board = ada.post(ada_post)
    assert target.replace("'", "&#39;") in on_the_board
    assert "Mallory" not in on_the_board


def test_forged_and_replayed_post_ids_are_refused_at_the_http_level(
    board: Board, people: dict[str, Visitor]
) -> None:
    """Mallory, with a script and her own session, aims her edit and delete forms at
    Ada's post: a plain post_id field is unknown (422); Ada's sealed value is tied to
    Ada's session (400); Ada's whole form, token included, is another session's (403);
    an edited seal, her delete form's seal on the edit action, and a seal from before
    she signed in again are all refused (400). Her own seal edits her own post only."""
    ada, mallory, board_log = people["ada"], people["mallory"], board.statuses
    ada_post = ada.publish("Ada's roadmap")
    own_post = mallory.publish("Mallory's own")
    adas_edit = ada.form(f"/posts/{ada_post}/edit")
    adas_delete = ada.form("/", within=f"post-{ada_post}")
    assert mallory.page(f"/posts/{ada_post}/edit", status=403)
    assert f'id="post-{ada_post}"' in mallory.page("/")
    with pytest.raises(AssertionError, match="0 forms"):
        mallory.form("/", within=f"post-{ada_post}")  # no delete form on Ada's post for her

    own_edit = mallory.form(f"/posts/{own_post}/edit")
    own_delete = mallory.form("/", within=f"post-{own_post}")
    draft = {"title": "Pwned", "body": "Mallory was here."}
    path = own_edit.action
    before = board_log("POST", path)

    def refused(reply: httpx.Response, status: int, code: str) -> None:
        assert reply.status_code == status, reply.text
        assert reply.json()["error"]["code"] == code

    refused(mallory.send(own_edit, {**draft, "post_id": str(ada_post)}), 422, "invalid")
    refused(
        mallory.send(own_edit, {**draft, "_bound": adas_edit.hidden["_bound"]}),
        400,
        "bound_invalid",
    )
    refused(mallory.send(adas_edit, draft), 403, "csrf_failed")
    tampered = own_edit.hidden["_bound"][:-6] + "AAAAAA"
    refused(mallory.send(own_edit, {**draft, "_bound": tampered}), 400, "bound_invalid")
    refused(
        mallory.send(own_edit, {**draft, "_bound": own_delete.hidden["_bound"]}),
        400,
        "bound_invalid",
    )
    replayed = {"_bound": adas_delete.hidden["_bound"]}
    refused(mallory.send(own_delete, replayed), 400, "bound_invalid")
    assert board_log("POST", path) == [*before, 422, 400, 403, 400, 400]

    # A seal from an earlier session is dead after signing in again.
    old_seal = own_edit.hidden["_bound"]
    assert mallory.email is not None
    mallory.sign_out()
    mallory.sign_in(mallory.email, PASSWORD)
    fresh_edit = mallory.form(f"/posts/{own_post}/edit")
    refused(mallory.send(fresh_edit, {**draft, "_bound": old_seal}), 400, "bound_invalid")
    assert mallory.send(fresh_edit, draft).status_code == 200

    assert "Ada&#39;s roadmap" in ada.post(ada_post)
    assert "Pwned" not in ada.post(ada_post)
    assert "Pwned" in ada.post(own_post)


def test_an_admin_edits_and_deletes_anyones_post_and_changes_roles(
    browser: Browser, board: Board, people: dict[str, Visitor], screenshots: Path
) -> None:
    """Grace sees Edit and Delete on every post, edits Ada's, deletes Mallory's (htmx),
    and on the admin page makes Mallory a reader, who then has no form to post with."""
    ada, mallory, grace = people["ada"], people["mallory"], people["grace"]
    adas = ada.publish("Ada's draft for the admin")
    spam = mallory.publish("Mallory's spam")
    with browsing(browser, board, True, as_=grace) as page:
        page.goto(f"{board.url}/")
        expect(
            post_card(page, "Ada's draft for the admin").get_by_role("link", name="Edit")
        ).to_be_visible()
        page.goto(f"{board.url}/posts/{adas}/edit")
        expect(page.locator("main")).to_contain_text(
            "You are editing Ada\N{RIGHT SINGLE QUOTATION MARK}s post, as an admin."
        )
        page.get_by_label("Title").fill("Ada's draft, moderated")
        page.get_by_role("button", name="Save changes").click()
        expect(post_card(page, "Ada's draft, moderated")).to_be_visible()

        page.once("dialog", accept)
        post_card(page, "Mallory's spam").get_by_role("button", name="Delete").click()
        expect(page.locator(f"#post-{spam}")).to_have_text("Deleted “Mallory's spam”.")

        page.goto(f"{board.url}/admin")
        row = page.locator("tr", has=page.get_by_role("rowheader", name="Mallory"))
        row.get_by_label("Role of Mallory").select_option("reader")
        row.get_by_role("button", name="Save").click()
        expect(row.locator(".role-form output")).to_have_text("Mallory is now a reader.")
        shot(page, screenshots, "admin")
        assert 'id="compose"' not in mallory.page("/")
        row.get_by_label("Role of Mallory").select_option("author")
        row.get_by_role("button", name="Save").click()
        expect(row.locator(".role-form output")).to_have_text("Mallory is now an author.")
    assert 'id="compose"' in mallory.page("/")


# --- visitors ----------------------------------------------------------------------------------


def test_a_visitor_is_sent_to_log_in_and_back(
    browser: Browser, board: Board, screenshots: Path
) -> None:
    with browsing(browser, board, True) as page:
        for path, landing in (
            ("/", "/login"),
            ("/me", "/login?next=%2Fme"),
            ("/admin", "/login?next=%2Fadmin"),
        ):
            page.goto(board.url + path)
            expect(page).to_have_url(board.url + landing)
        page.get_by_label("Email").fill(Board.ADMIN)
        page.get_by_label("Password").fill(board.admin_password)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(board.url + "/admin")
        expect(page.get_by_role("heading", name="Members")).to_be_visible()


# --- the problem report ---------------------------------------------------------------------------


@pytest.mark.parametrize("javascript", MODES)
def test_the_report_page_shows_the_digest_that_is_in_the_server_log(
    browser: Browser, board: Board, screenshots: Path, javascript: bool
) -> None:
    """ "Something went wrong — reference <digest>" on the page; the same digest in the
    server log, with the database error and its connection string, which the page
    never shows."""
    with browsing(browser, board, javascript) as page:
        page.goto(board.url + "/report")
        page.get_by_label("What happened?").fill("The board is down.")
        page.get_by_role("button", name="Send report").click()
        shown = page.locator("[data-bastion-result]") if javascript else notice(page)
        expect(shown).to_have_text(re.compile(r"^Something went wrong — reference [0-9a-f]{16}$"))
        digest = shown.inner_text().rsplit(" ", 1)[-1]
        assert DIGEST.fullmatch(digest)
        for leaked in ("reports-db", "postgresql", "not-a-real-password", "OperationalError"):
            assert leaked not in page.content()
        shot(page, screenshots, "report", javascript)
    log = board.server.log()
    assert f"bastion: action report_problem failed [digest {digest}]" in log
    after = log.split(f"[digest {digest}]", 1)[1]
    assert "postgresql://board:not-a-real-password@reports-db.internal:5432/reports" in after


# --- htmx, and none -------------------------------------------------------------------------------


def test_htmx_is_served_by_the_board(board: Board, people: dict[str, Visitor]) -> None:
    """From the board's own origin, never a CDN; the page loads it with its other scripts."""
    if not HTMX.exists():
        pytest.fail(f"{HTMX.relative_to(REPO)} is missing: `make test` installs it")
    page = people["ada"].page("/")
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in page
    # Every script and stylesheet is the board's own (relative, same origin). Not a
    # search of the whole page for "cdn": a random sealed value may hold those letters.
    loaded = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*)"', page)
    assert loaded
    assert all(url.startswith("/") and not url.startswith("//") for url in loaded), loaded
    reply = people["ada"].http.get("/static/vendor/htmx.min.js")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    assert reply.content == HTMX.read_bytes()


def test_htmx_shows_a_refusal_in_the_form_it_sent(
    browser: Browser, board: Board, people: dict[str, Visitor]
) -> None:
    """A post deleted elsewhere since the page loaded: htmx swaps the server's alert
    (404) into the form's error slot, and leaves the post where it was."""
    ada = people["ada"]
    title = "Deleted behind your back"
    post_id = ada.publish(title)
    with browsing(browser, board, True, as_=ada) as page:
        page.goto(board.url + "/")
        card = post_card(page, title)
        expect(card).to_be_visible()
        assert ada.send(ada.form("/", within=f"post-{post_id}"), {}).status_code == 200
        page.once("dialog", accept)
        card.get_by_role("button", name="Delete").click()
        expect(card.locator("[data-bastion-message]")).to_have_text("This post no longer exists.")
        expect(card.get_by_role("heading", name=title)).to_be_visible()


def test_without_htmx_the_delete_form_still_works(
    browser: Browser, board: Board, people: dict[str, Visitor], screenshots: Path
) -> None:
    """htmx blocked: the same form is a plain post, answered 303 back to the board."""
    ada = people["ada"]
    title = "Delete me without htmx"
    post_id = ada.publish(title)
    with browsing(browser, board, True, as_=ada) as page:
        page.route("**/static/vendor/htmx.min.js", lambda route: route.abort())
        page.goto(board.url + "/")
        assert page.evaluate("typeof window.htmx") == "undefined"
        with page.expect_request(lambda r: r.method == "POST") as sent:
            post_card(page, title).get_by_role("button", name="Delete").click()
        request: Request = sent.value
        assert request.header_value("hx-request") is None
        expect(page).to_have_url(board.url + "/")
        expect(notice(page)).to_have_text(f"Deleted “{title}”.")
        expect(page.locator(f"#post-{post_id}")).to_have_count(0)


# --- the rest of the pages --------------------------------------------------------------------


@pytest.mark.parametrize("javascript", MODES)
def test_export_shows_only_safe_fields(
    browser: Browser, board: Board, people: dict[str, Visitor], screenshots: Path, javascript: bool
) -> None:
    with browsing(browser, board, javascript, as_=people["ada"]) as page:
        page.goto(board.url + "/me")
        page.get_by_role("button", name="Export my data").click()
        output = page.locator("#export output[data-json]")
        expect(output).to_contain_text(Board.AUTHOR)
        data = json.loads(output.inner_text())
        assert set(data) == {"name", "email", "role", "created_at", "posts"}
        assert (data["name"], data["role"]) == ("Ada", "author")
        assert "argon2" not in page.content()
        shot(page, screenshots, "export", javascript)


def test_security_page_lists_every_action(
    browser: Browser, board: Board, people: dict[str, Visitor], screenshots: Path
) -> None:
    with browsing(browser, board, True, as_=people["ada"]) as page:
        page.goto(board.url + "/security")
        rows = page.locator("table.inventory tbody tr:not(.violation):not(.warning)")
        expect(rows).to_have_count(len(ACTIONS))
        expect(page.locator("#action-create_post")).to_contain_text(
            "require(roles=['admin', 'author'])"
        )
        expect(page.locator(".summary")).to_contain_text(f"{len(ACTIONS)} actions, 0 violations")
        shot(page, screenshots, "security")
        page.goto(board.url + "/me")
        shot(page, screenshots, "profile")
