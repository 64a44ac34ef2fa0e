"""What the probe finds and learns (forms, fields, results, the report), and its limits."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

MAX_REQUESTS_PER_FORM: Final = 60


MAX_REQUESTS: Final = 2000


MAX_DEPTH: Final = 3


MAX_REDIRECTS: Final = 5


REQUEST_TIMEOUT: Final = 10.0
"""Seconds one request may take; no answer in that time is itself a failure (a hang)."""


MAX_READ: Final = 1024 * 1024
"""Bytes of any reply the probe reads."""


OVERSIZED: Final = 100_000
"""Characters put in every text field: more than any sane field allows."""


HUGE: Final = 2 * 1024 * 1024 + 1
"""Bytes of the over-sized body: twice bastion's default cap, and one more."""


DEEP: Final = 5000
"""Nesting of the deep JSON: past bastion's limit, pydantic's and Python's recursion limit."""


FOREIGN: Final = "https://probe.invalid"
"""Another origin, under a name that never resolves (RFC 6761)."""


TEXT_INPUTS: Final = frozenset({"", "text", "search", "email", "url", "tel", "password"})
"""Input types that take free text (and ``textarea``)."""


_PLACEHOLDERS: Final = {
    "email": "probe@example.com",
    "url": "https://example.com/",
    "tel": "+10000000000",
    "number": "1",
    "range": "1",
    "date": "2000-01-01",
    "datetime-local": "2000-01-01T00:00",
    "time": "00:00",
    "month": "2000-01",
    "week": "2000-W01",
    "color": "#000000",
}
"""What the probe types into an empty required field, so the rest of the form is valid."""


_NOT_PAGES: Final = re.compile(
    r"\.(?:css|js|mjs|map|png|jpe?g|gif|svg|ico|webp|avif|woff2?|ttf|otf|pdf|zip|gz|txt|xml|json)$",
    re.IGNORECASE,
)


_SIGN_OUT: Final = re.compile(r"log-?out|sign-?out", re.IGNORECASE)
"""Links a crawler must not follow: a GET there may end the probe's session."""


_REFUSED_BY_GUARDS: Final = frozenset({"csrf_failed", "no_session", "cross_origin"})


_NEEDS_SIGN_IN: Final = frozenset({"unauthorized", "unauthenticated", "forbidden"})


_DETAIL_KEYS: Final = frozenset({"debug", "traceback", "stack", "stacktrace", "exception"})


_PYTHON_FILE: Final = re.compile(r"[\w./\\-]*\w\.py\b")


_EXCEPTION_NAME: Final = re.compile(
    r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception)\b|\b(?:StopIteration|KeyboardInterrupt)\b"
)


_PAGE_TRACEBACK: Final = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d")


_CRLF_NEXT: Final = "/\r\nSet-Cookie: probe_injected=1\r\nX-Probe-Injected: 1"


_OFFSITE_NEXT: Final = "//probe.invalid/"


Status = Literal["PASS", "FAIL", "SKIP"]


class ProbeError(Exception):
    """The probe cannot start: a refused host, a bad URL or an app that does not answer."""


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    value: str
    kind: str
    """The input's type (``text``, ``hidden``, …), or ``textarea`` / ``select`` / ``file``."""
    required: bool = False

    @property
    def is_text(self) -> bool:
        """Free text a visitor types (bastion's own ``_`` fields excluded)."""
        free = self.kind in TEXT_INPUTS or self.kind == "textarea"
        return free and not self.name.startswith("_")


@dataclass(slots=True)
class Form:
    page: str
    """The URL of the page the form was found on."""
    action: str
    """The absolute URL the form posts to."""
    fields: list[FormField] = field(default_factory=list)
    multipart: bool = False
    label: str = ""

    @property
    def token(self) -> str | None:
        return next((f.value for f in self.fields if f.name == "_csrf"), None)

    @property
    def text_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.is_text]

    def values(self) -> list[tuple[str, str]]:
        """What a visitor submits: the form's values, empty required fields filled in."""
        pairs = []
        for f in self.fields:
            value = f.value
            if not value and f.required and f.kind not in ("file", "hidden"):
                value = _PLACEHOLDERS.get(f.kind, "probe")
            pairs.append((f.name, value))
        return pairs


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    target: str
    """``form N``, ``page /path`` or ``crawl``."""
    case: str
    expected: str
    got: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(slots=True)
class Report:
    url: str
    pages: list[str] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not any(r.status == "FAIL" for r in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "ok": self.ok,
            "summary": {
                "pass": self.count("PASS"),
                "fail": self.count("FAIL"),
                "skip": self.count("SKIP"),
                "pages": len(self.pages),
                "forms": len(self.forms),
                "requests": self.requests,
            },
            "pages": self.pages,
            "forms": [
                {
                    "label": f.label,
                    "page": f.page,
                    "action": f.action,
                    "fields": [x.name for x in f.fields if not x.name.startswith("_")],
                }
                for f in self.forms
            ],
            "results": [r.as_dict() for r in self.results],
        }

    def text(self) -> str:
        lines = [f"bastion probe {self.url}", ""]
        lines.append(f"pages ({len(self.pages)}): {', '.join(_path(p) for p in self.pages)}")
        for form in self.forms:
            names = ", ".join(x.name for x in form.fields if not x.name.startswith("_"))
            lines.append(
                f"{form.label:<8} POST {_path(form.action)}  on {_path(form.page)}"
                f"  fields: {names or 'none'}"
            )
        lines.append("")
        rows = [(r.target, r.case, r.expected) for r in self.results]
        t, c, e = (max((len(row[i]) for row in rows), default=0) for i in range(3))
        for r in self.results:
            lines.append(
                f"{r.status}  {r.target:<{t}}  {r.case:<{c}}  expected {r.expected:<{e}}"
                f"  got {r.got}"
            )
        lines.append("")
        verdict = "all pass" if self.ok else "FAILED"
        lines.append(
            f"{verdict}: {self.count('PASS')} pass, {self.count('FAIL')} fail, "
            f"{self.count('SKIP')} skip; {len(self.forms)} forms on {len(self.pages)} pages, "
            f"{self.requests} requests"
        )
        return "\n".join(lines) + "\n"


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
