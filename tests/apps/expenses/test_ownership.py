"""Owner-only edit and delete: check= on the bound expense ID, in the call's session."""

from app import decide_expense, delete_expense, edit_expense
from steps import APPROVER, APPROVER_PASSWORD, FORBIDDEN, file_expense, join, my_expenses, switch

from bastion.testing import ActionClient


def test_the_owner_edits_their_expense(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    change = {"description": "Train ticket, return", "amount_cents": 8500}
    reply = client.call(edit_expense, change, bound={"expense_id": filed["id"]})
    assert reply.json() == {
        "ok": True,
        "data": {"id": filed["id"], **change, "status": "pending", "receipt": False},
    }
    assert my_expenses(client) == [reply.json()["data"]]  # committed


def test_another_member_cannot_edit_it_and_nothing_changes(client: ActionClient) -> None:
    owner = join(client)
    filed = file_expense(client)
    join(client, "mallory")
    # Sealed for Mallory's own session, as a page showing her that form would seal it.
    change = {"description": "Mine now", "amount_cents": 1}
    reply = client.call(edit_expense, change, bound={"expense_id": filed["id"]})
    assert reply.status_code == 403
    assert reply.json() == {"ok": False, "error": FORBIDDEN}
    switch(client, owner)
    assert my_expenses(client) == [filed]


def test_another_member_cannot_delete_it(client: ActionClient) -> None:
    owner = join(client)
    filed = file_expense(client)
    join(client, "mallory")
    reply = client.call(delete_expense, bound={"expense_id": filed["id"]})
    assert (reply.status_code, reply.json()) == (403, {"ok": False, "error": FORBIDDEN})
    switch(client, owner)
    assert my_expenses(client) == [filed]


def test_the_owner_deletes_it(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    reply = client.call(delete_expense, bound={"expense_id": filed["id"]})
    assert reply.json() == {
        "ok": True,
        "data": {"id": filed["id"], "description": "Train ticket"},
    }
    assert my_expenses(client) == []
    again = client.call(delete_expense, bound={"expense_id": filed["id"]})
    assert (again.status_code, again.json()["error"]) == (
        404,
        {"code": "not_found", "message": "This expense no longer exists."},
    )


def test_a_visitor_who_is_not_signed_in_is_asked_to(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    sealed = client.bound(delete_expense, {"expense_id": filed["id"]})
    client.cookies.clear()  # a visitor of their own, with the form's sealed value
    reply = client.call(delete_expense, bound=sealed)
    assert reply.status_code == 401
    assert reply.json()["error"] == {"code": "unauthorized", "message": "Please sign in first."}


def test_a_decided_expense_can_no_longer_change(client: ActionClient) -> None:
    owner = join(client)
    filed = file_expense(client)
    switch(client, APPROVER, APPROVER_PASSWORD)
    client.call(decide_expense, {"verdict": "approved"}, bound={"expense_id": filed["id"]})
    switch(client, owner)
    change = {"description": "More", "amount_cents": 99_999}
    reply = client.call(edit_expense, change, bound={"expense_id": filed["id"]})
    assert reply.status_code == 409
    assert reply.json()["error"] == {"code": "decided", "message": "This expense is approved."}
    assert my_expenses(client) == [{**filed, "status": "approved"}]
