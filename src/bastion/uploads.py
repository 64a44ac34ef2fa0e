"""File uploads: the ``Upload`` field type and multipart decoding with every part bounded.

Parsing is python-multipart's, through Starlette's parser; bastion adds what that
parser lacks (a cap on bytes per file, strict UTF-8 for names and text, a body that
must reach its closing boundary) and feeds it the capped body stream, so a multipart
bomb costs at most ``max_body_bytes``. Files spool to temporary files that are closed
(and so deleted) when the call ends, whatever its outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .config import Limits
from .errors import BadRequest, PayloadTooLarge

__all__ = ["Upload", "parse_multipart"]


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


class _CappedParser(MultiPartParser):
    """Starlette's multipart parser, plus a cap on the bytes of each file."""

    def __init__(self, headers: Headers, chunks: AsyncIterator[bytes], limits: Limits) -> None:
        super().__init__(
            headers,
            chunks,  # type: ignore[arg-type]  # an async iterator is all parse() needs
            max_files=limits.max_files,
            max_fields=limits.max_fields,
            max_part_size=limits.max_body_bytes,
        )
        self._max_file_bytes = limits.max_file_bytes
        self._max_name = limits.max_field_name_length
        self._file_bytes = 0
        self._files: list[UploadFile] = []
        self.complete = False
        """Whether the closing boundary arrived; python-multipart does not check it."""

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self._max_file_bytes:
                raise PayloadTooLarge("An uploaded file is too large.")
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            # Starlette falls back to Latin-1 for bad bytes; a urlencoded form gets 400.
            _utf8(self._current_part.data)
        super().on_part_end()

    def on_headers_finished(self) -> None:
        # Checked before Starlette opens a temporary file for the part.
        _, options = parse_options_header(self._current_part.content_disposition)
        name = options.get(b"name")
        if name is not None and len(_utf8(name)) > self._max_name:
            raise BadRequest("A field name is too long.")
        # A file name is text from the client like any field: strict UTF-8 (Starlette
        # would fall back to Latin-1) and no NUL (it cuts C strings and paths short).
        filename = options.get(b"filename")
        if filename is not None and "\x00" in _utf8(filename):
            raise BadRequest("The form holds a NUL character.")
        super().on_headers_finished()
        if self._current_part.file is not None:
            self._files.append(self._current_part.file)

    def on_end(self) -> None:
        super().on_end()
        self.complete = True

    def close(self) -> None:
        for upload in self._files:
            upload.file.close()


def _utf8(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The form is not valid UTF-8.") from None


async def parse_multipart(
    headers: Headers, chunks: AsyncIterator[bytes], limits: Limits
) -> list[tuple[str, str | UploadFile]]:
    """Flat (name, value) pairs; values are text or spooled files."""
    parser = _CappedParser(headers, chunks, limits)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        text = exc.message
        if text.startswith("Too many"):
            raise PayloadTooLarge("Too many fields or files.") from None
        raise BadRequest("The multipart body is malformed.") from None
    if not parser.complete:
        # Cut off before the closing boundary: the last part may be missing or partial.
        parser.close()
        raise BadRequest("The multipart body is malformed.")
    return list(form.multi_items())
