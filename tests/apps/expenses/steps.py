"""What the tests do again and again, as a visitor of the app would do it."""

import itertools
import os
from typing import Any

from app import add_expense, log_in, log_out, sign_up

from bastion.testing import ActionClient

PASSWORD = "correct horse battery"
APPROVER = os.environ["EXPENSES_APPROVER"]
APPROVER_PASSWORD = os.environ["EXPENSES_APPROVER_PASSWORD"]
FORBIDDEN = {"code": "forbidden", "message": "You are not allowed to do that."}
_numbers = itertools.count(1)


def join(client: ActionClient, prefix: str = "member") -> str:
    """Sign up a member of a name no other test uses, and stay signed in as them."""
    name = f"{prefix}{next(_numbers)}"
    reply = client.call(sign_up, {"name": name, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    return name


def log_in_as(client: ActionClient, name: str, password: str = PASSWORD) -> None:
    reply = client.call(log_in, {"name": name, "password": password})
    assert reply.status_code == 200, reply.text


def switch(client: ActionClient, name: str, password: str = PASSWORD) -> None:
    """Log out, and log in as ``name``: another member at the same browser."""
    assert client.call(log_out).status_code == 200
    log_in_as(client, name, password)


def file_expense(
    client: ActionClient, description: str = "Train ticket", amount_cents: int = 4250
) -> dict[str, Any]:
    reply = client.call(add_expense, {"description": description, "amount_cents": amount_cents})
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    return data


def my_expenses(client: ActionClient) -> list[dict[str, Any]]:
    """What the plain JSON GET route says the signed-in member has filed."""
    reply = client.get("/api/expenses")
    assert reply.status_code == 200, reply.text
    expenses: list[dict[str, Any]] = reply.json()["expenses"]
    return expenses
