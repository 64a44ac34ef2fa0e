"""Stage 15, refusals: a call refused before its action's rate limit counted it is counted
per client address, and past ``refusal_rate`` those refusals are 429.

The attack: forged calls cost a server more than real ones and, refused before stage 6,
were counted by no limit, so one address could send them without end. Each test floods
from one address and asserts the exact reply of every call, that the handler never ran,
and what stays open: another address, and the flooded address's own valid calls (they
are counted by the action's limit, not by the refusals).
"""

from __future__ import annotations

from typing import Any

from conftest import SECRET, mounted
from helpers import CROSS_ORIGIN, CSRF_FAILED, assert_reply
from pydantic import BaseModel, ConfigDict

from bastion import Bastion, public
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

RATE_LIMITED = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
NOT_FOUND = {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
ATTACKER = ("203.0.113.66", 40000)
NEIGHBOUR = ("203.0.113.67", 40000)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Site:
    def __init__(self, **options: Any) -> None:
        self.ran: list[str] = []
        self.bastion = Bastion(secret_key=SECRET, store=MemoryStore(), **options)

        @self.bastion.action(policy=public, rate=None)
        def note(data: Note) -> None:
            self.ran.append(data.text)

        self.app = mounted(self.bastion)

    def client(self, peer: tuple[str, int] = ATTACKER) -> ActionClient:
        return ActionClient(self.app, self.bastion, client=peer)


def forged(client: ActionClient) -> str:
    """A token of the right shape that is not this session's: one character changed in
    the middle (the last one carries padding bits, which base64 decoding ignores)."""
    real = client.token()
    return real[:40] + ("A" if real[40] != "A" else "B") + real[41:]


def assert_limited(reply: Any) -> None:
    assert_reply(reply, 429, RATE_LIMITED)
    assert 1 <= int(reply.headers["retry-after"]) <= 60


def test_a_flood_of_forged_tokens_meets_429_and_the_handler_never_runs() -> None:
    """refusal_rate="3/minute": three forged calls are 403 csrf_failed, the fourth and
    after are 429. A neighbour's forged call is still 403 (its own count), and the
    attacker's address can still make a valid call: only refusals were counted."""
    site = Site(refusal_rate="3/minute")
    with site.client() as attacker, site.client(NEIGHBOUR) as neighbour:
        token = forged(attacker)
        for _ in range(3):
            assert_reply(attacker.call("note", {"text": "x"}, token=token), 403, CSRF_FAILED)
        for _ in range(3):
            assert_limited(attacker.call("note", {"text": "x"}, token=token))
        assert_reply(
            neighbour.call("note", {"text": "x"}, token=forged(neighbour)), 403, CSRF_FAILED
        )
        assert site.ran == []
        assert_reply(attacker.call("note", {"text": "mine"}), 200, {"ok": True, "data": None})
    assert site.ran == ["mine"]


def test_missing_tokens_unknown_actions_and_wrong_types_share_the_count() -> None:
    """Every early refusal counts the same: a call without a token, one to an action ID
    that does not exist, and one with a content type no action reads, then 429."""
    site = Site(refusal_rate="3/minute")
    with site.client() as attacker:
        assert_reply(attacker.call("note", {"text": "x"}, token=None), 403, CSRF_FAILED)
        reply = attacker.post(
            site.bastion.config.prefix + "/not-an-action",
            json={},
            headers={"Accept": "application/json"},
        )
        assert_reply(reply, 404, NOT_FOUND)
        reply = attacker.post(
            attacker.url("note"),
            content=b"x",
            headers={"Content-Type": "text/plain", "Accept": "application/json"},
        )
        assert reply.status_code == 415
        assert_limited(attacker.call("note", {"text": "x"}, token=None))
    assert site.ran == []


def test_a_cross_origin_flood_meets_429_as_json_never_a_redirect() -> None:
    """Forms posted from another site: 403 cross_origin, then 429, as the JSON envelope
    both times, never a 303 a cross-site page could follow."""
    site = Site(refusal_rate="2/minute")
    with site.client() as attacker:
        for status, envelope in ((403, CROSS_ORIGIN), (403, CROSS_ORIGIN), (429, RATE_LIMITED)):
            reply = attacker.submit("note", {"text": "x"}, origin="https://evil.example")
            assert_reply(reply, status, envelope)
            assert "location" not in reply.headers
        assert_reply(
            attacker.submit("note", {"text": "x"}, origin="https://evil.example"), 429, RATE_LIMITED
        )
    assert site.ran == []


def test_a_plain_form_refused_past_the_count_goes_back_with_the_429_flash() -> None:
    """A same-site form with a forged token, past the count: 303 back to its page, and
    the flash says rate_limited (as any refusal of a plain form does)."""
    site = Site(refusal_rate="1/minute")
    with site.client() as attacker:
        token = forged(attacker)
        assert attacker.submit("note", {"text": "x"}, token=token).status_code == 303
        assert attacker.flash().code == "csrf_failed"
        reply = attacker.submit("note", {"text": "x"}, token=token)
        assert reply.status_code == 303
        assert attacker.flash().code == "rate_limited"
    assert site.ran == []


def test_refusals_after_the_rate_limit_are_not_counted_again() -> None:
    """A 422 comes after stage 6: the action's own limit counted it, the refusal count
    does not. Five invalid bodies with refusal_rate="1/minute" are five 422s."""
    site = Site(refusal_rate="1/minute")
    with site.client() as caller:
        for _ in range(5):
            assert caller.call("note", {"text": 1}).status_code == 422
    assert site.ran == []


def test_refusal_rate_none_counts_nothing() -> None:
    """refusal_rate=None: a hundred forged calls are a hundred 403s."""
    site = Site(refusal_rate=None)
    with site.client() as attacker:
        token = forged(attacker)
        for _ in range(100):
            assert_reply(attacker.call("note", {"text": "x"}, token=token), 403, CSRF_FAILED)
    assert site.ran == []


def test_the_default_is_three_hundred_a_minute() -> None:
    """Enough for a `bastion probe` run (about thirteen refusals per form), far under the
    thousand forged calls a flood sends in seconds."""
    assert str(Site().bastion.refusal_rate) == "300 per 1 minute"
