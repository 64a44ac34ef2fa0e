"""Regression tests named after the incidents of the model (Next.js and React server
actions): for each, the analogous attack on bastion, and proof that it fails here.

Requests go straight into the ASGI app where the proof needs it (how many times the body
was asked for, a body that stalls or stops short); through a test client otherwise.
Whatever could hang runs under ``anyio.fail_after`` with a generous limit: the check is
that it finishes, never how fast.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from bastion import Bastion
from bastion.pipeline.flash import MAX_KEPT
from bastion.testing import ActionClient

from . import corpus, probe
from ._support import (
    FORM,
    JSON,
    KEY,
    ORIGIN,
    Browser,
    CountingReceive,
    Reply,
    Target,
    asgi_call,
    assert_envelope,
    assert_no_leak,
    assert_no_leak_in,
    fresh_address,
    handlers_run,
    raw_headers,
    session_and_token,
)

UNTRUSTED_HOST: Final = {
    "ok": False,
    "error": {"code": "untrusted_host", "message": "Invalid host header"},
}

SRC: Final = Path(__file__).resolve().parents[2] / "src"

GENEROUS: Final = 60.0
"""Seconds a hostile call may take before the test calls it a hang."""

MIB: Final = corpus.MIB


def call(
    target: Target,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    receive: CountingReceive | None = None,
) -> Reply:
    """One raw ASGI call, from an address of its own, that must finish."""

    async def run() -> Reply:
        with anyio.fail_after(GENEROUS):
            return await asgi_call(
                target.app, method, path, headers, receive, client=fresh_address()
            )

    return anyio.run(run)


def token_for(target: Target) -> tuple[str, str]:
    return anyio.run(session_and_token, target.bastion)


def script(sid: str, token: str, content_type: str = JSON) -> list[tuple[bytes, bytes]]:
    return raw_headers(
        content_type=content_type,
        accept=JSON,
        origin=ORIGIN,
        x_csrf_token=token,
        cookie=f"bastion_session={sid}",
    )


def assert_refusal(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body[:300]
    envelope = json.loads(reply.body)
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == code
    assert_no_leak_in(reply)


# --- CVE-2025-55182 (React2Shell) ---------------------------------------------------------
# The body was deserialized, with references between objects, before the action was even
# resolved. Here nothing of the body is read until the action, the method, the content
# type, the declared length, the origin (and for scripts the token, rate and policy) pass.

HOSTILE_BODIES: Final = {
    "react-flight-references": b'{"then":"$1:__proto__:then","_response":{"_prefix":"$@0"}}',
    "pickle": corpus.pickled(4),
    "deep-json": b"[" * 100_000,
    "million-fields": corpus.million_json_fields(),
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
def test_cve_2025_55182_unknown_action_never_reads_the_body(qs: Target, body: bytes) -> None:
    """A hostile body posted to an action ID that does not exist: 404, and the body was
    never asked for (not one ``receive`` call), whatever it holds."""
    sid, token = token_for(qs)
    receive = CountingReceive([body])
    reply = call(qs, "POST", "/_actions/Zm9yZ2VkLWFjdGlvbi1pZA12", script(sid, token), receive)
    assert_refusal(reply, 404, "not_found")
    assert receive.reads == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_cve_2025_55182_a_get_never_reads_the_body(qs: Target, method: str) -> None:
    """A known action called with GET (or another method) and a hostile body: 405, body
    never read."""
    sid, token = token_for(qs)
    receive = CountingReceive([corpus.pickled(4)])
    reply = call(qs, method, qs.bastion.url_for("greet"), script(sid, token), receive)
    assert_refusal(reply, 405, "method_not_allowed")
    assert reply.header(b"allow") == [b"POST"]
    assert receive.reads == 0


def _refused_before_the_body() -> Iterator[Any]:
    greet = "greet"
    yield pytest.param(
        greet,
        {"content_type": "application/python-pickle"},
        415,
        "unsupported_media_type",
        id="pickle-content-type",
    )
    yield pytest.param(
        greet,
        {"content_length": str(2 * MIB)},
        413,
        "payload_too_large",
        id="declared-length-over-the-cap",
    )
    yield pytest.param(
        greet, {"origin": "https://evil.example"}, 403, "cross_origin", id="cross-origin-script"
    )
    yield pytest.param(
        greet, {"origin": "null", "content_type": FORM}, 403, "cross_origin", id="cross-origin-form"
    )
    yield pytest.param(greet, {"x_csrf_token": ""}, 403, "csrf_failed", id="script-without-token")
    yield pytest.param("publish", {}, 401, "unauthorized", id="anonymous-caller-of-a-user-action")
    yield pytest.param("stats", {}, 401, "unauthorized", id="anonymous-caller-of-a-permission")


@pytest.mark.parametrize(("action", "override", "status", "code"), list(_refused_before_the_body()))
def test_cve_2025_55182_checks_before_the_body(
    qs: Target, action: str, override: dict[str, str], status: int, code: str
) -> None:
    """Content type, declared length, origin, a script's token and the policy are all
    decided before the first byte of the body is asked for."""
    sid, token = token_for(qs)
    values = {
        "content_type": JSON,
        "accept": JSON,
        "origin": ORIGIN,
        "x_csrf_token": token,
        "cookie": f"bastion_session={sid}",
        **override,
    }
    receive = CountingReceive([corpus.pickled(4)])
    with handlers_run(qs.bastion, this_thread=True) as ran:
        reply = call(qs, "POST", qs.bastion.url_for(action), raw_headers(**values), receive)
    assert_refusal(reply, status, code)
    assert receive.reads == 0
    assert ran == []


def test_cve_2025_55182_a_rate_limited_script_is_refused_before_its_body(qs: Target) -> None:
    """Past its rate (login: 20 a minute per address), a script's call is refused (429)
    before its body is asked for."""
    sid, token = token_for(qs)
    address = fresh_address()

    async def flood() -> list[tuple[int, int]]:
        results = []
        for _ in range(21):
            receive = CountingReceive([b"{}"])
            reply = await asgi_call(
                qs.app,
                "POST",
                qs.bastion.url_for("login"),
                script(sid, token),
                receive,
                client=address,
            )
            results.append((reply.status, receive.reads))
        return results

    results = anyio.run(flood)
    assert results[:20] == [(422, 1)] * 20
    assert results[20] == (429, 0)


def test_cve_2025_55182_the_body_becomes_flat_fields_only(probe_target: Target) -> None:
    """Object references ("$1:…"), class hints ("__class__", "py/object") and nested
    objects are never resolved or instantiated: a nested model gets plain data, and
    unknown keys at any depth are refused."""
    with Browser(probe_target) as browser:
        sid, token = browser.new_session()
        body = json.dumps(
            {
                "address": {
                    "city": "$1:__proto__",
                    "__class__": "os.system",
                    "py/object": "subprocess.Popen",
                }
            }
        ).encode()
        headers = [
            ("content-type", JSON),
            ("accept", JSON),
            ("origin", ORIGIN),
            ("x-csrf-token", token),
            ("cookie", f"bastion_session={sid}"),
        ]
        reply = browser.send("POST", probe.bastion.url_for("ship"), headers, body)
    assert reply.status_code == 422
    fields = assert_envelope(reply)["error"]["fields"]
    assert set(fields) == {"address.__class__", "address.py/object"}


# --- CVE-2025-55184, CVE-2026-23864: payloads that hang or exhaust ----------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, "malformed", id="array-100000-deep"),
        pytest.param(
            b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "malformed", id="object-100000-deep"
        ),
        pytest.param(
            b'{"name":"' + b"\\u0041" * 170_000 + b'"}', 422, "invalid", id="a-field-of-escapes"
        ),
        pytest.param(
            b'{"name":"' + b"n" * (MIB - 20) + b'"}', 422, "invalid", id="a-field-at-the-cap"
        ),
        pytest.param(
            b'{"name":[' + b"1," * 400_000 + b"1]}", 422, "invalid", id="an-array-of-400000-numbers"
        ),
        pytest.param(b'{"name":' + b"9" * 4300 + b"}", 422, "invalid", id="a-4300-digit-number"),
    ],
)
def test_cve_2025_55184_hostile_json_finishes(
    qs: Target, body: bytes, status: int, code: str
) -> None:
    """JSON built to burn the parser or the validator (deep, wide, escaped, huge numbers)
    is answered with a refusal, and the call finishes."""
    sid, token = token_for(qs)
    reply = call(
        qs, "POST", qs.bastion.url_for("greet"), script(sid, token), CountingReceive([body])
    )
    assert_refusal(reply, status, code)


@pytest.mark.parametrize("chunk", [1, 1024, 65536], ids=["1-byte", "1-KB", "64-KB"])
def test_cve_2026_23864_a_stream_costs_at_most_the_cap(qs: Target, chunk: int) -> None:
    """A 50 MiB chunked body (no Content-Length) is cut off once past the 1 MiB cap: 413,
    and no more than the cap and one chunk were ever taken from the connection."""
    sid, token = token_for(qs)
    total = 50 * MIB if chunk > 1 else 2 * MIB
    piece = b"a" * chunk
    receive = CountingReceive([b'{"name":"'] + [piece] * (total // chunk))
    reply = call(qs, "POST", qs.bastion.url_for("greet"), script(sid, token), receive)
    assert_refusal(reply, 413, "payload_too_large")
    assert receive.taken <= MIB + chunk + 9


def _chunks(body: bytes, size: int = 4096) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def test_cve_2026_23864_a_form_without_its_token_costs_at_most_the_pre_token_cap(
    qs: Target,
) -> None:
    """A plain form's token is one of its fields, so some of its body is read before the
    token is checked, but no more than the pre-token cap (64 KiB): a million fields with
    no ``_csrf`` among them, arriving in 4 KB chunks, are refused 403 once past it, the
    handler never runs, and the rest of the body is never asked for."""
    sid, _ = token_for(qs)
    receive = CountingReceive(_chunks(corpus.million_form_fields()))
    headers = raw_headers(
        content_type=FORM, origin=ORIGIN, accept=JSON, cookie=f"bastion_session={sid}"
    )
    with handlers_run(qs.bastion, this_thread=True) as ran:
        reply = call(qs, "POST", qs.bastion.url_for("greet"), headers, receive)
    assert_refusal(reply, 403, "csrf_failed")
    assert ran == []
    assert receive.taken <= 64 * 1024 + 4096


def test_cve_2026_23864_a_multipart_form_without_its_token_costs_at_most_the_cap(
    probe_target: Target,
) -> None:
    """The same for a multipart form: a 900 KB file part first, the token after it.
    The token does not come within the pre-token cap, so the call is refused 403 having
    taken no more than the cap and a chunk, and nothing is handled."""
    sid, token = token_for(probe_target)
    body = (
        corpus.part(b"file", b"x" * 900_000, filename=b"big.bin")
        + corpus.part(b"_csrf", token.encode())
        + corpus.END
    )
    receive = CountingReceive(_chunks(body))
    headers = raw_headers(
        content_type=corpus.MULTIPART,
        origin=ORIGIN,
        accept=JSON,
        cookie=f"bastion_session={sid}",
    )
    with handlers_run(probe_target.bastion, this_thread=True) as ran:
        reply = call(probe_target, "POST", probe.bastion.url_for("upload"), headers, receive)
    assert_refusal(reply, 403, "csrf_failed")
    assert ran == []
    assert receive.taken <= 64 * 1024 + 4096


def test_cve_2026_23864_a_form_stream_with_its_token_costs_at_most_the_cap(qs: Target) -> None:
    """A form whose valid token comes first passes the token check and is then read on,
    up to the body cap: a million fields after it are cut off there (413), having taken
    no more than the cap and a chunk, and the handler never runs."""
    sid, token = token_for(qs)
    body = b"_csrf=" + token.encode() + b"&" + corpus.million_form_fields()
    receive = CountingReceive(_chunks(body))
    headers = raw_headers(
        content_type=FORM, origin=ORIGIN, accept=JSON, cookie=f"bastion_session={sid}"
    )
    with handlers_run(qs.bastion, this_thread=True) as ran:
        reply = call(qs, "POST", qs.bastion.url_for("greet"), headers, receive)
    assert_refusal(reply, 413, "payload_too_large")
    assert ran == []
    assert MIB < receive.taken <= MIB + 4096


def test_cve_2026_23864_many_multipart_parts_finish(probe_target: Target) -> None:
    """100,000 tiny multipart parts in a body under the cap: refused at the field limit
    (413), and the call finishes."""
    sid, token = token_for(probe_target)
    body = b"".join(corpus.part(b"t", b"") for _ in range(20_000)) + corpus.END
    reply = call(
        probe_target,
        "POST",
        probe.bastion.url_for("upload"),
        script(sid, token, corpus.MULTIPART),
        CountingReceive([body]),
    )
    assert_refusal(reply, 413, "payload_too_large")


def test_cve_2026_23864_a_body_cut_short_is_a_400(qs: Target) -> None:
    """The client sends half a body and disconnects: 400, at once, no handler."""
    sid, token = token_for(qs)
    receive = CountingReceive([b'{"name":'], then="disconnect")
    with handlers_run(qs.bastion, this_thread=True) as ran:
        reply = call(qs, "POST", qs.bastion.url_for("greet"), script(sid, token), receive)
    assert_refusal(reply, 400, "malformed")
    assert ran == []


def test_cve_2026_23864_a_slow_body_that_arrives_is_served(qs: Target) -> None:
    """A body that trickles in byte by byte, but well within the action's time, is read
    and served: slowness alone is not refused."""
    sid, token = token_for(qs)
    body = b'{"name":"slow but sure"}'

    class Trickle(CountingReceive):
        async def __call__(self) -> dict[str, Any]:
            await anyio.sleep(0.001)
            return await super().__call__()

    receive = Trickle([body[i : i + 1] for i in range(len(body))])
    reply = call(qs, "POST", qs.bastion.url_for("greet"), script(sid, token), receive)
    assert reply.status == 200
    assert json.loads(reply.body) == {"ok": True, "data": {"message": "Hello, slow but sure!"}}


@pytest.mark.parametrize(
    ("content_type", "first", "with_token"),
    [
        pytest.param(JSON, b'{"text":"', True, id="script-json"),
        pytest.param(FORM, b"text=a&_csrf=", False, id="plain-form-before-its-token"),
        pytest.param(
            corpus.MULTIPART,
            corpus.part(b"file", b"x" * 1000, b"a.txt")[:-20],
            True,
            id="multipart-in-the-middle-of-a-file",
        ),
    ],
)
def test_cve_2026_23864_a_body_that_stalls_is_cut_off(
    probe_target: Target, content_type: str, first: bytes, with_token: bool
) -> None:
    """Slowloris: the client sends the start of a body and then nothing, without leaving.
    The call is answered 408 once the action's timeout has passed (the probe's is half a
    second), instead of waiting for as long as the client likes; no handler runs."""
    sid, token = token_for(probe_target)
    headers = script(sid, token if with_token else "", content_type)
    if not with_token:
        headers = [h for h in headers if h[0] != b"x-csrf-token"]
    receive = CountingReceive([first], then="stall")
    action = "slow_upload" if content_type == corpus.MULTIPART else "slow"
    with handlers_run(probe.bastion, this_thread=True) as ran:
        reply = call(probe_target, "POST", probe.bastion.url_for(action), headers, receive)
    assert_refusal(reply, 408, "request_timeout")
    assert ran == []


def test_cve_2026_23864_a_refused_form_stores_no_more_than_its_fields(qs: Target) -> None:
    """A plain form of 1 MB of junk fields (no token, so refused) from a browser with no
    session: the flash waiting for its next page keeps only the form's own fields, within
    MAX_KEPT characters, not the megabyte (anyone could fill the store a megabyte a post)."""
    body = b"&".join(
        [b"name=" + b"n" * (MAX_KEPT + 10), *(b"junk%d=" % i + b"j" * 1000 for i in range(900))]
    )
    assert len(body) < MIB
    with Browser(qs) as browser:
        headers = [("content-type", FORM), ("accept", "text/html"), ("origin", ORIGIN)]
        reply = browser.send("POST", qs.bastion.url_for("greet"), headers, body)
        assert reply.status_code == 303
        sid = reply.cookies.get("bastion_session")
        assert sid is not None
        flash = browser.flash(sid)
        assert flash is not None
        assert flash["code"] == "csrf_failed"
        assert flash["values"] == {}
        key = qs.bastion.session_manager.store_keys(sid)[0]
        stored = browser.client.portal.call(qs.bastion.store.get, key)
    assert stored is not None
    assert len(stored) < 4096


# --- CVE-2024-34351, CVE-2026-64649: URLs built from the Host header --------------------------

FORGED_HOSTS: Final = [
    ("host", [("host", "evil.example")]),
    ("x-forwarded-host", [("x-forwarded-host", "evil.example")]),
    ("forwarded", [("forwarded", "host=evil.example;proto=https")]),
    (
        "x-forwarded-proto-and-host",
        [("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.example:443")],
    ),
    ("x-original-host", [("x-original-host", "evil.example")]),
    ("x-host", [("x-host", "evil.example")]),
    ("host-with-a-path", [("host", "evil.example/_actions")]),
    (
        "host-and-x-forwarded-server",
        [("host", "evil.example"), ("x-forwarded-server", "evil.example")],
    ),
]


def _requests(
    browser: Browser, qs: Target
) -> Iterator[tuple[str, str, list[tuple[str, str]], bytes]]:
    """(name, path, headers, body): a plain form that succeeds, one with _next, one that
    is refused, one htmx call, a script's call, a script's refusal, the bare prefix, and
    the page that renders the forms."""
    sid, token = browser.new_session()
    cookie = ("cookie", f"bastion_session={sid}")
    form = [("content-type", FORM), ("accept", "text/html"), ("origin", ORIGIN), cookie]
    greet = qs.bastion.url_for("greet")
    yield "plain-form-success", greet, form, f"name=Ada&_csrf={token}".encode()
    yield "plain-form-success-to-next", greet, form, f"name=Ada&_next=/done&_csrf={token}".encode()
    yield "plain-form-refused", greet, form, b"name=Ada"
    htmx = [*form, ("hx-request", "true")]
    yield "htmx-success", greet, htmx, f"name=Ada&_next=/done&_csrf={token}".encode()
    scripted = [
        ("content-type", JSON),
        ("accept", JSON),
        ("origin", ORIGIN),
        ("x-csrf-token", token),
        cookie,
    ]
    yield "script-success", greet, scripted, b'{"name":"Ada"}'
    yield "script-refused", greet, scripted, b'{"name":""}'
    yield "the-bare-prefix", "/_actions", scripted, b"{}"
    yield "unknown-action", "/_actions/x", scripted, b"{}"


@pytest.mark.parametrize(("name", "forged"), FORGED_HOSTS, ids=[n for n, _ in FORGED_HOSTS])
def test_cve_2024_34351_no_url_is_built_from_host(
    qs: Target, name: str, forged: list[tuple[str, str]]
) -> None:
    """A forged Host (or X-Forwarded-Host, Forwarded, …) never shows up in a Location,
    an HX-Redirect or a body, on success, on refusal, on the bare prefix (which Starlette
    would redirect with an absolute URL) or on the page that renders the forms. A Host
    that is not the allowed origins' is refused (400) before anything runs."""
    forges_host = any(name == "host" for name, _ in forged)
    with Browser(qs) as browser:
        for label, path, headers, body in _requests(browser, qs):
            reply = browser.send("POST", path, headers + forged, body)
            assert reply.status_code < 500, (label, reply.text)
            if forges_host:
                assert (reply.status_code, reply.json()) == (400, UNTRUSTED_HOST), label
            seen = reply.content + str(reply.headers).encode()
            assert b"evil" not in seen, (label, seen[:300])
            location = reply.headers.get("location") or reply.headers.get("hx-redirect")
            if location is not None:
                assert location.startswith("/"), (label, location)
                assert not location.startswith("//"), (label, location)
        page = browser.send("GET", "/", [("accept", "text/html"), *forged])
        assert page.status_code == (400 if forges_host else 200)
        assert b"evil" not in page.content + str(page.headers).encode()


def test_cve_2026_64649_the_prefix_is_not_redirected_through_host(qs: Target) -> None:
    """The action prefix without its slash answers bastion's 404 itself, for every method:
    no 307 to an absolute URL made of the Host header; a foreign Host is refused first."""
    with Browser(qs) as browser:
        for method in ("POST", "GET", "PUT"):
            reply = browser.send(method, "/_actions", [], b"{}")
            assert reply.status_code == 404
            assert "location" not in reply.headers
            assert reply.json() == {
                "ok": False,
                "error": {"code": "not_found", "message": "Not found."},
            }
            forged = browser.send(method, "/_actions", [("host", "evil.example")], b"{}")
            assert (forged.status_code, forged.json()) == (400, UNTRUSTED_HOST)
            assert "location" not in forged.headers


# --- CVE-2025-29927: an internal header skips the checks ------------------------------------

INTERNAL_HEADERS: Final = [
    ("x-middleware-subrequest", "middleware"),
    ("x-middleware-subrequest", "middleware:middleware:middleware:middleware:middleware"),
    ("x-middleware-subrequest", "src/middleware:src/middleware:src/middleware"),
    ("x-middleware-prefetch", "1"),
    ("x-nextjs-data", "1"),
    ("x-invoke-path", "/"),
    ("x-matched-path", "/_actions"),
    ("x-bastion-internal", "1"),
    ("x-bastion-skip-csrf", "1"),
    ("x-bastion-skip", "origin,csrf,rate,policy"),
    ("x-bastion-user", "3"),
    ("x-bastion-debug", "1"),
    ("x-bastion-trusted", "true"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-host", "127.0.0.1"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-user", "admin@quickstart.example"),
    ("x-real-ip", "127.0.0.1"),
    ("x-original-url", "/"),
    ("x-rewrite-url", "/"),
    ("x-remote-user", "admin"),
    ("x-user-id", "3"),
    ("x-internal", "true"),
    ("x-debug", "1"),
    ("x-requested-with", "XMLHttpRequest"),
    ("x-csrf-protection", "0"),
]
"""``Authorization`` is not among them: bastion reads it (API tokens, stage 4), and the
test after the matrix shows what a forged one beside these gets."""

CHECKS: Final = [
    # name, action, attack on the request, status, code
    ("origin", "greet", {"origin": "https://evil.example"}, 403, "cross_origin"),
    ("origin-null", "greet", {"origin": "null"}, 403, "cross_origin"),
    ("csrf-token", "greet", {"x-csrf-token": None}, 403, "csrf_failed"),
    ("policy", "publish", {}, 401, "unauthorized"),
    (
        "body-cap",
        "greet",
        {"body": b'{"name":"' + b"n" * (MIB + 1) + b'"}'},
        413,
        "payload_too_large",
    ),
    ("validation", "greet", {"body": b'{"name":""}'}, 422, "invalid"),
    ("unknown-action", "", {}, 404, "not_found"),
]


READ_HEADERS: Final = frozenset(
    {
        "accept",
        "authorization",  # an API token (stage 4): refused beside a cookie, hashed to look up
        "content-length",
        "content-type",
        "cookie",
        "host",
        "hx-request",
        "idempotency-key",  # an idempotent action's key, only ever compared and hashed
        "origin",
        "referer",
        "sec-fetch-site",
        "x-csrf-token",
        "x-forwarded-for",
    }
)
"""Every request header src/bastion reads. A header not here changes nothing bastion
does; adding one is a decision this test makes visible."""


def _request_headers_read() -> dict[str, set[str]]:
    """Header name → the modules that read it, from the source: ``.get`` / ``.getlist``
    on a request's ``headers`` (module constants resolved), and raw scope headers
    compared with ``key == b"…"``. The test client (``testing``) and the probe, which
    write requests, and response headers are not reads."""
    found: dict[str, set[str]] = {}
    for path in (SRC / "bastion").rglob("*.py"):
        if "probe" in path.parts or path.name == "testing.py":
            continue
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.AnnAssign | ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            name: object = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "getlist")
                and node.args
            ):
                receiver = ast.unparse(node.func.value)
                if receiver.endswith("headers") and not receiver.startswith("response"):
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant):
                        name = arg.value
                    elif isinstance(arg, ast.Name):
                        name = constants.get(arg.id)
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
                right = node.comparators[0]
                # Raw scope headers are bytes: ``key == "…"`` on a str is some other key.
                if (
                    node.left.id == "key"
                    and isinstance(right, ast.Constant)
                    and isinstance(right.value, bytes)
                ):
                    name = right.value
            if isinstance(name, bytes):
                name = name.decode()
            if isinstance(name, str):
                found.setdefault(name.lower(), set()).add(path.stem)
    return found


def test_cve_2025_29927_bastion_reads_only_these_request_headers() -> None:
    """No header the client can send decides which checks run: the only request headers
    src/bastion reads at all are READ_HEADERS, each for the check named in the security
    model (x-forwarded-for only behind trusted_proxies). Replaces a matrix of 27 headers
    by 7 checks: a header bastion never reads cannot skip a check."""
    read = _request_headers_read()
    assert set(read) == READ_HEADERS, read
    assert read["x-forwarded-for"] == {"network"}
    assert read["sec-fetch-site"] == {"origin"}


@pytest.mark.parametrize(
    ("check", "action", "attack", "status", "code"), CHECKS, ids=[c[0] for c in CHECKS]
)
def test_cve_2025_29927_internal_headers_all_at_once_skip_no_check(
    qs: Target, check: str, action: str, attack: dict[str, Any], status: int, code: str
) -> None:
    """Every internal-looking header (Next.js' x-middleware-subrequest, x-bastion-*,
    x-forwarded-*, x-original-url, …) sent together changes nothing: the origin check,
    the token, the policy, the body cap, validation and routing all still refuse."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        values: dict[str, str | None] = {
            "content-type": JSON,
            "accept": JSON,
            "origin": ORIGIN,
            "x-csrf-token": token,
            "cookie": f"bastion_session={sid}",
        }
        body = attack.get("body", b'{"name":"a","title":"a"}')
        values.update({k: v for k, v in attack.items() if k != "body"})
        forged = [(h, v) for h, v in INTERNAL_HEADERS if h not in values]
        headers = [(k, v) for k, v in values.items() if v is not None] + forged
        path = qs.bastion.url_for(action) if action else "/_actions/Zm9yZ2Vk"
        reply = browser.send("POST", path, headers, body)
        assert reply.status_code == status, reply.text[:300]
        envelope = assert_envelope(reply)
        assert envelope["error"]["code"] == code
        assert_no_leak(reply, body)
    assert ran == []


@pytest.mark.parametrize(
    ("cookie", "action", "status", "code"),
    [
        (True, "greet", 400, "token_with_cookie"),
        (False, "publish", 403, "token_not_accepted"),
    ],
    ids=["beside-the-cookie", "instead-of-the-cookie"],
)
def test_cve_2025_29927_a_forged_bearer_token_among_them_is_refused(
    qs: Target, cookie: bool, action: str, status: int, code: str
) -> None:
    """``Authorization: Bearer admin`` with every internal-looking header: beside a
    session cookie (and its valid CSRF token) it is refused before any check could be
    swayed by it (no confused deputy); alone, to an action that takes no API token, it
    is refused as such, never taken for a signed-in admin."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        headers = [
            ("content-type", JSON),
            ("accept", JSON),
            ("origin", ORIGIN),
            ("x-csrf-token", token),
            ("authorization", "Bearer admin"),
            *INTERNAL_HEADERS,
        ]
        if cookie:
            headers.append(("cookie", f"bastion_session={sid}"))
        body = b'{"name":"a","title":"a"}'
        reply = browser.send("POST", qs.bastion.url_for(action), headers, body)
        assert reply.status_code == status, reply.text[:300]
        assert assert_envelope(reply)["error"]["code"] == code
        assert_no_leak(reply, body)
    assert ran == []


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-bastion-debug", "1"), ("x-debug", "true"), ("x-forwarded-for", "127.0.0.1")],
)
def test_cve_2025_29927_no_header_turns_on_debug(qs: Target, header: str, value: str) -> None:
    """Debug replies (exception type and message) are configuration, never a header."""
    with ActionClient(qs.app, qs.bastion, client=(fresh_address(), 5000)) as client:
        reply = client.call("boom", headers={header: value})
    assert reply.status_code == 500
    assert set(reply.json()) == {"ok", "error"}
    assert set(reply.json()["error"]) == {"code", "message", "digest"}


# --- CVE-2026-27978: Origin: null treated as missing -----------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="alone"),
        pytest.param([("referer", ORIGIN + "/")], id="with-an-allowed-referer"),
        pytest.param([("sec-fetch-site", "same-origin")], id="with-sec-fetch-site-same-origin"),
    ],
)
@pytest.mark.parametrize("plain", [False, True], ids=["script", "plain-form"])
def test_cve_2026_27978_origin_null_is_refused_never_missing(
    qs: Target, extra: list[tuple[str, str]], plain: bool
) -> None:
    """``Origin: null`` (a sandboxed frame, a cross-origin redirect) with a valid token is
    403 cross_origin — as JSON even for a plain form, so the page gets nothing to follow —
    never treated as a missing Origin."""
    with handlers_run(qs.bastion) as ran, Browser(qs) as browser:
        sid, token = browser.new_session()
        cookie = ("cookie", f"bastion_session={sid}")
        if plain:
            headers = [("content-type", FORM), ("accept", "text/html"), cookie]
            body = f"name=a&_csrf={token}".encode()
        else:
            headers = [("content-type", JSON), ("accept", JSON), ("x-csrf-token", token), cookie]
            body = b'{"name":"a"}'
        reply = browser.send(
            "POST", qs.bastion.url_for("greet"), [*headers, ("origin", "null"), *extra], body
        )
        assert reply.status_code == 403
        assert reply.json() == {
            "ok": False,
            "error": {
                "code": "cross_origin",
                "message": "This request did not come from an allowed origin.",
            },
        }
        assert "location" not in reply.headers
        # The same request without any Origin is served: null was not "missing".
        served = browser.send("POST", qs.bastion.url_for("greet"), [*headers, *extra], body)
        assert served.status_code in (200, 303)
    assert ran == ["greet"]


def test_cve_2026_27978_a_missing_origin_still_needs_the_token(qs: Target) -> None:
    """No Origin and no Referer passes the origin stage, and the token is still required."""
    with Browser(qs) as browser:
        sid, _ = browser.new_session()
        reply = browser.send(
            "POST",
            qs.bastion.url_for("greet"),
            [("content-type", JSON), ("accept", JSON), ("cookie", f"bastion_session={sid}")],
            b'{"name":"a"}',
        )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "csrf_failed"


# --- CVE-2025-55183: source or internals revealed --------------------------------------------


def test_cve_2025_55183_a_crash_reveals_nothing(
    qs: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """The quickstart's ``boom`` raises a RuntimeError naming a database URL and a password.
    The reply is the generic 500 with a digest: no message, class name, path or source;
    the traceback is in the server log, under the same digest."""
    with (
        caplog.at_level(logging.ERROR, logger="bastion"),
        ActionClient(qs.app, qs.bastion, client=(fresh_address(), 5000)) as client,
    ):
        reply = client.call("boom")
    assert reply.status_code == 500
    digest = reply.json()["error"]["digest"]
    assert reply.json() == {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
    }
    assert_no_leak(reply)
    for secret in (b"database", b"boom", b"quickstart", b"line "):
        assert secret not in reply.content
    logged = [r for r in caplog.records if getattr(r, "digest", None) == digest]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


@pytest.mark.parametrize(
    ("action", "body", "status"),
    [
        pytest.param("fragile", b'{"key":"a"}', 500, id="a-validator-that-crashes"),
        pytest.param("mismatch", b"{}", 500, id="a-return-value-its-type-refuses"),
        pytest.param("ship", b'{"address":"x"}', 422, id="a-nested-model-given-text"),
        pytest.param(
            "ship",
            b'{"address":{"city":"a"},"copies":[1]}',
            422,
            id="a-list-of-models-given-numbers",
        ),
        pytest.param(
            "ship",
            b'{"address":{"city":"a"},"alternative":{"zip":1}}',
            422,
            id="a-union-of-a-model-and-a-number",
        ),
        pytest.param(
            "ship", b'{"address":{"city":"a"},"code":[]}', 422, id="a-union-with-a-named-validator"
        ),
        pytest.param(
            "ship",
            b'{"address":{"city":"a"},"code":"x"}',
            422,
            id="a-validator-message-naming-its-source",
        ),
    ],
)
def test_cve_2025_55183_errors_name_no_class_function_or_path(
    probe_target: Target, action: str, body: bytes, status: int
) -> None:
    """Outside debug mode, no reply names the app's classes (models in a 422, exception
    types), its functions (validators in a union), a file path or an exception's message."""
    with Browser(probe_target) as browser:
        sid, token = browser.new_session()
        headers = [
            ("content-type", JSON),
            ("accept", JSON),
            ("origin", ORIGIN),
            ("x-csrf-token", token),
            ("cookie", f"bastion_session={sid}"),
        ]
        reply = browser.send("POST", probe.bastion.url_for(action), headers, body)
    assert reply.status_code == status, reply.text
    assert_envelope(reply)
    assert_no_leak(reply, body)
    for internal in (
        b"InternalAddressRecord",
        b"_internal_check",
        b"function-after",
        b"Fragile",
        b"users_internal",
        b"/srv/",
        b"KeyError",
        b"OutputMismatch",
        b"sk_live",
        b"Echo",
        b"list[",
        b"instance of",
    ):
        assert internal not in reply.content, (internal, reply.content)


def test_cve_2025_55183_unknown_ids_all_answer_alike(qs: Target, other: Bastion) -> None:
    """A random ID, an ID made with another key and an ID with a character changed all
    get the same bare 404: nothing says which IDs exist or how they are made."""
    replies = set()
    with Browser(qs) as browser:
        sid, token = browser.new_session()
        headers = [
            ("content-type", JSON),
            ("accept", JSON),
            ("origin", ORIGIN),
            ("x-csrf-token", token),
            ("cookie", f"bastion_session={sid}"),
        ]
        real = qs.bastion.registry.get("greet").id
        for action_id in ("x", other.registry.get("greet").id, real[:-1] + "A", real + "A"):
            reply = browser.send("POST", "/_actions/" + action_id, headers, b"{}")
            replies.add((reply.status_code, reply.content))
    assert replies == {(404, b'{"ok":false,"error":{"code":"not_found","message":"Not found."}}')}


def test_the_debug_mode_is_off_in_the_apps_under_attack(qs: Target) -> None:
    """The suite attacks apps as deployed: debug mode off, the suite's own key."""
    assert qs.bastion.debug is False
    assert probe.bastion.debug is False
    assert qs.bastion.config.secret_key.reveal() == KEY.encode()
