"""Coverage-guided fuzzing of bastion's body decoders with atheris (libFuzzer).

Arbitrary bytes go straight into ``bastion.pipeline.stages.decoding`` and
``bastion.http.multipart`` — JSON bodies, urlencoded forms and multipart bodies with
arbitrary boundaries, in chunks of arbitrary size — exactly as the pipeline calls them,
but without HTTP: the body kind from a Content-Type header, ``decoding.read`` (the
capped stream, the flat fields, the reserved ``_csrf``/``_next``/``_bound``), then
``decoding.validate`` into two input models (one with text, numbers, lists, checkboxes
and a nested model; one with uploads).

Only bastion's own refusals (``ActionError``: 400, 413, 415, 422) may come out; any other
exception, a hang (``-timeout``) or running out of memory (``-rss_limit_mb``) is a crash,
saved under ``build/fuzz/``.

    make fuzz                       # FUZZ_SECONDS (300) of fuzzing
    .venv/bin/python fuzz/fuzz_decoding.py -max_total_time=60 build/fuzz/corpus fuzz/seeds

An input is framed as: one byte for the kind (JSON, form, multipart), one for the chunk
size, and for multipart one for the boundary's length and the boundary; the rest is the
body. ``fuzz/seeds/`` holds one well-formed input of each kind.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

try:
    import atheris
except ImportError:  # pragma: no cover - only without the fuzz extra
    sys.exit(
        "fuzz_decoding needs atheris: pip install -e '.[fuzz]' (a wheel exists for "
        "Linux x86-64 and CPython 3.11+; elsewhere it builds with clang and libFuzzer)"
    )

# bastion's modules, and the multipart parser under them, are instrumented for coverage.
with atheris.instrument_imports(include=["bastion", "python_multipart", "starlette.formparsers"]):
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.datastructures import Headers

    from bastion import ActionError, Bastion, Limits, Upload, public
    from bastion.pipeline.stages import decoding, transport
    from bastion.stores import MemoryStore

T = TypeVar("T")

logging.disable(logging.CRITICAL)  # the parsers' and bastion's warnings, at every refusal

KINDS = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inner(Strict):
    city: str = Field(max_length=30)
    zip: int | None = None


class Everything(Strict):
    name: str = Field(min_length=1, max_length=50)
    age: int | None = None
    score: float = 0.0
    tags: list[str] = Field(default=[], max_length=5)
    agree: bool = False
    inner: Inner | None = None


class Files(Strict):
    title: str = Field(default="", max_length=50)
    file: Upload
    more: list[Upload] = []


class Nothing(BaseModel):
    pass


app = Bastion(
    secret_key="fuzz-decoding-key-0123456789-abcdefghijklmnopqrstuvwxyz",  # noqa: S106
    allowed_origins=["http://127.0.0.1"],
    store=MemoryStore(),
    audit_sinks=(),
    limits=Limits(max_body_bytes=64 * 1024, max_fields=100, max_files=5, max_file_bytes=8192),
)


@app.action(policy=public, rate=None)
def everything(data: Everything) -> Nothing:
    return Nothing()


@app.action(policy=public, rate=None)
def files(data: Files) -> Nothing:
    return Nothing()


SPECS = (app.registry.get("everything"), app.registry.get("files"))
loop = asyncio.new_event_loop()


def run(awaitable: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await awaitable

    return loop.run_until_complete(wrapped())


def frame(data: bytes) -> tuple[str, int, bytes]:
    """(Content-Type, chunk size, body) from one fuzzer input."""
    if len(data) < 2:
        return KINDS[0], 0, data
    kind, chunk, rest = KINDS[data[0] % 3], data[1], data[2:]
    if kind != "multipart/form-data":
        return kind, chunk, rest
    size = rest[0] % 80 if rest else 0
    boundary, body = rest[1 : 1 + size], rest[1 + size :]
    quoted = data[0] % 2 == 0
    value = b'"' + boundary + b'"' if quoted else boundary
    return f"{kind}; boundary={value.decode('latin-1')}", chunk, body


class Receive:
    """An ASGI ``receive`` handing out the body in the chunks given, then a disconnect."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.pending = list(chunks)

    async def __call__(self) -> dict[str, Any]:
        if not self.pending:
            return {"type": "http.disconnect"}
        piece = self.pending.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(self.pending)}


def decode(content_type: str, chunk: int, body: bytes) -> None:
    values = {"content-type": content_type}
    if chunk % 2 == 0:  # else no Content-Length: the cap is found while streaming
        values["content-length"] = str(len(body))
    headers = Headers(values)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    for spec in SPECS:
        receive = Receive(chunks)
        try:
            kind = transport.body_kind(spec, headers)
            flat = run(decoding.read(spec, kind, headers, receive))
        except ActionError:
            continue
        try:
            model = decoding.validate(spec, flat)
            if not isinstance(model, spec.input_model):
                raise AssertionError(f"validate gave a {type(model).__name__}")
        except ActionError:
            pass
        finally:
            flat.close()


def test_one_input(data: bytes) -> None:
    decode(*frame(data))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
