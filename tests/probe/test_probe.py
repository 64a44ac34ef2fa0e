"""``bastion probe URL``: the crawler's rules, the loopback guard, and whole runs against
the quickstart (all pass) and a deliberately weakened app (each hole named)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict
from services import free_port
from test_sarif import validate

from bastion import Bastion, public
from bastion.cli import main
from bastion.probe import (
    MAX_DEPTH,
    MAX_REQUESTS_PER_FORM,
    Form,
    FormField,
    ProbeError,
    Report,
    check_target,
    extract,
    is_loopback,
    probe,
    same_origin,
)
from bastion.probe.pages import discover_prefixes
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"
PAGE = "http://127.0.0.1:8000/board/"
LOOPBACK = ("--host", "127.0.0.1", "--port")


# --- the pages: forms and links ---------------------------------------------------------------

FORMS_PAGE = """
<form method="post" action="/_actions/abc" data-bastion>
  <input type="hidden" name="_csrf" value="tok">
  <input type="hidden" name="_next" value="/">
  <input name="title" required>
  <input type="email" name="email" required>
  <input type="number" name="stars" value="3">
  <textarea name="body">typed &amp; kept</textarea>
  <select name="colour">
    <option value="red">r</option><option value="blue" selected>b</option>
  </select>
  <input type="checkbox" name="agree">
  <input type="checkbox" name="subscribe" value="yes" checked>
  <input name="locked" value="x" disabled>
  <input type="submit" name="go" value="Go">
  <button name="button">b</button>
</form>
<form method="POST" action="/_actions/no-marker"><input name="q"></form>
<form method="post" action="/elsewhere" data-bastion><input name="n"></form>
<form method="post" action="/plain"><input name="n"></form>
<form method="get" action="/_actions/search" data-bastion><input name="q"></form>
<form method="post" action="https://evil.example/_actions/x" data-bastion></form>
<form method="post" action="//evil.example/_actions/y"></form>
"""


def test_extract_finds_bastion_forms_only() -> None:
    """Marked data-bastion or posting under /_actions/; never a GET form, never another
    origin, never a form that is neither."""
    _, forms = extract(FORMS_PAGE, PAGE)
    assert [f.action for f in forms] == [
        "http://127.0.0.1:8000/_actions/abc",
        "http://127.0.0.1:8000/_actions/no-marker",
        "http://127.0.0.1:8000/elsewhere",
    ]
    assert all(f.page == PAGE for f in forms)


def test_extract_reads_fields_as_a_browser_submits_them() -> None:
    """Hidden and typed values, textarea text, the selected option, checked boxes only;
    no buttons, no disabled inputs."""
    form = extract(FORMS_PAGE, PAGE)[1][0]
    assert [(f.name, f.value, f.kind) for f in form.fields] == [
        ("_csrf", "tok", "hidden"),
        ("_next", "/", "hidden"),
        ("title", "", "text"),
        ("email", "", "email"),
        ("stars", "3", "number"),
        ("body", "typed & kept", "textarea"),
        ("colour", "blue", "select"),
        ("subscribe", "yes", "checkbox"),
    ]
    assert form.token == "tok"
    assert form.text_fields == ["title", "email", "body"]
    # Empty required fields get a plausible value, so the rest of the form is valid.
    assert dict(form.values())["title"] == "probe"
    assert dict(form.values())["email"] == "probe@example.com"


def test_extract_follows_same_origin_pages_only() -> None:
    """Links resolve against the page; other origins (scheme, host or port), the actions
    (under the prefix the page's bastion.js shows), static files and sign-out links are
    never followed; fragments are dropped."""
    html = """
      <script src="/_actions/bastion.js" defer></script>
      <a href="/a">a</a> <a href="b?x=1#top">b</a> <a href="/a#again">a</a>
      <a href="http://127.0.0.1:8000/c">c</a>
      <a href="https://127.0.0.1:8000/d">other scheme</a>
      <a href="http://127.0.0.1:8001/e">other port</a>
      <a href="http://localhost:8000/f">other host</a>
      <a href="//evil.example/g">protocol-relative</a>
      <a href="https://evil.example/h">elsewhere</a>
      <a href="mailto:x@example.com">mail</a> <a href="javascript:alert(1)">js</a>
      <a href="/_actions/abc">an action</a>
      <a href="/static/app.css">css</a> <a href="/logo.PNG">png</a>
      <a href="/logout">out</a> <a href="/account/sign-out">out</a>
    """
    links, _ = extract(html, PAGE)
    assert links == [
        "http://127.0.0.1:8000/a",
        "http://127.0.0.1:8000/board/b?x=1",
        "http://127.0.0.1:8000/c",
    ]


def test_the_action_prefix_is_read_off_the_page() -> None:
    """An app that serves its actions under /rpc: the prefix comes from the page (its
    bastion.js, or a form bastion rendered), never assumed to be /_actions."""
    html = """
      <script src="/rpc/bastion.js" defer></script>
      <form method="post" action="/rpc/xyz"><input name="q"></form>
      <form method="post" action="/_actions/xyz"><input name="q"></form>
      <a href="/rpc/xyz">an action</a> <a href="/_actions/page">a page here</a>
    """
    assert discover_prefixes(html, PAGE) == {"/rpc/"}
    links, forms = extract(html, PAGE)
    assert [f.action for f in forms] == ["http://127.0.0.1:8000/rpc/xyz"]
    assert links == ["http://127.0.0.1:8000/_actions/page"]
    marked = (
        '<form method="post" action="/api/v1/abc" data-bastion>'
        '<input type="hidden" name="_csrf" value="t"></form>'
    )
    assert discover_prefixes(marked, PAGE) == {"/api/v1/"}


def test_a_page_lxml_cannot_read_has_nothing_to_probe() -> None:
    """An empty page (or one that is no HTML) gives no links and no forms, no error."""
    assert extract("", PAGE) == ([], [])
    assert extract("   ", PAGE) == ([], [])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/x", True),
        ("http://127.0.0.1:8000", True),
        ("HTTP://127.0.0.1:8000/", True),
        ("http://127.0.0.1:8001/", False),
        ("https://127.0.0.1:8000/", False),
        ("http://localhost:8000/", False),
        ("ftp://127.0.0.1:8000/", False),
    ],
)
def test_same_origin(url: str, expected: bool) -> None:
    assert same_origin(url, "http://127.0.0.1:8000/") is expected


def test_same_origin_makes_default_ports_explicit() -> None:
    assert same_origin("https://app.example/", "https://app.example:443/x")
    assert not same_origin("http://app.example/", "https://app.example/")


# --- where the probe may go -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["example.com", "10.0.0.1", "0.0.0.0", "127.0.0.1.nip.io", "localhost.example.com", "::"],
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_check_target_gives_the_origin_to_send() -> None:
    assert check_target("http://127.0.0.1:8000/board?x=1") == "http://127.0.0.1:8000"
    assert check_target("http://[::1]:8000/") == "http://[::1]:8000"
    assert check_target("https://app.example/", ["APP.example"]) == "https://app.example"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.1.2.3:8000/",
        "http://0.0.0.0:8000/",
        "http://127.0.0.1.nip.io/",
        "https://[2001:db8::1]/",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "127.0.0.1:8000",
        "http://127.0.0.1:99999/",
    ],
)
def test_probe_refuses_other_hosts_before_any_request(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anything but loopback (or a malformed URL) exits 2 with a message; nothing is sent."""
    sent: list[httpx.Request] = []

    def send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        sent.append(request)
        raise AssertionError("no request may be sent")

    monkeypatch.setattr(httpx.Client, "send", send)
    assert main(["probe", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("bastion probe: ")
    assert sent == []


def test_allow_host_lets_a_named_host_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--allow-host names a host the probe may contact; nothing real is ever contacted
    (the transport is replaced and refuses to connect)."""
    sent: list[str] = []

    def send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        sent.append(str(request.url))
        raise httpx.ConnectError("not in a test", request=request)

    monkeypatch.setattr(httpx.Client, "send", send)
    url = "http://probe-target.invalid:8000/"

    assert main(["probe", url]) == 2
    assert "refusing to probe probe-target.invalid" in capsys.readouterr().err
    assert sent == []

    assert (
        main(
            ["probe", url, "--allow-host", "other.invalid", "--allow-host", "PROBE-TARGET.invalid"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not answer" in err
    assert "refusing" not in err
    assert sent == [url]


def test_probe_cli_refuses_bad_limits(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--max-pages", "0"], ["--timeout", "0"], ["--timeout", "-1"]):
        with pytest.raises(SystemExit) as exited:
            main(["probe", "http://127.0.0.1:8000/", *argv])
        assert exited.value.code == 2
    assert "must be positive" in capsys.readouterr().err


# --- the crawler's bounds, against an app in memory ------------------------------------------


def test_crawl_is_bounded_and_stays_on_origin() -> None:
    """An endless site: every page links to three new ones, to another origin, to an action
    and to a sign-out page, and one redirects elsewhere. The crawl GETs at most
    max_pages same-origin pages, MAX_DEPTH links deep, and nothing else."""
    seen: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/away":
            return httpx.Response(302, headers={"Location": "https://evil.example/"})
        depth = path.count("/p")
        links = "".join(f'<a href="{path.rstrip("/")}/p{i}">n</a>' for i in range(3))
        links += '<a href="https://evil.example/">x</a><a href="/_actions/a">a</a>'
        links += '<a href="/logout">out</a><a href="/away">away</a>'
        script = '<script src="/_actions/bastion.js"></script>'  # where its actions are
        return httpx.Response(200, html=f"{script}<p>depth {depth}</p>{links}")

    with pytest.raises(ProbeError, match="does not answer"):
        probe("http://127.0.0.1:9/away", transport=httpx.MockTransport(app))
    assert [str(r.url) for r in seen] == ["http://127.0.0.1:9/away"]

    seen.clear()
    report = probe("http://127.0.0.1:9/", max_pages=50, transport=httpx.MockTransport(app))
    assert {r.method for r in seen} == {"GET"}
    assert {r.url.host for r in seen} == {"127.0.0.1"}
    assert not any(r.url.path.startswith(("/_actions", "/logout")) for r in seen)
    assert max(r.url.path.count("/p") for r in seen) == MAX_DEPTH
    assert len(report.pages) == 1 + 3 + 9 + 27  # /away, sent elsewhere, is no page
    assert report.requests == len(seen) == len(report.pages) + 1
    # No form anywhere: the probe tested nothing, which is a failure.
    assert not report.ok
    assert [(r.target, r.case, r.got) for r in report.results if r.status == "FAIL"] == [
        ("crawl", "find bastion forms", "none found")
    ]

    seen.clear()
    report = probe("http://127.0.0.1:9/", max_pages=5, transport=httpx.MockTransport(app))
    assert len(report.pages) == 5
    assert report.requests == len(seen) == 5 + 1  # and /away


def test_requests_per_form_are_bounded() -> None:
    """Against an app that accepts everything: every case fails, and each form gets at
    most MAX_REQUESTS_PER_FORM requests, all to its own origin."""
    seen: list[httpx.Request] = []
    page = "".join(
        f'<form method="post" action="/_actions/f{i}" data-bastion>'
        '<input type="hidden" name="_csrf" value="t"><input name="text"></form>'
        for i in range(3)
    )

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET" and request.url.path == "/":
            return httpx.Response(200, html=page)
        return httpx.Response(200, json={"ok": True})

    report = probe("http://127.0.0.1:9/", transport=httpx.MockTransport(app))
    assert not report.ok
    assert len(report.forms) == 3
    for i in range(3):
        calls = [r for r in seen if r.url.path == f"/_actions/f{i}"]
        assert 10 < len(calls) <= MAX_REQUESTS_PER_FORM
    assert {r.url.host for r in seen} == {"127.0.0.1"}
    failed = {(r.target, r.case) for r in report.results if r.status == "FAIL"}
    assert ("form 1", "csrf: no token") in failed
    assert ("form 3", "input: 100,000 chars in text fields") in failed
    assert ("form 2", "leak: no-store, nosniff") in failed


def test_time_budget_stops_the_probe() -> None:
    """Past --timeout the probe stops sending; cases left unrun are a failure, never a pass.
    With no time even for the first page, it cannot start at all."""
    seen: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        time.sleep(0.05)
        return httpx.Response(
            200, html='<form method="post" action="/_actions/x" data-bastion></form>'
        )

    report = probe("http://127.0.0.1:9/", timeout=0.5, transport=httpx.MockTransport(app))
    assert not report.ok
    incomplete = [r for r in report.results if r.case == "probe incomplete"]
    assert [(r.status, r.got) for r in incomplete] == [
        ("FAIL", "the time budget of 0.5 s is spent")
    ]
    assert report.requests == len(seen) <= 12

    with pytest.raises(ProbeError, match="time budget"):
        probe("http://127.0.0.1:9/", timeout=1e-9, transport=httpx.MockTransport(app))


def test_cookie_and_header_checks() -> None:
    """A Set-Cookie without HttpOnly or SameSite on any reply, or a reply without no-store
    and nosniff, fails the form's leak checks; a deleted cookie does not count."""

    def app(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/":
            return httpx.Response(
                200,
                html='<form method="post" action="/_actions/x" data-bastion></form>',
                headers={"Set-Cookie": "gone=; Max-Age=0; Path=/"},
            )
        return httpx.Response(
            403,
            json={"ok": False, "error": {"code": "forbidden", "message": "No."}},
            headers={"Set-Cookie": "sid=1; Path=/; SameSite=None", "Cache-Control": "no-store"},
        )

    report = probe("http://127.0.0.1:9/", transport=httpx.MockTransport(app))
    got = {r.case: (r.status, r.got) for r in report.results if r.target == "form 1"}
    assert got["leak: cookie flags"][0] == "FAIL"
    assert "cookie sid without HttpOnly" in got["leak: cookie flags"][1]
    assert got["leak: no-store, nosniff"][0] == "FAIL"
    assert "X-Content-Type-Options: nosniff missing" in got["leak: no-store, nosniff"][1]
    # A 403 "forbidden" with no control to prove it: not counted as a CSRF refusal.
    assert got["csrf: no token"] == (
        "SKIP",
        "403 forbidden: not shown to be about the token; no harmless control"
        " (no required or capped field)",
    )
    assert all(r.status == "PASS" for r in report.results if r.target == "page /")


def test_report_formats() -> None:
    report = Report("http://127.0.0.1:9/")
    report.forms.append(
        Form("http://127.0.0.1:9/", "http://127.0.0.1:9/_actions/x", [FormField("n", "", "text")])
    )
    report.forms[0].label = "form 1"
    assert report.ok
    assert report.text().splitlines()[-1].startswith("all pass: 0 pass, 0 fail, 0 skip")
    data = report.as_dict()
    assert data["ok"] is True
    assert data["forms"] == [
        {
            "label": "form 1",
            "page": "http://127.0.0.1:9/",
            "action": "http://127.0.0.1:9/_actions/x",
            "fields": ["n"],
            "script": False,
            "schema": False,
            "name": "",
        }
    ]


# --- actions from the schema -----------------------------------------------------------------


SCHEMA_DOC = {
    "openapi": "3.1.0",
    "paths": {
        "/_actions/hidden": {
            "post": {
                "operationId": "hidden_action",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Note"}}
                    }
                },
            }
        },
        "/_actions/admins": {
            "post": {
                "operationId": "admins_only",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {},
                                "additionalProperties": False,
                            }
                        }
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Note": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": False,
            }
        }
    },
}


def _schema_app(seen: list[httpx.Request]) -> httpx.MockTransport:
    """A page with a session's token and no form at all; two actions only the schema names:
    ``hidden`` checks the origin and the token (bastion's codes) and answers ``{}`` 422;
    ``admins`` refuses everyone 403 ``forbidden``, whatever the token (a policy only)."""

    def envelope(status: int, code: str) -> httpx.Response:
        body = {"ok": False, "error": {"code": code, "message": code}}
        return httpx.Response(
            status,
            json=body,
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        sid = request.headers.get("cookie", "").partition("sid=")[2].split(";")[0]
        if request.method == "GET" and not request.url.path.startswith("/_actions/"):
            fresh = sid or f"s{len(seen)}"
            html = f'<meta name="csrf-token" content="tok-{fresh}"><p>no forms here</p>'
            cookie = f"sid={fresh}; Path=/; HttpOnly; SameSite=Lax"
            return httpx.Response(200, html=html, headers={} if sid else {"Set-Cookie": cookie})
        if request.url.path == "/_actions/admins":
            return envelope(403, "forbidden")
        if request.url.path != "/_actions/hidden":
            return envelope(404, "not_found")
        if request.method != "POST":
            return envelope(405, "method_not_allowed")
        if request.headers.get("origin") != "http://127.0.0.1:9" or request.headers.get(
            "sec-fetch-site"
        ) not in (None, "same-origin"):
            return envelope(403, "cross_origin")
        if not sid or request.headers.get("x-csrf-token") != f"tok-{sid}":
            return envelope(403, "csrf_failed")
        return envelope(422, "invalid")

    return httpx.MockTransport(app)


def test_an_action_only_in_the_schema_is_probed_and_a_policy_refusal_is_no_pass() -> None:
    """No page shows either action: both are probed from the schema, as a script calls
    them (JSON, the page's token in X-CSRF-Token). The forged calls to the one with a
    token check are refused by it (PASS), its control ``{}`` is a 422; the policy-only one
    is "reached, refused by policy", and none of its forged calls is a PASS."""
    from bastion.probe import actions_from_schema

    seen: list[httpx.Request] = []
    schema = actions_from_schema(SCHEMA_DOC)
    assert [(a.name, a.required, a.closed) for a in schema] == [
        ("hidden_action", ("text",), True),
        ("admins_only", (), True),
    ]
    report = probe("http://127.0.0.1:9/", transport=_schema_app(seen), schema=schema)
    assert {f.name: f.schema for f in report.forms} == {"hidden_action": True, "admins_only": True}
    hidden = {r.case: r for r in report.results if r.url.endswith("/_actions/hidden")}
    for case in CSRF_CASES:
        assert hidden[case].status == "PASS", hidden[case]
        assert hidden[case].got in ("403 csrf_failed", "403 cross_origin"), hidden[case]
    assert (
        hidden["control: harmless valid call"].status,
        hidden["control: harmless valid call"].got,
    ) == (
        "PASS",
        "422 invalid",
    )
    control = next(
        r
        for r in seen
        if r.url.path == "/_actions/hidden"
        and r.headers.get("x-csrf-token")
        and r.headers.get("origin") == "http://127.0.0.1:9"
        and r.content == b"{}"
    )
    assert control.headers["content-type"] == "application/json"
    assert control.headers["accept"] == "application/json"
    admins = {r.case: r for r in report.results if r.url.endswith("/_actions/admins")}
    assert admins["control: harmless valid call"].status == "SKIP"
    assert admins["control: harmless valid call"].got == "403 forbidden: reached, refused by policy"
    for case in CSRF_CASES:
        assert admins[case].status == "SKIP", admins[case]
        assert "not shown to be about the token" in admins[case].got
    [anonymous] = report.identities
    assert anonymous.reached == {
        "/_actions/hidden": "past the guards (422 invalid)",
        "/_actions/admins": "refused by policy (403 forbidden)",
    }
    assert report.not_reached == []
    assert (
        "anonymous: 0 found on pages, 2 from the schema, reached 2 of 2 (1 refused by policy)"
        in (report.text())
    )
    # Never a valid call with real values: every JSON body sent is {}, one unknown property,
    # or a hostile one.
    bodies = {
        r.content
        for r in seen
        if r.url.path == "/_actions/admins" and r.headers.get("x-csrf-token", "").startswith("tok-")
    }
    assert b'{"probe_unknown_property": "1"}' in bodies


def test_start_pages_and_429s_are_reported() -> None:
    """--start crawls a page no link names; every 429 case is counted in the report, and a
    Retry-After within --max-wait is waited out once and the case sent again."""
    seen: list[httpx.Request] = []
    limited = {"left": 1}

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET" and request.url.path == "/":
            return httpx.Response(200, html="<p>nothing linked</p>")
        if request.method == "GET" and request.url.path == "/hidden-page":
            return httpx.Response(
                200, html='<form method="post" action="/_actions/x" data-bastion></form>'
            )
        if limited["left"]:
            limited["left"] -= 1
            return httpx.Response(
                429,
                json={"ok": False, "error": {"code": "rate_limited", "message": "Slow down."}},
                headers={"Retry-After": "1"},
            )
        return httpx.Response(
            429,
            json={"ok": False, "error": {"code": "rate_limited", "message": "Slow down."}},
            headers={"Retry-After": "120"},
        )

    report = probe(
        "http://127.0.0.1:9/",
        transport=httpx.MockTransport(app),
        starts=["/hidden-page"],
        max_wait=2,
    )
    assert "http://127.0.0.1:9/hidden-page" in report.pages
    assert [f.action for f in report.forms] == ["http://127.0.0.1:9/_actions/x"]
    assert report.waited == 1.0
    assert report.rate_limited == sum(1 for r in report.results if "rate-limited" in r.got) > 5
    assert f"({report.rate_limited} rate-limited, 429; waited 1 s)" in report.text()
    assert report.as_dict()["summary"]["rate_limited"] == report.rate_limited  # type: ignore[index]
    with pytest.raises(ProbeError, match="not on"):
        probe(
            "http://127.0.0.1:9/",
            transport=httpx.MockTransport(app),
            starts=["http://evil.example/"],
        )


# --- found by the probe -----------------------------------------------------------------------


class Named(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Echo(BaseModel):
    name: str


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a\\u0000b"}',
        b'{"name\\u0000": "a"}',
        b'{"name": "a", "more": {"deep": ["x", "\\u0000"]}}',
    ],
)
def test_a_nul_in_json_is_refused_as_in_forms(body: bytes) -> None:
    """A NUL anywhere in a JSON body (a value or a key, at any depth) is a 400, as it is in
    urlencoded and multipart forms; it never reaches the handler."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    calls: list[str] = []

    @bastion.action(policy=public)
    def echo(data: Named) -> Echo:
        calls.append(data.name)
        return Echo(name=data.name)

    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.post(
            client.url(echo),
            content=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
    assert reply.status_code == 400
    assert reply.json() == {
        "ok": False,
        "error": {"code": "malformed", "message": "The JSON holds a NUL character."},
    }
    assert calls == []


# --- whole runs against real servers -----------------------------------------------------------


@contextmanager
def serve(
    app_dir: Path, target: str, tmp_path: Path, origin: str = "http://127.0.0.1:{port}"
) -> Iterator[str]:
    """``target`` under uvicorn on a free loopback port, until the block ends, configured
    from the environment as in tests/test_sessions.py; ``origin`` is the allowed one."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        BASTION_SECRET_KEY="probe-test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        BASTION_ALLOWED_ORIGINS=origin.format(port=port),
        BASTION_DATA_DIR=str(tmp_path / "data"),
        QUICKSTART_PASSWORD="probe-test-password",
    )
    log = tmp_path / "uvicorn.log"
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(app_dir),
                target,
                *LOOPBACK,
                str(port),
            ],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(300):
            if server.poll() is not None:
                pytest.fail(f"{target} exited:\n{log.read_text()}")
            try:
                httpx.get(base + "/ready", timeout=1.0, trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"{target} did not start:\n{log.read_text()}")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


def run_probe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "probe", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


RESULT = re.compile(r"(PASS|FAIL|SKIP)  (\S+) +(.+?) {2,}(.+?) {2,}expected (.+?) {2,}got (.*)")
LEGEND = re.compile(r"(form \d+) +POST (\S+)  on ")


def lines(output: str, status: str, label: str, identity: str = "anonymous") -> dict[str, str]:
    """The cases of one form that ended with ``status``: case → what the probe got."""
    found = {}
    for line in output.splitlines():
        match = RESULT.fullmatch(line)
        if match and match[1] == status and match[2] == identity and match[3] == label:
            found[match[4]] = match[6]
    return found


def labels(output: str) -> dict[str, str]:
    """The legend: action path → ``form N``."""
    return {m[2]: m[1] for m in map(LEGEND.match, output.splitlines()) if m}


CSRF_CASES = (
    "csrf: no token",
    "csrf: forged token",
    "csrf: token of another session",
    "origin: foreign Origin",
    "origin: Origin null",
    "origin: malformed Origin",
    "origin: Sec-Fetch-Site cross-site",
    "header: x-middleware-subrequest",
)


def test_probe_passes_the_quickstart(tmp_path: Path) -> None:
    """The quickstart as `make quickstart` serves it (and --run-actions): every case passes;
    every forged call is refused by bastion's own origin or token check."""
    with serve(EXAMPLES, "quickstart:app", tmp_path) as base:
        done = run_probe(base, "--run-actions")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert not re.search(r"^FAIL", out, re.MULTILINE)
    summary = out.splitlines()[-1]
    assert summary.startswith("all pass: ")
    assert "8 forms on 1 pages" in summary
    for n in range(1, 9):
        passed = lines(out, "PASS", f"form {n}")
        for case in CSRF_CASES:
            refused = ("403 csrf_failed", "403 cross_origin", "400 forwarding_refused")
            assert passed[case].startswith(refused), (n, case)
        assert passed["leak: tracebacks, file paths"].startswith("ok in ")
    # The valid calls went through for the public actions, boom's generic 500 included.
    calls = [lines(out, "PASS", f"form {n}").get("action: valid call") for n in range(1, 9)]
    assert "200" in calls
    assert "500 internal (the action failed; generic)" in calls


def test_probe_names_each_hole_of_the_weak_app(tmp_path: Path) -> None:
    """CSRF off, error details on, an unbounded field, and bastion's debug replies: exit 1,
    and the report names each hole, and nothing else (the exact set of failing cases)."""
    with serve(FIXTURES, "weak_app:app", tmp_path) as base:
        done = run_probe(base, "--run-actions")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert out.splitlines()[-1].startswith("FAILED: ")
    forms = labels(out)
    weak = lines(out, "FAIL", forms.pop("/_actions/weak-note"))
    for case in CSRF_CASES:  # CSRF off: every forged call went through
        assert weak[case] == "200: accepted", case
    assert weak["leak: tracebacks, file paths"].startswith("'Traceback' in the reply to input:")
    assert weak["leak: exception details"].startswith("'debug' in the reply to input:")
    assert weak["input: 100,000 chars in text fields"] == "200: accepted in text (unbounded field)"
    assert set(weak) == {
        *CSRF_CASES,
        "leak: tracebacks, file paths",
        "leak: exception details",
        "input: 100,000 chars in text fields",
    }
    # The bastion action in debug mode: its guards hold, its failure reply tells too much.
    [crash_label] = forms.values()
    crash = lines(out, "FAIL", crash_label)
    assert set(crash) == {
        "action: valid call",
        "leak: tracebacks, file paths",
        "leak: exception details",
    }
    assert crash["leak: exception details"].startswith("'debug' in the reply to action")
    assert crash["leak: tracebacks, file paths"].startswith(
        "'/srv/weak/notes.py' in the reply to action"
    )
    assert crash["action: valid call"] == "500 internal saying more than a digest"
    # The SARIF rules of those holes.
    with serve(FIXTURES, "weak_app:app", tmp_path) as base:
        sarif = run_probe(base, "--run-actions", "--format", "sarif")
    assert sarif.returncode == 1
    log = json.loads(sarif.stdout)
    validate(log)  # against OASIS's schema (tests/test_sarif.py)
    assert log["version"] == "2.1.0"
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {
        "P001",
        "P002",
        "P004",
        "P005",
        "P009",
        "P011",
    }


def test_a_policy_refusal_is_no_csrf_check(tmp_path: Path) -> None:
    """An app with CSRF off whose policy answers anonymous callers 401: anonymous, the
    probe cannot tell (SKIP, never PASS); signed in — by --login, or by --cookie — every
    forged call gets through, and the probe names it."""
    with serve(FIXTURES, "policy_only_app:app", tmp_path) as base:
        env_done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bastion.cli",
                "probe",
                base + "/",
                "--login",
                base + "/login",
                "--as",
                "member",
                "--user",
                "probe@policy.example",
                "--password-env",
                "PROBE_PW",
                "--as",
                "cookie",
                "--cookie",
                "member=member-cookie-value",
            ],
            env={**os.environ, "PROBE_PW": "policy-only-password"},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    out = env_done.stdout
    assert env_done.returncode == 1, out + env_done.stderr
    assert "member: signed in" in out
    anonymous = lines(out, "SKIP", "form 1")
    for case in CSRF_CASES:
        assert anonymous[case].startswith("401 unauthorized: not shown to be about the token")
    assert not lines(out, "PASS", "form 1").keys() & set(CSRF_CASES)
    for who in ("member", "cookie"):
        failed = lines(out, "FAIL", "form 1", who)
        for case in CSRF_CASES:
            assert failed[case] == "422 invalid: read as input, past the token", (who, case)
        assert lines(out, "PASS", "form 1", who)["control: harmless valid call"] == "422 invalid"
    assert lines(out, "FAIL", "form 1", "member")["cross: cookie's form and token"] == (
        "422 invalid: read as input, past the token"
    )


def test_probe_cli_checks_identities(capsys: pytest.CaptureFixture[str]) -> None:
    """--user needs --password-env (set), a name is used once, cookies are NAME=VALUE."""
    for argv, said in (
        (["--as", "a", "--user", "u"], "--user and --password-env go together"),
        (["--as", "a", "--user", "u", "--password-env", "PROBE_UNSET_VAR"], "is empty or unset"),
        (["--as", "a", "--as", "a"], "the name is taken"),
        (["--as", "anonymous"], "the name is taken"),
        (["--cookie", "novalue"], "is not NAME=VALUE"),
        (["--header", "nocolon"], "is not 'Name: value'"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["probe", "http://127.0.0.1:9/", *argv])
        assert exited.value.code == 2
        assert said in capsys.readouterr().err


def test_fail_on_and_output(tmp_path: Path) -> None:
    """--fail-on never exits 0 with failures; error ignores warning-level rules; --output
    writes the report to a file."""
    from bastion.probe import Result, exit_status

    report = Report("http://127.0.0.1:9/")
    report.results.append(Result("FAIL", "form 1", "leak: no-store, nosniff", "x", "y"))
    assert (exit_status(report, "warning"), exit_status(report, "error")) == (1, 0)
    assert exit_status(report, "never") == 0
    report.results.append(Result("FAIL", "form 1", "csrf: no token", "x", "y"))
    assert exit_status(report, "error") == 1


def test_probe_json_through_localhost(tmp_path: Path) -> None:
    """`localhost` is loopback (no --allow-host needed); --json prints the whole report."""
    with serve(EXAMPLES, "quickstart:app", tmp_path, "http://localhost:{port}") as base:
        done = run_probe(base.replace("127.0.0.1", "localhost"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["url"].startswith("http://localhost:")
    assert report["summary"]["fail"] == 0
    assert report["summary"]["forms"] == 8
    assert report["summary"]["pass"] + report["summary"]["skip"] == len(report["results"])
    assert report["summary"]["requests"] <= 8 * MAX_REQUESTS_PER_FORM + 20
    assert [i["name"] for i in report["identities"]] == ["anonymous"]
    assert {r["status"] for r in report["results"]} == {"PASS", "SKIP"}
    assert set(report["results"][0]) == {
        "status",
        "target",
        "case",
        "expected",
        "got",
        "identity",
        "url",
        "rule",
    }
    assert all(f["action"].startswith(report["url"] + "_actions/") for f in report["forms"])


def test_the_commands_in_docs_probe_md_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `bastion probe` line in docs/probe.md is a command the CLI accepts: run
    against a closed loopback port, each gets as far as the first request (exit 2)."""
    import shlex

    text = (ROOT / "docs" / "probe.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("bastion probe ")]
    assert len(commands) >= 4
    port = free_port()
    monkeypatch.setenv("AUTHOR_PASSWORD", "x")
    monkeypatch.setenv("ADMIN_PASSWORD", "y")
    for line in commands:
        argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in shlex.split(line)]
        argv = [a for a in argv if a not in ("--output", "probe.sarif")]
        assert main(argv[1:]) == 2, line
