"""The quickstart in a real browser (Debian's Chromium through Playwright).

- A hostile site cannot make a logged-in visitor's browser call an action: its form post
  and its credentialed fetch are both refused (403) and change nothing.
- Without JavaScript every form still works: post, 303 back to the page, a one-time flash.
- With JavaScript, bastion.js sends the form with fetch and shows the reply in place.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from .conftest import HostileSite, Quickstart

ACTION_PREFIX = "/_actions/"


def open_home(context: BrowserContext, quickstart: Quickstart) -> Page:
    page = context.new_page()
    response = page.goto(quickstart.url + "/")
    assert response is not None
    assert response.status == 200
    return page


def count_total(page: Page) -> int:
    """The counter as the page shows it after a reload."""
    page.reload()
    return int(page.locator("#count-total").inner_text())


def assert_victim_can_count(victim: Page, before: int) -> None:
    """The visitor's own click still counts, exactly once: the session the attack rode on
    was live, so the count standing still means the attack was refused."""
    victim.locator("section#count").get_by_role("button").click()
    expect(victim.locator("section#count output[data-bastion-result]")).to_have_text(
        f'{{"total":{before + 1}}}'
    )
    assert count_total(victim) == before + 1


def assert_session_cookie(context: BrowserContext, quickstart: Quickstart) -> set[str]:
    """The visitor holds a real session: HttpOnly, SameSite=Lax, for the quickstart only.
    Returns the names of its cookies."""
    cookies = context.cookies(quickstart.url)
    assert cookies, "the quickstart set no cookie"
    for cookie in cookies:
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["domain"] == "127.0.0.1"
    return {cookie["name"] for cookie in cookies}


def cookie_names(request: Request) -> set[str]:
    """The names of the cookies the browser sent with ``request``."""
    header = request.header_value("cookie") or ""
    return {part.split("=", 1)[0].strip() for part in header.split(";") if part.strip()}


# What a cross-site call gets: refused at the origin stage, before its token is looked at.
CROSS_ORIGIN = {
    "ok": False,
    "error": {
        "code": "cross_origin",
        "message": "This request did not come from an allowed origin.",
    },
}


# --- a hostile site ------------------------------------------------------------------------


def hostile_form(action: str, fields: dict[str, str], target: str) -> str:
    """A page that posts a hidden form to ``action`` as soon as it loads."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    frame = '<iframe name="sink" title="sink"></iframe>' if target == "sink" else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>You won a prize</title></head>
<body>
  <h1>Claim your prize</h1>
  <form id="attack" method="post" action="{html.escape(action)}" target="{target}" hidden>
    {inputs}<input type="hidden" name="x" value="1">
  </form>
  {frame}
  <script>document.getElementById("attack").submit();</script>
</body></html>
"""


def hostile_fetch(action: str) -> str:
    """A page that calls ``action`` with fetch, with the visitor's cookies, and writes
    down whatever it could learn of the reply."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Totally harmless</title></head>
<body>
  <h1>Loading…</h1>
  <pre id="result">pending</pre>
  <script>
    var result = document.getElementById("result");
    fetch({json.dumps(action)}, {{
      method: "POST",
      credentials: "include",
      headers: {{"Content-Type": "application/x-www-form-urlencoded"}},
      body: "x=1",
    }}).then(function (response) {{
      return response.text().then(function (text) {{
        result.textContent = "read " + response.status + ": " + text;
      }});
    }}, function (error) {{
      result.textContent = "failed: " + error.name;
    }});
  </script>
</body></html>
"""


@pytest.mark.parametrize("target", ["_self", "sink"], ids=["top-window", "iframe"])
def test_cross_site_form_post_is_refused(
    context: BrowserContext,
    quickstart: Quickstart,
    hostile: HostileSite,
    screenshots: Path,
    target: str,
) -> None:
    """A logged-in visitor opens a hostile page that posts a hidden form to `count`, with
    a well-formed CSRF token (the attacker's own, from another session): 403, no count."""
    victim = open_home(context, quickstart)
    assert_session_cookie(context, quickstart)
    before = count_total(victim)

    form = quickstart.forms()["count"]
    action = quickstart.url + form.action
    assert form.action.startswith(ACTION_PREFIX)
    assert set(form.hidden) == {"_csrf", "_next"}
    attack = context.new_page()
    url = hostile.page(f"form-{target}.html", hostile_form(action, form.hidden, target))
    with attack.expect_response(action) as caught:
        attack.goto(url)
    response = caught.value
    assert response.request.method == "POST"
    assert response.request.header_value("origin") == hostile.origin
    assert response.request.header_value("sec-fetch-site") == "cross-site"
    # SameSite=Lax: the browser keeps the visitor's session out of a cross-site post.
    assert response.request.header_value("cookie") is None
    assert response.status == 403
    assert response.header_value("content-type") == "application/json"
    # No page of the app may be framed, refusals included.
    assert response.header_value("x-frame-options") == "DENY"
    assert "frame-ancestors 'none'" in (response.header_value("content-security-policy") or "")

    if target == "_self":
        assert response.json() == CROSS_ORIGIN
        # The browser shows the refusal itself, where the attacker sent the visitor.
        expect(attack).to_have_url(action)
        shown = attack.locator("pre").first
        expect(shown).to_be_visible()
        assert json.loads(shown.inner_text()) == CROSS_ORIGIN
        attack.screenshot(path=screenshots / "csrf-refused.png")
    else:
        # The browser refuses to render the reply inside the attacker's frame at all.
        frame = attack.frame(name="sink")
        assert frame is not None
        expect(frame.locator("pre")).to_have_count(0)
        attack.screenshot(path=screenshots / "csrf-refused-iframe.png")

    assert count_total(victim) == before
    assert_victim_can_count(victim, before)


def test_cross_site_fetch_is_refused(
    context: BrowserContext,
    quickstart: Quickstart,
    hostile: HostileSite,
    screenshots: Path,
) -> None:
    """A hostile page's credentialed fetch to `count`: the server answers 403, the page
    cannot even read that answer, and the count does not move."""
    victim = open_home(context, quickstart)
    assert_session_cookie(context, quickstart)
    before = count_total(victim)

    path = quickstart.forms()["count"].action
    action = quickstart.url + path
    answered = quickstart.statuses("POST", path)
    attack = context.new_page()
    with attack.expect_event("requestfailed", lambda r: r.url == action) as caught:
        attack.goto(hostile.page("fetch.html", hostile_fetch(action)))
    request = caught.value
    assert request.method == "POST"
    # Only the headers the page asked for are known of a request the browser then
    # failed (no Origin, no Sec-Fetch-*): enough to see it came from the hostile page.
    assert request.header_value("referer") == hostile.origin + "/"
    assert request.header_value("content-type") == "application/x-www-form-urlencoded"
    # The reply grants no CORS access, so Chromium withholds it from the page entirely:
    # the attacker's script gets a network error and learns nothing...
    assert request.failure == "net::ERR_FAILED"
    expect(attack.locator("#result")).to_have_text("failed: TypeError")
    attack.screenshot(path=screenshots / "csrf-fetch-refused.png")
    # ...and the server had refused the call anyway.
    assert quickstart.statuses("POST", path) == [*answered, 403]

    assert count_total(victim) == before
    assert_victim_can_count(victim, before)


# --- the page without JavaScript -------------------------------------------------------------


def test_forms_work_without_javascript(
    no_js_context: BrowserContext, quickstart: Quickstart, screenshots: Path
) -> None:
    """Plain HTML forms: post, 303 back to the page, the result shown there once."""
    page = open_home(no_js_context, quickstart)
    home = quickstart.url + "/"
    greet = page.locator("section#greet")
    flash = greet.locator('[role="status"]')

    greet.locator('input[name="name"]').fill("Ada")
    with page.expect_response(lambda r: r.request.method == "POST") as caught:
        greet.get_by_role("button").click()
    posted = caught.value
    assert posted.url.startswith(quickstart.url + ACTION_PREFIX)
    # Same site: the session goes along, and with it the token on the page is valid.
    assert cookie_names(posted.request) == assert_session_cookie(no_js_context, quickstart)
    assert posted.status == 303
    assert posted.header_value("location") == "/"
    expect(page).to_have_url(home)
    expect(flash).to_have_text("Hello, Ada!")
    page.screenshot(path=screenshots / "form-accepted.png", full_page=True)

    page.reload()
    expect(page).to_have_url(home)
    expect(greet).not_to_contain_text("Hello, Ada!")

    before = count_total(page)
    page.locator("section#count").get_by_role("button").click()
    expect(page).to_have_url(home)
    expect(page.locator("#count-total")).to_have_text(str(before + 1))


def test_field_errors_without_javascript(
    no_js_context: BrowserContext, quickstart: Quickstart, screenshots: Path
) -> None:
    """A name over 50 characters, past the browser's own check: the server refuses it,
    and the page comes back with the message by the field and the value typed."""
    page = open_home(no_js_context, quickstart)
    greet = page.locator("section#greet")
    name = greet.locator('input[name="name"]')
    # The page runs no script; Playwright lifts the browser-side limit through DevTools,
    # as any visitor can, so that only the server stands in the way.
    name.evaluate("input => input.removeAttribute('maxlength')")
    too_long = "x" * 60
    name.fill(too_long)
    with page.expect_response(lambda r: r.request.method == "POST") as caught:
        greet.get_by_role("button").click()
    assert caught.value.status == 303
    expect(page).to_have_url(quickstart.url + "/")
    expect(greet.locator('[data-bastion-error="name"]')).to_have_text(
        "String should have at most 50 characters"
    )
    page.screenshot(path=screenshots / "form-refused.png", full_page=True)
    expect(greet.locator('[role="status"]')).to_have_text("Some fields are invalid.")
    expect(name).to_have_value(too_long)


# --- the page with JavaScript ----------------------------------------------------------------


def test_forms_with_javascript_answer_in_place(
    context: BrowserContext, quickstart: Quickstart, screenshots: Path
) -> None:
    """bastion.js sends the form with fetch; the reply shows in the form, no navigation."""
    page = open_home(context, quickstart)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    greet = page.locator("section#greet")
    greet.locator('input[name="name"]').fill("Ada")
    with page.expect_response(lambda r: r.request.method == "POST") as caught:
        greet.get_by_role("button").click()
    reply = caught.value
    assert reply.status == 200
    assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
    expect(greet.locator("output[data-bastion-result]")).to_have_text("Hello, Ada!")
    page.screenshot(path=screenshots / "form-javascript.png", full_page=True)

    counted = page.locator("section#count")
    before = int(page.locator("#count-total").inner_text())
    with page.expect_response(lambda r: r.request.method == "POST") as caught:
        counted.get_by_role("button").click()
    assert caught.value.status == 200
    assert caught.value.json() == {"ok": True, "data": {"total": before + 1}}
    expect(counted.locator("output[data-bastion-result]")).to_have_text(f'{{"total":{before + 1}}}')
    assert navigations == []

    assert count_total(page) == before + 1
