"""A receipt of up to 2 MiB (max_file_bytes=2 MiB; the body cap follows it)."""

import hashlib

from app import attach_receipt
from steps import FORBIDDEN, file_expense, join, my_expenses, switch

from bastion.testing import ActionClient

MiB = 1024 * 1024
PDF = b"%PDF-1.7\n"
AS_SCRIPT = {"Accept": "application/json"}  # the envelope, as bastion.js asks for it


def attach(client: ActionClient, expense_id: int, scan: bytes) -> dict[str, object]:
    files = {"scan": ("receipt.pdf", scan, "application/pdf")}
    reply = client.submit(
        attach_receipt, files=files, bound={"expense_id": expense_id}, headers=AS_SCRIPT
    )
    result: dict[str, object] = {"status": reply.status_code, **reply.json()}
    return result


def test_a_receipt_of_one_and_a_half_mib_is_attached(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    scan = PDF + bytes(int(1.5 * MiB) - len(PDF))  # over the app's 1 MiB body cap
    assert attach(client, filed["id"], scan) == {
        "status": 200,
        "ok": True,
        "data": {
            "expense_id": filed["id"],
            "kind": "pdf",
            "size": int(1.5 * MiB),
            "sha256": hashlib.sha256(scan).hexdigest(),
        },
    }
    assert my_expenses(client) == [{**filed, "receipt": True}]


def test_a_receipt_over_two_mib_is_refused_before_the_handler(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    assert attach(client, filed["id"], PDF + bytes(int(2.5 * MiB))) == {
        "status": 413,
        "ok": False,
        "error": {"code": "payload_too_large", "message": "An uploaded file is too large."},
    }
    assert my_expenses(client) == [filed]


def test_a_receipt_is_what_its_bytes_say(client: ActionClient) -> None:
    join(client)
    filed = file_expense(client)
    refused = attach(client, filed["id"], b"MZ\x90\x00 a program, not a receipt")
    assert refused["status"] == 422
    assert refused["error"] == {
        "code": "invalid",
        "message": "Some fields are invalid.",
        "fields": {"scan": "Send a PDF, a PNG or a JPEG file."},
    }
    assert my_expenses(client) == [filed]


def test_only_the_owner_attaches_a_receipt(client: ActionClient) -> None:
    owner = join(client)
    filed = file_expense(client)
    join(client, "mallory")
    refused = attach(client, filed["id"], PDF + b"forged")
    assert (refused["status"], refused["error"]) == (403, FORBIDDEN)
    switch(client, owner)
    assert my_expenses(client) == [filed]
