"""The corpus against the demo board (examples/board): its actions take e-mail addresses,
posts, roles and sealed post and account IDs, so the attacks that matter most for it are
here — hostile bodies and forms on every action, sealed IDs moved between actions or
sessions, and look-alike addresses at sign-in and sign-up.

As for the quickstart, each case is one request from a fresh browser, refused with its
exact status and code, with no handler run, no account or post changed, and nothing
leaked. The board is imported as uvicorn imports it (the ``board`` fixture), on SQLite:
no refusal here reaches its database.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import anyio
import httpx2 as httpx
import pytest
from security import corpus
from security._support import (
    FORM,
    Attack,
    Browser,
    Target,
    assert_no_leak,
    handlers_run,
    run_attack,
    script_headers,
    session_after,
    with_ids,
)
from security.corpus import (
    BOUND_INVALID,
    CSRF,
    INVALID,
    MALFORMED,
    NO_SESSION,
    form_attacks,
    json_attacks,
)
from sqlalchemy import select

from bastion import Bastion, Session
from bastion.sessions import cookie_name

from ..inprocess import ADMIN_PASSWORD, AUTHOR_PASSWORD, EXAMPLES, KEY, Board

ADMIN: Final = "admin@board.example"


@pytest.fixture(scope="module")
def target(board: Board) -> Target:
    """The board (started once: schema and seeded accounts) as a target: its accounts and
    posts are the state no refused call may change."""
    core, db = board.core, board.db_module
    made = itertools.count(1)

    def signed_in(role: str) -> str:
        """A session signed in to a new account with this role: the board limits its
        signed-in actions per user (create_post, 10 a minute), so no two attacks share
        one. Made in the database and the session store directly: no password to check."""
        with core.db.transaction() as session:
            email = f"{role}-{next(made)}@attack.example"
            row = db.Account(email=email, name="Attacker", role=role, password_hash="-")
            session.add(row)
            session.flush()
            account_id = row.id

        async def sign_in() -> str:
            signed = Session()
            signed.login(account_id)
            name = cookie_name(core.bastion.config.sessions.cookie_name, False)
            await core.bastion.session_manager.save(signed, name, False)
            assert signed.id is not None
            return signed.id

        return anyio.run(sign_in)

    def state() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with core.db.session() as session:
            accounts = session.execute(
                select(db.Account.id, db.Account.email, db.Account.role, db.Account.password_hash)
            ).all()
            posts = session.execute(
                select(db.Post.id, db.Post.title, db.Post.body, db.Post.updated_at)
            ).all()
            return sorted(map(tuple, accounts)), sorted(map(tuple, posts))

    secrets = (KEY, ADMIN_PASSWORD, AUTHOR_PASSWORD, "not-a-real-password", "reports-db")
    return Target(
        "board", board.app, board.bastion, state=state, signed_in=signed_in, secrets=secrets
    )


@pytest.fixture(scope="module")
def board_other() -> Bastion:
    """The board's action names under another key (for tokens made with another key)."""
    from security import probe

    return probe.mirror("board-other-key-0123456789-abcdefghijklmnopqrstuvwxyz")


def _structural(without_input: bool = False) -> list[corpus.Entry]:
    """The JSON attacks, as an action that does not know ``name`` answers them."""
    return _adapted(corpus.JSON_ENTRIES, without_input)


def _adapted(attacks: list[corpus.Entry], without_input: bool = False) -> list[corpus.Entry]:
    """Attacks written for greet, as a board action answers them: ``name`` is unknown, so
    a body that reaches validation is refused there (422) before its ``_bound`` is opened;
    an action without input takes an empty body, so those are left out."""
    entries = []
    for name, body, status, code in attacks:
        if code == "bound_invalid":
            status, code = INVALID
        if without_input and name in ("name-missing", "only-whitespace-is-an-empty-object"):
            continue
        entries.append((name, body, status, code))
    return entries


def _seal(action: str, values: dict[str, int], **options: Any) -> Any:
    """A seal made by the board for ``action`` when the attack is sent (importing the
    board at collection would pin one import of it)."""

    def make() -> str:
        bastion: Bastion = sys.modules["board.core"].bastion
        sealed: str = bastion.seal(action, values, **options)
        return sealed

    return make


def _with_bound(fields: dict[str, str], sealed: Any, form: bool = False) -> Any:
    def make() -> bytes:
        values = {**fields, "_bound": sealed()}
        if form:
            return "&".join(f"{k}={quote(v)}" for k, v in values.items()).encode()
        return json.dumps(values).encode()

    return make


def _another_session(action: str, values: dict[str, int]) -> Any:
    def make() -> str:
        someone = Session()
        someone.ensure()
        bastion: Bastion = sys.modules["board.core"].bastion
        sealed: str = bastion.seal(action, values, session=someone, bind_session=True)
        return sealed

    return make


def _tampered(sealed: Any) -> Any:
    def make() -> str:
        value: str = sealed()
        middle = len(value) // 2
        return value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]

    return make


def _bound_attacks() -> list[tuple[str, Attack]]:
    """Sealed post and account IDs misused: from another action, another session,
    expired, tampered, or missing. The handler, which would change a post or a role,
    never runs."""
    draft = {"title": "Taken over", "body": "By a moved seal."}
    post = {"post_id": 1}
    seals = {
        "delete-seal-to-edit": ("edit_post", draft, _seal("delete_post", post, bind_session=False)),
        "edit-seal-to-delete": ("delete_post", {}, _seal("edit_post", post, bind_session=False)),
        "role-seal-to-delete": (
            "delete_post",
            {},
            _seal("change_role", {"account_id": 1}, bind_session=False),
        ),
        "expired-edit-seal": ("edit_post", draft, _seal("edit_post", post, ttl=-1)),
        "edit-seal-of-another-session": ("edit_post", draft, _another_session("edit_post", post)),
        "tampered-delete-seal": (
            "delete_post",
            {},
            _tampered(_seal("delete_post", post, bind_session=False)),
        ),
        "role-seal-of-another-session": (
            "change_role",
            {"role": "admin"},
            _another_session("change_role", {"account_id": 2}),
        ),
        "delete-seal-to-change-role": (
            "change_role",
            {"role": "admin"},
            _seal("delete_post", {"post_id": 2}, bind_session=False),
        ),
        # A role form's seal names an account too: it must not sign that account out.
        "role-seal-to-end-sessions": (
            "end_member_sessions",
            {},
            _seal("change_role", {"account_id": 2}, bind_session=False),
        ),
        "end-sessions-seal-of-another-session": (
            "end_member_sessions",
            {},
            _another_session("end_member_sessions", {"account_id": 2}),
        ),
    }
    cases = []
    for name, (action, fields, sealed) in seals.items():
        caller = "admin" if action in ("change_role", "end_member_sessions") else "author"
        body = _with_bound(fields, sealed)
        cases.append((f"bound-{name}", Attack(action, *BOUND_INVALID, body, caller=caller)))
        form = Attack(
            action,
            *BOUND_INVALID,
            _with_bound(fields, sealed, form=True),
            FORM,
            caller=caller,
            plain=True,
        )
        cases.append((f"plain-form-bound-{name}", form))
    missing = json.dumps(draft).encode()
    cases.append(("bound-missing", Attack("edit_post", *BOUND_INVALID, missing, caller="author")))
    return cases


def _tokens() -> list[tuple[str, Attack]]:
    cases = []
    draft = b'{"title":"t","body":"b"}'
    for kind in ("none", "forged", "other-session", "other-secret", "flipped", "twice"):
        attack = Attack("create_post", *CSRF, draft, token=kind, caller="author")
        cases.append((f"create-post-token-{kind}", attack))
    for kind in ("twice", "none"):
        # The page's own token, sent with no session cookie: told so (no_session).
        attack = Attack("create_post", *NO_SESSION, draft, cookie=kind, caller="author")
        cases.append((f"create-post-cookie-{kind}", attack))
    # A cookie swapped for one of the attacker's making (cookie tossing): the page's token
    # is not that cookie's, refused before the store is read.
    tossed = Attack("create_post", *CSRF, draft, cookie="forged", caller="author")
    cases.append(("create-post-cookie-forged", tossed))
    role = Attack("change_role", *CSRF, b'{"role":"admin"}', token="none", caller="admin")
    cases.append(("change-role-without-a-token", role))
    # A forged "sign out everywhere" from another site would sign a victim out of
    # every device: the same token check as any other action.
    for kind in ("none", "forged", "other-session"):
        attack = Attack("sign_out_everywhere", *CSRF, b"{}", token=kind, caller="author")
        cases.append((f"sign-out-everywhere-token-{kind}", attack))
    ending = Attack("end_member_sessions", *CSRF, b"{}", token="none", caller="admin")
    cases.append(("end-member-sessions-without-a-token", ending))
    return cases


def _api_tokens() -> list[tuple[str, Attack]]:
    """The API token actions, called from a browser: hostile bodies (tests/test_bearer_tokens.py
    and test_api_tokens.py have the Bearer attacks)."""
    return [
        *json_attacks("create_api_token", _structural()[::4], caller="author"),
        *json_attacks("revoke_api_token", _structural()[::4], caller="author"),
        *json_attacks("list_posts", _structural(without_input=True)[::4], caller="author"),
    ]


def _passkeys() -> list[tuple[str, Attack]]:
    """The passkey actions: hostile bodies, and a passkey's seal moved in from another
    action or session (security/test_passkeys.py has the WebAuthn attacks)."""
    moved = _seal("delete_post", {"post_id": 1}, bind_session=False)
    other = _another_session("delete_passkey", {"passkey_id": 1})
    return [
        *json_attacks("begin_passkey_sign_in", _structural(without_input=True)[::4]),
        *json_attacks("finish_passkey_sign_in", _structural()[::4]),
        *json_attacks(
            "begin_passkey_registration", _structural(without_input=True)[::4], caller="author"
        ),
        *json_attacks("finish_passkey_registration", _structural()[::4], caller="author"),
        *(
            (f"bound-{name}", Attack("delete_passkey", *BOUND_INVALID, body, caller="author"))
            for name, body in (
                ("delete-seal-to-delete-passkey", _with_bound({}, moved)),
                ("passkey-seal-of-another-session", _with_bound({}, other)),
            )
        ),
    ]


def _totp() -> list[tuple[str, Attack]]:
    """The one-time code actions: hostile bodies (security/test_totp.py has the attacks
    on the codes themselves)."""
    return [
        *json_attacks("login_totp", _structural()[::4]),
        *json_attacks("totp_begin", _structural(without_input=True)[::4], caller="author"),
        *json_attacks("totp_confirm", _structural()[::4], caller="author"),
        *json_attacks("totp_disable", _structural()[::4], caller="author"),
    ]


BOARD: Final = [
    *json_attacks("login", _structural()),
    *json_attacks("signup", _structural()),
    *json_attacks("create_post", _structural(), caller="author"),
    *json_attacks("report_problem", _structural()[::3]),
    *json_attacks("export_my_data", _structural(without_input=True)[::4], caller="author"),
    *json_attacks("change_role", _structural()[::5], caller="admin"),
    *json_attacks("sign_out_everywhere", _structural(without_input=True)[::4], caller="author"),
    *json_attacks("reauthenticate", _structural()[::4], caller="author"),
    *json_attacks("change_password", _structural()[::4], caller="author"),
    *form_attacks("login", _adapted(corpus.FORM_ENTRIES)),
    *form_attacks("signup", _adapted(corpus.FORM_ENTRIES[::2])),
    *_bound_attacks(),
    *_tokens(),
    *_api_tokens(),
    *_passkeys(),
    *_totp(),
]
"""Every attack on the board: (name, attack)."""


def test_the_board_corpus_covers_every_action(target: Target) -> None:
    """Every registered action of the board is attacked by at least one case."""
    attacked = {attack.action for _, attack in BOARD}
    assert {spec.name for spec in target.bastion.registry} - attacked <= {"logout"}
    assert len(BOARD) >= 300


@pytest.mark.parametrize("attack", with_ids(BOARD))
def test_board_refuses(target: Target, board_other: Bastion, attack: Attack) -> None:
    """The attack named by the case id is refused with its status and code, no handler
    runs, no account or post changes, and the reply leaks nothing."""
    run_attack(target, attack, board_other)


# --- look-alike addresses --------------------------------------------------------------------

LOOKALIKES: Final = [
    ("cyrillic-a", "\u0430dmin@board.example"),
    ("greek-alpha", "\u03b1dmin@board.example"),
    ("combining-acute", "a\u0301dmin@board.example"),
    ("right-to-left-override", "\u202eadmin@board.example"),
    ("zero-width-joiner", "ad\u200dmin@board.example"),
    ("zero-width-space-at-the-end", "admin@board.example\u200b"),
    ("dotless-i", "adm\u0131n@board.example"),
]
"""Addresses that only look like the admin's: no account has them."""

SPELLINGS: Final = [
    ("fullwidth-at-sign", "admin\uff20board.example"),
    ("fullwidth-a", "\uff41dmin@board.example"),
    ("circled-a", "\u24d0dmin@board.example"),
    ("capitals-and-spaces", "  ADMIN@Board.EXAMPLE "),
]
"""The admin's own address in other spellings: bastion's one spelling of each is the
admin's, so log-in (and its throttle) finds the admin's account."""


def _log_in(target: Target, browser: Browser, email: str) -> tuple[str, httpx.Response]:
    sid, token = browser.new_session()
    headers = script_headers(browser, sid, token)
    body = json.dumps({"email": email, "password": ADMIN_PASSWORD}).encode()
    reply = browser.send("POST", target.bastion.url_for("login"), headers, body)
    assert_no_leak(reply, body, target.secrets)
    return sid, reply


@pytest.mark.parametrize("email", [pytest.param(e, id=n) for n, e in LOOKALIKES])
def test_a_lookalike_of_the_admin_address_does_not_sign_in(target: Target, email: str) -> None:
    """Attack: the admin's own password with an address that only looks like theirs. The
    board's login refuses it as an unknown account (401); nobody is signed in."""
    with handlers_run(target.bastion) as ran, Browser(target) as browser:
        sid, reply = _log_in(target, browser, email)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["code"] == "login_failed"
        assert session_after(reply, browser.cookie, sid) == sid
        assert browser.user_id(sid) is None
    assert ran == ["login"]


@pytest.mark.parametrize("email", [pytest.param(e, id=n) for n, e in SPELLINGS])
def test_another_spelling_of_the_admin_address_is_the_admin(target: Target, email: str) -> None:
    """Control: the same address in another spelling (full-width, circled, case) is the
    admin's account in bastion's one spelling, so the right password signs the admin in
    — and a wrong one would count against the admin's own throttle, not a fresh one."""
    with Browser(target) as browser:
        sid, reply = _log_in(target, browser, email)
        assert reply.status_code == 200, reply.text
        signed_in = session_after(reply, browser.cookie, sid)
        assert signed_in not in (None, sid)  # rotated at log-in
        assert signed_in is not None
        admin = [a for a in target.state()[0] if a[1] == ADMIN]
        assert browser.user_id(signed_in) == admin[0][0]


TAKEN: Final = "An account with this email already exists."
LOOKS_LIKE_ANOTHER: Final = (
    "This mixes letters of different alphabets that look alike: type it in one alphabet."
)
SIGNUP_LOOKALIKES: Final = [
    # Another spelling of the admin's address, in bastion's one spelling: taken.
    ("uppercase", "ADMIN@board.example", TAKEN),
    ("fullwidth-domain", "admin@\uff42\uff4f\uff41\uff52\uff44.example", TAKEN),
    ("fullwidth-a", "\uff41dmin@board.example", TAKEN),
    ("fullwidth-capitals", "\uff21\uff24\uff2d\uff29\uff2e@board.example", TAKEN),
    ("trailing-space", "admin@board.example ", TAKEN),
    ("circled-letters", "\u24d0dmin@board.example", TAKEN),
    # A letter of another script that looks the same (mixed-script confusables).
    ("cyrillic-a", "\u0430dmin@board.example", LOOKS_LIKE_ANOTHER),
    ("cyrillic-i", "adm\u0456n@board.example", LOOKS_LIKE_ANOTHER),
    ("cyrillic-o-in-the-domain", "admin@b\u043eard.example", LOOKS_LIKE_ANOTHER),
    ("greek-alpha", "\u03b1dmin@board.example", LOOKS_LIKE_ANOTHER),
    ("greek-omicron-in-the-domain", "admin@b\u03bfard.example", LOOKS_LIKE_ANOTHER),
    ("armenian-ho", "\u0570dmin@board.example", LOOKS_LIKE_ANOTHER),
    ("cherokee-a", "\u13aadmin@board.example", LOOKS_LIKE_ANOTHER),
    # Not an address at all, or invisible characters in it.
    ("fullwidth-at-sign", "admin\uff20board.example", None),
    ("right-to-left-override", "\u202eadmin@board.example", None),
    ("zero-width-space", "ad\u200bmin@board.example", None),
    # A visibly different address in one script: a separate account, never the admin's.
    ("combining-acute", "a\u0301dmin@board.example", "separate"),
]


@pytest.mark.parametrize(
    ("email", "outcome"), [pytest.param(e, o, id=n) for n, e, o in SIGNUP_LOOKALIKES]
)
def test_a_signup_never_takes_the_admin_address(
    target: Target, email: str, outcome: str | None
) -> None:
    """Attack: sign up with a spelling of the admin's address (case, full-width forms,
    letters of other scripts, invisible marks) to take it over, shadow it or share its
    log-in throttle. Every other spelling of it is "taken", every mixed-script look-alike
    refused with its own sentence, every non-address refused; only a visibly different
    address opens a separate author account. The admin stays the only admin."""
    before = target.state()
    with Browser(target) as browser:
        sid, token = browser.new_session()
        headers = script_headers(browser, sid, token)
        body = json.dumps({"name": "Mallory", "email": email, "password": "x" * 16}).encode()
        reply = browser.send("POST", target.bastion.url_for("signup"), headers, body)
    assert_no_leak(reply, body, target.secrets)
    accounts_before, _ = before
    accounts_after, _ = target.state()
    admins = [a for a in accounts_before if a[2] == "admin"]
    assert [a for a in accounts_after if a[2] == "admin"] == admins
    assert [a[1] for a in accounts_after].count(ADMIN) == 1
    new = [a for a in accounts_after if a not in accounts_before]
    if outcome == "separate":
        assert reply.status_code == 200, reply.text
        assert [(a[1] != ADMIN, a[2]) for a in new] == [(True, "author")]
        return
    assert reply.status_code == 422, reply.text
    fields = reply.json()["error"]["fields"]
    assert list(fields) == ["email"]
    if outcome is not None:
        assert fields["email"] == outcome
    assert new == []


def test_the_board_module_is_the_one_attacked(target: Target) -> None:
    """The corpus ran against examples/board itself, not a copy."""
    module = sys.modules["board.app"]
    assert Path(module.__file__ or "").resolve().is_relative_to(EXAMPLES.resolve())
    assert target.app is module.app


def test_a_seal_of_another_action_is_refused_even_for_the_admin(
    target: Target, board_other: Bastion
) -> None:
    """The admin may change any post, yet a delete seal does not open edit_post: the seal
    names its action, whoever sends it."""
    attack = Attack(
        "edit_post",
        *BOUND_INVALID,
        _with_bound({"title": "t", "body": "b"}, _seal("delete_post", {"post_id": 1})),
        caller="admin",
    )
    run_attack(target, attack, board_other)


def test_malformed_is_the_answer_to_a_form_with_two_seals(
    target: Target, board_other: Bastion
) -> None:
    """Two ``_bound`` fields in one form: refused as malformed (400) before either is
    opened, so neither can be chosen."""
    seal = _seal("delete_post", {"post_id": 1}, bind_session=False)

    def body() -> bytes:
        return f"_bound={seal()}&_bound={seal()}".encode()

    attack = Attack("delete_post", *MALFORMED, body, FORM, caller="author")
    run_attack(target, attack, board_other)
