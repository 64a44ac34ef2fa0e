"""Stage 17, respond: the JSON envelope for scripts, 303 for plain forms, safe redirects."""

import json
import logging
import re
from typing import Any

import httpx2 as httpx
import pytest
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from bastion import ActionError, Bastion, RateLimited, ValidationFailed, public
from bastion.http import responses
from bastion.http.responses import referer_path, safe_next
from bastion.testing import ActionClient

DIGEST = re.compile(r"[0-9a-f]{16}")
SECURITY = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=20)


class Saved(BaseModel):
    text: str


def assert_see_other(response: httpx.Response, location: str) -> None:
    """Exactly a 303 to ``location``: no body, the security headers, no cookie injected."""
    assert response.status_code == 303
    assert response.headers.get_list("location") == [location]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in response.headers
    assert response.content == b""


@pytest.fixture
def save(bastion: Bastion) -> Any:
    @bastion.action(policy=public)
    async def save(data: Note) -> Saved:
        return Saved(text=data.text)

    return save


# --- safe_next --------------------------------------------------------------------------

ACCEPTED = [
    ("/", "/"),
    ("/a?b=1#c", "/a?b=1#c"),
    ("/café", "/caf%C3%A9"),
    ("/posts/7/edit", "/posts/7/edit"),
    ("/search?q=a b&page=2", "/search?q=a%20b&page=2"),
    ("/a%0D%0ASet-Cookie:x=1", "/a%0D%0ASet-Cookie:x=1"),
    ('/say"<hi>"', "/say%22%3Chi%3E%22"),
    ("/a\u2028b\x85", "/a%E2%80%A8b%C2%85"),
    ("/" + "a" * 2047, "/" + "a" * 2047),
]

REFUSED = [
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",
    "/a\r\nSet-Cookie: x=1",
    "\\\\evil",
    "",
    "a/b",
    "/" + "a" * 3000,
    "/" + "a" * 2048,
    "http:/evil",
    "///evil.example",
    "/\x00",
    "/\x7f",
    " /leading-space",
    "./relative",
    "?q=1",
    "#top",
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_safe_next_accepts_same_origin_paths(value: str, expected: str) -> None:
    """A same-origin relative path passes, percent-encoded for the Location header."""
    assert safe_next(value) == expected


@pytest.mark.parametrize("value", REFUSED)
def test_safe_next_refuses_anything_else(value: str) -> None:
    """Other hosts, schemes, backslashes, control characters, overlong values: None."""
    assert safe_next(value) is None


def test_safe_next_of_none_is_none() -> None:
    assert safe_next(None) is None


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_plain_form_success_redirects_to_next(
    client: ActionClient, save: Any, value: str, expected: str
) -> None:
    """A real plain form post with _next: 303 to exactly the encoded path."""
    assert_see_other(client.submit(save, {"text": "hi", "_next": value}), expected)


@pytest.mark.parametrize("value", REFUSED)
def test_plain_form_success_with_unsafe_next_redirects_home(
    client: ActionClient, save: Any, value: str
) -> None:
    """A real plain form post with a refused _next: 303 to "/", no header injected."""
    # ("/\x00" is refused even earlier, as a NUL in a form field: a 400, and home too.)
    response = client.submit(save, {"text": "hi", "_next": value})
    assert_see_other(response, "/")
    assert "evil" not in response.headers["location"]


def test_plain_form_success_without_next_goes_back_to_the_referring_page(
    client: ActionClient, save: Any
) -> None:
    """No _next: back to the path of the page the form was on (never its host)."""
    response = client.submit(
        save, {"text": "hi"}, headers={"Referer": "https://other.example/notes/new?x=1#f"}
    )
    assert_see_other(response, "/notes/new?x=1")


def test_plain_form_success_with_unsafe_next_prefers_the_referer(
    client: ActionClient, save: Any
) -> None:
    """A refused _next falls back to the referring page's path, then to "/"."""
    response = client.submit(
        save,
        {"text": "hi", "_next": "//evil.example"},
        headers={"Referer": "http://127.0.0.1/notes"},
    )
    assert_see_other(response, "/notes")


def test_plain_form_success_without_next_or_referer_goes_home(
    client: ActionClient, save: Any
) -> None:
    assert_see_other(client.submit(save, {"text": "hi"}), "/")


def test_next_wins_over_referer_on_success(client: ActionClient, save: Any) -> None:
    response = client.submit(
        save, {"text": "hi", "_next": "/done"}, headers={"Referer": "http://127.0.0.1/form"}
    )
    assert_see_other(response, "/done")


def test_redirect_location_never_comes_from_host_headers(client: ActionClient, save: Any) -> None:
    """Host and X-Forwarded-* never make it into Location."""
    response = client.submit(
        save,
        {"text": "hi", "_next": "/done"},
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    assert_see_other(response, "/done")


# --- failed plain form posts go back to the form ------------------------------------------------


def test_failed_plain_form_goes_back_to_the_referring_page(client: ActionClient, save: Any) -> None:
    """A 422 for a plain form is a 303 back to the referer's path, not to _next."""
    response = client.submit(
        save,
        {"text": "", "_next": "/thanks"},
        headers={"Referer": "http://127.0.0.1/notes/new?draft=1"},
    )
    assert_see_other(response, "/notes/new?draft=1")


@pytest.mark.parametrize(
    "referer",
    [
        "http://127.0.0.1//evil.example/x",
        "http://127.0.0.1/\\evil.example",
        "http://[::1/broken",
        "http://127.0.0.1",
        "javascript:alert(1)",
    ],
)
def test_failed_plain_form_with_unsafe_referer_goes_home(
    client: ActionClient, save: Any, referer: str
) -> None:
    """A referer whose path is not a safe same-origin path is ignored: 303 to "/"."""
    response = client.submit(save, {"text": ""}, headers={"Referer": referer})
    assert_see_other(response, "/")


def test_failed_plain_form_without_referer_goes_home(client: ActionClient, save: Any) -> None:
    assert_see_other(client.submit(save, {"text": "x" * 21}), "/")


def test_refusal_in_handler_for_plain_form_goes_back(
    bastion: Bastion, client: ActionClient
) -> None:
    """An ActionError from a handler, for a plain form: 303 back to the form's page."""

    @bastion.action(policy=public)
    async def taken(data: Note) -> None:
        raise ActionError("That title is taken.", code="title_taken", status=409)

    response = client.submit(taken, {"text": "hi"}, headers={"Referer": "http://127.0.0.1/new"})
    assert_see_other(response, "/new")


def test_crash_for_plain_form_goes_back_and_is_logged(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 for a plain form is still a 303 (no raw JSON in the browser), and logged."""
    caplog.set_level(logging.ERROR, logger="bastion")

    @bastion.action(policy=public)
    async def crash(data: Note) -> None:
        raise RuntimeError("hunter2")

    response = client.submit(crash, {"text": "hi"}, headers={"Referer": "http://127.0.0.1/new"})
    assert_see_other(response, "/new")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert re.fullmatch(r"action crash failed \[digest [0-9a-f]{16}\]", record.getMessage())


def test_oversized_plain_form_goes_back(bastion: Bastion, client: ActionClient) -> None:
    """A form refused on its size (413) before the body is read: 303 back as well."""

    @bastion.action(policy=public, max_body_bytes=100)
    async def small(data: Note) -> None: ...

    response = client.submit(
        small, {"text": "x" * 200}, headers={"Referer": "http://127.0.0.1/small"}
    )
    assert_see_other(response, "/small")


def test_multipart_to_an_action_without_uploads_goes_back(client: ActionClient, save: Any) -> None:
    """A plain form refused on its content type (415) is a 303 back too, not raw JSON."""
    response = client.submit(
        save,
        {"text": "hi"},
        files={"f": ("a.txt", b"x", "text/plain")},
        headers={"Referer": "http://127.0.0.1/notes/new"},
    )
    assert_see_other(response, "/notes/new")


def test_oversized_form_from_a_script_gets_the_413_envelope(
    bastion: Bastion, client: ActionClient
) -> None:
    """The same oversized form with Accept: application/json: the 413 envelope."""

    @bastion.action(policy=public, max_body_bytes=100)
    async def small(data: Note) -> None: ...

    response = client.submit(small, {"text": "x" * 200}, headers={"Accept": "application/json"})
    assert_reply(
        response,
        413,
        {
            "ok": False,
            "error": {"code": "payload_too_large", "message": "The request is too large."},
        },
    )


# --- scripts always get the envelope -----------------------------------------------------


def test_json_client_form_post_gets_the_envelope_not_303(client: ActionClient, save: Any) -> None:
    """A form body with Accept: application/json: 200 envelope, even with _next."""
    response = client.submit(
        save, {"text": "hi", "_next": "/done"}, headers={"Accept": "application/json"}
    )
    assert_reply(response, 200, {"ok": True, "data": {"text": "hi"}})
    assert "location" not in response.headers


def test_json_client_form_post_failure_gets_the_envelope_not_303(
    client: ActionClient, save: Any
) -> None:
    """A failing form body with Accept: application/json: the 422 envelope, no redirect."""
    response = client.submit(
        save,
        {"text": "", "_next": "/done"},
        headers={"Accept": "application/json", "Referer": "http://127.0.0.1/new"},
    )
    assert_reply(
        response,
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Some fields are invalid.",
                "fields": {"text": "String should have at least 1 character"},
            },
        },
    )
    assert "location" not in response.headers


def test_json_body_gets_the_envelope_whatever_the_accept_header(
    client: ActionClient, save: Any
) -> None:
    """A JSON body is a script: envelope even when it accepts text/html."""
    response = client.post(client.url(save), json={"text": "hi"}, headers={"Accept": "text/html"})
    assert_reply(response, 200, {"ok": True, "data": {"text": "hi"}})


def test_browser_accept_header_on_form_post_is_redirected(client: ActionClient, save: Any) -> None:
    """A browser's usual Accept (text/html, */*) on a form post: 303."""
    response = client.submit(
        save,
        {"text": "hi", "_next": "/ok"},
        headers={"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    )
    assert_see_other(response, "/ok")


def test_success_envelope_is_compact_json(client: ActionClient, save: Any) -> None:
    """The body on the wire is exactly the compact envelope."""
    response = client.call(save, {"text": "hi"})
    assert response.content == b'{"ok":true,"data":{"text":"hi"}}'
    assert response.headers["content-length"] == str(len(response.content))


# --- the builders --------------------------------------------------------------------------


def test_success_builder() -> None:
    response = responses.success(b"[1,2]")
    assert response.status_code == 200
    assert response.body == b'{"ok":true,"data":[1,2]}'
    assert response.headers["content-type"] == "application/json"
    assert {k: response.headers[k] for k in SECURITY} == SECURITY


def test_error_builder_with_digest_fields_and_headers() -> None:
    """error() writes code, message, digest and fields, and keeps the refusal's headers."""
    plain = responses.error(ActionError("No.", code="no", status=409), digest="0123456789abcdef")
    assert plain.status_code == 409
    assert plain.body == (
        b'{"ok":false,"error":{"code":"no","message":"No.","digest":"0123456789abcdef"}}'
    )
    invalid = responses.error(ValidationFailed({"a.0": "Bad."}))
    assert invalid.status_code == 422
    assert invalid.body == (
        b'{"ok":false,"error":{"code":"invalid","message":"Some fields are invalid.",'
        b'"fields":{"a.0":"Bad."}}}'
    )
    limited = responses.error(RateLimited(7))
    assert limited.headers["retry-after"] == "7"
    for response in (plain, invalid, limited):
        assert {k: response.headers[k] for k in SECURITY} == SECURITY


def test_error_builder_escapes_non_ascii_messages() -> None:
    """A public message with quotes and non-ASCII is valid JSON."""
    response = responses.error(ActionError('Déjà "pris".', code="taken", status=409))
    assert response.body == (
        b'{"ok":false,"error":{"code":"taken","message":"D\\u00e9j\\u00e0 \\"pris\\"."}}'
    )


def test_redirect_builder() -> None:
    response = responses.redirect("/done")
    assert response.status_code == 303
    assert response.body == b""
    assert response.headers["location"] == "/done"
    assert {k: response.headers[k] for k in SECURITY} == SECURITY


@pytest.mark.parametrize(
    ("accept", "form_post", "expected"),
    [
        ("", True, True),
        ("text/html,*/*;q=0.8", True, True),
        ("application/json", True, False),
        ("application/json, text/plain, */*", True, False),
        ("application/json", False, False),
        ("", False, False),
    ],
)
def test_wants_redirect(accept: str, form_post: bool, expected: bool) -> None:
    """Only a form post that does not ask for JSON is answered with a redirect."""
    headers = Headers({"accept": accept} if accept else {})
    assert responses.wants_redirect(headers, form_post) is expected


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        ("http://127.0.0.1/posts/new?draft=1", "/posts/new?draft=1"),
        ("https://evil.example/phish", "/phish"),
        ("http://127.0.0.1/a#fragment", "/a"),
        ("http://127.0.0.1/caf%C3%A9", "/caf%C3%A9"),
        ("http://127.0.0.1//evil.example/x", None),
        ("http://127.0.0.1/\\evil", None),
        ("http://[::1/broken", None),
        ("http://127.0.0.1", None),
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_referer_path(referer: str, expected: str | None) -> None:
    """The referer's path and query only, checked like _next; its host is never used."""
    headers = Headers({"referer": referer} if referer else {})
    assert referer_path(headers) == expected


def test_refusals_in_their_own_words_are_never_answered_from_another() -> None:
    """A refusal's envelope in its class's words is kept and reused; one in words a
    handler wrote (which may quote what was sent) is built for that refusal only. Two of
    each with the same code each carry their own message."""
    from bastion.errors import Forbidden

    error = responses.error
    plain = [error(Forbidden()).body for _ in range(2)]
    assert plain[0] == plain[1]
    assert json.loads(plain[0]) == {
        "ok": False,
        "error": {"code": "forbidden", "message": Forbidden.message},
    }
    first = error(ActionError("Title 'a' is taken.", code="title_taken", status=409))
    second = error(ActionError("Title 'b' is taken.", code="title_taken", status=409))
    assert json.loads(first.body)["error"]["message"] == "Title 'a' is taken."
    assert json.loads(second.body)["error"]["message"] == "Title 'b' is taken."
    translated = error(Forbidden(), message="Accès refusé.")
    assert json.loads(translated.body)["error"]["message"] == "Accès refusé."
    assert json.loads(error(Forbidden()).body)["error"]["message"] == Forbidden.message
