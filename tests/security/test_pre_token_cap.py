"""Stage 4: a plain form is read only as far as its token before the token is checked.

A form carries its CSRF token in its ``_csrf`` field, so some of its body must be read
before the check. That part is capped by ``Limits.max_pre_token_bytes`` (64 KiB): the
field must come within it, as ``csrf_input()`` and ``action_form()`` put it first and
browsers send fields in the page's order. What was read is kept, so a form whose token
passes is read on to the body cap and loses nothing; one whose token does not come in
time is refused 403 having read no more than the cap.

The calls go straight into the ASGI app with the body in chunks, as a slow or large
upload arrives: the count of bytes taken from the connection is the proof.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final
from urllib.parse import quote

import anyio
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette

from bastion import Bastion, Limits, Upload, public
from bastion.stores import MemoryStore

from ._support import (
    CountingReceive,
    Reply,
    asgi_call,
    fresh_address,
    handlers_run,
    raw_headers,
    session_and_token,
)

KIB: Final = 1024
CAP: Final = 64 * KIB
"""The default pre-token cap."""
CHUNK: Final = 4 * KIB
FORM: Final = "application/x-www-form-urlencoded"
BOUNDARY: Final = "pretoken"
MULTIPART: Final = f"multipart/form-data; boundary={BOUNDARY}"
ORIGIN: Final = "http://127.0.0.1"


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    text: str = ""


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = ""
    file: Upload


class NoteOut(BaseModel):
    title: str
    length: int


class FileOut(BaseModel):
    size: int
    sha256: str


class App:
    """A bastion with two actions, each telling what it received."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.bastion = Bastion(secret_key=SECRET, store=MemoryStore(), limits=limits)
        self.app = Starlette()

        @self.bastion.action(policy=public, rate=None)
        def note(data: Note) -> NoteOut:
            return NoteOut(title=data.title, length=len(data.text))

        @self.bastion.action(policy=public, rate=None)
        async def attach(data: Attachment) -> FileOut:
            content = await data.file.read()
            return FileOut(size=len(content), sha256=hashlib.sha256(content).hexdigest())

        self.bastion.mount(self.app)
        self.sid, self.token = anyio.run(session_and_token, self.bastion)

    def post(
        self,
        action: str,
        body: bytes,
        content_type: str = FORM,
        *,
        chunk: int = CHUNK,
        accept: str = "application/json",
    ) -> tuple[Reply, CountingReceive, list[str]]:
        """The body in ``chunk``-byte messages; the reply, what was taken, what ran."""
        receive = CountingReceive([body[i : i + chunk] for i in range(0, len(body), chunk)])
        headers = raw_headers(
            content_type=content_type,
            accept=accept,
            origin=ORIGIN,
            cookie=f"bastion_session={self.sid}",
        )

        async def run() -> Reply:
            with anyio.fail_after(60):
                return await asgi_call(
                    self.app,
                    "POST",
                    self.bastion.url_for(action),
                    headers,
                    receive,
                    client=fresh_address(),
                )

        with handlers_run(self.bastion, this_thread=True) as ran:
            reply = anyio.run(run)
        return reply, receive, ran


@pytest.fixture
def app() -> App:
    return App()


def form(*fields: tuple[str, str]) -> bytes:
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    return f"--{BOUNDARY}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def envelope(reply: Reply) -> Any:
    return json.loads(reply.body)


CSRF_FAILED: Final = {
    "ok": False,
    "error": {
        "code": "csrf_failed",
        "message": "This form has expired. Reload the page and try again.",
    },
}


# --- a token that comes first: the whole form, nothing lost ---------------------------------


def test_a_long_form_with_its_token_first_is_read_whole(app: App) -> None:
    """900 KB of text after the token, in 4 KB chunks: the token is found in the first
    chunk, checked, and the whole text reaches the handler."""
    text = "é" * 150_000  # 900 KB once percent-encoded as UTF-8
    body = form(("_csrf", app.token), ("title", "long"), ("text", text))
    assert len(body) > 10 * CAP
    reply, receive, ran = app.post("note", body)
    assert reply.status == 200, reply.body[:300]
    assert envelope(reply) == {"ok": True, "data": {"title": "long", "length": 150_000}}
    assert ran == ["note"]
    assert receive.taken == len(body)


def test_a_token_split_across_chunks_is_found(app: App) -> None:
    """Chunks of 7 bytes cut the field's name and value apart: still found, still one
    token, and the form (over the cap) is served."""
    body = form(("title", "t"), ("_csrf", app.token), ("text", "x" * (2 * CAP)))
    reply, _, ran = app.post("note", body, chunk=7)
    assert reply.status == 200, reply.body[:300]
    assert ran == ["note"]


def test_a_form_under_the_cap_may_carry_its_token_anywhere(app: App) -> None:
    """A form of less than 64 KiB is read whole before the check, in one message or
    many: its token may be its last field."""
    body = form(("title", "short"), ("text", "y" * 60_000), ("_csrf", app.token))
    assert len(body) < CAP
    for chunk in (len(body), CHUNK):
        reply, _, ran = app.post("note", body, chunk=chunk)
        assert reply.status == 200, reply.body[:300]
        assert ran == ["note"]


def test_a_large_upload_with_its_token_first_arrives_intact(app: App) -> None:
    """Multipart: the token part first, then a 700 KB file in 4 KB chunks. The token is
    checked from the first chunk and the file reaches the handler byte for byte."""
    content = bytes(range(256)) * 2800
    body = multipart(part("_csrf", app.token.encode()), part("file", content, "data.bin"))
    reply, receive, ran = app.post("attach", body, MULTIPART)
    assert reply.status == 200, reply.body[:300]
    assert envelope(reply)["data"] == {
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert ran == ["attach"]
    assert receive.taken == len(body)


# --- a token that does not come in time: refused at the cap ---------------------------------


def test_a_token_after_the_cap_is_refused_there(app: App) -> None:
    """The attack: a megabyte of fields (to be parsed before any check), the token, if
    any, at the end. Refused 403 ``csrf_failed`` once 64 KiB have come; the rest is
    never asked for and the handler never runs. The real token at the end changes
    nothing: it did not come where it must."""
    body = form(("title", "t"), ("text", "z" * 900_000), ("_csrf", app.token))
    reply, receive, ran = app.post("note", body)
    assert (reply.status, envelope(reply)) == (403, CSRF_FAILED)
    assert ran == []
    assert receive.taken <= CAP + CHUNK
    assert receive.reads <= CAP // CHUNK + 1


def test_a_file_before_the_token_is_refused_at_the_cap(app: App) -> None:
    """Multipart: a 900 KB file first, the real token after it. 403 once 64 KiB have
    come, the file never reaches the handler (nothing of it is written anywhere)."""
    body = multipart(part("file", b"f" * 900_000, "big.bin"), part("_csrf", app.token.encode()))
    reply, receive, ran = app.post("attach", body, MULTIPART)
    assert (reply.status, envelope(reply)) == (403, CSRF_FAILED)
    assert ran == []
    assert receive.taken <= CAP + CHUNK


def test_a_refused_long_form_goes_back_with_what_came_before_the_cap(app: App) -> None:
    """A browser's form refused at the cap is sent back to its page (303), and its
    fields that came whole before the cap are kept to fill it again."""
    body = form(("title", "kept"), ("text", "w" * 200_000), ("_csrf", app.token))
    reply, _, ran = app.post("note", body, accept="text/html")
    assert reply.status == 303
    assert ran == []
    session = anyio.run(app.bastion.session_manager.load, app.sid)
    flash = session.pop_flash()
    assert flash is not None
    assert flash["code"] == "csrf_failed"
    assert flash["values"] == {"title": "kept"}


def test_a_token_sent_twice_before_the_cap_is_400(app: App) -> None:
    """Two ``_csrf`` fields within the first bytes of a long form are ambiguous: 400."""
    body = form(("_csrf", app.token), ("_csrf", "other"), ("text", "v" * (2 * CAP)))
    reply, _, ran = app.post("note", body)
    assert reply.status == 400
    assert envelope(reply)["error"] == {
        "code": "malformed",
        "message": "The form field _csrf must be sent once, as text.",
    }
    assert ran == []


def test_the_cap_is_the_configured_one_to_the_byte() -> None:
    """``Limits(max_pre_token_bytes=...)`` moves the cap: a token field that ends at
    about byte 1,000 of a long form passes with a cap of 1,001 (its ending ``&`` included) and
    is refused with a cap of 1,000."""
    token_app = App()
    body = (
        form(("title", "a" * 900), ("_csrf", token_app.token)) + b"&" + form(("text", "u" * 5_000))
    )
    end = body.index(b"&", body.index(b"_csrf=")) + 1
    for cap, status in ((end, 200), (end - 1, 403)):
        limited = App(Limits(max_pre_token_bytes=cap))
        sent = body.replace(token_app.token.encode(), limited.token.encode())
        reply, _, ran = limited.post("note", sent, chunk=100)
        assert reply.status == status, (cap, reply.body[:200])
        assert ran == (["note"] if status == 200 else [])
