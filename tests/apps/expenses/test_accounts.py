"""Sign-up, log-in and log-out: the password hashed, checked by ctx.check_password."""

from app import log_in, log_out, sign_up
from steps import PASSWORD, join, my_expenses

from bastion.testing import ActionClient

SIGN_IN_FIRST = {"detail": "Sign in first."}


def test_sign_up_signs_the_new_member_in(client: ActionClient) -> None:
    reply = client.call(sign_up, {"name": "ada", "password": PASSWORD})
    assert reply.status_code == 200
    data = reply.json()["data"]
    assert reply.json() == {"ok": True, "data": {"id": data["id"], "name": "ada", "role": "member"}}
    assert my_expenses(client) == []  # the JSON route sees the member


def test_a_taken_name_is_refused(client: ActionClient) -> None:
    name = join(client)
    client.call(log_out)
    reply = client.call(sign_up, {"name": name, "password": "another long password"})
    assert reply.status_code == 409
    assert reply.json() == {
        "ok": False,
        "error": {"code": "name_taken", "message": "That name is taken."},
    }
    assert client.get("/api/expenses").json() == SIGN_IN_FIRST  # not signed in as them


def test_a_short_password_is_refused_without_echoing_it(client: ActionClient) -> None:
    reply = client.call(sign_up, {"name": "shorty", "password": "tiny secret"})
    assert reply.status_code == 422
    assert reply.json() == {
        "ok": False,
        "error": {
            "code": "invalid",
            "message": "Some fields are invalid.",
            "fields": {"password": "Should have at least 12 characters."},
        },
    }


def test_log_in_with_the_right_password(client: ActionClient) -> None:
    name = join(client)
    client.call(log_out)
    reply = client.call(log_in, {"name": name, "password": PASSWORD})
    assert reply.status_code == 200
    assert reply.json()["data"]["name"] == name
    assert my_expenses(client) == []


def test_a_wrong_password_and_an_unknown_name_get_the_same_refusal(
    client: ActionClient,
) -> None:
    name = join(client)
    client.call(log_out)
    wrong = client.call(log_in, {"name": name, "password": "not the password"})
    unknown = client.call(log_in, {"name": "nobody-at-all", "password": PASSWORD})
    for reply in (wrong, unknown):
        assert reply.status_code == 401
        assert reply.json() == {
            "ok": False,
            "error": {"code": "login_failed", "message": "Wrong name or password."},
        }
    assert client.get("/api/expenses").status_code == 401


def test_log_out_ends_the_session_and_goes_home(client: ActionClient) -> None:
    join(client)
    reply = client.call(log_out)
    assert reply.json() == {"ok": True, "data": None, "redirect": "/"}
    assert client.get("/api/expenses").json() == SIGN_IN_FIRST
    assert client.call(log_out).status_code == 401  # nobody left to log out
