"""``bastion probe URL``: attack a running app's actions from the outside, as CI would.

The probe is black-box: it knows nothing of the app's code, only the protocol
(docs/security-model.md). It

1. crawls the app's pages from ``URL`` — ``GET`` only, same origin only, bounded in
   pages, depth and time — and collects the bastion forms on them (``data-bastion``,
   or an action under ``/_actions/``);
2. for each form's action runs a fixed set of cases, each with the refusal it expects:
   the CSRF matrix (no token, a forged token, another session's token, a foreign
   ``Origin``, ``Origin: null``, ``Sec-Fetch-Site: cross-site``, and one valid call
   as the control), the hostile-input corpus (malformed JSON, deep nesting, NaN,
   ``__proto__`` keys, NUL characters, invalid UTF-8, 100,000 characters in every
   text field, a wrong content type, bodies over 1 MiB, ``GET``, CR/LF and another
   host in ``_next``), and leak checks over every reply (tracebacks, file paths,
   exception names, ``debug`` details, cookie flags, ``no-store`` and ``nosniff``);
3. prints one line per case — PASS, FAIL or SKIP — and a summary.

It sends requests one at a time, at most ``MAX_REQUESTS_PER_FORM`` per form and
``MAX_REQUESTS`` in all, and refuses any host but loopback unless it is named in
``allow_hosts``. It submits each form the way a visitor would (the control and the
``_next`` cases may run the action), so point it at a test instance, not production.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Final, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

try:
    import httpx2 as httpx
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion probe speaks HTTP with httpx2: pip install 'bastion[probe]'"
    ) from missing

__all__ = [
    "Form",
    "FormField",
    "ProbeError",
    "Report",
    "Result",
    "check_target",
    "extract",
    "is_loopback",
    "origin_of",
    "probe",
    "same_origin",
]

ACTIONS_PREFIX: Final = "/_actions/"
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

_REFUSED_BY_GUARDS: Final = frozenset({"csrf_failed", "cross_origin"})
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


# --- what was found and what was learnt ---------------------------------------------------


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


# --- where the probe may go ---------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 — as written in the URL, never resolved."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme, 0)
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, base: str) -> bool:
    return origin_of(url) == origin_of(base) and origin_of(url)[0] in ("http", "https")


def check_target(url: str, allow_hosts: Sequence[str] = ()) -> str:
    """The origin to send as ``Origin`` (``scheme://host[:port]``); ``ProbeError`` for a
    URL the probe must not touch."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError(f"{url!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ProbeError(f"{url!r} has an invalid port") from None
    host = parts.hostname
    allowed = {h.lower().rstrip(".") for h in allow_hosts}
    if not is_loopback(host) and host.lower().rstrip(".") not in allowed:
        raise ProbeError(
            f"refusing to probe {host}: only loopback hosts (localhost, 127.0.0.0/8, ::1) "
            f"are probed unless --allow-host {host} names it"
        )
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"


# --- reading pages ------------------------------------------------------------------------


class _PageParser(HTMLParser):
    """Links and forms of one page; nothing is executed or fetched."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.forms: list[tuple[dict[str, str], list[FormField]]] = []
        self._form: list[FormField] | None = None
        self._textarea: tuple[str, bool, list[str]] | None = None
        self._select: tuple[str, bool, list[str], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "form":
            self._form = []
            self.forms.append((a, self._form))
        elif tag == "option" and self._select is not None and "disabled" not in a:
            (self._select[3] if "selected" in a else self._select[2]).append(a.get("value", ""))
        elif self._form is None or "name" not in a or "disabled" in a:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "reset", "image"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            value = a.get("value", "on" if kind in ("checkbox", "radio") else "")
            self._form.append(FormField(a["name"], value, kind, "required" in a))
        elif tag == "textarea":
            self._textarea = (a["name"], "required" in a, [])
        elif tag == "select":
            self._select = (a["name"], "required" in a, [], [])

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "textarea" and self._textarea is not None:
            name, required, text = self._textarea
            if self._form is not None:
                self._form.append(FormField(name, "".join(text), "textarea", required))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            name, required, options, selected = self._select
            chosen = (selected or options or [""])[0]
            if self._form is not None:
                self._form.append(FormField(name, chosen, "select", required))
            self._select = None


def extract(html: str, page_url: str) -> tuple[list[str], list[Form]]:
    """The same-origin pages a page links to, and its bastion forms.

    A form counts when it is marked ``data-bastion`` or posts under ``/_actions/``;
    forms posting to another origin, and ``GET`` forms, are never touched.
    """
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    links: list[str] = []
    for href in parser.links:
        url = urljoin(page_url, href.strip())
        parts = urlsplit(url)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
        if (
            same_origin(url, page_url)
            and not parts.path.startswith(ACTIONS_PREFIX)
            and not _NOT_PAGES.search(parts.path)
            and not _SIGN_OUT.search(parts.path)
            and url not in links
        ):
            links.append(url)
    forms: list[Form] = []
    for attrs, fields in parser.forms:
        action = urljoin(page_url, attrs.get("action", "").strip() or page_url)
        action = urlunsplit(urlsplit(action)._replace(fragment=""))
        marked = "data-bastion" in attrs or urlsplit(action).path.startswith(ACTIONS_PREFIX)
        if not marked or attrs.get("method", "get").lower() != "post":
            continue
        if not same_origin(action, page_url):
            continue
        multipart = attrs.get("enctype", "").lower() == "multipart/form-data"
        forms.append(Form(page=page_url, action=action, fields=list(fields), multipart=multipart))
    return links, forms


# --- talking to the app -------------------------------------------------------------------


class _OutOfBudget(Exception):
    """No more requests or time: the cases left are not run."""


@dataclass(slots=True)
class _Reply:
    case: str
    status: int | None
    """``None`` when no answer came; ``error`` says why."""
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str = ""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def envelope(self) -> dict[str, object] | None:
        """The error object of a bastion refusal ``{"ok": false, "error": {...}}``."""
        data = self.json()
        if not isinstance(data, dict) or data.get("ok") is not False:
            return None
        error = data.get("error")
        if not isinstance(error, dict):
            return None
        if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
            return None
        return error

    @property
    def code(self) -> str:
        envelope = self.envelope
        return str(envelope["code"]) if envelope is not None else ""

    def got(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        if self.envelope is not None:
            return f"{self.status} {self.code}"
        return f"{self.status}"


class _Http:
    """One cookie jar (one visitor) sending requests within the budget."""

    def __init__(self, budget: _Budget, transport: httpx.BaseTransport | None) -> None:
        self.budget = budget
        self.client = httpx.Client(
            follow_redirects=False,
            trust_env=False,  # loopback only: never through a proxy from the environment
            headers={"User-Agent": "bastion-probe"},
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def send(
        self,
        case: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
    ) -> _Reply:
        timeout = self.budget.spend()
        request = self.client.build_request(
            method, url, headers=dict(headers or {}), content=content, timeout=timeout
        )
        try:
            response = self.client.send(request, stream=True)
        except httpx.TimeoutException:
            return _Reply(case, None, error=f"no reply in {timeout:g} s")
        except httpx.HTTPError as exc:
            return _Reply(case, None, error=type(exc).__name__)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_READ:
                    break
        except httpx.HTTPError as exc:
            return _Reply(case, response.status_code, response.headers, bytes(body), str(exc))
        finally:
            response.close()
        return _Reply(case, response.status_code, response.headers, bytes(body))


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.total = 0
        self.form = 0

    def spend(self) -> float:
        """Count one request; its timeout, or ``_OutOfBudget``."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _OutOfBudget(f"the time budget of {self.seconds:g} s is spent")
        if self.total >= MAX_REQUESTS:
            raise _OutOfBudget(f"the budget of {MAX_REQUESTS} requests is spent")
        if self.form >= MAX_REQUESTS_PER_FORM:
            raise _OutOfBudget(f"the budget of {MAX_REQUESTS_PER_FORM} requests per form is spent")
        self.total += 1
        self.form += 1
        return min(REQUEST_TIMEOUT, left)


# --- the probe ----------------------------------------------------------------------------


def probe(
    url: str,
    *,
    allow_hosts: Sequence[str] = (),
    max_pages: int = 20,
    timeout: float = 120.0,
    transport: httpx.BaseTransport | None = None,
) -> Report:
    """Crawl ``url``'s origin, probe every bastion form found; ``ProbeError`` if the URL is
    refused (before any request) or its first page does not answer."""
    origin = check_target(url, allow_hosts)
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    report = Report(url)
    budget = _Budget(timeout)
    http = _Http(budget, transport)
    try:
        forms = _crawl(http, url, max_pages, report)
        if not report.pages:
            raise ProbeError(f"{url} does not answer with a page")
        if not forms:
            report.results.append(
                Result("FAIL", "crawl", "find bastion forms", "at least one", "none found")
            )
        for number, form in enumerate(forms, 1):
            form.label = f"form {number}"
            report.forms.append(form)
        for form in forms:
            budget.form = 0
            _FormProbe(http, form, origin, report.results, transport).run()
    finally:
        report.requests = budget.total
        http.close()
    return report


def _crawl(http: _Http, start: str, max_pages: int, report: Report) -> list[Form]:
    """Breadth first from ``start``: same-origin GETs only, ``MAX_DEPTH`` links deep."""
    queue: list[tuple[str, int]] = [(start, 0)]
    seen = {start}
    forms: dict[str, Form] = {}
    while queue and len(report.pages) < max_pages:
        url, depth = queue.pop(0)
        try:
            reply, final = _get_page(http, "crawl", url)
        except _OutOfBudget as exc:
            if not report.pages:
                raise ProbeError(str(exc)) from None
            report.results.append(Result("FAIL", "crawl", "crawl", "within budget", str(exc)))
            break
        if reply is None or final in report.pages:
            continue  # off-origin, or a page already read through a redirect
        if reply.status is None and not report.pages:
            raise ProbeError(f"{start} does not answer: {reply.error}")
        report.pages.append(final)
        seen.add(final)
        _check_page(reply, final, report.results)
        content_type = reply.headers.get("content-type", "")
        if reply.status is None or not content_type.startswith(("text/html", "application/xhtml")):
            continue
        links, found = extract(reply.text, final)
        for form in found:
            forms.setdefault(urlsplit(form.action).path, form)
        if depth < MAX_DEPTH:
            for link in links:
                if link not in seen:
                    seen.add(link)
                    queue.append((link, depth + 1))
    return list(forms.values())


def _get_page(http: _Http, case: str, url: str) -> tuple[_Reply | None, str]:
    """GET a page as a browser would, following same-origin redirects only."""
    for _ in range(MAX_REDIRECTS + 1):
        reply = http.send(case, "GET", url, headers={"Accept": "text/html"})
        location = reply.headers.get("location")
        if reply.status is None or reply.status not in (301, 302, 303, 307, 308) or not location:
            return reply, url
        target = urljoin(url, location)
        if not same_origin(target, url):
            return None, url  # never off-origin
        url = target
    return None, url


def _check_page(reply: _Reply, url: str, results: list[Result]) -> None:
    target = f"page {_path(url)}"
    expected = "< 500, no traceback, cookie flags"
    problems = []
    if reply.status is None:
        problems.append(reply.got())
    elif reply.status >= 500:
        problems.append(f"{reply.status}")
    if _PAGE_TRACEBACK.search(reply.text):
        problems.append("a traceback in the page")
    problems.extend(_cookie_problems(reply))
    if problems:
        results.append(Result("FAIL", target, "page", expected, "; ".join(problems)))
    else:
        results.append(Result("PASS", target, "page", expected, f"{reply.status}"))


class _FormProbe:
    """Every case against one form's action, then the leak checks over their replies."""

    def __init__(
        self,
        http: _Http,
        form: Form,
        origin: str,
        results: list[Result],
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.http = http
        self.form = form
        self.origin = origin
        self.results = results
        self.transport = transport
        self.replies: list[_Reply] = []
        self.token = form.token or ""

    def run(self) -> None:
        try:
            self._refresh()
            self._csrf_matrix()
            self._hostile_inputs()
            self._redirects()
        except _OutOfBudget as exc:
            self._result("FAIL", "probe incomplete", "every case run", str(exc))
        self._leaks()

    # -- helpers

    def _result(self, status: Status, case: str, expected: str, got: str) -> None:
        self.results.append(Result(status, self.form.label, case, expected, got))

    def _refresh(self) -> None:
        """Load the form's page again, for a token that is fresh for this session."""
        reply, _ = _get_page(self.http, "reload the page", self.form.page)
        if reply is not None and reply.status == 200:
            self.token = _token_on(reply, self.form) or self.token

    def _headers(self, *, json_body: bool = False, token: str | None = None) -> dict[str, str]:
        headers = {"Origin": self.origin, "Accept": "application/json"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if token:
            headers["X-CSRF-Token"] = token
        return headers

    def _fields(
        self, token: str | None, replace: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """The form's values with ``token`` as ``_csrf`` (none if ``None``)."""
        pairs = [(n, v) for n, v in self.form.values() if n != "_csrf"]
        if replace:
            pairs = [(n, replace.get(n, v)) for n, v in pairs]
            pairs += [(n, v) for n, v in replace.items() if n not in dict(pairs)]
        if token is not None:
            pairs.insert(0, ("_csrf", token))
        return pairs

    def _post_form(
        self, case: str, pairs: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> _Reply:
        """The form's fields, encoded as the browser would (multipart if the form says so)."""
        if self.form.multipart:
            body, content_type = _multipart(pairs, self.form)
        else:
            body, content_type = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
        return self._send(case, "POST", body, {**headers, "Content-Type": content_type})

    def _send(
        self,
        case: str,
        method: str,
        content: bytes | Iterator[bytes] | None,
        headers: Mapping[str, str],
    ) -> _Reply:
        reply = self.http.send(case, method, self.form.action, headers=headers, content=content)
        self.replies.append(reply)
        return reply

    # -- 1. the CSRF matrix

    def _csrf_matrix(self) -> None:
        """Forged calls, each refused (403, or 401/403 for an action that needs sign-in);
        then the control: the same call done right must get through."""
        other = self._other_session_token()
        cases: list[tuple[str, str | None, dict[str, str]]] = [
            ("csrf: no token", None, {}),
            ("csrf: forged token", secrets.token_urlsafe(64), {}),
            ("csrf: token of another session", other, {}),
            ("origin: foreign Origin", self.token, {"Origin": FOREIGN}),
            ("origin: Origin null", self.token, {"Origin": "null"}),
            ("origin: Sec-Fetch-Site cross-site", self.token, {"Sec-Fetch-Site": "cross-site"}),
        ]
        for case, token, extra in cases:
            if case == "csrf: token of another session" and other is None:
                self._result("SKIP", case, "403", "a second visitor got no token")
                continue
            reply = self._post_form(case, self._fields(token), {**self._headers(), **extra})
            self._expect_refusal(case, reply)
        self._control()

    def _other_session_token(self) -> str | None:
        """A token rendered for a second visitor (a fresh cookie jar)."""
        other = _Http(self.http.budget, self.transport)
        try:
            reply, _ = _get_page(other, "second visitor", self.form.page)
        finally:
            other.close()
        if reply is None or reply.status != 200:
            return None
        token = _token_on(reply, self.form)
        return token if token and token != self.token else None

    def _expect_refusal(self, case: str, reply: _Reply) -> None:
        if reply.status in (401, 403):
            self._result("PASS", case, "403", reply.got())
        else:
            self._result("FAIL", case, "403", reply.got())

    def _control(self) -> None:
        case, expected = "control: valid same-origin call", "passes origin and CSRF checks"
        if not self.form.token:
            self._result("SKIP", case, expected, "the form carries no _csrf token")
            return
        reply = self._post_form(case, self._fields(self.token), self._headers())
        if reply.status is None:
            self._result("FAIL", case, expected, reply.got())
        elif reply.status == 429:
            self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            hint = f"; is {self.origin} in the app's allowed origins?"
            self._result("FAIL", case, expected, reply.got() + hint)
        elif reply.status in (401, 403) and (reply.code in _NEEDS_SIGN_IN or not reply.code):
            self._result("SKIP", case, expected, f"{reply.got()}: needs sign-in")
        elif reply.status >= 500 and not _generic_failure(reply):
            self._result("FAIL", case, expected, f"{reply.got()} saying more than a digest")
        elif reply.status >= 500:
            self._result("PASS", case, expected, f"{reply.got()} (the action failed; generic)")
        else:
            self._result("PASS", case, expected, reply.got())

    # -- 2. hostile input

    def _hostile_inputs(self) -> None:
        """Each body must be refused with a 4xx in the envelope: never a 5xx, never a hang."""
        self._oversized()
        text = self.form.text_fields
        first = (text[0] if text else "probe").encode()
        # A script's JSON body carries the input and ``_bound``; never ``_csrf`` or ``_next``.
        values = {n: v for n, v in self._fields(None) if n != "_next"}
        nul = {name: "probe\x00" for name in text} or {"probe": "probe\x00"}
        proto = {"__proto__": {"admin": True}, "constructor": {"prototype": {"admin": True}}}
        form = urlencode(self._fields(self.token)).encode()
        prefix = form + b"&" + first + b"="
        as_json = self._headers(json_body=True, token=self.token)
        as_form = self._headers() | {"Content-Type": "application/x-www-form-urlencoded"}
        as_text = self._headers(token=self.token) | {"Content-Type": "text/plain"}
        cases: list[tuple[str, bytes, dict[str, str]]] = [
            ("input: malformed JSON", b'{"' + first + b'": ', as_json),
            (
                "input: deep nesting",
                b'{"' + first + b'":' + b"[" * DEEP + b"]" * DEEP + b"}",
                as_json,
            ),
            ("input: NaN", b'{"' + first + b'": NaN}', as_json),
            (
                "input: __proto__/__class__ keys",
                json.dumps({**values, **proto, "__class__": "probe"}).encode(),
                as_json,
            ),
            ("input: NUL in JSON", json.dumps({**values, **nul}).encode(), as_json),
            (
                "input: NUL in form fields",
                urlencode(self._fields(self.token, nul)).encode(),
                as_form,
            ),
            ("input: invalid UTF-8", prefix + b"\xff\xfe\xfd", as_form),
            ("input: invalid UTF-8 (%-encoded)", prefix + b"%FF%FE%FD", as_form),
            ("input: wrong content type", form, as_text),
        ]
        for case, body, headers in cases:
            self._expect_bad_input(case, self._send(case, "POST", body, headers))
        # Over the cap: declared, then chunked (only the bytes that arrive can be counted).
        case = "input: body over 1 MiB"
        reply = self._send(case, "POST", prefix + b"a" * HUGE, as_form)
        self._expect_bad_input(case, reply, statuses={413})
        case = "input: body over 1 MiB, chunked"
        reply = self._send(case, "POST", _chunks(prefix, HUGE), as_form)
        self._expect_bad_input(case, reply, statuses={413})
        case = "input: GET on the action"
        reply = self._send(case, "GET", None, self._headers(token=self.token))
        self._expect_bad_input(case, reply, statuses={405})

    def _oversized(self) -> None:
        case = f"input: {OVERSIZED:,} chars in text fields"
        expected = "4xx naming every text field"
        text = self.form.text_fields
        if not text:
            self._result("SKIP", case, expected, "the form has no text field")
            return
        big = dict.fromkeys(text, "x" * OVERSIZED)
        reply = self._post_form(case, self._fields(self.token, big), self._headers())
        if reply.status is None or reply.status >= 500:
            self._result("FAIL", case, expected, reply.got())
        elif reply.status == 429:
            self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            self._result("SKIP", case, expected, f"{reply.got()}: the input was never read")
        elif reply.status < 400:
            accepted = ", ".join(text)
            self._result(
                "FAIL", case, expected, f"{reply.got()}: accepted in {accepted} (unbounded field)"
            )
        elif reply.envelope is None:
            self._result("FAIL", case, expected, f"{reply.got()} without the bastion envelope")
        else:
            named = reply.envelope.get("fields")
            if reply.status == 422 and isinstance(named, dict):
                loose = [n for n in text if not any(k == n or k.startswith(n + ".") for k in named)]
                if loose:
                    self._result(
                        "FAIL",
                        case,
                        expected,
                        f"{reply.got()}, but accepted in {', '.join(loose)} (unbounded field)",
                    )
                    return
            self._result("PASS", case, expected, reply.got())

    def _expect_bad_input(
        self, case: str, reply: _Reply, *, statuses: set[int] | None = None
    ) -> None:
        """A refusal: a 4xx (one of ``statuses`` if given) with the bastion envelope."""
        expected = "/".join(map(str, sorted(statuses))) if statuses else "4xx"
        expected += " with the envelope"
        if reply.status == 429 and statuses != {429}:
            self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            self._result("SKIP", case, expected, f"{reply.got()}: the input was never read")
        elif reply.status is None or not 400 <= reply.status < 500:
            self._result("FAIL", case, expected, reply.got())
        elif reply.envelope is None:
            self._result("FAIL", case, expected, f"{reply.got()} without the bastion envelope")
        elif statuses and reply.status not in statuses:
            if self.form.multipart and 413 in statuses:
                self._result("SKIP", case, expected, f"{reply.got()}: an upload form's cap")
            else:
                self._result("FAIL", case, expected, reply.got())
        else:
            self._result("PASS", case, expected, reply.got())

    # -- 3. where a plain form post goes next

    def _redirects(self) -> None:
        for case, value in (
            ("redirect: CR/LF in _next", _CRLF_NEXT),
            ("redirect: //host in _next", _OFFSITE_NEXT),
        ):
            expected = "same-origin Location, no injection"
            # A plain form post, as a browser without JavaScript sends it: no Accept: JSON.
            reply = self._post_form(
                case, self._fields(self.token, {"_next": value}), {"Origin": self.origin}
            )
            location = reply.headers.get("location")
            if reply.status is None or (reply.status >= 500 and not _generic_failure(reply)):
                self._result("FAIL", case, expected, reply.got())
            elif reply.status == 429:
                self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
            elif "x-probe-injected" in reply.headers or any(
                "probe_injected" in c for c in reply.headers.get_list("set-cookie")
            ):
                self._result("FAIL", case, expected, f"{reply.got()}: the header was injected")
            elif location is not None and not _same_origin_location(location, self.form.action):
                self._result("FAIL", case, expected, f"{reply.got()} to {location!r}")
            else:
                where = f" to {location}" if location is not None else ""
                self._result("PASS", case, expected, reply.got() + where)

    # -- 4. what every reply must not carry

    def _leaks(self) -> None:
        internals: list[str] = []
        details: list[str] = []
        cookies: list[str] = []
        headers: list[str] = []
        for reply in self.replies:
            if reply.status is None:
                continue
            where = f"in the reply to {reply.case} ({reply.status})"
            shown = reply.text + "\n" + "\n".join(reply.headers.values())
            for needle in ("Traceback", 'File "'):
                if needle in shown:
                    internals.append(f"{needle!r} {where}")
            found = _PYTHON_FILE.search(reply.text)
            if found:
                internals.append(f"{found.group()!r} {where}")
            data = reply.json()
            error = data.get("error") if isinstance(data, dict) else None
            for container in (data, error):
                if isinstance(container, dict):
                    keys = _DETAIL_KEYS.intersection(container)
                    details += [f"{key!r} {where}" for key in sorted(keys)]
            name = _EXCEPTION_NAME.search(reply.text)
            if name:
                details.append(f"{name.group()!r} {where}")
            cookies += [f"{p} {where}" for p in _cookie_problems(reply)]
            missing = []
            if "no-store" not in reply.headers.get("cache-control", ""):
                missing.append("Cache-Control: no-store")
            if reply.headers.get("x-content-type-options", "").lower() != "nosniff":
                missing.append("X-Content-Type-Options: nosniff")
            if missing:
                headers.append(f"{' and '.join(missing)} missing {where}")
        checked = sum(1 for r in self.replies if r.status is not None)
        for case, expected, problems in (
            ("leak: tracebacks, file paths", "none in any reply", internals),
            ("leak: exception details", "no debug key, no exception names", details),
            ("leak: cookie flags", "HttpOnly + SameSite on cookies", cookies),
            ("leak: no-store, nosniff", "on every reply", headers),
        ):
            if problems:
                more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
                self._result("FAIL", case, expected, problems[0] + more)
            elif not checked:
                self._result("SKIP", case, expected, "no replies to check")
            else:
                self._result("PASS", case, expected, f"ok in {checked} replies")


# --- small pure helpers -------------------------------------------------------------------


def _token_on(reply: _Reply, form: Form) -> str | None:
    """The ``_csrf`` of the form posting to the same action, on a freshly loaded page."""
    _, forms = extract(reply.text, form.page)
    path = urlsplit(form.action).path
    return next((f.token for f in forms if urlsplit(f.action).path == path and f.token), None)


def _generic_failure(reply: _Reply) -> bool:
    """A 5xx that says nothing: the envelope with a code, a message and a digest at most."""
    data = reply.json()
    envelope = reply.envelope
    return (
        isinstance(data, dict)
        and set(data) == {"ok", "error"}
        and envelope is not None
        and set(envelope) <= {"code", "message", "digest"}
    )


def _cookie_problems(reply: _Reply) -> list[str]:
    problems = []
    for header in reply.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0].strip()
        attributes = {
            part.split("=", 1)[0].strip().lower(): part.partition("=")[2].strip().lower()
            for part in header.split(";")[1:]
        }
        if attributes.get("max-age") == "0":
            continue  # a cookie being deleted
        if "httponly" not in attributes:
            problems.append(f"cookie {name} without HttpOnly")
        if attributes.get("samesite") not in ("lax", "strict"):
            problems.append(f"cookie {name} without SameSite=Lax or Strict")
    return problems


def _same_origin_location(location: str, base: str) -> bool:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in location) or "\\" in location:
        return False
    if location.startswith("/") and not location.startswith("//"):
        return True
    return same_origin(urljoin(base, location), base)


def _chunks(prefix: bytes, size: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), so only the bytes that arrive can be counted."""
    yield prefix
    step = 64 * 1024
    for start in range(0, size, step):
        yield b"a" * min(step, size - start)


def _multipart(pairs: list[tuple[str, str]], form: Form) -> tuple[bytes, str]:
    """A multipart body as a browser sends it; file inputs go as empty, nameless files."""
    boundary = "probe" + secrets.token_hex(12)
    files = {f.name for f in form.fields if f.kind == "file"}
    out = bytearray()
    for name, value in pairs:
        quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        out += f"--{boundary}\r\n".encode()
        if name in files:
            out += f'Content-Disposition: form-data; name="{quoted}"; filename=""\r\n'.encode()
            out += b"Content-Type: application/octet-stream\r\n\r\n\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{quoted}"\r\n\r\n'.encode()
            out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
