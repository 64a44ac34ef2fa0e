"""The cases run on each form (the CSRF matrix, hostile input) and the leak checks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin, urlsplit

if TYPE_CHECKING:
    import httpx2 as httpx

from .http import _get_page, _Http, _OutOfBudget, _Reply
from .model import (
    _CRLF_NEXT,
    _DETAIL_KEYS,
    _EXCEPTION_NAME,
    _NEEDS_SIGN_IN,
    _OFFSITE_NEXT,
    _PAGE_TRACEBACK,
    _PYTHON_FILE,
    _REFUSED_BY_GUARDS,
    DEEP,
    FOREIGN,
    HUGE,
    OVERSIZED,
    Form,
    Result,
    Status,
    _path,
)
from .pages import extract
from .target import same_origin


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
        elif statuses == {413} and reply.status in (401, 403) and reply.code in _NEEDS_SIGN_IN:
            # A body too long to be read whole before the token check is read on only
            # after the policy: an action that needs sign-in refuses it before its end.
            self._result("SKIP", case, expected, f"{reply.got()}: needs sign-in")
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
