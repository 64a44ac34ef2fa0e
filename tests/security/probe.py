"""A small app with what the quickstart lacks, for the attacks that need it: an upload
action (multipart bombs, file names), two actions with sealed bound values (``_bound``
moved between them), nested models and unions (class names in messages), a short
timeout (bodies that never finish arriving), a validator that crashes and a handler
that returns what its type refuses (internals in errors).

Its key is the suite's; ``mirror`` builds the same actions under another key, whose IDs
and seals the real app must not accept.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette

from bastion import Bastion, Bound, Limits, Upload, public
from bastion.stores import MemoryStore

from ._support import KEY, ORIGIN

__all__ = ["MAX_FILE_BYTES", "TIMEOUT", "app", "bastion", "mirror"]

MAX_FILE_BYTES: Final = 64 * 1024
TIMEOUT: Final = 0.5
"""Seconds the ``slow`` actions' calls may take (their bodies included)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attachment(Strict):
    title: str = Field(default="", max_length=100)
    file: Upload


class Received(BaseModel):
    filename: str | None
    size: int
    content_type: str | None


class Note(Strict):
    text: str = Field(min_length=1, max_length=100)


class NoteRef(Strict):
    note_id: int = Field(ge=1)


class Done(BaseModel):
    note_id: int


class InternalAddressRecord(Strict):
    city: str = Field(max_length=50)


def _internal_check(value: str) -> str:
    if value == "x":
        raise ValueError("Codes are letters and digits.")
    return value


class Shipping(Strict):
    address: InternalAddressRecord
    copies: list[InternalAddressRecord] = Field(default=[], max_length=3)
    alternative: InternalAddressRecord | int | None = None
    code: Annotated[str, AfterValidator(_internal_check)] | int | None = None


class Fragile(Strict):
    key: str = Field(max_length=10)

    @field_validator("key")
    @classmethod
    def _look_up(cls, value: str) -> str:
        # A validator with a bug: KeyError is not a validation error, so it escapes.
        raise KeyError(f"no row {value!r} in table users_internal (/srv/app/models.py)")


class Echo(BaseModel):
    text: str


def build(key: str) -> Bastion:
    """The probe's actions registered on a Bastion with this key."""
    probe = Bastion(
        secret_key=key,
        allowed_origins=[ORIGIN],
        store=MemoryStore(),
        limits=Limits(max_files=10),
    )

    @probe.action(policy=public, rate=None, max_file_bytes=MAX_FILE_BYTES)
    async def upload(data: Attachment) -> Received:
        """Reports what arrived; the file name is data, never a path."""
        content = await data.file.read()
        return Received(
            filename=data.file.filename, size=len(content), content_type=data.file.content_type
        )

    @probe.action(policy=public, rate=None)
    def edit(data: Note, ref: Annotated[NoteRef, Bound]) -> Done:
        return Done(note_id=ref.note_id)

    @probe.action(policy=public, rate=None)
    def remove(ref: Annotated[NoteRef, Bound]) -> Done:
        return Done(note_id=ref.note_id)

    @probe.action(policy=public, rate=None)
    async def ship(data: Shipping) -> Echo:
        return Echo(text=data.address.city)

    @probe.action(policy=public, rate=None, timeout=TIMEOUT)
    async def slow(data: Note) -> Echo:
        return Echo(text=data.text)

    @probe.action(policy=public, rate=None, timeout=TIMEOUT, max_file_bytes=MAX_FILE_BYTES)
    async def slow_upload(data: Attachment) -> Echo:
        return Echo(text=data.title)

    @probe.action(policy=public, rate=None)
    async def fragile(data: Fragile) -> Echo:
        return Echo(text=data.key)

    @probe.action(policy=public, rate=None)
    async def mismatch() -> Echo:
        """Returns what its type refuses, holding a secret-looking value."""
        return {"wrong": "sk_live_internal_value"}  # type: ignore[return-value]

    return probe


bastion = build(KEY)
app = Starlette()
bastion.mount(app)


def mirror(key: str) -> Bastion:
    """The same actions under another key."""
    return build(key)
