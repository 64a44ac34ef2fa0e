"""Pipeline stage 1 (route + transport), over the real ASGI stack.

Every refusal here is decided from the method, the path and the headers: the tests
check the exact reply and that the handler never ran. Where "nothing of the body is
read" matters, the app is driven with a raw ASGI ``receive`` that counts its calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp, Message

from bastion import Bastion, Limits, Upload, public
from bastion.testing import ActionClient

MiB = 1024 * 1024
JSON = {"content-type": "application/json", "accept": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}

NOT_FOUND = {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
NOT_ALLOWED = {
    "ok": False,
    "error": {"code": "method_not_allowed", "message": "Actions are called with POST."},
}
TOO_LARGE = {
    "ok": False,
    "error": {"code": "payload_too_large", "message": "The request is too large."},
}
UNSUPPORTED = {
    "ok": False,
    "error": {
        "code": "unsupported_media_type",
        "message": "This content type is not accepted here.",
    },
}
NOT_UTF8 = {
    "ok": False,
    "error": {"code": "unsupported_media_type", "message": "Only UTF-8 is accepted."},
}
NO_UPLOADS = {
    "ok": False,
    "error": {
        "code": "unsupported_media_type",
        "message": "This action does not accept file uploads.",
    },
}
BAD_LENGTH = {
    "ok": False,
    "error": {"code": "malformed", "message": "The Content-Length header is invalid."},
}
CUT_SHORT = {
    "ok": False,
    "error": {"code": "malformed", "message": "The request body was cut short."},
}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = "default"


class Echo(BaseModel):
    text: str


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: Upload


class Saved(BaseModel):
    name: str | None
    size: int | None


def assert_secure_json(response: httpx.Response) -> None:
    """Every bastion reply is JSON that is never cached or sniffed."""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def ok(text: str) -> dict[str, Any]:
    return {"ok": True, "data": {"text": text}}


def json_body(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes: ``{"text":"aaa…"}``."""
    body = b'{"text":"' + b"a" * (size - 11) + b'"}'
    assert len(body) == size
    return body


# --- raw ASGI --------------------------------------------------------------------------


class Exchange:
    """One request driven straight through the ASGI app, counting body reads."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, reads: int) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.reads = reads
        """How many times the app called ``receive``."""

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    app: ASGIApp,
    path: str,
    *,
    method: str = "POST",
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (),
    disconnect_after: int | None = None,
) -> Exchange:
    """Send ``chunks`` as the body (one ``http.request`` message each); with
    ``disconnect_after``, the client goes away after that many chunks."""
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]
    if disconnect_after is not None:
        pending = [{**m, "more_body": True} for m in pending[:disconnect_after]]
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return Exchange(start["status"], response_headers, body, reads)


def page_credentials(bastion: Bastion) -> list[tuple[bytes, bytes]]:
    """What a script on one of the app's pages sends with a call: its ``Origin``, the
    session cookie and that session's CSRF token (stages 2-4 pass)."""
    with ActionClient(mounted(bastion), bastion) as page:
        token = page.token()
        cookie = f"{bastion.config.sessions.cookie_name}={page.session_id}"
    return [
        (b"origin", b"http://127.0.0.1"),
        (b"cookie", cookie.encode()),
        (b"x-csrf-token", token.encode()),
    ]


# --- route -----------------------------------------------------------------------------


def test_known_action_answers_post_with_the_data_envelope(
    bastion: Bastion, client: ActionClient
) -> None:
    """The baseline: a JSON POST to a known action runs it and answers 200 with ok/data."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(client.url(note), content=b'{"text":"hi"}', headers=JSON)
    assert response.status_code == 200
    assert response.json() == ok("hi")
    assert_secure_json(response)
    assert calls == [Note(text="hi")]


@pytest.mark.parametrize(
    "path",
    [
        "/_actions/unknown",
        "/_actions/AAAAAAAAAAAAAAAAAAAAAAAA",
        "/_actions/",
        "/_actions/a/b",
    ],
)
def test_unknown_action_is_a_bare_404(bastion: Bastion, client: ActionClient, path: str) -> None:
    """Unknown IDs (and paths that cannot be an ID) answer 404 with no hint at all."""

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        return Echo(text=data.text)

    response = client.post(path, content=b"{}", headers=JSON)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert_secure_json(response)
    assert "allow" not in response.headers


def test_action_id_is_case_sensitive(bastion: Bastion, client: ActionClient) -> None:
    """A known ID with its letters' case changed is just another unknown ID."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    action_id = client.url(note).rsplit("/", 1)[1]
    changed = action_id.swapcase()
    assert changed != action_id
    response = client.post(f"/_actions/{changed}", content=b"{}", headers=JSON)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert calls == []


def test_known_action_under_its_id_plus_a_trailing_slash_is_404(
    bastion: Bastion, client: ActionClient
) -> None:
    """``/{id}/`` is not the action: only the exact path reaches it."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(client.url(note) + "/", content=b"{}", headers=JSON)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert calls == []


def test_unknown_action_with_get_is_404_not_405(bastion: Bastion, client: ActionClient) -> None:
    """The method is checked after the ID, so a GET cannot probe which IDs exist."""
    response = client.get("/_actions/unknown")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert "allow" not in response.headers


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_known_action_with_another_method_is_405_with_allow_post(
    bastion: Bastion, client: ActionClient, method: str
) -> None:
    """Actions are POST only: any other method gets 405 and ``Allow: POST``."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.request(method, client.url(note), headers={"accept": "application/json"})
    assert response.status_code == 405
    assert response.json() == NOT_ALLOWED
    assert response.headers["allow"] == "POST"
    assert_secure_json(response)
    assert calls == []


def test_head_on_a_known_action_is_405_with_allow_post(
    bastion: Bastion, client: ActionClient
) -> None:
    """HEAD is not a way in either."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.head(client.url(note))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["cache-control"] == "no-store"
    assert calls == []


def test_put_with_an_unaccepted_type_is_405_not_415(bastion: Bastion, client: ActionClient) -> None:
    """A PUT with an unacceptable content type is still a 405: the method comes first."""

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        return Echo(text=data.text)

    response = client.put(client.url(note), content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 405
    assert response.json() == NOT_ALLOWED
    assert response.headers["allow"] == "POST"


# --- content types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json;charset=utf8",
        "Application/JSON",
        "application/json ; charset=utf-8",
    ],
)
def test_json_content_types_are_accepted(
    bastion: Bastion, client: ActionClient, content_type: str
) -> None:
    """JSON is accepted with no charset or with UTF-8 in any spelling."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers={"content-type": content_type, "accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == ok("hi")
    assert calls == [Note(text="hi")]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "APPLICATION/X-WWW-FORM-URLENCODED",
    ],
)
def test_urlencoded_forms_are_accepted(
    bastion: Bastion, client: ActionClient, content_type: str
) -> None:
    """An urlencoded form body is decoded into the model."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b"text=hi+there",
        headers={"content-type": content_type, "accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == ok("hi there")
    assert calls == [Note(text="hi there")]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/xml",
        "text/xml",
        "text/html",
        "text/json",
        "application/vnd.api+json",
        "application/json-patch+json",
        "application/octet-stream",
        "application/jsonx",
        "json",
        "",
    ],
)
def test_other_content_types_are_415(
    bastion: Bastion, client: ActionClient, content_type: str
) -> None:
    """Only the three declared media types exist; anything else is 415 and never decoded."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers={"content-type": content_type, "accept": "application/json"},
    )
    assert response.status_code == 415
    assert response.json() == UNSUPPORTED
    assert_secure_json(response)
    assert calls == []


def test_missing_content_type_with_a_body_is_415(bastion: Bastion, client: ActionClient) -> None:
    """A body that does not say what it is is not guessed at (no sniffing JSON)."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note), content=b'{"text":"hi"}', headers={"accept": "application/json"}
    )
    assert "content-type" not in response.request.headers
    assert response.request.headers["content-length"] == "13"
    assert response.status_code == 415
    assert response.json() == UNSUPPORTED
    assert calls == []


def test_empty_body_with_content_length_zero_and_no_type_is_an_empty_object(
    bastion: Bastion, client: ActionClient
) -> None:
    """No body at all (``Content-Length: 0``, no type) is ``{}``: the model's defaults."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(client.url(note), headers={"accept": "application/json"})
    assert response.request.headers["content-length"] == "0"
    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == ok("default")
    assert calls == [Note()]


def test_action_without_input_is_called_with_an_empty_post(
    bastion: Bastion, client: ActionClient
) -> None:
    """An action that declares no input takes a bare POST and answers ``data: null``."""
    calls: list[str] = []

    @bastion.action(policy=public)
    def ping() -> None:
        calls.append("ran")

    response = client.post(client.url(ping), headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "data": None}
    assert calls == ["ran"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_empty_body_with_a_declared_type_is_an_empty_object(
    bastion: Bastion, client: ActionClient, content_type: str
) -> None:
    """An empty JSON or form body is no fields at all."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b"",
        headers={"content-type": content_type, "accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == ok("default")
    assert calls == [Note()]


def test_empty_body_with_an_unaccepted_type_is_still_415(
    bastion: Bastion, client: ActionClient
) -> None:
    """Only a body-less request *without* a type is ``{}``; a declared wrong type is 415."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        headers={"content-type": "text/plain", "content-length": "0", "accept": "application/json"},
    )
    assert response.status_code == 415
    assert response.json() == UNSUPPORTED
    assert calls == []


def test_multipart_for_an_action_without_uploads_is_415(
    bastion: Bastion, client: ActionClient
) -> None:
    """``multipart/form-data`` is only for actions whose input declares an ``Upload``."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        data={"text": "hi"},
        files={"attachment": ("a.txt", b"hello")},
        headers={"accept": "application/json"},
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert response.status_code == 415
    assert response.json() == NO_UPLOADS
    assert_secure_json(response)
    assert calls == []


def test_multipart_without_files_for_an_action_without_uploads_is_415(
    bastion: Bastion, client: ActionClient
) -> None:
    """The refusal depends on the action, not on whether the body happens to hold a file."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'--xyz\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n--xyz--\r\n',
        headers={"content-type": "multipart/form-data; boundary=xyz", "accept": "application/json"},
    )
    assert response.status_code == 415
    assert response.json() == NO_UPLOADS
    assert calls == []


def test_multipart_for_an_action_with_an_upload_is_accepted(
    bastion: Bastion, client: ActionClient
) -> None:
    """The same body type is fine once the input declares a file."""

    @bastion.action(policy=public)
    def save(data: FileIn) -> Saved:
        return Saved(name=data.file.filename, size=data.file.size)

    response = client.post(
        client.url(save),
        files={"file": ("a.txt", b"hello")},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True, "data": {"name": "a.txt", "size": 5}}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=latin-1",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-16",
        "application/json; charset=UTF-16LE",
        "application/json; CHARSET=utf-16",
        "application/json; charset=utf-7",
        "application/json; charset=",
        "application/x-www-form-urlencoded; charset=latin-1",
        "application/x-www-form-urlencoded; charset=shift_jis",
    ],
)
def test_charset_other_than_utf8_is_415(
    bastion: Bastion, client: ActionClient, content_type: str
) -> None:
    """Bodies are UTF-8 only; another declared charset is refused, not transcoded."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers={"content-type": content_type, "accept": "application/json"},
    )
    assert response.status_code == 415
    assert response.json() == NOT_UTF8
    assert calls == []


def test_multipart_with_a_non_utf8_charset_is_415(bastion: Bastion, client: ActionClient) -> None:
    """The charset rule holds for multipart bodies too."""
    calls: list[FileIn] = []

    @bastion.action(policy=public)
    def save(data: FileIn) -> None:
        calls.append(data)

    response = client.post(
        client.url(save),
        content=b"--xyz--\r\n",
        headers={
            "content-type": "multipart/form-data; boundary=xyz; charset=latin-1",
            "accept": "application/json",
        },
    )
    assert response.status_code == 415
    assert response.json() == NOT_UTF8
    assert calls == []


# --- Content-Length --------------------------------------------------------------------


def test_declared_length_over_the_cap_is_413_and_the_handler_does_not_run(
    bastion: Bastion, client: ActionClient
) -> None:
    """A ``Content-Length`` over the cap (1 MiB by default) is refused from the header."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers={**JSON, "content-length": str(MiB + 1)},
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert_secure_json(response)
    assert calls == []


def test_declared_length_over_the_cap_is_refused_before_any_body_is_read(
    bastion: Bastion,
) -> None:
    """413 from the header alone: the app never calls ``receive``."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    result = exchange(
        mounted(bastion),
        bastion.url_for(note),
        headers=[(b"content-type", b"application/json"), (b"content-length", b"1048577")],
        chunks=[b'{"text":"hi"}'],
    )
    assert result.status == 413
    assert result.json() == TOO_LARGE
    assert result.reads == 0
    assert calls == []


def test_declared_length_over_the_cap_wins_over_a_wrong_content_type(
    bastion: Bastion, client: ActionClient
) -> None:
    """The size is judged first: an oversized text/plain body is 413, not 415."""

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b"x",
        headers={"content-type": "text/plain", "content-length": str(MiB + 1)},
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


def test_declared_length_of_thousands_of_digits_is_413_not_500(
    bastion: Bastion, client: ActionClient
) -> None:
    """A 5000-digit length is simply too large (``int()`` would refuse it with a 500)."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note), content=b"{}", headers={**JSON, "content-length": "9" * 5000}
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_declared_length_with_leading_zeros_is_read_as_its_value(
    bastion: Bastion, client: ActionClient
) -> None:
    """``Content-Length: 000…013`` is 13: leading zeros neither overflow nor count as size."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers={**JSON, "content-length": "0" * 5000 + "13"},
    )
    assert response.status_code == 200
    assert response.json() == ok("hi")
    assert calls == [Note(text="hi")]


@pytest.mark.parametrize("value", ["abc", "-1", "+13", "1.5", "0x10", "13, 13", "1e3", "13a"])
def test_invalid_content_length_is_400(bastion: Bastion, client: ActionClient, value: str) -> None:
    """A ``Content-Length`` that is not plain ASCII digits is malformed."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note), content=b'{"text":"hi"}', headers={**JSON, "content-length": value}
    )
    assert response.status_code == 400
    assert response.json() == BAD_LENGTH
    assert_secure_json(response)
    assert calls == []


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9\xb3", b"1\xb2"])
def test_content_length_with_non_ascii_digits_is_400_not_500(
    bastion: Bastion, value: bytes
) -> None:
    """Latin-1 superscript digits pass ``str.isdigit()`` but are not a length."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    result = exchange(
        mounted(bastion),
        bastion.url_for(note),
        headers=[(b"content-type", b"application/json"), (b"content-length", value)],
        chunks=[b"{}"],
    )
    assert result.status == 400
    assert result.json() == BAD_LENGTH
    assert result.reads == 0
    assert calls == []


def test_duplicate_content_length_is_400_even_when_equal(
    bastion: Bastion, client: ActionClient
) -> None:
    """Two ``Content-Length`` headers are refused, whatever they say (request smuggling)."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note),
        content=b'{"text":"hi"}',
        headers=[
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", "13"),
            ("content-length", "13"),
        ],
    )
    assert response.status_code == 400
    assert response.json() == BAD_LENGTH
    assert calls == []


# --- the streamed cap ------------------------------------------------------------------


def test_body_exactly_at_the_cap_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """The cap is inclusive: ``max_body_bytes`` bytes are fine."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=64)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(client.url(note), content=json_body(64), headers=JSON)
    assert response.status_code == 200
    assert response.json() == ok("a" * 53)
    assert len(calls) == 1


def test_body_one_byte_over_the_cap_is_413(bastion: Bastion, client: ActionClient) -> None:
    """One byte more than ``max_body_bytes`` is refused."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=64)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(client.url(note), content=json_body(65), headers=JSON)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_chunked_body_over_the_cap_is_413(bastion: Bastion, client: ActionClient) -> None:
    """Without any ``Content-Length`` (a generator body is sent chunked) the cap still holds."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    def body() -> Iterator[bytes]:
        yield b'{"text":"'
        for _ in range(17):
            yield b"a" * 65536
        yield b'"}'

    response = client.post(client.url(note), content=body(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert_secure_json(response)
    assert calls == []


def test_chunked_body_under_the_cap_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """A chunked body is read in full when it stays within the cap."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    def body() -> Iterator[bytes]:
        yield b'{"text":'
        yield b'"chunked"'
        yield b"}"

    response = client.post(client.url(note), content=body(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == ok("chunked")
    assert calls == [Note(text="chunked")]


def test_chunked_form_over_the_cap_is_413(bastion: Bastion, client: ActionClient) -> None:
    """One limit for every content type: an urlencoded form is capped the same way."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=100)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    def body() -> Iterator[bytes]:
        yield b"text="
        yield b"a" * 96

    response = client.post(client.url(note), content=body(), headers=FORM)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_chunked_multipart_over_the_cap_is_413(bastion: Bastion, client: ActionClient) -> None:
    """Multipart bodies are under the same byte cap, even when each file is within its own."""
    calls: list[FileIn] = []

    @bastion.action(policy=public, max_body_bytes=200, max_file_bytes=150)
    def save(data: FileIn) -> None:
        calls.append(data)

    def body() -> Iterator[bytes]:
        # A file within its 150 bytes, sent after 100 bytes of another part: 200 over all.
        yield b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        yield b"n" * 100
        yield b'\r\n--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        yield b"a" * 140
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        client.url(save),
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=xyz", "accept": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_lying_small_content_length_does_not_lift_the_cap(
    bastion: Bastion, client: ActionClient
) -> None:
    """The cap counts the bytes that arrive: a body declared as 5 bytes but longer is 413."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=64)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    response = client.post(
        client.url(note), content=json_body(200), headers={**JSON, "content-length": "5"}
    )
    assert response.request.headers["content-length"] == "5"
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_streamed_body_stops_being_read_once_over_the_cap(bastion: Bastion) -> None:
    """Reading stops at the first chunk past the cap; the rest is never pulled."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=64)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    result = exchange(
        mounted(bastion),
        bastion.url_for(note),
        headers=[(b"content-type", b"application/json"), *page_credentials(bastion)],
        chunks=[b'{"text":"', *([b"a" * 10] * 100), b'"}'],
    )
    assert result.status == 413
    assert result.json() == TOO_LARGE
    # 9 + 5 * 10 = 59 bytes fit; the 7th message takes it to 69 > 64.
    assert result.reads == 7
    assert calls == []


def test_client_disconnecting_mid_body_is_400_and_the_handler_does_not_run(
    bastion: Bastion,
) -> None:
    """A body cut short by a disconnect is never decoded from what arrived."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    result = exchange(
        mounted(bastion),
        bastion.url_for(note),
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", b"13"),
            *page_credentials(bastion),
        ],
        chunks=[b'{"text"', b':"hi"}'],
        disconnect_after=1,
    )
    assert result.status == 400
    assert result.json() == CUT_SHORT
    assert result.reads == 2
    assert calls == []


@pytest.mark.parametrize(
    ("path", "method", "headers", "status"),
    [
        ("/_actions/unknown", "POST", [(b"content-type", b"application/json")], 404),
        (None, "GET", [(b"content-type", b"application/json")], 405),
        (None, "POST", [(b"content-type", b"text/plain")], 415),
        (None, "POST", [(b"content-type", b"application/json; charset=latin-1")], 415),
        (None, "POST", [(b"content-type", b"application/json"), (b"content-length", b"x")], 400),
    ],
)
def test_header_refusals_read_no_body(
    bastion: Bastion,
    path: str | None,
    method: str,
    headers: list[tuple[bytes, bytes]],
    status: int,
) -> None:
    """404, 405, 415 and a bad length are decided before the first byte of the body."""
    calls: list[Note] = []

    @bastion.action(policy=public)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    result = exchange(
        mounted(bastion),
        path or bastion.url_for(note),
        method=method,
        headers=headers,
        chunks=[b'{"text":"hi"}'],
    )
    assert result.status == status
    assert result.reads == 0
    assert result.headers["cache-control"] == "no-store"
    assert result.headers["x-content-type-options"] == "nosniff"
    assert calls == []


# --- per-action and app-wide limits ----------------------------------------------------


def test_per_action_max_body_bytes_lowers_the_cap(bastion: Bastion, client: ActionClient) -> None:
    """``max_body_bytes=`` below the default refuses what the default would take."""
    small_calls: list[Note] = []
    default_calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=100)
    def small(data: Note) -> Echo:
        small_calls.append(data)
        return Echo(text=data.text)

    @bastion.action(policy=public)
    def default(data: Note) -> Echo:
        default_calls.append(data)
        return Echo(text=data.text)

    body = json_body(101)
    refused = client.post(client.url(small), content=body, headers=JSON)
    assert refused.status_code == 413
    assert refused.json() == TOO_LARGE
    assert small_calls == []

    accepted = client.post(client.url(default), content=body, headers=JSON)
    assert accepted.status_code == 200
    assert accepted.json() == ok("a" * 90)
    assert len(default_calls) == 1


def test_per_action_max_body_bytes_raises_the_cap(bastion: Bastion, client: ActionClient) -> None:
    """``max_body_bytes=`` above the default takes what the default would refuse."""
    big_calls: list[Note] = []
    default_calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=2 * MiB)
    def big(data: Note) -> Echo:
        big_calls.append(data)
        return Echo(text=data.text[:3])

    @bastion.action(policy=public)
    def default(data: Note) -> Echo:
        default_calls.append(data)
        return Echo(text=data.text[:3])

    body = json_body(MiB + MiB // 2)
    accepted = client.post(client.url(big), content=body, headers=JSON)
    assert accepted.status_code == 200
    assert accepted.json() == ok("aaa")
    assert len(big_calls) == 1
    assert len(big_calls[0].text) == MiB + MiB // 2 - 11

    refused = client.post(client.url(default), content=body, headers=JSON)
    assert refused.status_code == 413
    assert refused.json() == TOO_LARGE
    assert default_calls == []


def test_per_action_cap_also_holds_for_chunked_bodies(
    bastion: Bastion, client: ActionClient
) -> None:
    """The override is the streamed cap too, not only the declared-length check."""
    calls: list[Note] = []

    @bastion.action(policy=public, max_body_bytes=32)
    def note(data: Note) -> Echo:
        calls.append(data)
        return Echo(text=data.text)

    def body() -> Iterator[bytes]:
        yield json_body(33)

    response = client.post(client.url(note), content=body(), headers=JSON)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert calls == []


def test_app_wide_limits_apply_and_an_action_override_wins() -> None:
    """``Bastion(limits=Limits(max_body_bytes=…))`` sets the default; ``max_body_bytes=`` wins."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_body_bytes=50))
    calls: list[str] = []

    @app_bastion.action(policy=public)
    def default(data: Note) -> Echo:
        calls.append("default")
        return Echo(text=data.text)

    @app_bastion.action(policy=public, max_body_bytes=500)
    def roomy(data: Note) -> Echo:
        calls.append("roomy")
        return Echo(text=data.text)

    with ActionClient(mounted(app_bastion), app_bastion) as client:
        refused = client.post(client.url(default), content=json_body(51), headers=JSON)
        accepted = client.post(client.url(roomy), content=json_body(51), headers=JSON)
    assert refused.status_code == 413
    assert refused.json() == TOO_LARGE
    assert accepted.status_code == 200
    assert accepted.json() == ok("a" * 40)
    assert calls == ["roomy"]
