"""Pipeline stage 19, the taint guard: values that must never leave the server.

``bastion.taint(value, reason)`` marks a process-wide secret (an API key, a signing
key); ``ctx.taint(value, reason)`` marks one for the current call (a password hash the
handler loaded). The output stage refuses any reply whose body, flash or redirect URL
holds a tainted value — found as is, JSON-escaped, HTML-escaped (a fragment rendered by
Jinja, in text or an attribute), in Jinja's ``tojson`` spelling or percent-encoded,
anywhere, however deeply nested — and answers a generic 500 whose log line names the
reason, never the value.

The same values are masked in bastion's logs by ``RedactingFilter``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import weakref
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = ["RedactingFilter", "TaintSet", "TaintedOutput", "redactor", "taint_env"]

MIN_TAINT_LENGTH: Final = 6
"""Shorter values would match innocent text everywhere (and are no secret anyway)."""


class TaintedOutput(Exception):
    """A reply held a tainted value. Its message names the reason only."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the reply held a value tainted as {reason!r}; it was not sent")
        self.reason = reason


class TaintSet:
    """Tainted values and why, each also in the spellings a JSON encoder gives it."""

    def __init__(self) -> None:
        self._needles: dict[bytes, str] = {}
        self._values: set[bytes] = set()

    def add(self, value: str | bytes, reason: str) -> None:
        text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        if not isinstance(text, str) or len(text) < MIN_TAINT_LENGTH:
            raise ValueError(f"only text of {MIN_TAINT_LENGTH}+ characters can be tainted")
        raw = text.encode("utf-8", "surrogateescape")
        self._values.add(raw)
        for spelling in _spellings(text):
            self._needles[spelling.encode("utf-8", "surrogateescape")] = reason

    def find(self, *blobs: bytes | str | None) -> str | None:
        """The reason of the first tainted value in any of ``blobs`` (percent-encoded
        ones too, as in a redirect URL), or ``None``."""
        if not self._needles:
            return None
        for blob in blobs:
            if not blob:
                continue
            data = blob.encode("utf-8", "surrogateescape") if isinstance(blob, str) else blob
            spellings = (data, unquote_to_bytes(data)) if b"%" in data else (data,)
            for spelling in spellings:
                for needle, reason in self._needles.items():
                    if needle in spelling:
                        return reason
        return None

    def values(self) -> Iterable[str]:
        return (n.decode("utf-8", "surrogateescape") for n in self._needles)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def __len__(self) -> int:
        """How many values are tainted (not how many spellings are searched)."""
        return len(self._values)

    def __repr__(self) -> str:
        return f"TaintSet(values={len(self._values)})"  # never the values


def _spellings(text: str) -> set[str]:
    """Every way ``text`` can stand in a reply: as is; inside a JSON string (json.dumps
    writes non-ASCII as \\uXXXX, pydantic as UTF-8; both escape quotes and control
    characters); HTML-escaped as MarkupSafe (Jinja's autoescape: ``&#34;``, ``&#39;``) and
    the standard library (``&quot;``, ``&#x27;``) write it, in text or an attribute, JSON
    included; and as Jinja's ``tojson`` writes it (``<>&'`` as \\u003c …)."""
    in_json = {json.dumps(text, ensure_ascii=ascii_only)[1:-1] for ascii_only in (True, False)}
    found = {text, *in_json}
    for plain in (text, *in_json):
        stdlib = html.escape(plain, quote=True)
        found |= {stdlib, stdlib.replace("&quot;", "&#34;").replace("&#x27;", "&#39;")}
    for encoded in in_json:
        found.add(
            encoded.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )
    return found


def taint_env(taints: TaintSet, name: str, reason: str | None = None) -> str:
    """Read a secret from the environment and taint it in one step."""
    value = os.environ.get(name)
    if not value:
        raise KeyError(f"environment variable {name} is not set")
    taints.add(value, reason or name)
    return value


_SECRET_PAIR: Final = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization|cookie|"
    r"set-cookie|session|csrf)(\"?'?\s*[:=]\s*\"?'?)((?:bearer |basic )?[^\s\"'&,;}\]]+)"
)


class RedactingFilter(logging.Filter):
    """Masks ``password=…``-like values and every process-wide tainted value in records.

    One instance (``redactor``) sits on bastion's loggers; add it to your own handlers
    to cover your logs too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.taint_sets: weakref.WeakSet[TaintSet] = weakref.WeakSet()

    def redact(self, text: str) -> str:
        text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
        for taints in list(self.taint_sets):
            for value in taints.values():
                text = text.replace(value, "[tainted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


redactor: Final = RedactingFilter()
for _name in ("bastion", "bastion.security", "bastion.audit"):
    logging.getLogger(_name).addFilter(redactor)
