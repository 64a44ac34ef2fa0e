"""The probe itself: for each identity, sign in, crawl the pages, run the cases on every
form found; then the cross-identity checks, and the log-out forms last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx2 as httpx

from .cases import _check_page, _FormProbe, cross_identity
from .http import _Budget, _get_page, _Http, _OutOfBudget
from .login import sign_in
from .model import (
    _SIGN_OUT,
    ANONYMOUS,
    CASE_BUDGET,
    MAX_DEPTH,
    MAX_REQUESTS,
    Form,
    FormField,
    Identity,
    ProbeError,
    Report,
    Result,
    Seen,
)
from .pages import discover_prefixes, extract, page_token
from .schema import SchemaAction
from .target import check_target, same_origin


@dataclass(slots=True)
class _Session:
    identity: Identity
    http: _Http
    seen: Seen
    forms: dict[str, Form] = field(default_factory=dict)
    """Action path → the form as rendered for this identity (or made from the schema)."""
    proven: dict[str, str] = field(default_factory=dict)
    token_page: str | None = None
    """The first page this identity rendered with a token: a schema action's page."""


def probe(
    url: str,
    *,
    allow_hosts: Sequence[str] = (),
    max_pages: int = 20,
    timeout: float = 120.0,
    transport: httpx.BaseTransport | None = None,
    identities: Sequence[Identity] = (),
    anonymous: bool = True,
    login: str | None = None,
    max_requests: int = MAX_REQUESTS,
    run_actions: bool = False,
    case_budget: float = CASE_BUDGET,
    expect: Sequence[str] = (),
    schema: Sequence[SchemaAction] = (),
    starts: Sequence[str] = (),
    max_wait: float = 0.0,
) -> Report:
    """Crawl ``url``'s origin (and ``starts``, more pages to begin at) as each identity
    (anonymous first unless ``anonymous`` is false), probe every bastion form found, and
    every action of ``schema`` an identity's pages did not show, as a script calls it;
    ``ProbeError`` if the URL is refused (before any request), its first page does not
    answer, or an identity cannot sign in. A 429 is sent again after its ``Retry-After``
    while ``max_wait`` seconds of waiting last, every request together."""
    origin = check_target(url, allow_hosts)
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    if login is not None and not same_origin(login, url):
        raise ProbeError(f"the log-in page {login} is not on {origin}")
    begin = [url]
    for start in starts:
        page = urljoin(url, start)
        if not same_origin(page, url):
            raise ProbeError(f"the start page {start} is not on {origin}")
        if page not in begin:
            begin.append(page)
    people = [Identity(ANONYMOUS)] if anonymous else []
    people += identities
    if not people:
        raise ProbeError("no identity to probe as (--no-anonymous and no --as)")
    if any(p.signs_in for p in people) and login is None:
        raise ProbeError("--user needs --login URL: the page with the log-in form")
    expected = list(dict.fromkeys([*expect, *(a.path for a in schema)]))
    report = Report(url, expected_actions=expected, names={a.path: a.name for a in schema})
    budget = _Budget(timeout, max_requests, max_wait)
    sessions: list[_Session] = []
    login_paths: set[str] = set()
    labels: dict[str, str] = {}
    try:
        for person in people:
            http = _Http(budget, transport, cookies=person.cookies, headers=person.headers)
            session = _Session(person, http, Seen(person.name))
            sessions.append(session)
            report.identities.append(session.seen)
            before = budget.total
            if person.signs_in and login is not None:
                login_paths.add(sign_in(http, person, login, origin))
            session.seen.signed_in = person.signs_in or bool(person.cookies or person.headers)
            found, session.token_page = _crawl(http, begin, max_pages, report, session.seen)
            found += _from_schema(schema, found, session, origin, url, login_paths)
            for form in found:
                path = urlsplit(form.action).path
                session.forms[path] = form
                if path not in labels:
                    labels[path] = f"form {len(labels) + 1}"
                    report.forms.append(form)
                elif not form.schema:  # the legend shows a page's form over the schema's
                    report.forms = [
                        form if urlsplit(f.action).path == path and f.schema else f
                        for f in report.forms
                    ]
                form.label = labels[path]
                session.seen.forms.append(form.label)
                if form.schema:
                    session.seen.from_schema.append(form.label)
                else:
                    session.seen.reached[path] = "on a page"
            for path in login_paths & set(expected):
                if person.signs_in and path not in session.seen.reached:
                    session.seen.reached[path] = "signed in through it"
            session.seen.requests = budget.total - before
            if not report.pages:
                raise ProbeError(f"{url} does not answer with a page")
        if not report.forms:
            report.results.append(
                Result("FAIL", "crawl", "find bastion forms", "at least one", "none found")
            )
        for form in report.forms:  # one label per action, whoever found it first
            form.label = labels[urlsplit(form.action).path]
        args = (origin, report, transport, login_paths, run_actions, case_budget)
        probes = [(session, _run(session, *args)) for session in sessions]
        for session, probed in probes:
            _inputs(session, probed)
        for a in sessions:
            for b in sessions:
                if a is not b:
                    cross_identity(a, b, origin, report.results, login_paths)
        for session in sessions:
            _inputs(session, _run(session, *args, sign_out=True))
    except _OutOfBudget as exc:
        report.results.append(
            Result("FAIL", "probe", "probe incomplete", "within budget", str(exc))
        )
    finally:
        report.requests = budget.total
        report.waited = budget.waited
        for session in sessions:
            session.http.close()
    return report


def _run(
    session: _Session,
    origin: str,
    report: Report,
    transport: httpx.BaseTransport | None,
    login_paths: set[str],
    run_actions: bool,
    case_budget: float,
    *,
    sign_out: bool = False,
) -> list[tuple[str, _FormProbe]]:
    """The guards' cases (forged calls, control) on each of the session's actions; the
    probes, for their ``run_inputs``."""
    name = session.identity.name
    probes = []
    for path, form in session.forms.items():
        if form.sign_out is not sign_out:
            continue
        if path in login_paths:
            if not sign_out:
                report.results.append(
                    Result(
                        "SKIP",
                        form.label,
                        "login: the log-in form",
                        "never posted again",
                        "the log-in throttle counts every attempt",
                        name,
                        form.action,
                    )
                )
            continue
        before = session.http.budget.total
        session.http.budget.form = 0
        prober = _FormProbe(
            session.http,
            form,
            origin,
            report.results,
            transport,
            identity=name,
            run_actions=run_actions,
            case_budget=case_budget,
        )
        prober.run_guards()
        if prober.proven is not None:
            session.proven[path] = prober.proven
        if form.schema:
            how, why = prober.reached()
            if how is not None:
                session.seen.reached[path] = how
                session.seen.not_reached.pop(path, None)
            elif path not in session.seen.reached:
                session.seen.not_reached[path] = why
        session.seen.requests += session.http.budget.total - before
        probes.append((path, prober))
    return probes


def _inputs(session: _Session, probes: list[tuple[str, _FormProbe]]) -> None:
    for path, prober in probes:
        before = session.http.budget.total
        session.http.budget.form = 0
        prober.run_inputs()
        if path not in session.seen.reached and prober.form.schema:
            how, _ = prober.reached()
            if how is not None:
                session.seen.reached[path] = how
                session.seen.not_reached.pop(path, None)
        session.seen.requests += session.http.budget.total - before


def _from_schema(
    schema: Sequence[SchemaAction],
    found: list[Form],
    session: _Session,
    origin: str,
    start: str,
    login_paths: set[str],
) -> list[Form]:
    """The schema's actions this identity's pages did not show, each a form to call as a
    script does, from the first page that gave this identity a token."""
    shown = {urlsplit(f.action).path for f in found}
    forms = []
    for action in schema:
        if action.path in shown or action.path in login_paths:
            continue
        control, why = action.control()
        forms.append(
            Form(
                page=session.token_page or start,
                action=origin + action.path,
                fields=[FormField(name, "", "text") for name in action.text],
                script=True,
                name=action.name,
                schema=True,
                control=control,
                no_control=why,
                sign_out=bool(_SIGN_OUT.search(action.name)),
            )
        )
    return forms


def _crawl(
    http: _Http, starts: list[str], max_pages: int, report: Report, seen: Seen
) -> tuple[list[Form], str | None]:
    """Breadth first from ``starts``: same-origin GETs only, ``MAX_DEPTH`` links deep. The
    forms found, and the first page with a token (``None``: none had one)."""
    start = starts[0]
    queue: list[tuple[str, int]] = [(page, 0) for page in starts]
    visited = set(starts)
    token_page: str | None = None
    forms: dict[str, Form] = {}
    prefixes: set[str] = set()
    """Where the app's actions are, as the pages read so far show it."""
    while queue and len(seen.pages) < max_pages:
        url, depth = queue.pop(0)
        try:
            reply, final = _get_page(http, "crawl", url)
        except _OutOfBudget as exc:
            if not report.pages:
                raise ProbeError(str(exc)) from None
            report.results.append(
                Result("FAIL", "crawl", "crawl", "within budget", str(exc), seen.identity)
            )
            break
        if reply is None or final in seen.pages:
            continue  # off-origin, or a page already read through a redirect
        if reply.status is None and not report.pages:
            raise ProbeError(f"{start} does not answer: {reply.error}")
        seen.pages.append(final)
        if final not in report.pages:
            report.pages.append(final)
        visited.add(final)
        _check_page(reply, final, report.results, seen.identity)
        content_type = reply.headers.get("content-type", "")
        if reply.status is None or not content_type.startswith(("text/html", "application/xhtml")):
            continue
        if token_page is None and page_token(reply.text):
            token_page = final
        prefixes |= discover_prefixes(reply.text, final)
        links, found = extract(reply.text, final, prefixes)
        for form in found:
            forms.setdefault(urlsplit(form.action).path, form)
        if depth < MAX_DEPTH:
            for link in links:
                if link not in visited:
                    visited.add(link)
                    queue.append((link, depth + 1))
    return list(forms.values()), token_page
