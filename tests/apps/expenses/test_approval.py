"""The approver role: require(roles={"approver"}), and never on one's own expense."""

import re

from app import bastion, decide_expense
from steps import (
    APPROVER,
    APPROVER_PASSWORD,
    FORBIDDEN,
    file_expense,
    join,
    log_in_as,
    my_expenses,
    switch,
)

from bastion.testing import ActionClient


def test_the_approver_approves_a_members_expense(client: ActionClient) -> None:
    member = join(client)
    filed = file_expense(client)
    switch(client, APPROVER, APPROVER_PASSWORD)
    reply = client.call(decide_expense, {"verdict": "approved"}, bound={"expense_id": filed["id"]})
    assert reply.json() == {"ok": True, "data": {**filed, "status": "approved"}}
    switch(client, member)
    assert my_expenses(client) == [{**filed, "status": "approved"}]


def test_a_member_is_not_an_approver(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    reply = client.call(decide_expense, {"verdict": "approved"}, bound={"expense_id": filed["id"]})
    assert (reply.status_code, reply.json()) == (403, {"ok": False, "error": FORBIDDEN})
    assert my_expenses(client) == [filed]


def test_an_approver_cannot_approve_their_own(client: ActionClient) -> None:
    log_in_as(client, APPROVER, APPROVER_PASSWORD)
    own = file_expense(client, "Conference", 90_000)
    reply = client.call(decide_expense, {"verdict": "approved"}, bound={"expense_id": own["id"]})
    assert (reply.status_code, reply.json()) == (403, {"ok": False, "error": FORBIDDEN})
    assert own in my_expenses(client)  # still pending


def test_a_verdict_is_approved_or_rejected(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    switch(client, APPROVER, APPROVER_PASSWORD)
    bound = {"expense_id": filed["id"]}
    reply = client.call(decide_expense, {"verdict": "maybe"}, bound=bound)
    assert reply.status_code == 422
    assert reply.json()["error"]["fields"] == {
        "verdict": "Input should be 'approved' or 'rejected'"
    }
    assert client.call(decide_expense, {"verdict": "rejected"}, bound=bound).status_code == 200


def test_the_approvers_page_lists_what_waits_for_a_decision(client: ActionClient) -> None:
    join(client)
    file_expense(client, "Hotel", 12_000)
    switch(client, APPROVER, APPROVER_PASSWORD)
    page = client.get("/").text
    waiting = page.split("<h2>Waiting for a decision</h2>", 1)[1]
    item = re.search(r"<li>\s*Hotel: 12000.*?</li>", waiting, flags=re.S)
    assert item is not None
    assert f'action="{bastion.url_for(decide_expense)}"' in item.group(0)
    assert '<button name="verdict" value="approved">Approve</button>' in item.group(0)
