"""The probe itself: crawl the pages, then run the cases on every form found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx2 as httpx

from .cases import _check_page, _FormProbe
from .http import _Budget, _get_page, _Http, _OutOfBudget
from .model import MAX_DEPTH, Form, ProbeError, Report, Result
from .pages import discover_prefixes, extract
from .target import check_target


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
    prefixes: set[str] = set()
    """Where the app's actions are, as the pages read so far show it."""
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
        prefixes |= discover_prefixes(reply.text, final)
        links, found = extract(reply.text, final, prefixes)
        for form in found:
            forms.setdefault(urlsplit(form.action).path, form)
        if depth < MAX_DEPTH:
            for link in links:
                if link not in seen:
                    seen.add(link)
                    queue.append((link, depth + 1))
    return list(forms.values())
