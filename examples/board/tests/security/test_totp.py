"""Attacks on the board's second factor (codes from an authenticator app, mfa.py and
second_factor.py): an attacker who has a member's password, and then some.

Each is an HTTP call to the board in process (``ActionClient``), as a script or a plain
form, with the exact status and envelope (or the page a form lands on), and the database
or the session read afterwards. Codes are computed as the member's app would, from the
real clock: only the current step's code and the next one's are used, which stay within
the one step of drift whichever side of a step boundary the call lands.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import anyio
import pyotp
import pytest
from sqlalchemy import func, select

from bastion import totp
from bastion.testing import ActionClient

from ..inprocess import Board, Person, element, hidden, html, sign_in

SECOND_STEP: Final = {
    "ok": True,
    "data": {
        "message": "Password accepted. Now type the code from your authenticator app.",
        "next": "/login/totp",
    },
}
WRONG: Final = {
    "ok": False,
    "error": {
        "code": "totp_failed",
        "message": "That code is not right. Type the 6 digits your app shows now, "
        "or a recovery code.",
    },
}
REUSED: Final = {
    "ok": False,
    "error": {
        "code": "totp_reused",
        "message": "That code was used already. Wait for the next one in your app: a new one "
        "comes every 30 seconds.",
    },
}
EXPIRED: Final = {
    "ok": False,
    "error": {
        "code": "second_step_expired",
        "message": "Your sign-in has expired: type your email and password again.",
    },
}
UNAUTHORIZED: Final = {
    "ok": False,
    "error": {"code": "unauthorized", "message": "Please sign in first."},
}
RATE_LIMITED: Final = {
    "ok": False,
    "error": {"code": "rate_limited", "message": "Too many requests. Try again later."},
}
REAUTHENTICATE: Final = {
    "ok": False,
    "error": {
        "code": "reauthentication_required",
        "message": "Please confirm it is you: sign in again to do this.",
        "page": "/reauth",
    },
}


@dataclass(frozen=True)
class Enrolled:
    person: Person
    secret: str
    recovery_codes: list[str]

    def code(self, steps: int = 0) -> str:
        """What the member's app shows now (``steps`` later: the next code)."""
        return pyotp.TOTP(self.secret).at(int(time.time()) + 30 * steps)


@pytest.fixture(scope="module")
def factor(board: Board) -> ModuleType:
    """The board's second_factor module (imported by its app)."""
    return importlib.import_module("board.second_factor")


@pytest.fixture
def enrolled(board: Board, factor: ModuleType) -> Enrolled:
    """A new author with codes on, written straight to the database: no code used yet
    (the last step is two behind), ten recovery codes."""
    person = board.account("author", "Ada")
    secret = totp.new_secret()
    codes = totp.new_recovery_codes()
    assert factor.enrol(person.id, secret, int(time.time() // 30) - 2, codes)
    return Enrolled(person, secret, codes)


@pytest.fixture
def halfway(board: Board, enrolled: Enrolled) -> Iterator[ActionClient]:
    """A browser that gave the member's password: the second step is pending."""
    with board.client() as client:
        reply = password(client, enrolled.person)
        assert (reply.status_code, reply.json()) == (200, SECOND_STEP)
        yield client


def password(client: ActionClient, person: Person) -> Any:
    return client.call("login", {"email": person.email, "password": person.password})


def second_step(client: ActionClient, code: str) -> tuple[int, Any]:
    reply = client.call("login_totp", {"code": code})
    return reply.status_code, reply.json()


def signed_in_as(client: ActionClient) -> Any:
    """Whom the session is signed in to, as the board answers a member's action."""
    reply = client.call("export_my_data")
    return reply.json()["data"]["email"] if reply.status_code == 200 else reply.status_code


def signed_in(name: str, message: str | None = None) -> dict[str, Any]:
    return {"ok": True, "data": {"name": name, "message": message or f"Signed in as {name}."}}


def wrong_code(enrolled: Enrolled) -> str:
    """Six digits that are none of the codes within the drift window now."""
    right = {enrolled.code(steps) for steps in (-2, -1, 0, 1, 2)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in right)


# --- the password is not enough ---------------------------------------------------------------


def test_the_password_alone_does_not_sign_in(board: Board, enrolled: Enrolled) -> None:
    """Attack: the stolen password of a member with codes on. ``login`` answers 200 with
    the second step to go to, in a new session (the ID before it is dead) that is signed
    in to no one: the member's actions are 401, their pages send to the code page."""
    with board.client() as client:
        html(client, "/login")
        before = client.session_id
        reply = password(client, enrolled.person)
        assert (reply.status_code, reply.json()) == (200, SECOND_STEP)
        assert client.session_id not in (None, before)
        mine = client.call("export_my_data")
        assert (mine.status_code, mine.json()) == (401, UNAUTHORIZED)
        page = html(client, "/me")
        assert (page.status_code, page.headers["location"]) == (303, "/login/totp?next=%2Fme")


def test_a_half_sign_in_signs_the_browsers_member_out(board: Board, enrolled: Enrolled) -> None:
    """Attack: a member signed in, someone at their keyboard types another member's
    stolen password. The browser is signed in to neither: the first member's session
    ends with the password step."""
    other = board.account("author", "Bob")
    with board.client() as client:
        sign_in(client, other)
        assert signed_in_as(client) == other.email
        assert password(client, enrolled.person).json() == SECOND_STEP
        assert signed_in_as(client) == 401


def test_a_wrong_code_is_refused(board: Board, enrolled: Enrolled, halfway: ActionClient) -> None:
    """As a script: 401 ``totp_failed``, still signed in to no one. As a plain form: back
    to the code page (303), which shows the sentence beside a new form."""
    assert second_step(halfway, wrong_code(enrolled)) == (401, WRONG)
    assert second_step(halfway, "not a code") == (401, WRONG)
    assert signed_in_as(halfway) == 401
    back = "/login/totp?next=%2F"
    sent = halfway.submit("login_totp", {"code": wrong_code(enrolled), "_next": "/"}, referer=back)
    assert (sent.status_code, sent.headers["location"]) == (303, back)
    page = html(halfway, back).text
    assert WRONG["error"]["message"] in page
    assert 'name="code"' in element(page, "second-step")
    assert hidden(page, "_next", within="second-step") == "/"


def test_the_right_code_signs_in_once(board: Board, enrolled: Enrolled) -> None:
    """Attack: replay a code the member just used (seen over their shoulder, or in a
    proxy's log) in a browser of the attacker's, with the password: 401 ``totp_reused``,
    though the code is still within its minute; the next code of the app passes."""
    code = enrolled.code()
    with board.client() as member:
        assert password(member, enrolled.person).json() == SECOND_STEP
        assert second_step(member, code) == (200, signed_in("Ada"))
        assert signed_in_as(member) == enrolled.person.email
    with board.client() as attacker:
        assert password(attacker, enrolled.person).json() == SECOND_STEP
        assert second_step(attacker, code) == (401, REUSED)
        assert second_step(attacker, f"{code[:3]} {code[3:]}") == (401, REUSED)
        assert signed_in_as(attacker) == 401
        assert second_step(attacker, enrolled.code(1)) == (200, signed_in("Ada"))


def test_a_used_codes_earlier_neighbour_is_refused_too(board: Board, enrolled: Enrolled) -> None:
    """After the next step's code, this step's code (still in the drift window) is dead:
    codes are accepted in time order only."""
    with board.client() as client:
        password(client, enrolled.person)
        assert second_step(client, enrolled.code(1))[0] == 200
    with board.client() as client:
        password(client, enrolled.person)
        assert second_step(client, enrolled.code()) == (401, REUSED)


def test_guessing_codes_meets_the_throttle(board: Board, enrolled: Enrolled) -> None:
    """Attack: the password, then codes guessed. Five wrong ones are 401; the sixth try
    is 429, the right code too, with a Retry-After up to the window's 15 minutes; a new
    password step in another browser, at another address, gets 429 as well: the count is
    the account's."""
    wrong = wrong_code(enrolled)
    with board.client() as client:
        password(client, enrolled.person)
        assert [second_step(client, wrong) for _ in range(5)] == [(401, WRONG)] * 5
        refused = client.call("login_totp", {"code": enrolled.code()})
        assert (refused.status_code, refused.json()) == (429, RATE_LIMITED)
        assert 1 <= int(refused.headers["retry-after"]) <= 15 * 60
        assert signed_in_as(client) == 401
    with board.client() as elsewhere:
        assert password(elsewhere, enrolled.person).json() == SECOND_STEP
        assert second_step(elsewhere, enrolled.code()) == (429, RATE_LIMITED)


def test_the_second_steps_own_rate_limit_holds_per_address(board: Board) -> None:
    """Beyond the account's count, ten calls a minute per address (for codes sent with
    no password step, or to many accounts): the eleventh is 429."""
    with board.client() as client:
        replies = [second_step(client, "123456") for _ in range(11)]
    assert replies[:10] == [(401, EXPIRED)] * 10
    assert replies[10] == (429, RATE_LIMITED)


def test_a_recovery_code_signs_in_once(
    board: Board, factor: ModuleType, enrolled: Enrolled
) -> None:
    """Without the phone: a recovery code (typed in capitals, with spaces) signs in and
    says how many are left; its row is gone, and the same code in another browser is
    401 ``totp_failed``."""
    code = enrolled.recovery_codes[0]
    with board.client() as member:
        password(member, enrolled.person)
        typed = code.upper().replace("-", " ")
        left = "Signed in as Ada. That recovery code is used up: 9 left."
        assert second_step(member, typed) == (200, signed_in("Ada", left))
    assert recovery_rows(board, factor, enrolled.person) == 9
    with board.client() as attacker:
        password(attacker, enrolled.person)
        assert second_step(attacker, code) == (401, WRONG)
        assert signed_in_as(attacker) == 401
        assert second_step(attacker, enrolled.recovery_codes[1])[0] == 200
    assert recovery_rows(board, factor, enrolled.person) == 8


def recovery_rows(board: Board, factor: ModuleType, person: Person) -> int:
    RecoveryCode = factor.RecoveryCode
    with board.core.db.session() as session:
        query = select(func.count()).where(RecoveryCode.account_id == person.id)
        return int(session.scalar(query) or 0)


# --- the second step on its own ---------------------------------------------------------------


def age_second_step(board: Board, factor: ModuleType, client: ActionClient, by: float) -> None:
    """Move the password step ``by`` seconds into the past, in the board's session store."""
    store, manager = board.bastion.store, board.bastion.session_manager
    key = manager.store_keys(client.session_id or "")[0]
    record = json.loads(anyio.run(store.get, key) or b"{}")
    record["data"][factor._PENDING]["at"] -= by
    anyio.run(store.set, key, json.dumps(record).encode(), 3600.0)


def test_the_pending_second_step_expires(
    board: Board, factor: ModuleType, enrolled: Enrolled, halfway: ActionClient
) -> None:
    """Attack: a browser left after the password step. Five minutes and a second later,
    the right code is 401 ``second_step_expired``; the code page offers no form, and the
    member's pages send to the password again."""
    age_second_step(board, factor, halfway, 301)
    assert second_step(halfway, enrolled.code()) == (401, EXPIRED)
    assert signed_in_as(halfway) == 401
    page = html(halfway, "/login/totp").text
    assert 'name="code"' not in page
    assert '<a href="/login">Sign in with your password again</a>' in page
    me = html(halfway, "/me")
    assert (me.status_code, me.headers["location"]) == (303, "/login?next=%2Fme")


def test_the_second_step_just_before_it_expires_signs_in(
    board: Board, factor: ModuleType, enrolled: Enrolled, halfway: ActionClient
) -> None:
    """Control: four minutes and fifty seconds after the password, the code still works."""
    age_second_step(board, factor, halfway, 290)
    assert second_step(halfway, enrolled.code()) == (200, signed_in("Ada"))


def test_the_second_step_needs_the_password_step_first(board: Board, enrolled: Enrolled) -> None:
    """Attack: the right code with no password step, from a fresh browser and from one
    signed in as another member: 401 ``second_step_expired``, no one is signed in (the
    other member stays who they were), and the code was not spent."""
    with board.client() as client:
        assert second_step(client, enrolled.code()) == (401, EXPIRED)
        assert signed_in_as(client) == 401
    other = board.account("author", "Bob")
    with board.browser(other) as client:
        assert second_step(client, enrolled.code()) == (401, EXPIRED)
        assert signed_in_as(client) == other.email
    with board.client() as member:
        password(member, enrolled.person)
        assert second_step(member, enrolled.code())[0] == 200


def test_the_second_step_cannot_name_its_account(
    board: Board, enrolled: Enrolled, halfway: ActionClient
) -> None:
    """Attack: the password of one account, then a code sent "for" another. The account
    is the session's, never the caller's: an extra field is refused (422), and the code
    of another enrolled account does not sign in to either."""
    reply = halfway.call("login_totp", {"code": enrolled.code(), "account_id": 1})
    assert reply.status_code == 422
    assert reply.json()["error"]["fields"] == {"account_id": "Extra inputs are not permitted"}
    victim = board.account("author", "Victim")
    secret = totp.new_secret()
    factor = importlib.import_module("board.second_factor")
    assert factor.enrol(victim.id, secret, 0, totp.new_recovery_codes())
    with board.client() as client:
        password(client, victim)
        assert second_step(client, enrolled.code()) == (401, WRONG)


# --- setting up and turning off ---------------------------------------------------------------


def age_login(board: Board, client: ActionClient, seconds: float) -> None:
    """Move the session's log-in ``seconds`` into the past (as test_board's step-up test)."""
    store, manager = board.bastion.store, board.bastion.session_manager
    key = manager.store_keys(client.session_id or "")[0]
    record = json.loads(anyio.run(store.get, key) or b"{}")
    record["auth"] -= seconds
    anyio.run(store.set, key, json.dumps(record).encode(), 3600.0)


def test_setting_up_codes_needs_a_recent_log_in(board: Board, enrolled: Enrolled) -> None:
    """Attack: a session signed in an hour ago (left open, or its cookie copied) turns
    codes on with an authenticator of the attacker's, or turns the member's off. Each
    action is 401 ``reauthentication_required`` for a script; a plain form goes to
    /reauth and back to the page it came from. Nothing changes."""
    newcomer = board.account("author", "Sam")
    with board.browser(newcomer) as client:
        age_login(board, client, 3600)
        begin = client.call("totp_begin")
        assert (begin.status_code, begin.json()) == (401, REAUTHENTICATE)
        form = client.submit("totp_begin", {"_next": "/me/totp"}, referer="/me")
        assert (form.status_code, form.headers["location"]) == (303, "/reauth?next=%2Fme")
        confirm = client.call("totp_confirm", {"code": "123456"})
        assert (confirm.status_code, confirm.json()) == (401, REAUTHENTICATE)
        assert client.session() == {}  # no secret was put in the session
    with board.client() as client:
        password(client, enrolled.person)
        assert second_step(client, enrolled.code())[0] == 200
        age_login(board, client, 3600)
        off = client.call("totp_disable", {"code": enrolled.recovery_codes[0]})
        assert (off.status_code, off.json()) == (401, REAUTHENTICATE)
    with board.client() as client:  # codes are still on
        assert password(client, enrolled.person).json() == SECOND_STEP


def test_turning_codes_off_needs_a_code(
    board: Board, factor: ModuleType, enrolled: Enrolled
) -> None:
    """Attack: a fresh session with the password (before codes were on, or a recovery
    code used up) tries to turn them off without a code: 401 ``totp_failed``, still on.
    With the app's next code: off, and the password alone signs in again."""
    with board.client() as client:
        password(client, enrolled.person)
        assert second_step(client, enrolled.code())[0] == 200
        assert client.call("totp_disable", {"code": "000000"}).json() == WRONG
        assert factor.has_totp(enrolled.person.id)
        off = client.call("totp_disable", {"code": enrolled.code(1)})
        assert off.json() == {
            "ok": True,
            "data": {"message": "Codes are off: your password alone signs you in again."},
        }
    assert not factor.has_totp(enrolled.person.id)
    assert recovery_rows(board, factor, enrolled.person) == 0
    with board.client() as client:
        assert password(client, enrolled.person).json() == signed_in("Ada")


def test_setting_up_codes_through_the_pages(board: Board, factor: ModuleType) -> None:
    """The whole set-up as a member without JavaScript does it: the profile's button, the
    page with the QR code and the key (held in the session, not in the database), a
    wrong first code refused (422), the right one turning codes on with ten recovery
    codes shown once and stored as hashes only; the next sign-in needs a code."""
    person = board.account("author", "Ada")
    with board.browser(person) as client:
        me = html(client, "/me").text
        assert "<strong>Off.</strong>" in element(me, "totp")
        begun = client.submit("totp_begin", {"_next": "/me/totp"}, referer="/me")
        assert (begun.status_code, begun.headers["location"]) == (303, "/me/totp")
        page = html(client, "/me/totp").text
        secret = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page)
        assert secret is not None
        key = secret.group(1).replace(" ", "")
        assert re.search(r'<figure class="qr" [^>]*><svg width="\d+" height="\d+" ', page)
        assert not factor.has_totp(person.id)

        wrong = client.call("totp_confirm", {"code": "000000"})
        assert (wrong.status_code, wrong.json()["error"]["fields"]) == (
            422,
            {"code": "That code is not right: type the 6 digits of your app."},
        )
        right = client.submit(
            "totp_confirm", {"code": pyotp.TOTP(key).now(), "_next": "/me/totp"}, referer="/me/totp"
        )
        assert (right.status_code, right.headers["location"]) == (303, "/me/totp")
        shown = html(client, "/me/totp").text
        codes = re.findall(r"<li><code>([0-9a-z-]{19})</code></li>", shown)
        assert len(codes) == 10
        assert "<strong>On</strong>" in element(html(client, "/me").text, "totp")
        again = html(client, "/me/totp").text  # once: the codes are gone from the page
        assert not re.findall(r"<li><code>", again)
    with board.core.db.session() as session:
        credential = session.get(factor.TotpCredential, person.id)
        assert credential is not None
        assert credential.secret == key
        stored = set(
            session.scalars(
                select(factor.RecoveryCode.code_hash).where(
                    factor.RecoveryCode.account_id == person.id
                )
            )
        )
    assert stored == {totp.hash_recovery_code(code) for code in codes}
    with board.client() as client:
        assert password(client, person).json() == SECOND_STEP


def test_the_set_up_secret_is_the_members_own(board: Board) -> None:
    """Attack: a set-up begun by one member in a browser, then another member signing in
    there (a shared computer). The secret is not the second member's to confirm: 409,
    and their page offers to start their own."""
    first, second = board.account("author", "One"), board.account("author", "Two")
    with board.browser(first) as client:
        assert client.call("totp_begin").status_code == 200
        sign_in(client, second)  # a log-in keeps the session's data, under a new ID
        code = pyotp.TOTP(totp.new_secret()).now()
        reply = client.call("totp_confirm", {"code": code})
        assert (reply.status_code, reply.json()["error"]["code"]) == (409, "totp_not_started")
        assert 'id="totp-secret"' not in html(client, "/me/totp").text
