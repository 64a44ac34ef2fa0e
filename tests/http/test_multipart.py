"""File uploads: ``Upload`` fields and multipart decoding with every part bounded.

Over the real ASGI stack: exact replies, handlers that never run on refusals, and
spooled files that are closed after the call whatever its outcome.
"""

from __future__ import annotations

import gc
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile

from bastion import ActionError, Bastion, ConfigurationError, Context, Limits, Upload, public
from bastion.testing import ActionClient

MiB = 1024 * 1024
ACCEPT_JSON = {"accept": "application/json"}
MULTIPART = {"content-type": "multipart/form-data; boundary=xyz", "accept": "application/json"}


def malformed(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "malformed", "message": message}}


def too_large(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "payload_too_large", "message": message}}


def invalid(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields},
    }


MALFORMED = malformed("The multipart body is malformed.")
NOT_UTF8 = malformed("The form is not valid UTF-8.")
NAME_TOO_LONG = malformed("A field name is too long.")
TOO_MANY = too_large("Too many fields or files.")
FILE_TOO_LARGE = too_large("An uploaded file is too large.")
BODY_TOO_LARGE = too_large("The request is too large.")
DONE = {"ok": True, "data": {"done": True}}


def assert_json_reply(response: httpx.Response, status: int, envelope: dict[str, Any]) -> None:
    assert response.status_code == status
    assert response.json() == envelope
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def part(name: str | bytes, value: bytes, *, filename: str | None = None, type_: str = "") -> bytes:
    """One multipart part, built by hand so that every byte is under the test's control
    (a ``bytes`` name is sent as it is; a ``str`` one as UTF-8)."""
    raw_name = name if isinstance(name, bytes) else name.encode()
    head = b'Content-Disposition: form-data; name="' + raw_name + b'"'
    if filename is not None:
        head += f'; filename="{filename}"'.encode()
    head += b"\r\n"
    if type_:
        head += f"Content-Type: {type_}\r\n".encode()
    return b"--xyz\r\n" + head + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--xyz--\r\n"


# --- models ----------------------------------------------------------------------------


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = ""
    file: Upload


class Gallery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[Upload] = []


class Avatar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    avatar: Upload | None = None


class Received(BaseModel):
    title: str
    filename: str | None
    content_type: str | None
    size: int | None
    content: str


class Names(BaseModel):
    names: list[str | None]
    sizes: list[int | None]


class Done(BaseModel):
    done: bool = True


captured: list[UploadFile] = []
"""Files seen by ``Checked``'s validator; cleared by the fixture below."""


class Checked(BaseModel):
    """An upload next to a field that can fail validation; the file is captured while
    validating, so a test can look at it after a 422 the handler never saw."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", max_length=5)
    file: Upload

    @field_validator("file")
    @classmethod
    def capture(cls, value: UploadFile) -> UploadFile:
        captured.append(value)
        return value


@pytest.fixture(autouse=True)
def _clear_captured() -> None:
    captured.clear()


# --- accepting files -------------------------------------------------------------------


def test_upload_field_accepts_multipart_and_the_handler_reads_the_file(
    bastion: Bastion, client: ActionClient
) -> None:
    """The handler gets an ``UploadFile`` it can read, with its name, type and size."""
    calls: list[str] = []

    @bastion.action(policy=public)
    async def attach(data: Attachment) -> Received:
        calls.append("ran")
        content = await data.file.read()
        return Received(
            title=data.title,
            filename=data.file.filename,
            content_type=data.file.content_type,
            size=data.file.size,
            content=content.decode(),
        )

    response = client.post(
        client.url(attach),
        data={"title": "Report"},
        files={"file": ("report.txt", b"hello, world", "text/plain")},
        headers=ACCEPT_JSON,
    )
    assert_json_reply(
        response,
        200,
        {
            "ok": True,
            "data": {
                "title": "Report",
                "filename": "report.txt",
                "content_type": "text/plain",
                "size": 12,
                "content": "hello, world",
            },
        },
    )
    assert calls == ["ran"]


def test_sync_handler_reads_the_file_too(bastion: Bastion, client: ActionClient) -> None:
    """A sync handler reads the spooled file through ``upload.file``."""

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Received:
        return Received(
            title=data.title,
            filename=data.file.filename,
            content_type=data.file.content_type,
            size=data.file.size,
            content=data.file.file.read().decode(),
        )

    response = client.post(
        client.url(attach), files={"file": ("a.bin", b"\x00\x01binary")}, headers=ACCEPT_JSON
    )
    assert response.status_code == 200
    assert response.json()["data"] == {
        "title": "",
        "filename": "a.bin",
        "content_type": "application/octet-stream",
        "size": 8,
        "content": "\x00\x01binary",
    }


def test_list_of_uploads_gets_every_file_in_order(bastion: Bastion, client: ActionClient) -> None:
    """``list[Upload]`` collects each part of its name, in the order sent."""

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Names:
        return Names(names=[f.filename for f in data.files], sizes=[f.size for f in data.files])

    response = client.post(
        client.url(gallery),
        files=[("files", ("a.png", b"a")), ("files", ("b.png", b"bb")), ("files", ("c.png", b""))],
        headers=ACCEPT_JSON,
    )
    assert_json_reply(
        response,
        200,
        {"ok": True, "data": {"names": ["a.png", "b.png", "c.png"], "sizes": [1, 2, 0]}},
    )


def test_single_file_for_a_list_field_is_a_list_of_one(
    bastion: Bastion, client: ActionClient
) -> None:
    """One file sent for ``list[Upload]`` is a list, as for repeated text keys."""

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Names:
        return Names(names=[f.filename for f in data.files], sizes=[f.size for f in data.files])

    response = client.post(
        client.url(gallery), files={"files": ("only.png", b"x")}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 200, {"ok": True, "data": {"names": ["only.png"], "sizes": [1]}})


def test_empty_file_with_a_name_is_still_a_file(bastion: Bastion, client: ActionClient) -> None:
    """A chosen file that happens to be empty is kept: only a nameless empty part is "no file"."""

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Received:
        return Received(
            title="",
            filename=data.file.filename,
            content_type=data.file.content_type,
            size=data.file.size,
            content="",
        )

    response = client.post(
        client.url(attach),
        content=multipart(part("file", b"", filename="empty.txt", type_="text/plain")),
        headers=MULTIPART,
    )
    assert response.status_code == 200
    assert response.json()["data"]["filename"] == "empty.txt"
    assert response.json()["data"]["size"] == 0


# --- file inputs left empty ------------------------------------------------------------

EMPTY_INPUT = b'filename=""\r\nContent-Type: application/octet-stream\r\n\r\n\r\n'


def empty_file_input(name: str) -> bytes:
    """What a browser sends for ``<input type=file>`` with no file chosen."""
    return f'--xyz\r\nContent-Disposition: form-data; name="{name}"; '.encode() + EMPTY_INPUT


def test_empty_file_input_for_an_optional_upload_is_none(
    bastion: Bastion, client: ActionClient
) -> None:
    """An optional file left empty is ``None``, not an empty upload named ""."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    body = multipart(part("name", b"Ada"), empty_file_input("avatar"))
    response = client.post(client.url(profile), content=body, headers=MULTIPART)
    assert_json_reply(response, 200, DONE)
    assert len(calls) == 1
    assert calls[0].name == "Ada"
    assert calls[0].avatar is None


def test_empty_file_input_for_a_required_upload_is_field_required(
    bastion: Bastion, client: ActionClient
) -> None:
    """A required file left empty is missing (422), not a zero-byte file."""
    calls: list[Attachment] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    body = multipart(part("title", b"t"), empty_file_input("file"))
    response = client.post(client.url(attach), content=body, headers=MULTIPART)
    assert_json_reply(response, 422, invalid({"file": "Field required"}))
    assert calls == []


def test_empty_file_input_for_a_list_of_uploads_is_an_empty_list(
    bastion: Bastion, client: ActionClient
) -> None:
    """A multiple-file input left empty gives ``[]``."""
    calls: list[Gallery] = []

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(gallery), content=multipart(empty_file_input("files")), headers=MULTIPART
    )
    assert_json_reply(response, 200, DONE)
    assert calls == [Gallery(files=[])]


def test_empty_file_input_under_an_unknown_name_is_still_an_unknown_field(
    bastion: Bastion, client: ActionClient
) -> None:
    """Only declared file fields get the "left empty" reading; other names stay unknown."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(profile), content=multipart(empty_file_input("photo")), headers=MULTIPART
    )
    assert_json_reply(response, 422, invalid({"photo": "Extra inputs are not permitted"}))
    assert calls == []


def test_text_value_for_an_upload_field_is_422(bastion: Bastion, client: ActionClient) -> None:
    """A text part (or a JSON string) where a file is declared is refused: no file, no call."""
    calls: list[Attachment] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    as_text = client.post(
        client.url(attach), content=multipart(part("file", b"/etc/passwd")), headers=MULTIPART
    )
    assert_json_reply(as_text, 422, invalid({"file": "Expected a file upload."}))
    as_json = client.call(attach, {"file": "/etc/passwd"})
    assert_json_reply(as_json, 422, invalid({"file": "Expected a file upload."}))
    as_form = client.post(
        client.url(attach),
        content=b"file=%2Fetc%2Fpasswd",
        headers={"content-type": "application/x-www-form-urlencoded", **ACCEPT_JSON},
    )
    assert_json_reply(as_form, 422, invalid({"file": "Expected a file upload."}))
    assert calls == []


def test_upload_action_with_an_optional_file_also_takes_json(
    bastion: Bastion, client: ActionClient
) -> None:
    """Declaring an upload adds multipart; JSON (without the file) still works."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.call(profile, {"name": "Ada"})
    assert_json_reply(response, 200, DONE)
    assert calls == [Avatar(name="Ada")]


# --- bounds ----------------------------------------------------------------------------


def test_more_files_than_max_files_is_413(bastion: Bastion, client: ActionClient) -> None:
    """11 files (the default limit is 10) is 413 and the handler does not run."""
    calls: list[Gallery] = []

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    files = [("files", (f"{i}.png", b"x")) for i in range(11)]
    response = client.post(client.url(gallery), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 413, TOO_MANY)
    assert calls == []


def test_exactly_max_files_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """10 files is within the default limit."""
    calls: list[Gallery] = []

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    files = [("files", (f"{i}.png", b"x")) for i in range(10)]
    response = client.post(client.url(gallery), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 200, DONE)
    assert len(calls[0].files) == 10


def test_per_action_max_files_override(bastion: Bastion, client: ActionClient) -> None:
    """``max_files=2`` on the action: two files pass, three are 413."""
    calls: list[Gallery] = []

    @bastion.action(policy=public, max_files=2)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    two = client.post(
        client.url(gallery),
        files=[("files", ("a", b"1")), ("files", ("b", b"2"))],
        headers=ACCEPT_JSON,
    )
    three = client.post(
        client.url(gallery),
        files=[("files", ("a", b"1")), ("files", ("b", b"2")), ("files", ("c", b"3"))],
        headers=ACCEPT_JSON,
    )
    assert_json_reply(two, 200, DONE)
    assert_json_reply(three, 413, TOO_MANY)
    assert len(calls) == 1


def test_more_text_parts_than_max_fields_is_413() -> None:
    """Text parts in a multipart body are bounded by ``max_fields``."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_fields=3))
    calls: list[Avatar] = []

    @app_bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    with ActionClient(mounted(app_bastion), app_bastion) as client:
        token = client.token().encode()
        three = multipart(part("name", b"a"), part("_next", b"/"), part("_csrf", token))
        four = multipart(
            part("name", b"a"), part("_next", b"/"), part("_csrf", token), part("_bound", b"b")
        )
        accepted = client.post(client.url(profile), content=three, headers=MULTIPART)
        refused = client.post(client.url(profile), content=four, headers=MULTIPART)
    assert_json_reply(accepted, 200, DONE)
    assert_json_reply(refused, 413, TOO_MANY)
    assert calls == [Avatar(name="a")]


def test_file_over_max_file_bytes_is_413_and_the_handler_does_not_run(
    bastion: Bastion, client: ActionClient
) -> None:
    """``max_file_bytes=10`` on the action: an 11-byte file is 413."""
    calls: list[Attachment] = []

    @bastion.action(policy=public, max_file_bytes=10)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"x" * 11)}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 413, FILE_TOO_LARGE)
    assert calls == []


def test_file_exactly_at_max_file_bytes_is_accepted(bastion: Bastion, client: ActionClient) -> None:
    """The per-file cap is inclusive."""
    calls: list[Attachment] = []

    @bastion.action(policy=public, max_file_bytes=10)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"x" * 10)}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 200, DONE)
    assert len(calls) == 1


def test_max_file_bytes_is_per_file_not_per_body(bastion: Bastion, client: ActionClient) -> None:
    """Several files each within the cap pass, though together they exceed it."""
    calls: list[Gallery] = []

    @bastion.action(policy=public, max_file_bytes=10)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    files = [("files", (f"{i}", b"x" * 10)) for i in range(3)]
    response = client.post(client.url(gallery), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 200, DONE)
    assert [f.size for f in calls[0].files] == [10, 10, 10]


def test_one_oversized_file_among_small_ones_is_413(bastion: Bastion, client: ActionClient) -> None:
    """The cap holds for every file, not just the first."""
    calls: list[Gallery] = []

    @bastion.action(policy=public, max_file_bytes=10)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    files = [("files", ("a", b"x")), ("files", ("b", b"x" * 11)), ("files", ("c", b"x"))]
    response = client.post(client.url(gallery), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 413, FILE_TOO_LARGE)
    assert calls == []


def test_text_parts_do_not_count_against_max_file_bytes(
    bastion: Bastion, client: ActionClient
) -> None:
    """``max_file_bytes`` is about files: a long text part is only under the body cap."""
    calls: list[Attachment] = []

    @bastion.action(policy=public, max_file_bytes=10)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    body = multipart(part("title", b"t" * 100), part("file", b"x" * 10, filename="a"))
    response = client.post(client.url(attach), content=body, headers=MULTIPART)
    assert_json_reply(response, 200, DONE)
    assert calls[0].title == "t" * 100


def test_app_wide_max_file_bytes_and_an_action_override() -> None:
    """``Limits(max_file_bytes=…)`` is the default; the action's ``max_file_bytes=`` wins."""
    app_bastion = Bastion(secret_key=SECRET, limits=Limits(max_file_bytes=4))
    calls: list[str] = []

    @app_bastion.action(policy=public)
    def strict(data: Attachment) -> Done:
        calls.append("strict")
        return Done()

    @app_bastion.action(policy=public, max_file_bytes=100)
    def roomy(data: Attachment) -> Done:
        calls.append("roomy")
        return Done()

    files = {"file": ("a.txt", b"x" * 50)}
    with ActionClient(mounted(app_bastion), app_bastion) as client:
        refused = client.post(client.url(strict), files=files, headers=ACCEPT_JSON)
        accepted = client.post(client.url(roomy), files=files, headers=ACCEPT_JSON)
    assert_json_reply(refused, 413, FILE_TOO_LARGE)
    assert_json_reply(accepted, 200, DONE)
    assert calls == ["roomy"]


def test_files_within_their_cap_but_together_over_the_body_cap_are_413(
    bastion: Bastion, client: ActionClient
) -> None:
    """The body cap applies to multipart too: files each allowed by ``max_file_bytes``
    are still refused when the whole body is over ``max_body_bytes``."""
    calls: list[Gallery] = []

    @bastion.action(policy=public, max_body_bytes=1000, max_file_bytes=600)
    def attach_all(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    files = [("files", ("a.txt", b"x" * 500)), ("files", ("b.txt", b"y" * 500))]
    response = client.post(client.url(attach_all), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 413, BODY_TOO_LARGE)
    assert calls == []


def test_a_declared_file_cap_brings_the_body_cap_with_it(
    bastion: Bastion, client: ActionClient
) -> None:
    """``max_file_bytes=2 MiB`` alone: a 1.5 MiB file arrives (the body cap follows the
    file cap: one file at its cap plus the app's 1 MiB for the rest), a 2.5 MiB one is
    413."""
    calls: list[int] = []

    @bastion.action(policy=public, max_file_bytes=2 * MiB)
    def receipt(data: Attachment) -> Done:
        calls.append(len(data.file.file.read()))
        return Done()

    spec = bastion.registry.get(receipt)
    assert (spec.limits.max_file_bytes, spec.limits.max_body_bytes) == (2 * MiB, 3 * MiB)
    ok = client.post(
        client.url(receipt), files={"file": ("r.pdf", b"x" * (3 * MiB // 2))}, headers=ACCEPT_JSON
    )
    assert_json_reply(ok, 200, {"ok": True, "data": {"done": True}})
    big = client.post(
        client.url(receipt), files={"file": ("r.pdf", b"x" * (5 * MiB // 2))}, headers=ACCEPT_JSON
    )
    assert big.status_code == 413
    assert calls == [3 * MiB // 2]


def test_a_file_cap_over_the_declared_body_cap_does_not_register(bastion: Bastion) -> None:
    """Both caps declared and the file cap cannot fit: refused at import time, not a
    surprise 413 on the first large file."""

    def attach(data: Attachment) -> Done:
        return Done()

    with pytest.raises(ConfigurationError) as caught:
        bastion.action(policy=public, max_body_bytes=1000, max_file_bytes=10_000)(attach)
    assert str(caught.value) == (
        "action 'attach': max_file_bytes=10000 cannot arrive within max_body_bytes=1000: "
        "raise max_body_bytes, or leave it out to have it follow the file cap"
    )


@pytest.mark.parametrize(
    "body",
    [
        multipart(part("f" * 129, b"x", filename="a.txt")),
        multipart(part("t" * 129, b"x")),
        multipart(part("é" * 129, b"x")),
    ],
)
def test_multipart_field_name_over_the_limit_is_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """A part named with more than 128 characters (file or text) is 400."""
    calls: list[Attachment] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(attach), content=body, headers=MULTIPART)
    assert_json_reply(response, 400, NAME_TOO_LONG)
    assert calls == []


def test_multipart_field_name_at_the_limit_reaches_the_model(
    bastion: Bastion, client: ActionClient
) -> None:
    """128 characters (counted as characters, not UTF-8 bytes) passes the bound."""
    calls: list[Attachment] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        calls.append(data)
        return Done()

    name = "é" * 128
    body = multipart(part(name, b"x"), part("file", b"x", filename="a"))
    response = client.post(client.url(attach), content=body, headers=MULTIPART)
    assert_json_reply(response, 422, invalid({name: "Extra inputs are not permitted"}))
    assert calls == []


# --- malformed bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"\x00\xff" * 50),
        (
            "multipart/form-data; boundary=xyz",
            multipart(part("title", b"x")).replace(b"xyz", b"abc"),
        ),
        ("multipart/form-data", multipart(part("title", b"x"))),
        ("multipart/form-data; boundary=", multipart(part("title", b"x"))),
        ("multipart/form-data; boundary=xyz", b""),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\n"),
        ("multipart/form-data; boundary=xyz", part("title", b"x")),
        ("multipart/form-data; boundary=xyz", part("file", b"half a file", filename="a.txt")),
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--\r\n",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n--xyz--\r\n',
        ),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno colon here\r\n\r\nx\r\n--xyz--\r\n"),
    ],
    ids=[
        "garbage",
        "binary-garbage",
        "wrong-boundary",
        "no-boundary-parameter",
        "empty-boundary",
        "empty-body",
        "only-an-opening-boundary",
        "no-closing-boundary",
        "cut-inside-a-file",
        "part-without-name",
        "file-part-without-name",
        "bad-part-header",
    ],
)
def test_malformed_multipart_is_400(
    bastion: Bastion, client: ActionClient, content_type: str, body: bytes
) -> None:
    """A body that is not well-formed multipart is 400 and nothing of it reaches the model."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(profile), content=body, headers={"content-type": content_type, **ACCEPT_JSON}
    )
    assert_json_reply(response, 400, MALFORMED)
    assert calls == []


def test_empty_multipart_form_with_only_the_closing_boundary_is_no_fields(
    bastion: Bastion, client: ActionClient
) -> None:
    """``--xyz--`` alone is a well-formed form with no fields: the model's defaults."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(profile), content=b"--xyz--\r\n", headers=MULTIPART)
    assert_json_reply(response, 200, DONE)
    assert calls == [Avatar()]


@pytest.mark.parametrize(
    "body",
    [
        multipart(part("name", b"caf\xe9")),
        multipart(part("name", b"\xff\xfe")),
        multipart(part(b"na\xffme", b"x")),
        multipart(part("_next", b"/\xff")),
    ],
)
def test_multipart_text_that_is_not_utf8_is_400(
    bastion: Bastion, client: ActionClient, body: bytes
) -> None:
    """Text parts and part names must be UTF-8, as in urlencoded forms (no Latin-1 guess)."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(client.url(profile), content=body, headers=MULTIPART)
    assert_json_reply(response, 400, NOT_UTF8)
    assert calls == []


def test_file_content_is_not_decoded_as_text(bastion: Bastion, client: ActionClient) -> None:
    """Non-UTF-8 bytes and NULs inside a file are its content, not an error."""
    contents: list[bytes] = []

    @bastion.action(policy=public)
    async def attach(data: Attachment) -> Done:
        contents.append(await data.file.read())
        return Done()

    body = multipart(part("file", b"\xff\x00\xfe", filename="a.bin"))
    response = client.post(client.url(attach), content=body, headers=MULTIPART)
    assert_json_reply(response, 200, DONE)
    assert contents == [b"\xff\x00\xfe"]


def test_nul_in_a_multipart_text_value_is_400(bastion: Bastion, client: ActionClient) -> None:
    """A NUL in a text part is refused as in urlencoded forms."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(profile), content=multipart(part("name", b"a\x00b")), headers=MULTIPART
    )
    assert_json_reply(response, 400, malformed("The form holds a NUL character."))
    assert calls == []


def test_multipart_reserved_fields_are_not_passed_to_the_model(
    bastion: Bastion, client: ActionClient
) -> None:
    """``_next`` and ``_csrf`` parts are bastion's, as in urlencoded forms (``_bound`` is
    covered in test_binding.py: sent to an action without a bound parameter it is a 400)."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    token = client.token().encode()
    body = multipart(part("name", b"Ada"), part("_next", b"/done"), part("_csrf", token))
    response = client.post(client.url(profile), content=body, headers=MULTIPART)
    assert_json_reply(response, 200, DONE)
    assert calls == [Avatar(name="Ada")]


@pytest.mark.parametrize("name", ["_csrf", "_next", "_bound"])
def test_reserved_field_sent_as_a_file_is_400(
    bastion: Bastion, client: ActionClient, name: str
) -> None:
    """A reserved field must be text: as a file it is refused (and the file closed)."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(profile), files={name: ("token.txt", b"t")}, headers=ACCEPT_JSON
    )
    assert_json_reply(
        response, 400, malformed(f"The form field {name} must be sent once, as text.")
    )
    assert calls == []


def test_reserved_field_sent_twice_in_multipart_is_400(
    bastion: Bastion, client: ActionClient
) -> None:
    """Two ``_next`` parts are as ambiguous as two ``_next`` keys."""
    calls: list[Avatar] = []

    @bastion.action(policy=public)
    def profile(data: Avatar) -> Done:
        calls.append(data)
        return Done()

    body = multipart(part("_next", b"/a"), part("_next", b"/b"))
    response = client.post(client.url(profile), content=body, headers=MULTIPART)
    assert_json_reply(response, 400, malformed("The form field _next must be sent once, as text."))
    assert calls == []


# --- temporary files are closed --------------------------------------------------------


def test_upload_is_closed_after_a_successful_call(bastion: Bastion, client: ActionClient) -> None:
    """The spooled file is open in the handler and closed once the call is answered."""
    kept: list[UploadFile] = []
    open_in_handler: list[bool] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        kept.append(data.file)
        open_in_handler.append(not data.file.file.closed)
        return Done()

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"hello")}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 200, DONE)
    assert open_in_handler == [True]
    assert len(kept) == 1
    assert kept[0].file.closed


def test_every_upload_of_a_list_is_closed(bastion: Bastion, client: ActionClient) -> None:
    """All files of a call are closed, not only the first."""
    kept: list[UploadFile] = []

    @bastion.action(policy=public)
    def gallery(data: Gallery) -> Done:
        kept.extend(data.files)
        return Done()

    files = [("files", (f"{i}", b"x")) for i in range(4)]
    response = client.post(client.url(gallery), files=files, headers=ACCEPT_JSON)
    assert_json_reply(response, 200, DONE)
    assert len(kept) == 4
    assert all(upload.file.closed for upload in kept)


def test_upload_is_closed_when_the_handler_raises(
    bastion: Bastion, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler crashing (500, generic message + digest; the traceback only in the log,
    under that digest) still closes the file."""
    kept: list[UploadFile] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        kept.append(data.file)
        raise RuntimeError("disk on fire")

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"hello")}, headers=ACCEPT_JSON
    )
    assert response.status_code == 500
    envelope = response.json()
    digest = envelope["error"].pop("digest")
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert envelope == {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong."},
    }
    assert "disk on fire" not in response.text
    logged = [r for r in caplog.records if getattr(r, "digest", None) == digest]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert str(logged[0].exc_info[1]) == "disk on fire"
    assert len(kept) == 1
    assert kept[0].file.closed


def test_upload_is_closed_when_the_handler_refuses(bastion: Bastion, client: ActionClient) -> None:
    """A handler's own ``ActionError`` (here a 409) still closes the file."""
    kept: list[UploadFile] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        kept.append(data.file)
        raise ActionError("That file exists.", code="exists", status=409)

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"hello")}, headers=ACCEPT_JSON
    )
    assert_json_reply(
        response, 409, {"ok": False, "error": {"code": "exists", "message": "That file exists."}}
    )
    assert kept[0].file.closed


def test_upload_is_closed_when_validation_fails(bastion: Bastion, client: ActionClient) -> None:
    """422 on another field: the handler never runs, and the parsed file is closed."""
    calls: list[Checked] = []

    @bastion.action(policy=public)
    def checked(data: Checked) -> Done:
        calls.append(data)
        return Done()

    response = client.post(
        client.url(checked),
        data={"title": "far too long"},
        files={"file": ("a.txt", b"hello")},
        headers=ACCEPT_JSON,
    )
    assert_json_reply(response, 422, invalid({"title": "String should have at most 5 characters"}))
    assert calls == []
    assert len(captured) == 1
    assert captured[0].file.closed


def test_upload_is_closed_when_the_handler_times_out(
    bastion: Bastion, client: ActionClient
) -> None:
    """A 504 (the handler cancelled at its deadline) still closes the file."""
    kept: list[UploadFile] = []

    @bastion.action(policy=public, timeout=0.05)
    async def attach(data: Attachment) -> Done:
        kept.append(data.file)
        await anyio.sleep(30)
        return Done()

    response = client.post(
        client.url(attach), files={"file": ("a.txt", b"hello")}, headers=ACCEPT_JSON
    )
    assert_json_reply(
        response,
        504,
        {"ok": False, "error": {"code": "timeout", "message": "The action took too long."}},
    )
    assert kept[0].file.closed


def test_upload_is_closed_after_a_plain_form_redirect(
    bastion: Bastion, client: ActionClient
) -> None:
    """A browser's multipart post (303 to ``_next``) closes its files as well."""
    kept: list[UploadFile] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        kept.append(data.file)
        return Done()

    response = client.submit(
        attach, {"title": "t", "_next": "/uploaded"}, files={"file": ("a.txt", b"hello")}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/uploaded"
    assert kept[0].file.closed


def test_upload_spooled_to_disk_is_closed(bastion: Bastion, client: ActionClient) -> None:
    """A file over the in-memory spool size (1 MiB) goes to a temporary file on disk,
    which is closed (and so deleted) after the call too."""
    kept: list[UploadFile] = []
    sizes: list[int] = []

    @bastion.action(policy=public, max_body_bytes=3 * MiB)
    async def attach(data: Attachment) -> Done:
        kept.append(data.file)
        sizes.append(len(await data.file.read()))
        return Done()

    response = client.post(
        client.url(attach), files={"file": ("big.bin", b"x" * (2 * MiB))}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 200, DONE)
    assert sizes == [2 * MiB]
    assert kept[0].file.closed


@contextmanager
def no_unclosed_files() -> Iterator[None]:
    """Fails if a temporary file is garbage-collected while still open: Python warns
    (``ResourceWarning: Unclosed file``) for every ``SpooledTemporaryFile`` left open."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


def test_no_unclosed_files_notices_a_leak() -> None:
    """The leak detector used below does see an unclosed spooled file."""
    with pytest.raises(AssertionError, match="Unclosed file"), no_unclosed_files():
        UploadFile(file=tempfile.SpooledTemporaryFile())  # noqa: SIM115


@pytest.mark.parametrize(
    ("limits", "body", "status", "envelope"),
    [
        (
            {"max_file_bytes": 10},
            multipart(
                part("files", b"x" * 5, filename="a"), part("files", b"x" * 11, filename="b")
            ),
            413,
            FILE_TOO_LARGE,
        ),
        (
            {"max_files": 1},
            multipart(part("files", b"x", filename="a"), part("files", b"x", filename="b")),
            413,
            TOO_MANY,
        ),
        (
            {"max_body_bytes": 300},
            multipart(part("files", b"x", filename="a"), part("files", b"x" * 400, filename="b")),
            413,
            BODY_TOO_LARGE,
        ),
        (
            {},
            multipart(part("files", b"x", filename="a"), part("f" * 129, b"x", filename="b")),
            400,
            NAME_TOO_LONG,
        ),
        (
            {},
            multipart(part("files", b"x", filename="a"), part("_csrf", b"x", filename="b")),
            400,
            malformed("The form field _csrf must be sent once, as text."),
        ),
        (
            {},
            multipart(part("files", b"x", filename="a"), part("files", b"\x00")).replace(
                b'name="files"\r\n\r\n\x00', b'name="n\x00"\r\n\r\nx'
            ),
            400,
            malformed("The form holds a NUL character."),
        ),
        (
            {},
            multipart(part("files", b"x", filename="a"), part("title", b"\xff")),
            400,
            NOT_UTF8,
        ),
        (
            {},
            multipart(part("files", b"x", filename="a")) + b"trailing garbage is fine",
            200,
            DONE,
        ),
        (
            {},
            part("files", b"x", filename="a") + part("files", b"half of it", filename="b")[:-8],
            400,
            MALFORMED,
        ),
        (
            {},
            part("files", b"x", filename="a") + b"--xyz\r\nbroken header\r\n\r\n",
            400,
            MALFORMED,
        ),
    ],
    ids=[
        "file-too-large",
        "too-many-files",
        "body-too-large",
        "name-too-long",
        "reserved-field-as-file",
        "nul-in-a-name",
        "text-not-utf8",
        "success-with-epilogue",
        "cut-inside-a-file",
        "broken-part-header",
    ],
)
def test_files_opened_before_a_refusal_are_closed(
    bastion: Bastion,
    client: ActionClient,
    limits: dict[str, int],
    body: bytes,
    status: int,
    envelope: dict[str, Any],
) -> None:
    """Whatever refuses a multipart body part-way (a cap, a bad part, a cut-off body),
    the files already spooled are closed: none is left for the garbage collector."""
    calls: list[Gallery] = []

    @bastion.action(policy=public, **limits)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    with no_unclosed_files():
        response = client.post(client.url(gallery), content=body, headers=MULTIPART)
        assert_json_reply(response, status, envelope)
        del response
    assert len(calls) == (1 if status == 200 else 0)


def test_files_of_a_call_its_policy_refuses_are_closed(
    bastion: Bastion, client: ActionClient
) -> None:
    """Files are spooled before the policy runs; a 403 closes them all the same."""
    calls: list[Gallery] = []

    def nobody(ctx: Context) -> bool:
        return False

    @bastion.action(policy=nobody)
    def gallery(data: Gallery) -> Done:
        calls.append(data)
        return Done()

    with no_unclosed_files():
        response = client.post(
            client.url(gallery),
            files=[("files", ("a", b"x")), ("files", ("b", b"y"))],
            headers=ACCEPT_JSON,
        )
        assert_json_reply(
            response,
            403,
            {
                "ok": False,
                "error": {"code": "forbidden", "message": "You are not allowed to do that."},
            },
        )
        del response
    assert calls == []


# --- file names are data ---------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["../{}", "../../{}", "../../../../../../{}", "{root}/{}", "..%2F{}", "a/../../{}"],
)
def test_filename_with_path_segments_is_passed_through_as_data_only(
    bastion: Bastion,
    client: ActionClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template: str,
) -> None:
    """``../`` in a filename is the client's text: the handler gets it verbatim, and
    nothing is written at that path (relative to the working directory or absolute)."""
    monkeypatch.chdir(tmp_path)
    stem = f"bastion-escape-{uuid.uuid4().hex}.txt"
    root = tmp_path / "root"
    filename = template.format(stem, root=root)
    names: list[str | None] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        names.append(data.file.filename)
        return Done()

    response = client.post(
        client.url(attach), files={"file": (filename, b"payload")}, headers=ACCEPT_JSON
    )
    assert_json_reply(response, 200, DONE)
    assert names == [filename]
    # Nothing in the working directory but the session store's own (BASTION_DATA_DIR,
    # set by conftest), which holds the store's database and nothing else.
    store_dir = tmp_path / "data"
    assert [path for path in tmp_path.iterdir() if path != store_dir] == []
    assert {path.name for path in store_dir.glob("*")} <= {
        "bastion.sqlite3",
        "bastion.sqlite3-wal",
        "bastion.sqlite3-shm",
    }
    for directory in (root, store_dir, tmp_path, *tmp_path.parents):
        assert not (directory / stem).exists()


# --- plain multipart forms -------------------------------------------------------------


def test_plain_multipart_form_success_redirects_to_next(
    bastion: Bastion, client: ActionClient
) -> None:
    """A browser's multipart post without JavaScript gets a 303 to ``_next``."""
    calls: list[str | None] = []

    @bastion.action(policy=public)
    def attach(data: Attachment) -> Done:
        calls.append(data.file.filename)
        return Done()

    response = client.submit(
        attach, {"title": "t", "_next": "/files"}, files={"file": ("a.txt", b"hello")}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/files"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == b""
    assert calls == ["a.txt"]


def test_plain_multipart_form_failing_validation_redirects_back(
    bastion: Bastion, client: ActionClient
) -> None:
    """A refused multipart post goes back to the referring page's path."""
    calls: list[Checked] = []

    @bastion.action(policy=public)
    def checked(data: Checked) -> Done:
        calls.append(data)
        return Done()

    response = client.submit(
        checked,
        {"title": "far too long", "_next": "/files"},
        files={"file": ("a.txt", b"hello")},
        headers={"referer": "http://127.0.0.1/upload?step=1"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/upload?step=1"
    assert calls == []
    assert captured[0].file.closed
