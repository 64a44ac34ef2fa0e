"""The htmx delete: the fragment that replaces the row, and a refusal the page shows."""

import re

from app import bastion, delete_expense
from steps import file_expense, join, my_expenses, switch

from bastion.testing import ActionClient

HX = {"HX-Request": "true"}


def test_the_owner_deletes_and_gets_the_fragment_for_the_row(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client, "Taxi")
    reply = client.submit(
        delete_expense, {"_next": "/"}, bound={"expense_id": filed["id"]}, headers=HX
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.text == f'<li id="expense-{filed["id"]}" role="status">Deleted “Taxi”.</li>'
    assert my_expenses(client) == []


def test_another_members_delete_is_refused_with_an_alert(client: ActionClient) -> None:
    owner = join(client)
    filed = file_expense(client)
    join(client, "mallory")
    reply = client.submit(delete_expense, bound={"expense_id": filed["id"]}, headers=HX)
    assert reply.status_code == 403
    assert reply.text == '<p class="bastion-error" role="alert">You are not allowed to do that.</p>'
    switch(client, owner)
    assert my_expenses(client) == [filed]


def test_the_page_has_the_htmx_form_and_a_slot_for_its_refusals(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    page = client.get("/")
    assert page.status_code == 200
    row = re.search(rf'<li id="expense-{filed["id"]}">.*?</li>', page.text, flags=re.S)
    assert row is not None
    delete_form = re.search(r"<form [^>]*hx-post[^>]*>.*?</form>", row.group(0), flags=re.S)
    assert delete_form is not None
    assert f'hx-post="{bastion.url_for(delete_expense)}"' in delete_form.group(0)
    assert 'hx-target="closest li" hx-swap="outerHTML"' in delete_form.group(0)
    assert "<div data-bastion-message></div>" in delete_form.group(0)
    assert '<meta name="htmx-config"' in page.text
    assert '<div data-bastion-message="page"></div>' in page.text
