"""The probe itself: for each identity, sign in, crawl the pages, run the cases on every
form found; then the cross-identity checks, and the log-out forms last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx2 as httpx

from .cases import _check_page, _FormProbe, cross_identity
from .http import _Budget, _get_page, _Http, _OutOfBudget
from .login import sign_in
from .model import (
    ANONYMOUS,
    CASE_BUDGET,
    MAX_DEPTH,
    MAX_REQUESTS,
    Form,
    Identity,
    ProbeError,
    Report,
    Result,
    Seen,
)
from .pages import discover_prefixes, extract
from .target import check_target, same_origin


@dataclass(slots=True)
class _Session:
    identity: Identity
    http: _Http
    seen: Seen
    forms: dict[str, Form] = field(default_factory=dict)
    """Action path → the form as rendered for this identity."""
    proven: dict[str, str] = field(default_factory=dict)


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
) -> Report:
    """Crawl ``url``'s origin as each identity (anonymous first unless ``anonymous`` is
    false), probe every bastion form found; ``ProbeError`` if the URL is refused (before
    any request), its first page does not answer, or an identity cannot sign in."""
    origin = check_target(url, allow_hosts)
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    if login is not None and not same_origin(login, url):
        raise ProbeError(f"the log-in page {login} is not on {origin}")
    people = [Identity(ANONYMOUS)] if anonymous else []
    people += identities
    if not people:
        raise ProbeError("no identity to probe as (--no-anonymous and no --as)")
    if any(p.signs_in for p in people) and login is None:
        raise ProbeError("--user needs --login URL: the page with the log-in form")
    report = Report(url, expected_actions=list(expect))
    budget = _Budget(timeout, max_requests)
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
            for form in _crawl(http, url, max_pages, report, session.seen):
                path = urlsplit(form.action).path
                session.forms[path] = form
                if path not in labels:
                    labels[path] = f"form {len(labels) + 1}"
                    report.forms.append(form)
                form.label = labels[path]
                session.seen.forms.append(form.label)
            session.seen.requests = budget.total - before
            if not report.pages:
                raise ProbeError(f"{url} does not answer with a page")
        if not report.forms:
            report.results.append(
                Result("FAIL", "crawl", "find bastion forms", "at least one", "none found")
            )
        for form in report.forms:  # one label per action, whoever found it first
            form.label = labels[urlsplit(form.action).path]
        for session in sessions:
            _run(session, origin, report, transport, login_paths, run_actions, case_budget)
        for a in sessions:
            for b in sessions:
                if a is not b:
                    cross_identity(a, b, origin, report.results, login_paths)
        for session in sessions:
            _run(
                session,
                origin,
                report,
                transport,
                login_paths,
                run_actions,
                case_budget,
                sign_out=True,
            )
    except _OutOfBudget as exc:
        report.results.append(
            Result("FAIL", "probe", "probe incomplete", "within budget", str(exc))
        )
    finally:
        report.requests = budget.total
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
) -> None:
    name = session.identity.name
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
        prober.run()
        if prober.proven is not None:
            session.proven[path] = prober.proven
        session.seen.requests += session.http.budget.total - before


def _crawl(http: _Http, start: str, max_pages: int, report: Report, seen: Seen) -> list[Form]:
    """Breadth first from ``start``: same-origin GETs only, ``MAX_DEPTH`` links deep."""
    queue: list[tuple[str, int]] = [(start, 0)]
    visited = {start}
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
        prefixes |= discover_prefixes(reply.text, final)
        links, found = extract(reply.text, final, prefixes)
        for form in found:
            forms.setdefault(urlsplit(form.action).path, form)
        if depth < MAX_DEPTH:
            for link in links:
                if link not in visited:
                    visited.add(link)
                    queue.append((link, depth + 1))
    return list(forms.values())
