"""The quickstart example, exactly as a reader runs it: its page and its actions.

Who may call which action, for every demo account, is in test_quickstart_matrix.py.
"""

import importlib.util
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import assert_reply

from bastion.testing import ActionClient

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
KEY = "quickstart-test-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PASSWORD = "quickstart-test-password"
DIGEST = re.compile(r"[0-9a-f]{16}")
ACTIONS = ("greet", "boom", "count", "login", "logout", "whoami", "publish", "stats")
"""In the order they are registered."""
PAGE = ("greet", "boom", "login", "logout", "whoami", "publish", "stats", "count")
"""In the order the page shows them."""


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """examples/quickstart.py imported fresh, with its configuration set in the
    environment first (the module builds its Bastion at import): the key, the origin
    ActionClient calls from, a directory of its own for the session store, and the
    demo accounts' password. Environment and sys.modules are restored."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_SECRET_KEY", KEY)
        mp.setenv("QUICKSTART_PASSWORD", PASSWORD)
        mp.setenv("BASTION_ALLOWED_ORIGINS", "http://127.0.0.1")
        mp.setenv("BASTION_DATA_DIR", str(tmp_path_factory.mktemp("quickstart-data")))
        spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # As uvicorn imports it (`quickstart:app`), so action IDs are the same as served.
        mp.setitem(sys.modules, "quickstart", module)
        spec.loader.exec_module(module)
        yield module


@pytest.fixture
def client(quickstart: ModuleType) -> Iterator[ActionClient]:
    with ActionClient(quickstart.app, quickstart.bastion) as test_client:
        yield test_client


def invalid(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields},
    }


# --- the page -----------------------------------------------------------------------------


def test_key_comes_from_the_environment(quickstart: ModuleType) -> None:
    """The example reads BASTION_SECRET_KEY: its action IDs are those of that key."""
    assert quickstart.bastion.config.secret_key.reveal() == KEY.encode()
    assert [spec.name for spec in quickstart.bastion.registry] == list(ACTIONS)


def test_home_page_renders_a_form_for_each_action(
    quickstart: ModuleType, client: ActionClient
) -> None:
    """GET / has one POST form per action, in the page's order, each in its own section,
    posting to its action URL with a fresh CSRF token and _next="/"."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    urls = [quickstart.bastion.url_for(name) for name in PAGE]
    assert all(re.fullmatch(r"/_actions/[A-Za-z0-9_-]{24}", url) for url in urls)
    assert len(set(urls)) == 8
    assert re.findall(r'<form method="post" action="([^"]*)" data-bastion>', html) == urls
    forms = re.findall(
        r'<section id="([a-z]+)">.*?'
        r'<form method="post" action="([^"]*)" data-bastion>'
        r'<input type="hidden" name="_csrf" value="([A-Za-z0-9_-]{86})">'
        r'<input type="hidden" name="_next" value="/">',
        html,
        flags=re.DOTALL,
    )
    assert [(name, url) for name, url, _ in forms] == list(zip(PAGE, urls, strict=True))
    # Each token is masked afresh, so no two renders (nor two forms) show the same bytes.
    assert len({token for _, _, token in forms}) == 8
    assert html.count('name="_csrf"') == 8
    assert html.count('<input type="hidden" name="_next" value="/">') == 8
    assert '<input name="name" required maxlength="50" value="">' in html
    assert '<input name="email" type="email" required maxlength="254" value="">' in html
    # A password field is never given a value back, not even after a failed log-in.
    assert '<input name="password" type="password" required maxlength="1024">' in html
    assert '<input name="title" required maxlength="100" value="">' in html
    script = r'<script src="/_actions/bastion.js" nonce="[\w-]{22}" defer></script>'
    assert re.search(script, html)


def test_home_page_says_who_is_signed_in(quickstart: ModuleType, client: ActionClient) -> None:
    """Anonymous: "Not signed in" and the demo accounts; after log-in: the user's name and
    roles, never their email or password hash."""
    signed_in = re.compile(r'<p id="signed-in">(.*?)</p>')
    assert signed_in.findall(client.get("/").text) == [
        "Not signed in. Accounts: user@, author@ and admin@quickstart.example."
    ]
    login = client.call(
        quickstart.login, {"email": "author@quickstart.example", "password": PASSWORD}
    )
    assert login.status_code == 200
    html = client.get("/").text
    assert signed_in.findall(html) == ["Signed in as Ada (author)."]
    assert "author@quickstart.example" not in html
    assert "$argon2id$" not in html


def test_page_names_no_function(client: ActionClient) -> None:
    """Action URLs are opaque: the page does not reveal function or module names."""
    urls = re.findall(r'action="([^"]*)"', client.get("/").text)
    for url in urls:
        for name in (*ACTIONS, "quickstart"):
            assert name not in url


def test_script_is_served(client: ActionClient) -> None:
    response = client.get("/_actions/bastion.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"


# --- greet ---------------------------------------------------------------------------------


def test_greet(quickstart: ModuleType, client: ActionClient) -> None:
    """greet {"name": "Ada"} → exactly {"ok": true, "data": {"message": "Hello, Ada!"}}."""
    response = client.call(quickstart.greet, {"name": "Ada"})
    assert_reply(response, 200, {"ok": True, "data": {"message": "Hello, Ada!"}})
    assert response.content == b'{"ok":true,"data":{"message":"Hello, Ada!"}}'


def test_greet_by_the_url_on_the_page(client: ActionClient) -> None:
    """The URL the page renders is the one that works."""
    greet_url = re.findall(r'action="([^"]*)"', client.get("/").text)[0]
    response = client.post(
        greet_url, json={"name": "Grace"}, headers={"Accept": "application/json"}
    )
    assert_reply(response, 200, {"ok": True, "data": {"message": "Hello, Grace!"}})


def test_greet_empty_name_is_422(quickstart: ModuleType, client: ActionClient) -> None:
    assert_reply(
        client.call(quickstart.greet, {"name": ""}),
        422,
        invalid({"name": "String should have at least 1 character"}),
    )


def test_greet_missing_name_is_422(quickstart: ModuleType, client: ActionClient) -> None:
    assert_reply(client.call(quickstart.greet, {}), 422, invalid({"name": "Field required"}))


def test_greet_unknown_field_is_422(quickstart: ModuleType, client: ActionClient) -> None:
    """An unknown field ("role": "admin") is refused, not ignored."""
    assert_reply(
        client.call(quickstart.greet, {"name": "Ada", "role": "admin"}),
        422,
        invalid({"role": "Extra inputs are not permitted"}),
    )


def test_greet_name_of_51_characters_is_422(quickstart: ModuleType, client: ActionClient) -> None:
    response = client.call(quickstart.greet, {"name": "a" * 51})
    assert_reply(response, 422, invalid({"name": "String should have at most 50 characters"}))
    assert "a" * 51 not in response.text


def test_greet_name_of_50_characters_is_accepted(
    quickstart: ModuleType, client: ActionClient
) -> None:
    assert_reply(
        client.call(quickstart.greet, {"name": "b" * 50}),
        200,
        {"ok": True, "data": {"message": f"Hello, {'b' * 50}!"}},
    )


def test_greet_as_a_plain_form_redirects_home(quickstart: ModuleType, client: ActionClient) -> None:
    """The page's form without JavaScript: 303 to its _next, "/", which then shows the
    outcome once (a refusal would also be a 303 to "/", but with no greeting)."""
    response = client.submit(quickstart.greet, {"name": "Ada", "_next": "/"})
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert response.headers["cache-control"] == "no-store"
    page = client.get("/", headers={"Accept": "text/html"})
    assert '<p role="status">Hello, Ada!</p>' in page.text
    again = client.get("/", headers={"Accept": "text/html"})
    assert 'role="status"' not in again.text


# --- boom ----------------------------------------------------------------------------------


def test_boom_is_a_generic_500_with_a_digest_logged_with_the_traceback(
    quickstart: ModuleType, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets a reference only; the server log has the traceback and the message."""
    caplog.set_level(logging.ERROR, logger="bastion")
    response = client.call(quickstart.boom)
    digest = response.json()["error"].get("digest", "")
    assert DIGEST.fullmatch(digest)
    assert_reply(
        response,
        500,
        {
            "ok": False,
            "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
        },
    )
    leaks = ("hunter2", "Traceback", "password", "postgresql", "RuntimeError", 'File "', ".py")
    for leaked in leaks:
        assert leaked not in response.text

    [record] = [r for r in caplog.records if r.name == "bastion" and r.levelno == logging.ERROR]
    assert record.getMessage() == f"action boom failed [digest {digest}]"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    formatted = logging.Formatter().formatException(record.exc_info)
    assert "Traceback (most recent call last)" in formatted
    assert (
        "RuntimeError: database connection lost: postgresql://app:password=hunter2@db/prod"
        in formatted
    )
    assert digest in caplog.text


# --- whoami --------------------------------------------------------------------------------


def test_whoami_sends_only_the_profile(quickstart: ModuleType, client: ActionClient) -> None:
    """Signed in through the login action as the author, whoami returns the account row;
    its email and password hash never leave: exactly name and roles."""
    login = client.call(
        quickstart.login, {"email": "author@quickstart.example", "password": PASSWORD}
    )
    assert_reply(login, 200, {"ok": True, "data": {"name": "Ada", "roles": ["author"]}})
    response = client.call(quickstart.whoami)
    assert_reply(response, 200, {"ok": True, "data": {"name": "Ada", "roles": ["author"]}})
    assert response.content == b'{"ok":true,"data":{"name":"Ada","roles":["author"]}}'
    for reply in (login, response):
        for leaked in ("password_hash", "argon2", "email", "@", PASSWORD):
            assert leaked not in reply.text


def test_whoami_without_signing_in_is_401(quickstart: ModuleType, client: ActionClient) -> None:
    """An anonymous visitor is told to sign in, and learns nothing of any account."""
    assert_reply(
        client.call(quickstart.whoami),
        401,
        {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}},
    )


# --- count ---------------------------------------------------------------------------------


def test_count_adds_one_per_call_and_the_page_shows_the_total(
    quickstart: ModuleType, client: ActionClient
) -> None:
    """count changes server state: each call adds one, and the page shows the total."""
    before = quickstart.clicks
    assert_reply(client.call(quickstart.count), 200, {"ok": True, "data": {"total": before + 1}})
    assert_reply(client.call(quickstart.count), 200, {"ok": True, "data": {"total": before + 2}})
    assert f'<span id="count-total">{before + 2}</span>' in client.get("/").text
