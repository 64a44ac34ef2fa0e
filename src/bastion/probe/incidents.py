"""The payload shapes of the model's incidents (docs/security-model.md), as bodies to send.

Each body is bounded (a few hundred KiB, the largest under 1 MiB) and each is one case:
the server must refuse it with a 4xx in its envelope, within the case budget.

- React2Shell (CVE-2025-55182): a body read as a graph of objects with references
  between them (``$1:__proto__:then``), prototype keys, numbers too big to parse.
- CVE-2025-55184 / CVE-2026-23864 / CVE-2024-56332: bodies that hang or exhaust a parser
  — deep nesting, many fields, one long field name, multipart boundaries that almost
  match, many parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Final
from urllib.parse import urlencode

from .model import DEEP

__all__ = ["bodies"]

MANY_FIELDS: Final = 50_000
LONG_NAME: Final = 400_000
DIGITS: Final = 100_000
NEAR_BOUNDARIES: Final = 7_000
PARTS: Final = 10_000
BOUNDARY: Final = "probe" + "-" * 60 + "b0und"
"""70 characters, the most RFC 2046 allows: every near-miss costs the parser the most."""


def bodies(
    values: Mapping[str, str], pairs: list[tuple[str, str]], first: str
) -> Iterator[tuple[str, bytes, str]]:
    """(case, body, ``json`` | ``form`` | a content type). ``values`` is what a script
    sends, ``pairs`` the form with its token, ``first`` a text field's name."""
    graph = {
        **values,
        "0": ["$@1"],
        "1": {
            "then": "$1:__proto__:then",
            "status": "resolved_model",
            "reason": -1,
            "value": '{"then": "$B1337"}',
            "_response": {"_prefix": "probe", "_formData": {"get": "$1:constructor:constructor"}},
        },
    }
    proto = {"__proto__": {"admin": True}, "constructor": {"prototype": {"admin": True}}}
    yield (
        "crafted: __proto__/constructor keys",
        json.dumps({**values, **proto, "__class__": "probe"}).encode(),
        "json",
    )
    yield "crafted: reference graph (Flight-style)", json.dumps(graph).encode(), "json"
    yield (
        "crafted: huge number",
        b'{"' + first.encode() + b'": 1' + b"9" * DIGITS + b"}",
        "json",
    )
    form = urlencode(pairs)
    yield (
        "crafted: reference parts (multipart)",
        _multipart([*pairs, ("0", '["$@1"]'), ("1", json.dumps(graph["1"]))]),
        f"multipart/form-data; boundary={BOUNDARY}",
    )
    yield (
        "dos: deep nesting (JSON)",
        b'{"' + first.encode() + b'":' + b"[" * DEEP + b"]" * DEEP + b"}",
        "json",
    )
    yield "dos: deep field name", (form + "&" + first + "[a]" * DEEP + "=1").encode(), "form"
    many = "&".join(f"f{i}=" for i in range(MANY_FIELDS))
    yield "dos: many fields", (form + "&" + many).encode(), "form"
    yield "dos: long field name", (form + "&" + "n" * LONG_NAME + "=1").encode(), "form"
    near = ("\r\n--" + BOUNDARY[:-1] + "x") * NEAR_BOUNDARIES
    yield (
        "dos: multipart near-boundaries, unclosed",
        _multipart(pairs, close=False) + _part(first, near),
        f"multipart/form-data; boundary={BOUNDARY}",
    )
    yield (
        "dos: multipart many parts",
        _multipart([*pairs, *((f"p{i}", "") for i in range(PARTS))]),
        f"multipart/form-data; boundary={BOUNDARY}",
    )


def _part(name: str, value: str) -> bytes:
    quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n{value}\r\n'
    ).encode()


def _multipart(pairs: list[tuple[str, str]], *, close: bool = True) -> bytes:
    body = b"".join(_part(name, value) for name, value in pairs)
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")
