"""The corpus: hundreds of hostile requests against the quickstart's actions (and the
probe app's uploads and sealed values, which the quickstart lacks).

Every case is one request from a fresh browser at an address of its own. Each must be
refused with its exact status and error code — the JSON envelope for a script, a 303
back to the form with an error flash for a browser's plain form post — with no handler
run, nothing changed (the quickstart's click count), no 5xx, and no traceback, source
path, exception detail or secret in the reply. The attack each case makes is its name.

A few attacks are not refusals and are checked apart, at the bottom: look-alike e-mail
addresses reach the login handler (which must not take them for the admin), an unsafe
``_next`` on a successful post is ignored, and a file name or a pickle in an upload is
only data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pytest

from bastion import Bastion, Session

from . import corpus, probe
from ._support import (
    FORM,
    FORM_PAGE,
    ORIGIN,
    PASSWORD,
    Attack,
    Browser,
    Target,
    assert_envelope,
    assert_no_leak,
    handlers_run,
    run_attack,
    script_headers,
    session_after,
    with_ids,
)
from .corpus import (
    BOUND_INVALID,
    CROSS_ORIGIN,
    CSRF,
    INVALID,
    MALFORMED,
    MULTIPART,
    NO_SESSION,
    NOT_ALLOWED,
    NOT_FOUND,
    TOO_LARGE,
    UNSUPPORTED,
    Entry,
    form_attacks,
    json_attacks,
)

GREETING: Final = b'{"name":"a"}'


def _elsewhere(entries: list[Entry], *, without_input: bool = False) -> list[Entry]:
    """The JSON attacks, answered as an action other than greet answers them: ``name`` is
    unknown there, so a body that reaches validation is refused there (422) before its
    ``_bound`` is opened. An action without input takes an empty body, so those go."""
    adapted = []
    for name, body, status, code in entries:
        if (status, code) == BOUND_INVALID:
            status, code = INVALID
        if without_input and name in ("name-missing", "only-whitespace-is-an-empty-object"):
            continue
        adapted.append((name, body, status, code))
    return adapted


LOGIN_ENTRIES: Final[list[Entry]] = [
    ("email-integer", b'{"email":1,"password":"x"}', *INVALID),
    ("email-null", b'{"email":null,"password":"x"}', *INVALID),
    ("email-array", b'{"email":["admin@quickstart.example"],"password":"x"}', *INVALID),
    ("email-and-password-mongo-ne", b'{"email":{"$ne":null},"password":{"$ne":null}}', *INVALID),
    ("password-null", b'{"email":"admin@quickstart.example","password":null}', *INVALID),
    ("password-true", b'{"email":"admin@quickstart.example","password":true}', *INVALID),
    ("password-zero", b'{"email":"admin@quickstart.example","password":0}', *INVALID),
    ("password-object", b'{"email":"admin@quickstart.example","password":{"$gt":""}}', *INVALID),
    ("password-array", b'{"email":"admin@quickstart.example","password":[""]}', *INVALID),
    ("password-empty", b'{"email":"admin@quickstart.example","password":""}', *INVALID),
    (
        "password-1025-characters",
        b'{"email":"admin@quickstart.example","password":"' + b"p" * 1025 + b'"}',
        *INVALID,
    ),
    ("email-255-characters", b'{"email":"' + b"e" * 255 + b'","password":"x"}', *INVALID),
    ("email-2-characters", b'{"email":"a@","password":"x"}', *INVALID),
    ("password-missing", b'{"email":"admin@quickstart.example"}', *INVALID),
    ("email-missing", b'{"password":"x"}', *INVALID),
    ("extra-role", b'{"email":"a@b.c","password":"x","role":"admin"}', *INVALID),
    ("extra-user-id", b'{"email":"a@b.c","password":"x","user_id":3}', *INVALID),
    ("extra-remember-me", b'{"email":"a@b.c","password":"x","remember":true}', *INVALID),
    ("email-with-a-nul", b'{"email":"admin@quickstart.example\\u0000","password":"x"}', *MALFORMED),
    ("password-with-a-nul", b'{"email":"a@b.c","password":"x\\u0000"}', *MALFORMED),
    (
        "duplicate-email-the-last-too-short",
        b'{"email":"admin@quickstart.example","email":"","password":"x"}',
        *INVALID,
    ),
]


def _transport() -> list[tuple[str, Attack]]:
    """Content types, lengths, chunks, methods and overrides, against greet."""
    cases: list[tuple[str, Attack]] = []
    for ct in corpus.CONTENT_TYPES:
        cases.append((f"content-type-{ct}", Attack("greet", *UNSUPPORTED, GREETING, ct)))
    cases.append(
        ("content-type-missing-with-a-body", Attack("greet", *UNSUPPORTED, GREETING, None))
    )
    lengths = [
        ("not-a-number", "abc", MALFORMED),
        ("negative", "-1", MALFORMED),
        ("plus-sign", "+12", MALFORMED),
        ("hexadecimal", "0xC", MALFORMED),
        ("exponent", "1e1", MALFORMED),
        ("decimal", "12.0", MALFORMED),
        ("superscript-digit", "\u00b2", MALFORMED),
        ("over-the-cap", str(2 * corpus.MIB), TOO_LARGE),
        ("5000-digits", "9" * 5000, TOO_LARGE),
    ]
    for name, value, (status, code) in lengths:
        attack = Attack("greet", status, code, GREETING, headers=(("content-length", value),))
        cases.append((f"content-length-{name}", attack))
    twice = (("content-length", "12"), ("content-length", "12"))
    cases.append(("content-length-twice", Attack("greet", *MALFORMED, GREETING, headers=twice)))
    big = corpus.json_text(b"n" * (2 * corpus.MIB))
    small_length = (("content-length", "12"),)
    cases += [
        ("content-length-lies-small", Attack("greet", *TOO_LARGE, big, headers=small_length)),
        ("chunked-over-the-cap", Attack("greet", *TOO_LARGE, big, chunked=True)),
        (
            "chunked-million-fields",
            Attack("greet", *TOO_LARGE, corpus.million_json_fields, chunked=True),
        ),
        (
            "chunked-million-form-fields",
            Attack("greet", *TOO_LARGE, corpus.million_form_fields, FORM, chunked=True),
        ),
        ("chunked-malformed", Attack("greet", *MALFORMED, b'{"name":', chunked=True)),
        (
            "chunked-and-a-content-length",
            Attack("greet", *TOO_LARGE, big, headers=small_length, chunked=True),
        ),
    ]
    for method in corpus.METHODS:
        cases.append((f"method-{method}", Attack("greet", *NOT_ALLOWED, GREETING, method=method)))
    for header in corpus.OVERRIDE_HEADERS:
        get = Attack("greet", *NOT_ALLOWED, GREETING, method="GET", headers=((header, "POST"),))
        cases.append((f"GET-with-{header}-POST", get))
        for verb in ("GET", "HEAD"):
            post = Attack("greet", *CSRF, GREETING, token="none", headers=((header, verb),))
            cases.append((f"POST-with-{header}-{verb}-and-no-token", post))
    path = "/_actions/{id}?_method=POST"
    cases += [
        ("GET-with-method-in-the-query", Attack("greet", *NOT_ALLOWED, method="GET", path=path)),
        (
            "PUT-with-a-method-field",
            Attack("greet", *NOT_ALLOWED, b"name=a&_method=POST", FORM, method="PUT"),
        ),
        (
            "method-field-GET-and-no-token",
            Attack("greet", *CSRF, b"name=a&_method=GET", FORM, token="none", plain=True),
        ),
        ("method-field-PUT", Attack("greet", *INVALID, b"name=a&_method=PUT", FORM)),
        (
            "DELETE-of-count-with-an-override",
            Attack("count", *NOT_ALLOWED, method="DELETE", headers=(("X-HTTP-Method", "POST"),)),
        ),
    ]
    return cases


def _origins() -> list[tuple[str, Attack]]:
    """Where the call says it comes from: Origin, Referer, Sec-Fetch-Site, with a valid
    token each time (the origin check is a layer of its own)."""
    cases: list[tuple[str, Attack]] = []
    for name, value in corpus.ORIGINS:
        cases.append((f"origin-{name}", Attack("greet", *CROSS_ORIGIN, GREETING, origin=value)))
    for name in ("null", "another-site"):
        value = dict(corpus.ORIGINS)[name]
        form = Attack("greet", *CROSS_ORIGIN, b"name=a", FORM, origin=value, plain=True)
        cases.append((f"plain-form-origin-{name}", form))
    twice = (("origin", ORIGIN),)
    cases.append(("origin-twice", Attack("greet", *CROSS_ORIGIN, GREETING, headers=twice)))
    for name, value in corpus.REFERERS:
        attack = Attack(
            "greet", *CROSS_ORIGIN, GREETING, origin=None, headers=(("referer", value),)
        )
        cases.append((name, attack))
    referers = (("referer", ORIGIN + "/"), ("referer", ORIGIN + "/"))
    cases.append(
        ("referer-twice", Attack("greet", *CROSS_ORIGIN, GREETING, origin=None, headers=referers))
    )
    null_and_referer = (("referer", ORIGIN + "/"),)
    cases.append(
        (
            "origin-null-with-a-good-referer",
            Attack("greet", *CROSS_ORIGIN, GREETING, origin="null", headers=null_and_referer),
        )
    )
    for value in corpus.FETCH_SITES:
        attack = Attack("greet", *CROSS_ORIGIN, GREETING, headers=(("sec-fetch-site", value),))
        cases.append((f"sec-fetch-site-{value}", attack))
    return cases


def _tokens_and_cookies() -> list[tuple[str, Attack]]:
    cases: list[tuple[str, Attack]] = []
    for kind in corpus.TOKENS:
        cases.append((f"token-{kind}", Attack("greet", *CSRF, GREETING, token=kind)))
        cases.append((f"count-token-{kind}", Attack("count", *CSRF, token=kind)))
    for kind in ("none", "empty", "forged", "other-session", "long", "flipped"):
        form = Attack("greet", *CSRF, b"name=a", FORM, token=kind, plain=True)
        cases.append((f"plain-form-token-{kind}", form))
    cases.append(
        (
            "plain-form-token-twice",
            Attack("greet", *MALFORMED, b"name=a", FORM, token="twice", plain=True),
        )
    )
    in_body = b'{"name":"a","_csrf":"{csrf}"}'
    cases.append(("token-in-the-json-body", Attack("greet", *CSRF, in_body, token="none")))
    # A valid token whose session cookie is missing or mangled: no session. A cookie
    # swapped for a well-formed one of the attacker's making (cookie tossing): the token
    # is not that cookie's, refused as forged before the store is read.
    for kind in corpus.COOKIES:
        refusal = CSRF if kind == "forged" else NO_SESSION
        cases.append((f"cookie-{kind}", Attack("greet", *refusal, GREETING, cookie=kind)))
    for kind in ("none", "forged", "twice"):
        refusal = CSRF if kind == "forged" else NO_SESSION
        form = Attack("greet", *refusal, b"name=a", FORM, cookie=kind, plain=True)
        cases.append((f"plain-form-cookie-{kind}", form))
    publish = b'{"title":"a"}'
    cases.append(
        (
            "signed-in-action-with-a-forged-cookie",
            Attack("publish", *CSRF, publish, cookie="forged", caller="admin"),
        )
    )
    return cases


def _paths() -> list[tuple[str, Attack]]:
    return [
        (f"action-id-{name}", Attack("greet", *NOT_FOUND, GREETING, path=path))
        for name, path in corpus.ACTION_PATHS
    ]


def _multipart_to_greet() -> list[tuple[str, Attack]]:
    """greet takes no upload: every multipart body is refused from its headers."""
    cases = []
    for name, body, status, _ in corpus.MULTIPART_ENTRIES[:8]:
        if status == 413 and name.startswith("body"):
            continue  # its Content-Length is over the cap: 413 before the type is looked at
        for plain in (False, True):
            mode = "plain-form" if plain else "script"
            attack = Attack("greet", *UNSUPPORTED, body, MULTIPART, plain=plain)
            cases.append((f"greet-{mode}-multipart-{name}", attack))
    return cases


QUICKSTART: Final = [
    *json_attacks("greet", corpus.JSON_ENTRIES),
    *json_attacks("publish", _elsewhere(corpus.JSON_ENTRIES), caller="admin"),
    *json_attacks("count", _elsewhere(corpus.STRUCTURAL_JSON, without_input=True)),
    *json_attacks("login", _elsewhere(corpus.STRUCTURAL_JSON) + LOGIN_ENTRIES),
    *json_attacks("stats", _elsewhere(corpus.MAGIC, without_input=True), caller="admin"),
    *form_attacks("greet", corpus.FORM_ENTRIES),
    *form_attacks("login", corpus.FORM_ENTRIES[:12]),
    *_multipart_to_greet(),
    *_transport(),
    *_origins(),
    *_tokens_and_cookies(),
    *_paths(),
]
"""Every attack on the quickstart: (name, attack)."""


def _probe() -> list[tuple[str, Attack]]:
    cases = []
    for name, body, status, code in corpus.MULTIPART_ENTRIES:
        cases.append((f"upload-{name}", Attack("upload", status, code, body, MULTIPART)))
    for name, ct, status, code in corpus.MULTIPART_HEADERS:
        body = corpus.FILE + corpus.END
        cases.append((f"upload-{name}", Attack("upload", status, code, body, ct)))
    for name, body, status, code in corpus.MULTIPART_ENTRIES[6:10]:
        form = Attack("upload", status, code, body, MULTIPART, plain=True)
        cases.append((f"upload-plain-form-{name}", form))
    cases.append(
        ("multipart-to-an-action-without-uploads", Attack("edit", *UNSUPPORTED, b"", MULTIPART))
    )
    return cases + _bound()


def _sealed(action: str, **options: Any) -> Any:
    """A ``_bound`` value sealed by the probe app for ``action`` (made when sent)."""
    return lambda: probe.bastion.seal(action, {"note_id": 1}, bind_session=False, **options)


def _bound() -> list[tuple[str, Attack]]:
    """Sealed bound values: moved to another action, tampered with, expired, from
    another session or another key, or missing."""

    def edit(sealed: Any) -> Any:
        return lambda: json.dumps({"text": "t", "_bound": sealed()}).encode()

    def edit_form(sealed: Any) -> Any:
        return lambda: b"text=t&_bound=" + quote(sealed()).encode()

    another_session = _sealed_for_another_session()
    other_key = _sealed_under(THIRD)
    values = {
        "from-another-action": _sealed("remove"),
        "expired": _sealed("edit", ttl=-1),
        "for-another-session": another_session,
        "under-another-key": other_key,
        "tampered": _tampered(_sealed("edit")),
        "truncated": lambda: _sealed("edit")()[:-4],
        "padded": lambda: _sealed("edit")() + "==",
        "10-KB-of-junk": lambda: "A" * 10_000,
        "not-base64": lambda: "not a seal!",
    }
    cases = []
    for name, sealed in values.items():
        cases.append((f"bound-{name}", Attack("edit", *BOUND_INVALID, edit(sealed))))
        form = Attack("edit", *BOUND_INVALID, edit_form(sealed), FORM, plain=True)
        cases.append((f"plain-form-bound-{name}", form))
    cases += [
        ("bound-missing", Attack("edit", *BOUND_INVALID, b'{"text":"t"}')),
        ("bound-a-number", Attack("edit", *MALFORMED, b'{"text":"t","_bound":1}')),
        ("bound-from-edit-to-remove", Attack("remove", *BOUND_INVALID, _remove(_sealed("edit")))),
    ]
    return cases


def _remove(sealed: Any) -> Any:
    return lambda: json.dumps({"_bound": sealed()}).encode()


def _tampered(sealed: Any) -> Any:
    def flip() -> str:
        value: str = sealed()
        middle = len(value) // 2
        return value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]

    return flip


def _sealed_for_another_session() -> Any:
    def seal() -> str:
        someone = Session()
        someone.ensure()
        return probe.bastion.seal("edit", {"note_id": 1}, session=someone, bind_session=True)

    return seal


THIRD: Final = probe.mirror("a-third-suite-key-5555555555-abcdefghijklmnopqrstuvwxyz")


def _sealed_under(other: Bastion) -> Any:
    return lambda: other.seal("edit", {"note_id": 1}, bind_session=False)


PROBE: Final = _probe()


def test_the_corpus_holds_at_least_300_attacks_on_the_quickstart() -> None:
    """Issue 9: at least 300 hostile requests against the quickstart's actions, each with
    a name of its own."""
    names = [name for name, _ in QUICKSTART]
    assert len(names) == len(set(names)) >= 300


def test_the_handler_watch_sees_async_and_sync_handlers(qs: Target) -> None:
    """The harness itself: a call that is served is seen, whether its handler is a
    coroutine on the event loop (greet) or a function in a worker thread (whoami)."""
    admin = qs.signed_in("admin") if qs.signed_in else ""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        greeted = browser.send(
            "POST", qs.bastion.url_for("greet"), script_headers(browser, sid, token), GREETING
        )
        headers = script_headers(browser, admin, browser.token(admin))
        who = browser.send("POST", qs.bastion.url_for("whoami"), headers, b"{}")
    assert (greeted.status_code, who.status_code) == (200, 200)
    assert ran == ["greet", "whoami"]


@pytest.mark.parametrize("attack", with_ids(QUICKSTART))
def test_quickstart_refuses(qs: Target, other: Bastion, attack: Attack) -> None:
    """The attack named by the case id is refused with its status and code, no handler
    runs, the click count stays, and the reply leaks nothing."""
    run_attack(qs, attack, other)


@pytest.mark.parametrize("attack", with_ids(PROBE))
def test_probe_refuses(probe_target: Target, other: Bastion, attack: Attack) -> None:
    """Multipart bombs against an upload action, and sealed values misused: refused, no
    handler run, nothing leaked."""
    run_attack(probe_target, attack, other)


# --- look-alike e-mail addresses --------------------------------------------------------

ADMIN: Final = "admin@quickstart.example"
LOOKALIKES: Final = [
    ("cyrillic-a", "\u0430dmin@quickstart.example"),
    ("combining-acute", "a\u0301dmin@quickstart.example"),
    ("combining-mark-before-at", "admin\u0301@quickstart.example"),
    ("right-to-left-override", "\u202eadmin@quickstart.example"),
    ("zero-width-joiner", "ad\u200dmin@quickstart.example"),
    ("zero-width-space-at-the-end", "admin@quickstart.example\u200b"),
    ("dotless-i", "adm\u0131n@quickstart.example"),
    ("capital-i-with-a-dot", "ADM\u0130N@QUICKSTART.EXAMPLE"),
    ("capital-i-for-l", "admin@quickstart.exampIe"),
    ("greek-alpha", "\u03b1dmin@quickstart.example"),
    ("cyrillic-o-in-the-domain", "admin@quickstart.ex\u0430mple"),
]
"""Addresses that only look like the admin's: no account has them."""

SPELLINGS: Final = [
    ("capitals", ADMIN.upper()),
    ("fullwidth-at-sign", "admin\uff20quickstart.example"),
    ("fullwidth-a", "\uff41dmin@quickstart.example"),
    ("mathematical-bold-a", "\U0001d41admin@quickstart.example"),
    ("circled-a", "\u24d0dmin@quickstart.example"),
]
"""The admin's own address in other spellings: bastion's one spelling of each
(``LoginName``: NFKC, case folding) is the admin's, so they are the admin's account."""


@pytest.mark.parametrize(("email"), [pytest.param(e, id=n) for n, e in LOOKALIKES])
def test_a_lookalike_of_the_admin_address_is_not_the_admin(qs: Target, email: str) -> None:
    """Attack: sign in as the admin with the admin's own password but an address that only
    looks like theirs (Cyrillic, full-width, combining marks, RTL override, zero-width
    characters). The login handler refuses it as an unknown account (401) and the
    browser is not signed in as anyone."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        body = json.dumps({"email": email, "password": PASSWORD}).encode()
        reply = browser.send(
            "POST", qs.bastion.url_for("login"), script_headers(browser, sid, token), body
        )
        assert reply.status_code == 401, reply.text
        assert reply.json() == {
            "ok": False,
            "error": {"code": "login_failed", "message": "Wrong email or password."},
        }
        assert_no_leak(reply, body)
        after = session_after(reply, browser.cookie, sid)
        assert after == sid  # no log-in: the session was not rotated
        assert browser.user_id(sid) is None
    assert ran == ["login"]


@pytest.mark.parametrize(("email"), [pytest.param(e, id=n) for n, e in SPELLINGS])
def test_the_lookalike_test_would_see_a_sign_in(qs: Target, email: str) -> None:
    """Control for the look-alike cases: the admin's address in capitals or in full-width
    or other compatibility forms is the admin's in bastion's one spelling, and does sign
    in, as the admin, with a new session ID."""
    with Browser(qs) as browser:
        sid, token = browser.new_session()
        body = json.dumps({"email": email, "password": PASSWORD}).encode()
        reply = browser.send(
            "POST", qs.bastion.url_for("login"), script_headers(browser, sid, token), body
        )
        assert reply.status_code == 200, reply.text
        after = session_after(reply, browser.cookie, sid)
        assert after is not None
        assert after != sid
        assert browser.user_id(after) == 3


def _form(browser: Browser, sid: str) -> list[tuple[str, str]]:
    return [
        ("content-type", FORM),
        ("accept", "text/html"),
        ("origin", ORIGIN),
        ("referer", ORIGIN + FORM_PAGE),
        ("cookie", f"{browser.cookie}={sid}"),
    ]


# --- a repeated JSON key ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"name":"' + b"n" * 51 + b'","name":"Ada"}', id="first-too-long"),
        pytest.param(b'{"name":{"$ne":null},"name":"Ada"}', id="first-an-operator"),
        pytest.param(b'{"name":"\\u0000","name":"Ada"}', id="first-with-a-nul"),
    ],
)
def test_a_repeated_json_key_is_one_value_the_one_checked(qs: Target, body: bytes) -> None:
    """Attack: a JSON key sent twice, hoping one value is checked and the other used. It
    is one value, the last: checked (NUL, depth, numbers, the model) and used alike, so
    the handler greets exactly what passed validation, never a list of both."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        reply = browser.send(
            "POST", qs.bastion.url_for("greet"), script_headers(browser, sid, token), body
        )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}
    assert ran == ["greet"]


# --- _next: where a plain form goes after success -----------------------------------------

UNSAFE_NEXT: Final = [
    ("crlf-header-injection", "/x\r\nSet-Cookie: pwned=1"),
    ("lf-header-injection", "/x\nLocation: https://evil.example/"),
    ("cr-only", "/x\rSet-Cookie: pwned=1"),
    ("tab-in-the-host", "/\t/evil.example"),
    ("scheme-relative", "//evil.example/"),
    ("backslash-host", "/\\evil.example"),
    ("absolute-url", "https://evil.example/"),
    ("javascript-url", "javascript:alert(1)"),
    ("data-url", "data:text/html,<script>alert(1)</script>"),
    ("single-slash-scheme", "http:/evil.example"),
    ("leading-space", " /x"),
    ("over-2-KB", "/" + "a" * 3000),
]
"""Values of ``_next`` that are ignored: the browser goes back to the form's page."""

ENCODED_NEXT: Final = [
    ("unicode-line-separator", "/x\u2028Set-Cookie: pwned=1"),
    ("next-line-character", "/x\u0085Set-Cookie: pwned=1"),
    ("percent-encoded-crlf", "/x%0d%0aSet-Cookie:%20pwned=1"),
]
"""Values of ``_next`` that are same-origin paths: followed, percent-encoded, so nothing
is spliced into the headers."""


def _post_greeting(qs: Target, target: str) -> tuple[str, dict[str, Any] | None, list[str]]:
    """A plain greeting form with this ``_next``: where it goes, its flash, who ran."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        body = f"name=Ada&_next={quote(target)}&_csrf={token}".encode()
        reply = browser.send("POST", qs.bastion.url_for("greet"), _form(browser, sid), body)
        assert reply.status_code == 303
        assert [k for k, _ in reply.headers.raw].count(b"location") == 1
        assert "pwned" not in reply.headers.get("set-cookie", "")
        location = reply.headers["location"]
        assert all(0x20 < ord(c) < 0x7F for c in location), location
        flash = browser.flash(sid)
    return location, flash, ran


@pytest.mark.parametrize("target", [pytest.param(t, id=n) for n, t in UNSAFE_NEXT])
def test_an_unsafe_next_is_never_followed(qs: Target, target: str) -> None:
    """Attack: a plain form whose ``_next`` holds CR/LF (header splitting), another host,
    a scheme, a control character or 3 KB. The greeting succeeds; the browser goes back
    to the form's own page."""
    location, flash, ran = _post_greeting(qs, target)
    assert location == FORM_PAGE
    assert flash is not None
    assert (flash["ok"], flash["data"]) == (True, {"message": "Hello, Ada!"})
    assert ran == ["greet"]


@pytest.mark.parametrize("target", [pytest.param(t, id=n) for n, t in ENCODED_NEXT])
def test_a_next_with_unicode_breaks_is_only_a_path(qs: Target, target: str) -> None:
    """Attack: line breaks that are not CR/LF (U+2028, NEL) or are already encoded, in
    ``_next``. It is a same-origin path: followed, percent-encoded, one Location header."""
    location, flash, ran = _post_greeting(qs, target)
    assert location.startswith("/x%")
    assert "\r" not in location
    assert "\n" not in location
    assert flash is not None
    assert flash["ok"] is True
    assert ran == ["greet"]


def test_an_unsafe_next_on_a_refused_form_goes_back_to_the_form(qs: Target) -> None:
    """Attack: CR/LF in ``_next`` on a form that fails validation: the handler does not
    run, and the 303 goes back to the form's page with the error flash."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        body = f"name=&_next={quote('/x' + chr(13) + chr(10) + 'Set-Cookie: a=b')}&_csrf={token}"
        reply = browser.send(
            "POST", qs.bastion.url_for("greet"), _form(browser, sid), body.encode()
        )
        assert (reply.status_code, reply.headers["location"]) == (303, FORM_PAGE)
        assert "set-cookie" not in reply.headers or "a=b" not in reply.headers["set-cookie"]
        flash = browser.flash(sid)
        assert flash is not None
        assert (flash["ok"], flash["code"]) == (False, "invalid")
    assert ran == []


# --- uploads: names and contents are data ------------------------------------------------

TRAVERSALS: Final = [
    ("dot-dot-slash", "../../../../../../tmp/bastion-traversal-{n}"),
    ("dot-dot-backslash", "..\\..\\..\\tmp\\bastion-traversal-{n}"),
    ("absolute-path", "/tmp/bastion-traversal-{n}"),  # noqa: S108 - the attack
    ("encoded-dot-dot", "%2e%2e%2f%2e%2e%2ftmp%2fbastion-traversal-{n}"),
    ("nul-truncation", "bastion-traversal-{n}.txt\x00.png"),
    ("windows-device-name", "CON"),
    ("dot-dot-only", ".."),
]


@pytest.mark.parametrize("filename", [pytest.param(f, id=n) for n, f in TRAVERSALS])
def test_an_upload_file_name_is_only_data(
    probe_target: Target, tmp_path: Path, filename: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: an upload whose file name climbs out of any directory (``../``, absolute,
    encoded, NUL-truncated). bastion never uses it as a path: the handler gets the name
    as text, and no file appears where the name points, nor in the working directory."""
    monkeypatch.chdir(tmp_path)
    name = filename.replace("{n}", tmp_path.name)
    body = corpus.part(b"file", b"payload", name.encode()) + corpus.END
    with handlers_run(probe.bastion) as ran, Browser(probe_target) as browser:
        sid, token = browser.new_session()
        headers = script_headers(browser, sid, token)
        headers[0] = ("content-type", MULTIPART)
        reply = browser.send("POST", probe.bastion.url_for("upload"), headers, body)
    if "\x00" in name:
        assert reply.status_code == 400  # a NUL is refused in any form field
        assert ran == []
        return
    assert reply.status_code == 200, reply.text
    envelope = assert_envelope(reply)
    assert envelope["data"]["filename"] == name
    assert envelope["data"]["size"] == len(b"payload")
    assert ran == ["upload"]
    assert list(tmp_path.iterdir()) == []
    assert not Path(f"/tmp/bastion-traversal-{tmp_path.name}").exists()  # noqa: S108


def test_a_pickle_upload_is_never_unpickled(probe_target: Target) -> None:
    """Attack: a pickle whose loading runs a shell command, uploaded with the pickle
    content type. It is stored and handed over as bytes; the command never runs."""
    payload = corpus.pickled(4)
    pickle_part = corpus.part(
        b"file", payload, b"x.pkl", b"Content-Type: application/python-pickle\r\n"
    )
    with Browser(probe_target) as browser:
        sid, token = browser.new_session()
        headers = script_headers(browser, sid, token)
        headers[0] = ("content-type", MULTIPART)
        reply = browser.send(
            "POST", probe.bastion.url_for("upload"), headers, pickle_part + corpus.END
        )
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    assert data == {
        "filename": "x.pkl",
        "size": len(payload),
        "content_type": "application/python-pickle",
    }
    assert not corpus.CANARY.exists()


def test_no_pickle_payload_of_the_corpus_ever_ran() -> None:
    """After every pickle in the corpus was posted (as JSON, form and upload), the file
    their loading would have made does not exist."""
    assert not corpus.CANARY.exists()


# --- sessions: fixation -------------------------------------------------------------------


def test_a_cookie_the_server_never_issued_is_not_adopted(qs: Target) -> None:
    """Attack: session fixation by planting a well-formed session ID. The page that needs
    a session makes a new one (a different ID), and the planted ID stays unknown."""
    planted = "P" * 43
    with Browser(qs) as browser:
        page = browser.send(
            "GET", "/", [("accept", "text/html"), ("cookie", f"bastion_session={planted}")]
        )
        assert page.status_code == 200
        issued = session_after(page, browser.cookie, None)
        assert issued is not None
        assert issued != planted
        assert not browser.session_exists(planted)
        assert browser.session_exists(issued)


def test_a_session_id_from_before_log_in_dies_at_log_in(qs: Target) -> None:
    """Attack: session fixation by learning the victim's pre-login ID. Log-in rotates it:
    the old ID is gone from the store, a call with it and its old token is refused, and
    the new ID is the signed-in one."""
    with Browser(qs) as browser:
        before, token = browser.new_session()
        body = json.dumps({"email": ADMIN, "password": PASSWORD}).encode()
        reply = browser.send(
            "POST", qs.bastion.url_for("login"), script_headers(browser, before, token), body
        )
        assert reply.status_code == 200
        after = session_after(reply, browser.cookie, before)
        assert after is not None
        assert after != before
        assert not browser.session_exists(before)
        assert browser.user_id(after) == 3
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        stale = browser.send(
            "POST", qs.bastion.url_for("whoami"), script_headers(browser, before, token), b""
        )
        assert stale.status_code == 403
        assert stale.json()["error"]["code"] == "no_session"
    assert ran == []
