"""What the probe finds and learns (forms, fields, results, the report), and its limits."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

MAX_REQUESTS_PER_FORM: Final = 80
"""Requests one identity may send about one form (its page reloads included)."""


MAX_REQUESTS: Final = 5000
"""Requests in all (``--max-requests``), every identity's crawl and cases together."""


MAX_DEPTH: Final = 3


MAX_REDIRECTS: Final = 5


REQUEST_TIMEOUT: Final = 10.0
"""Seconds one request may take; no answer in that time is itself a failure (a hang)."""


CASE_BUDGET: Final = 3.0
"""Seconds an incident's payload may cost the server (``--case-budget``): a slower answer
fails its case even when it is a refusal, for a slow refusal is the denial of service."""


ANONYMOUS: Final = "anonymous"


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


_SIGN_OUT: Final = re.compile(r"log-?out|sign-?out|log_out|sign_out", re.IGNORECASE)
"""Links a crawler must not follow (a GET there may end the probe's session), and forms
it sends forged calls only to, last."""


_ACCEPTED_INPUT: Final = frozenset({"invalid", "bound_invalid"})
"""bastion refusals that prove the request got past origin, token, rate and policy: only
then are the fields read (``invalid``) and the sealed values opened (``bound_invalid``)."""


_REFUSED_BY_GUARDS: Final = frozenset(
    {"csrf_failed", "no_session", "cross_origin", "forwarding_refused"}
)
"""bastion's refusals about where a call comes from: its origin, token or forwarding headers."""


_NEEDS_SIGN_IN: Final = frozenset({"unauthorized", "unauthenticated", "forbidden"})


_DETAIL_KEYS: Final = frozenset({"debug", "traceback", "stack", "stacktrace", "exception"})


_PYTHON_FILE: Final = re.compile(r"(?<![\w./\\-])[\w./\\-]{0,300}\w\.py\b")
"""A path to a Python file, anchored at the start of its run of path characters and
bounded, so that a reply echoing a 400,000-character field name costs no backtracking."""


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
    maxlength: int | None = None

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
    sign_out: bool = False
    """A log-out form (by its id, text or action): only forged calls, after the rest."""
    script: bool = False
    """An action URL found outside a form (``data-*``, text): called as ``bastion.js``
    does, with JSON and the page's token in ``X-CSRF-Token``."""
    password: bool = False
    """The form has a password input."""
    name: str = ""
    """The action's name, when the schema (``--schema``) gives it."""
    schema: bool = False
    """Not on any page this identity rendered: probed from the schema, as a script calls it
    (``script`` too), with the control the schema allows (``control``)."""
    control: list[tuple[str, str]] | None = None
    """A schema action's harmless values (``[]``: ``{}``), or ``None``: ``no_control`` says why."""
    no_control: str = ""

    @property
    def token(self) -> str | None:
        return next((f.value for f in self.fields if f.name == "_csrf"), None)

    @property
    def text_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.is_text]

    def harmless(self) -> list[tuple[str, str]] | None:
        """Values the server must refuse for their content (422), so the call proves the
        guards let it through without running the action: a required field left empty, or
        one past its ``maxlength``. ``None`` when the form has neither. A schema action's
        are its schema's (``schema.SchemaAction.control``)."""
        if self.schema:
            return None if self.control is None else list(self.control)
        required = [f for f in self.fields if f.required and f.kind not in ("hidden", "file")]
        capped = [f for f in self.fields if f.maxlength is not None and f.is_text]
        if not required and not capped:
            return None
        pairs = self.values()
        if required:
            empty = {f.name for f in required}
            return [(n, "" if n in empty else v) for n, v in pairs]
        long = {f.name: "x" * ((f.maxlength or 0) + 1) for f in capped}
        return [(n, long.get(n, v)) for n, v in pairs]

    def values(self) -> list[tuple[str, str]]:
        """What a visitor submits: the form's values, empty required fields filled in. A
        schema action has no values of its own: none."""
        if self.schema:
            return []
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
    identity: str = ANONYMOUS
    """Whose session sent it (``--as NAME``)."""
    url: str = ""
    """The action's URL, or the page's: where a CI report points."""

    def as_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["rule"] = rule_for(self.case)[0]
        return data


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the probe is, for one run of the crawl and the cases."""

    name: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    """Never printed: read from the environment variable ``--password-env`` names."""
    cookies: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def signs_in(self) -> bool:
        return self.user is not None


@dataclass(slots=True)
class Seen:
    """What one identity reached: its pages, and the labels of the forms found there."""

    identity: str
    signed_in: bool = False
    pages: list[str] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    requests: int = 0
    from_schema: list[str] = field(default_factory=list)
    """Labels of the actions probed from the schema (on none of this identity's pages)."""
    reached: dict[str, str] = field(default_factory=dict)
    """Action path → how it was reached (``on a page``, ``past the guards (422 invalid)``,
    ``refused by policy (401 unauthorized)`` …)."""
    not_reached: dict[str, str] = field(default_factory=dict)
    """Action path → why not (every reply 429, 404, no token …)."""


@dataclass(slots=True)
class Report:
    url: str
    pages: list[str] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    requests: int = 0
    identities: list[Seen] = field(default_factory=list)
    expected_actions: list[str] = field(default_factory=list)
    """Action paths the app is known to have (``--schema`` a ``bastion schema``)."""
    names: dict[str, str] = field(default_factory=dict)
    """Action path → its name, from the schema."""
    waited: float = 0.0
    """Seconds spent waiting out ``Retry-After`` (``--max-wait``)."""

    @property
    def not_reached(self) -> list[str]:
        """Expected actions no identity reached."""
        reached = {p for seen in self.identities for p in seen.reached}
        if not self.identities:
            reached = {urlsplit(f.action).path for f in self.forms}
        return [p for p in self.expected_actions if p not in reached]

    @property
    def rate_limited(self) -> int:
        """Cases skipped because the app answered 429."""
        return sum(1 for r in self.results if r.status == "SKIP" and "rate-limited" in r.got)

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
                "rate_limited": self.rate_limited,
                "waited": round(self.waited, 1),
            },
            "identities": [
                {
                    "name": i.identity,
                    "signed_in": i.signed_in,
                    "pages": len(i.pages),
                    "forms": i.forms,
                    "from_schema": i.from_schema,
                    "reached": i.reached,
                    "not_reached": i.not_reached,
                    "requests": i.requests,
                }
                for i in self.identities
            ],
            "not_reached": self.not_reached,
            "pages": self.pages,
            "forms": [
                {
                    "label": f.label,
                    "page": f.page,
                    "action": f.action,
                    "fields": [x.name for x in f.fields if not x.name.startswith("_")],
                    "script": f.script,
                    "schema": f.schema,
                    "name": f.name or self.names.get(urlsplit(f.action).path, ""),
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
            named = form.name or self.names.get(urlsplit(form.action).path, "")
            where = "from the schema" if form.schema else f"on {_path(form.page)}"
            lines.append(
                f"{form.label:<8} POST {_path(form.action)}  {where}"
                f"  fields: {names or 'none'}" + (f"  ({named})" if named else "")
            )
        lines.append("")
        for seen in self.identities:
            how = "signed in" if seen.signed_in else "not signed in"
            lines.append(
                f"{seen.identity}: {how}, {len(seen.pages)} pages, {len(seen.forms)} actions"
                f" ({', '.join(seen.forms) or 'none'}), {seen.requests} requests"
            )
        for line in self.summary_lines():
            lines.append(line)
        if self.expected_actions:
            missing = self.not_reached
            lines.append(
                f"reached {len(self.expected_actions) - len(missing)} of"
                f" {len(self.expected_actions)} actions"
                + (f"; not reached: {', '.join(missing)}" if missing else "")
            )
        lines.append("")
        rows = [(r.identity, r.target, r.case, r.expected) for r in self.results]
        i, t, c, e = (max((len(row[n]) for row in rows), default=0) for n in range(4))
        for r in self.results:
            lines.append(
                f"{r.status}  {r.identity:<{i}}  {r.target:<{t}}  {r.case:<{c}}"
                f"  expected {r.expected:<{e}}  got {r.got}"
            )
        lines.append("")
        verdict = "all pass" if self.ok else "FAILED"
        lines.append(
            f"{verdict}: {self.count('PASS')} pass, {self.count('FAIL')} fail, "
            f"{self.count('SKIP')} skip ({self.rate_limited} rate-limited, 429; waited"
            f" {self.waited:.0f} s); {len(self.forms)} forms on {len(self.pages)} pages, "
            f"{self.requests} requests"
        )
        return "\n".join(lines) + "\n"

    def summary_lines(self) -> list[str]:
        """Per identity: actions found on pages, probed from the schema, reached, not reached
        (with the reasons); only when a schema was given."""
        if not self.expected_actions:
            return []
        lines = []
        for seen in self.identities:
            found = len(seen.forms) - len(seen.from_schema)
            missing = [p for p in self.expected_actions if p not in seen.reached]
            reasons = "; ".join(
                f"{self.names.get(p, _path(p))}: {seen.not_reached.get(p, 'not probed')}"
                for p in missing
            )
            policy = sum(1 for how in seen.reached.values() if how.startswith("refused by policy"))
            lines.append(
                f"{seen.identity}: {found} found on pages, {len(seen.from_schema)} from the"
                f" schema, reached {len(self.expected_actions) - len(missing)} of"
                f" {len(self.expected_actions)} ({policy} refused by policy)"
                + (f"; not reached: {reasons}" if missing else "")
            )
        return lines


Level = Literal["error", "warning", "note"]

RULES: Final[tuple[tuple[str, str, Level, str, tuple[str, ...]], ...]] = (
    # (id, name, level, what it checks, the cases' prefixes)
    (
        "P001",
        "csrf-missing",
        "error",
        "Forged calls (no, forged or another session's token) are refused",
        ("csrf:",),
    ),
    (
        "P002",
        "origin-not-checked",
        "error",
        "Calls from another origin (foreign, null, malformed, cross-site) are refused",
        ("origin:",),
    ),
    (
        "P003",
        "cross-identity",
        "error",
        "A form rendered for one identity is refused in another's session",
        ("cross:",),
    ),
    (
        "P004",
        "control-failed",
        "error",
        "A harmless valid call gets through the guards, and a failing action says nothing",
        ("control:", "action:"),
    ),
    (
        "P005",
        "hostile-input",
        "error",
        "Malformed bodies are refused with a 4xx in the envelope",
        ("input:",),
    ),
    (
        "P006",
        "crafted-body",
        "error",
        "React2Shell-style bodies (prototype keys, references, huge numbers) are refused fast",
        ("crafted:",),
    ),
    (
        "P007",
        "parser-dos",
        "error",
        "Parser denial-of-service shapes are refused within the case budget",
        ("dos:",),
    ),
    (
        "P008",
        "host-header",
        "error",
        "No URL is built from the Host or X-Forwarded-Host header",
        ("host:",),
    ),
    (
        "P009",
        "internal-header",
        "error",
        "No header a client sends (x-middleware-subrequest …) skips a check",
        ("header:",),
    ),
    (
        "P010",
        "open-redirect",
        "error",
        "_next goes to a same-origin path, without header injection",
        ("redirect:",),
    ),
    (
        "P011",
        "leak-internals",
        "error",
        "No traceback, file path, debug key or exception name in a reply",
        ("leak: tracebacks", "leak: exception"),
    ),
    (
        "P012",
        "cookie-flags",
        "error",
        "Every cookie is HttpOnly and SameSite=Lax or Strict",
        ("leak: cookie",),
    ),
    (
        "P013",
        "cache-headers",
        "warning",
        "Action replies carry Cache-Control: no-store and nosniff",
        ("leak: no-store",),
    ),
    ("P014", "page-error", "error", "Pages answer below 500, without a traceback", ("page",)),
    (
        "P015",
        "probe-coverage",
        "error",
        "The probe signed in, found actions and ran every case",
        ("",),
    ),
)
"""The SARIF rules: each case maps to the first whose prefixes it starts with."""


def rule_for(case: str) -> tuple[str, str, Level]:
    """(rule id, name, level) of a case."""
    for rule_id, name, level, _, prefixes in RULES:
        if case.startswith(prefixes):
            return rule_id, name, level
    raise AssertionError("the last rule takes every case")  # pragma: no cover


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
