"""File uploads: the ``Upload`` field type and multipart decoding with every part bounded.

Parsing is python-multipart's, through its public ``MultipartParser`` and callbacks;
bastion counts what it must (parts, files, bytes per file), requires strict UTF-8 for
names and text and a body that reaches its closing boundary, and feeds it the capped
body stream, so a multipart bomb costs at most ``max_body_bytes``. Files spool to
temporary files that are closed (and so deleted) when the call ends, whatever its
outcome.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Annotated, Any, BinaryIO, Final, cast

from pydantic import PlainValidator, WithJsonSchema
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers, UploadFile

from bastion.config import Limits
from bastion.errors import BadRequest, PayloadTooLarge

__all__ = ["FieldScan", "Upload", "parse_multipart"]


def _check_upload(value: Any) -> UploadFile:
    if not isinstance(value, UploadFile):
        raise ValueError("Expected a file upload.")
    return value


Upload = Annotated[
    UploadFile,
    PlainValidator(_check_upload),
    WithJsonSchema({"type": "string", "format": "binary"}),
]
"""An uploaded file in an input model: ``avatar: Upload`` or ``files: list[Upload]``.
Declaring one is what lets an action accept ``multipart/form-data``."""


_SPOOL_BYTES: Final = 1024 * 1024
"""Bytes of a file kept in memory before it spools to a temporary file (as Starlette)."""


class _Part:
    """One part as it arrives: its headers, then its text or its file."""

    __slots__ = ("file", "headers", "name", "text")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.name = ""
        self.text = bytearray()
        self.file: UploadFile | None = None


class _Collector:
    """python-multipart's callbacks, with every bound bastion adds: parts, files and
    bytes per file counted, names and text strict UTF-8, no NUL in a file name, and the
    closing boundary required (``complete``)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.items: list[tuple[str, str | UploadFile]] = []
        self.files: list[UploadFile] = []
        self.pending: list[tuple[UploadFile, bytes]] = []
        """File bytes parsed and not yet written (written between chunks, off the parser)."""
        self.complete = False
        self._part = _Part()
        self._field = bytearray()
        self._value = bytearray()
        self._fields = 0
        self._file_bytes = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._part = _Part()
        self._file_bytes = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers.append((bytes(self._field).lower(), bytes(self._value)))
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        part = self._part
        disposition = next((v for k, v in part.headers if k == b"content-disposition"), None)
        if disposition is None:
            raise BadRequest("The multipart body is malformed.")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise BadRequest("The multipart body is malformed.")
        part.name = _utf8(name)
        if len(part.name) > self.limits.max_field_name_length:
            raise BadRequest("A field name is too long.")
        self._fields += 1
        if self._fields > self.limits.max_fields:
            raise PayloadTooLarge("Too many fields or files.")
        filename = options.get(b"filename")
        if filename is None:
            return
        # A file name is text from the client like any field: strict UTF-8 and no NUL
        # (it cuts C strings and paths short).
        decoded = _utf8(filename)
        if "\x00" in decoded:
            raise BadRequest("The form holds a NUL character.")
        if len(self.files) >= self.limits.max_files:
            raise PayloadTooLarge("Too many fields or files.")
        part.file = UploadFile(
            # Closed when the call ends (Body.close), or here on a refusal.
            file=cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)),  # noqa: SIM115
            size=0,
            filename=decoded,
            headers=Headers(raw=part.headers),
        )
        self.files.append(part.file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is None:
            part.text += data[start:end]
            return
        self._file_bytes += end - start
        if self._file_bytes > self.limits.max_file_bytes:
            raise PayloadTooLarge("An uploaded file is too large.")
        self.pending.append((part.file, data[start:end]))

    def on_part_end(self) -> None:
        part = self._part
        if part.file is None:
            self.items.append((part.name, _utf8(part.text)))
        else:
            self.items.append((part.name, part.file))

    def on_end(self) -> None:
        self.complete = True

    async def flush(self) -> None:
        """Write the file bytes parsed so far (a spooled file may write to disk)."""
        pending, self.pending = self.pending, []
        for upload, data in pending:
            await upload.write(data)

    def close(self) -> None:
        for upload in self.files:
            upload.file.close()


def _utf8(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The form is not valid UTF-8.") from None


def _boundary(headers: Headers) -> bytes:
    _, params = parse_options_header(headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("The multipart body is malformed.")
    return boundary


class FieldScan:
    """The start of a multipart body, parsed as far as it has come, for the text fields
    complete in it (a form's token among them): the same parser and bounds as
    ``parse_multipart``, but file contents are dropped, never written. ``close()`` ends
    it; the whole body is parsed again by ``parse_multipart`` if the call goes on."""

    def __init__(self, headers: Headers, limits: Limits) -> None:
        self._collector = _Collector(limits)
        try:
            self._parser = MultipartParser(_boundary(headers), self._collector.callbacks())  # type: ignore[arg-type]
        except FormParserError:
            raise BadRequest("The multipart body is malformed.") from None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Parse one more chunk; the text fields completed so far, in order."""
        collector = self._collector
        try:
            self._parser.write(chunk)
        except FormParserError:
            raise BadRequest("The multipart body is malformed.") from None
        collector.pending.clear()
        return [(name, value) for name, value in collector.items if isinstance(value, str)]

    def close(self) -> None:
        self._collector.close()


async def parse_multipart(
    headers: Headers, chunks: AsyncIterator[bytes], limits: Limits
) -> list[tuple[str, str | UploadFile]]:
    """Flat (name, value) pairs; values are text or spooled files. The files are closed
    here on any refusal, else by the caller when the call ends."""
    boundary = _boundary(headers)
    collector = _Collector(limits)
    try:
        # Refuses a boundary over 256 bytes, as RFC 2046 caps it at 70.
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in chunks:
            parser.write(chunk)
            await collector.flush()
        parser.finalize()
        await collector.flush()
        if not collector.complete:
            # Cut off before the closing boundary: the last part may be missing or partial.
            raise BadRequest("The multipart body is malformed.")
    except FormParserError:  # python-multipart's own: a malformed body or boundary
        collector.close()
        raise BadRequest("The multipart body is malformed.") from None
    except BaseException:
        collector.close()
        raise
    for upload in collector.files:
        await upload.seek(0)
    return collector.items
