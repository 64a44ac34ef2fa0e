"""Pipeline stage 1: route and transport, from the headers alone.

Nothing of the body is read here: an unknown action, a wrong method, an unaccepted
content type or a declared length over the cap is refused before the first byte.
``stream`` then reads the body with the cap enforced on the bytes that really arrive,
so a missing or lying ``Content-Length`` and chunked bodies change nothing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope

from bastion.actions.spec import BodyKind
from bastion.errors import BadRequest, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    from bastion.actions.spec import ActionSpec

__all__ = ["body_kind", "check_method", "read", "replaying", "stream"]


_KINDS = {kind.value: kind for kind in BodyKind}


@functools.lru_cache(maxsize=256)
def content_type(value: str) -> tuple[str, dict[bytes, bytes]]:
    """The media type and its parameters (parsed once per distinct header value)."""
    media_type, params = parse_options_header(value)
    return media_type.decode("latin-1"), params


def check_method(scope: Scope) -> None:
    """Actions are called with POST; anything else is 405 with ``Allow: POST``."""
    if scope["method"] != "POST":
        raise MethodNotAllowed()


def body_kind(spec: ActionSpec, headers: Headers) -> BodyKind:
    """Which decoder may read this body, and whether its declared size is acceptable."""
    declared = headers.getlist("content-length")
    length: int | None = None
    if declared:
        value = declared[0]
        # ASCII digits only: str.isdigit() also takes "²" and other Unicode digits.
        if len(declared) > 1 or not (value.isascii() and value.isdigit()):
            raise BadRequest("The Content-Length header is invalid.")
        cap = spec.limits.max_body_bytes
        digits = value.lstrip("0")
        # Compare lengths first: int() refuses strings over 4300 digits (a 500, not a 413).
        if len(digits) > len(str(cap)) or int(digits or "0") > cap:
            raise PayloadTooLarge()
        length = int(digits or "0")

    media_type, params = content_type(headers.get("content-type", ""))
    kind = _KINDS.get(media_type)
    if kind is None:
        # No body at all is an empty JSON object: handy for actions without input.
        if not media_type and length == 0:
            return BodyKind.JSON
        raise UnsupportedMediaType()
    if kind is BodyKind.MULTIPART and not spec.accepts_uploads:
        raise UnsupportedMediaType("This action does not accept file uploads.")
    charset = params.get(b"charset")
    if charset is not None and charset.lower() not in (b"utf-8", b"utf8"):
        raise UnsupportedMediaType("Only UTF-8 is accepted.")
    return kind


async def stream(receive: Receive, cap: int) -> AsyncIterator[bytes]:
    """The body as it arrives; 413 the moment more than ``cap`` bytes have come."""
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("The request body was cut short.")
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > cap:
            raise PayloadTooLarge()
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read(receive: Receive, cap: int) -> bytes:
    """The whole (capped) body, for decoders that need it at once."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        # The usual case, a body in one message: taken as it is.
        chunk: bytes = message.get("body", b"")
        if len(chunk) > cap:
            raise PayloadTooLarge()
        return chunk
    body = bytearray()
    async for chunk in stream(replaying([message], receive), cap):
        body += chunk
    return bytes(body)


def replaying(received: list[Message], receive: Receive) -> Receive:
    """``receive`` with the messages already received put back in front, in order."""
    pending = received[::-1]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
