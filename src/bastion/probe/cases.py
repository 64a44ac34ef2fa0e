"""The cases run on each form (the CSRF matrix, hostile input) and the leak checks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

if TYPE_CHECKING:
    import httpx2 as httpx

from . import incidents
from .http import _get_page, _Http, _OutOfBudget, _Reply
from .model import (
    _ACCEPTED_INPUT,
    _CRLF_NEXT,
    _DETAIL_KEYS,
    _EXCEPTION_NAME,
    _NEEDS_SIGN_IN,
    _OFFSITE_NEXT,
    _PAGE_TRACEBACK,
    _PYTHON_FILE,
    _REFUSED_BY_GUARDS,
    ANONYMOUS,
    CASE_BUDGET,
    FOREIGN,
    HUGE,
    OVERSIZED,
    Form,
    Identity,
    Result,
    Status,
    _path,
)
from .pages import extract, page_token
from .target import same_origin

_REFUSAL = "a refusal about origin or token"

NOT_HARMLESS = "no harmless valid call (no required or capped field); --run-actions sends one"

_INTERNAL_HEADERS = {
    # CVE-2025-29927: Next.js skipped its middleware (and the auth in it) for this header.
    "x-middleware-subrequest": "middleware:middleware:middleware:middleware:middleware",
    "x-invoke-path": "/",
    "x-forwarded-for": "127.0.0.1",
    "x-real-ip": "127.0.0.1",
    "x-original-url": "/",
    "x-rewrite-url": "/",
}
"""Headers other stacks trusted from a client; sent with no token, they change nothing."""


def _check_page(reply: _Reply, url: str, results: list[Result], identity: str = ANONYMOUS) -> None:
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
        got, status = "; ".join(problems), "FAIL"
    else:
        got, status = f"{reply.status}", "PASS"
    results.append(Result(status, target, "page", expected, got, identity, url))  # type: ignore[arg-type]


def cross_identity(
    a: _Holder, b: _Holder, origin: str, results: list[Result], skip: set[str]
) -> None:
    """Forms rendered for ``a``, sent in ``b``'s session: with ``a``'s token (refused by the
    token check), and with ``b``'s own token but ``a``'s sealed values (refused: they are
    bound to ``a``'s session)."""
    b_token = next((f.token for f in b.forms.values() if f.token), None)
    for path, form in a.forms.items():
        if path in skip or form.sign_out or form.script or not form.token:
            continue
        b.http.budget.form = 0
        prober = _FormProbe(b.http, form, origin, results, None, identity=b.identity.name)
        case = f"cross: {a.identity.name}'s form and token"
        pairs = prober._fields(form.token, base=prober._safe_values())
        reply = prober._post_form(case, pairs, prober._headers())
        prober._refusal(
            case, reply, b.proven.get(path), "no control for this action in this session"
        )
        if not any(f.name == "_bound" for f in form.fields):
            continue
        case = f"cross: {a.identity.name}'s sealed values"
        expected = "a refusal"
        own = b.forms.get(path)
        token = (own.token if own is not None else None) or b_token
        if token is None:
            prober._result("SKIP", case, expected, f"{b.identity.name} has no token of its own")
            continue
        reply = prober._post_form(case, prober._fields(token), prober._headers())
        if reply.status is None or reply.status >= 500 or reply.status < 400:
            prober._result("FAIL", case, expected, reply.got())
        elif reply.status == 429:
            prober._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        else:
            prober._result("PASS", case, expected, reply.got())


class _Holder(Protocol):
    """One identity's session, as ``crawl`` keeps it."""

    identity: Identity
    http: _Http
    forms: dict[str, Form]
    proven: dict[str, str]


class _FormProbe:
    """Every case against one form's action, for one identity, then the leak checks."""

    def __init__(
        self,
        http: _Http,
        form: Form,
        origin: str,
        results: list[Result],
        transport: httpx.BaseTransport | None,
        *,
        identity: str = ANONYMOUS,
        token: str | None = None,
        run_actions: bool = False,
        case_budget: float = CASE_BUDGET,
    ) -> None:
        self.http = http
        self.form = form
        self.origin = origin
        self.results = results
        self.transport = transport
        self.identity = identity
        self.run_actions = run_actions
        self.case_budget = case_budget
        self.replies: list[_Reply] = []
        self.token = form.token or token or ""
        self.proven: str | None = None
        """What the control showed: the guards let a valid call through."""
        self.unproven = "no control was run"
        self.policy: str | None = None
        self._stopped = False
        """The control's refusal by the action's policy (401/403), if it got one."""

    def run(self) -> None:
        self.run_guards()
        self.run_inputs()

    def run_guards(self) -> None:
        """The forged calls and the control: the oracle, and what shows the action reached.
        ``crawl`` runs these on every action before any ``run_inputs``, so that the hostile
        inputs' calls do not spend the rate limits the control needs."""
        try:
            self._refresh()
            forged = self._forged_calls()
            self._control()
            for case, reply in forged:
                self._judge_forged(case, reply)
        except _OutOfBudget as exc:
            self._stopped = True
            self._result("FAIL", "probe incomplete", "every case run", str(exc))

    def run_inputs(self) -> None:
        """The hostile inputs, the incidents, ``_next``, the valid call; then the leak checks
        over every reply of both parts."""
        try:
            if not self.form.sign_out and not self._stopped:
                self._hostile_inputs()
                self._incidents()
                self._redirects()
                self._valid_call()
        except _OutOfBudget as exc:
            self._result("FAIL", "probe incomplete", "every case run", str(exc))
        self._leaks()

    def reached(self) -> tuple[str | None, str]:
        """How the replies show the action was reached (``None``, and why not)."""
        if self.policy is not None:
            return f"refused by policy ({self.policy})", ""
        if self.proven is not None:
            return f"past the guards ({self.proven})", ""
        answered = [r for r in self.replies if r.status is not None]
        real = [r for r in answered if r.status not in (404, 429)]
        if real:
            return f"answered ({real[0].got()})", ""
        if any(r.status == 429 for r in answered):
            return None, "every reply 429 (rate-limited)"
        if answered:
            return None, f"{answered[0].got()}: not served at that URL (another secret key?)"
        return None, "no reply"

    # -- helpers

    def _result(self, status: Status, case: str, expected: str, got: str) -> None:
        self.results.append(
            Result(status, self.form.label, case, expected, got, self.identity, self.form.action)
        )

    def _refresh(self) -> None:
        """Load the form's page again, for a token that is fresh for this session."""
        reply, _ = _get_page(self.http, "reload the page", self.form.page)
        if reply is not None and reply.status == 200:
            fresh = page_token(reply.text) if self.form.script else _token_on(reply, self.form)
            self.token = fresh or self.token

    def _headers(self, *, json_body: bool = False, token: str | None = None) -> dict[str, str]:
        headers = {"Origin": self.origin, "Accept": "application/json"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if token:
            headers["X-CSRF-Token"] = token
        return headers

    def _fields(
        self,
        token: str | None,
        replace: Mapping[str, str] | None = None,
        *,
        base: list[tuple[str, str]] | None = None,
    ) -> list[tuple[str, str]]:
        """The form's values (or ``base``) with ``token`` as ``_csrf`` (none if ``None``)."""
        pairs = [(n, v) for n, v in (self.form.values() if base is None else base)]
        pairs = [(n, v) for n, v in pairs if n != "_csrf"]
        if replace:
            pairs = [(n, replace.get(n, v)) for n, v in pairs]
            pairs += [(n, v) for n, v in replace.items() if n not in dict(pairs)]
        if token is not None:
            pairs.insert(0, ("_csrf", token))
        return pairs

    def _safe_values(self) -> list[tuple[str, str]]:
        """What a forged call carries: values the server must refuse anyway, when the form
        has such (so a forged call let through is still refused before the action runs)."""
        harmless = self.form.harmless()
        return self.form.values() if harmless is None else harmless

    def _post_form(
        self, case: str, pairs: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> _Reply:
        """The form's fields, encoded as the browser would (multipart if the form says so);
        an action found outside a form is called as ``bastion.js`` calls it, with JSON."""
        if self.form.script:
            token = dict(pairs).get("_csrf")
            data = {n: v for n, v in pairs if n not in ("_csrf", "_next")}
            extra = {"Content-Type": "application/json"}
            if token:
                extra["X-CSRF-Token"] = token
            return self._send(case, "POST", json.dumps(data).encode(), {**headers, **extra})
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

    # -- 1. the CSRF matrix, and the oracle

    def _forged_calls(self) -> list[tuple[str, _Reply]]:
        """Forged calls, sent before the control so that none rides on its effects."""
        other = self._other_session_token()
        cases: list[tuple[str, str | None, dict[str, str]]] = [
            ("csrf: no token", None, {}),
            ("csrf: forged token", secrets.token_urlsafe(64), {}),
            ("csrf: token of another session", other, {}),
            ("origin: foreign Origin", self.token, {"Origin": FOREIGN}),
            ("origin: Origin null", self.token, {"Origin": "null"}),
            ("origin: malformed Origin", self.token, {"Origin": "http://[probe"}),
            ("origin: Sec-Fetch-Site cross-site", self.token, {"Sec-Fetch-Site": "cross-site"}),
            ("header: x-middleware-subrequest", None, _INTERNAL_HEADERS),
        ]
        sent = []
        for case, token, extra in cases:
            if case == "csrf: token of another session" and other is None:
                self._result("SKIP", case, _REFUSAL, "a second visitor got no token")
                continue
            pairs = self._fields(token, base=self._safe_values())
            sent.append((case, self._post_form(case, pairs, {**self._headers(), **extra})))
        return sent

    def _other_session_token(self) -> str | None:
        """A token rendered for a second visitor (a fresh cookie jar)."""
        other = _Http(self.http.budget, self.transport)
        try:
            reply, _ = _get_page(other, "second visitor", self.form.page)
        finally:
            other.close()
        if reply is None or reply.status != 200:
            return None
        token = page_token(reply.text) if self.form.script else _token_on(reply, self.form)
        return token if token and token != self.token else None

    def _judge_forged(self, case: str, reply: _Reply) -> None:
        """The oracle: a refusal counts only when it is about the origin or the token —
        bastion's own codes, or a refusal of a call that, with the valid token, the control
        showed would get through. A 401/403 of a policy is no CSRF check."""
        self._refusal(case, reply, self.proven, self.unproven)

    def _refusal(self, case: str, reply: _Reply, proven: str | None, unproven: str) -> None:
        if reply.status is None or reply.status >= 500:
            self._result("FAIL", case, _REFUSAL, reply.got())
        elif reply.status == 429:
            self._result("SKIP", case, _REFUSAL, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            self._result("PASS", case, _REFUSAL, reply.got())
        elif reply.status < 400:
            self._result("FAIL", case, _REFUSAL, f"{reply.got()}: accepted")
        elif reply.status == 422 or reply.code in _ACCEPTED_INPUT:
            self._result("FAIL", case, _REFUSAL, f"{reply.got()}: read as input, past the token")
        elif proven is not None:
            self._result("PASS", case, _REFUSAL, f"{reply.got()} (the control got {proven})")
        else:
            self._result(
                "SKIP",
                case,
                _REFUSAL,
                f"{reply.got()}: not shown to be about the token; {unproven}",
            )

    def _control(self) -> None:
        """One valid call the probe can show harmless: the form's token, same origin, and a
        required field left empty (or one past its ``maxlength``). A 422 for those fields
        proves the call passed origin, token, rate and policy (bastion reads the fields
        only after them) and that the action did not run."""
        case, expected = "control: harmless valid call", "422 for its fields: past the guards"
        pairs = self.form.harmless()
        if pairs is None and self.form.schema:
            self.unproven = "no harmless control (the schema allows none)"
            self._result("SKIP", case, expected, self.form.no_control)
            return
        if pairs is None:
            self.unproven = "no harmless control (no required or capped field)"
            self._result(
                "SKIP",
                case,
                expected,
                "no required or length-capped field: a valid call would run the action",
            )
            return
        if not self.token:
            self.unproven = "no token to send a control with"
            self._result("SKIP", case, expected, "the page carries no _csrf token")
            return
        reply = self._post_form(case, self._fields(self.token, base=pairs), self._headers())
        if reply.status is None or reply.status >= 500:
            self._result("FAIL", case, expected, reply.got())
        elif reply.status == 429:
            self.unproven = "the control was rate-limited"
            self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            hint = f"; is {self.origin} in the app's allowed origins?"
            self._result("FAIL", case, expected, reply.got() + hint)
        elif reply.status == 422 or reply.code in _ACCEPTED_INPUT:
            self.proven = reply.got()
            self._result("PASS", case, expected, reply.got())
        elif reply.status < 400:
            self.proven = reply.got()
            self._result("FAIL", case, expected, f"{reply.got()}: accepted values its form forbids")
        elif reply.status in (401, 403):
            # The policy: this action is not for this identity. The call reached the action
            # (past origin, token and rate); no forged call is a pass on the strength of it.
            self.unproven = f"the control was refused by policy ({reply.got()})"
            self.policy = reply.got()
            self._result("SKIP", case, expected, f"{reply.got()}: reached, refused by policy")
        else:
            self.unproven = f"the control was refused too ({reply.got()})"
            self._result("SKIP", case, expected, f"{reply.got()}: refused before its fields")

    def _valid_call(self) -> None:
        """With ``--run-actions`` only: the form as a visitor submits it, which runs the
        action; a failure must say nothing but a digest."""
        case, expected = "action: valid call", "2xx/3xx/4xx, or a generic 5xx"
        if not self.run_actions or self.form.password:
            return
        if self.form.schema:
            self._result("SKIP", case, expected, "a schema action: the probe has no real values")
            return
        reply = self._post_form(case, self._fields(self.token), self._headers())
        if reply.status is None:
            self._result("FAIL", case, expected, reply.got())
        elif reply.status == 429:
            self._result("SKIP", case, expected, f"{reply.got()}: rate-limited, not tested")
        elif reply.code in _REFUSED_BY_GUARDS:
            self._result("FAIL", case, expected, reply.got())
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
        nul = {name: "probe\x00" for name in text} or {"probe": "probe\x00"}
        form = urlencode(self._fields(self.token, base=self._safe_values())).encode()
        prefix = form + b"&" + first + b"="
        as_json = self._headers(json_body=True, token=self.token)
        as_form = self._headers() | {"Content-Type": "application/x-www-form-urlencoded"}
        as_text = self._headers(token=self.token) | {"Content-Type": "text/plain"}
        cases: list[tuple[str, bytes, dict[str, str]]] = [
            ("input: malformed JSON", b'{"' + first + b'": ', as_json),
            ("input: NaN", b'{"' + first + b'": NaN}', as_json),
            ("input: NUL in JSON", json.dumps({**self._json_values(), **nul}).encode(), as_json),
            (
                "input: NUL in form fields",
                urlencode(self._fields(self.token, nul, base=self._safe_values())).encode(),
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

    def _json_values(self) -> dict[str, str]:
        # A script's JSON body carries the input and ``_bound``; never ``_csrf`` or ``_next``.
        return {n: v for n, v in self._fields(None, base=self._safe_values()) if n != "_next"}

    def _incidents(self) -> None:
        """The payload shapes of the model's incidents, each within the case budget."""
        token = self.token
        as_json = self._headers(json_body=True, token=token)
        as_form = self._headers() | {"Content-Type": "application/x-www-form-urlencoded"}
        text = self.form.text_fields
        first = text[0] if text else "probe"
        for case, body, headers in incidents.bodies(
            self._json_values(), self._fields(token, base=self._safe_values()), first
        ):
            wanted = {"json": as_json, "form": as_form}.get(headers)
            sent = dict(wanted) if wanted is not None else self._headers(token=token)
            if wanted is None:
                sent["Content-Type"] = headers
            reply = self._send(case, "POST", body, sent)
            if not self._in_time(case, reply):
                self._expect_bad_input(case, reply)
        for case, header in (
            ("host: foreign Host", {"Host": "probe.invalid"}),
            (
                "host: X-Forwarded-Host",
                {"X-Forwarded-Host": "probe.invalid", "X-Forwarded-Proto": "https"},
            ),
        ):
            self._host(case, header)

    def _in_time(self, case: str, reply: _Reply) -> bool:
        """Fail the case when the server took longer than the budget, refusal or not."""
        if reply.status is not None and reply.elapsed > self.case_budget:
            expected = f"a 4xx within {self.case_budget:g} s"
            self._result("FAIL", case, expected, f"{reply.got()} after {reply.elapsed:.1f} s")
            return True
        return False

    def _host(self, case: str, header: Mapping[str, str]) -> None:
        """A plain form post under a forged Host: no Location, link or page built from it."""
        expected = "no URL built from it"
        pairs = self._fields(self.token if self.form.harmless() else None, base=self._safe_values())
        reply = self._post_form(case, pairs, {"Origin": self.origin, **header})
        if self._in_time(case, reply):
            return
        location = reply.headers.get("location", "")
        if reply.status is None or (reply.status >= 500 and not _generic_failure(reply)):
            self._result("FAIL", case, expected, reply.got())
        elif "probe.invalid" in location or b"probe.invalid" in reply.body:
            where = f"to {location!r}" if "probe.invalid" in location else "in the body"
            self._result("FAIL", case, expected, f"{reply.got()} {where}")
        else:
            self._result("PASS", case, expected, reply.got())

    def _oversized(self) -> None:
        case = f"input: {OVERSIZED:,} chars in text fields"
        expected = "4xx naming every text field"
        text = self.form.text_fields
        if not text:
            self._result("SKIP", case, expected, "the form has no text field")
            return
        big = dict.fromkeys(text, "x" * OVERSIZED)
        pairs = self._fields(self.token, big, base=self._safe_values())
        reply = self._post_form(case, pairs, self._headers())
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
            base = self.form.harmless() or (self.form.values() if self.run_actions else None)
            if base is None or self.form.script:
                why = "a script's call has no _next" if self.form.script else NOT_HARMLESS
                self._result("SKIP", case, expected, why)
                continue
            # A plain form post, as a browser without JavaScript sends it: no Accept: JSON.
            reply = self._post_form(
                case, self._fields(self.token, {"_next": value}, base=base), {"Origin": self.origin}
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
