"""The JSON routes beside the actions: a GET, and a POST the page's script sends with
bastion.call, under bastion.protect."""

import re

from steps import join

from bastion.testing import ActionClient

ORIGIN = "http://127.0.0.1"


def page_token(client: ActionClient) -> str:
    """The token the page's <meta name="csrf-token"> holds, which bastion.call sends."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert found is not None
    return found.group(1)


def test_the_get_route_lists_the_members_expenses(client: ActionClient) -> None:
    join(client)
    reply = client.get("/api/expenses")
    assert reply.json() == {"currency": "EUR", "expenses": []}


def test_the_get_route_needs_a_signed_in_member(client: ActionClient) -> None:
    reply = client.get("/api/expenses")
    assert (reply.status_code, reply.json()) == (401, {"detail": "Sign in first."})


def test_the_script_saves_the_currency_as_bastion_call_sends_it(client: ActionClient) -> None:
    join(client)
    headers = {"Origin": ORIGIN, "X-CSRF-Token": page_token(client)}
    reply = client.post("/api/preferences", json={"currency": "USD"}, headers=headers)
    assert (reply.status_code, reply.json()) == (200, {"currency": "USD"})
    assert client.get("/api/expenses").json()["currency"] == "USD"
    assert "<option selected>USD</option>" in client.get("/").text


def test_a_post_without_the_token_is_refused_and_changes_nothing(client: ActionClient) -> None:
    join(client)
    page_token(client)
    reply = client.post("/api/preferences", json={"currency": "GBP"}, headers={"Origin": ORIGIN})
    assert reply.status_code == 403
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "csrf_failed",
            "message": "This form has expired. Reload the page and try again.",
        },
    }
    assert client.get("/api/expenses").json()["currency"] == "EUR"


def test_a_post_from_another_site_is_refused(client: ActionClient) -> None:
    join(client)
    headers = {"Origin": "https://evil.example", "X-CSRF-Token": page_token(client)}
    reply = client.post("/api/preferences", json={"currency": "GBP"}, headers=headers)
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "cross_origin")
    assert client.get("/api/expenses").json()["currency"] == "EUR"


def test_a_visitor_who_is_not_signed_in_cannot_save(client: ActionClient) -> None:
    headers = {"Origin": ORIGIN, "X-CSRF-Token": page_token(client)}
    reply = client.post("/api/preferences", json={"currency": "GBP"}, headers=headers)
    assert (reply.status_code, reply.json()) == (401, {"detail": "Sign in first."})
