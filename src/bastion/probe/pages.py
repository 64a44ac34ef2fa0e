"""Reading pages: the links to follow and the bastion forms to probe.

Pages are parsed by lxml's HTML parser (the one browsers' rules are modelled on, through
libxml2), and forms read with ``lxml.html``'s form API: nothing is executed or fetched.
Where the app's actions live is read off the page, not assumed: ``bastion_script()``
links ``{prefix}/bastion.js``, and a form bastion renders (``data-bastion`` and a
``_csrf`` field) posts to ``{prefix}/{id}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

try:
    import lxml.html
    from lxml.etree import ParserError
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion probe reads pages with lxml: pip install 'bastion[probe]'"
    ) from missing

from .model import _NOT_PAGES, _SIGN_OUT, Form, FormField
from .target import same_origin

__all__ = ["discover_prefixes", "extract", "login_form", "page_token"]

_SCRIPT = "bastion.js"
_IGNORED_INPUTS = frozenset({"submit", "button", "reset", "image"})


def _document(html: str) -> lxml.html.HtmlElement | None:
    try:
        return lxml.html.document_fromstring(html)
    except (ParserError, ValueError):
        return None  # empty, or nothing lxml can call a document


def discover_prefixes(html: str, page_url: str) -> set[str]:
    """Where this page says the app's actions are: each a path ending in ``/``."""
    doc = _document(html)
    return set() if doc is None else _prefixes(doc, page_url)


def _prefixes(doc: lxml.html.HtmlElement, page_url: str) -> set[str]:
    found = set()
    for script in doc.iter("script"):
        src = urlsplit(urljoin(page_url, (script.get("src") or "").strip()))
        if src.path.endswith("/" + _SCRIPT) and same_origin(src.geturl(), page_url):
            found.add(src.path.removesuffix(_SCRIPT))
    for form in doc.forms:
        if form.get("data-bastion") is None or not form.xpath('.//input[@name="_csrf"]'):
            continue
        path = urlsplit(urljoin(page_url, (form.get("action") or "").strip())).path
        if path.count("/") >= 2:
            found.add(path.rsplit("/", 1)[0] + "/")
    return found


def extract(html: str, page_url: str, prefixes: Iterable[str] = ()) -> tuple[list[str], list[Form]]:
    """The same-origin pages a page links to, and its bastion forms.

    A form counts when it is marked ``data-bastion`` or posts under an action prefix
    (``prefixes``, and those this page shows); forms posting to another origin, and
    ``GET`` forms, are never touched. Links under a prefix are no pages to crawl.
    """
    doc = _document(html)
    if doc is None:
        return [], []
    known = tuple({*prefixes, *_prefixes(doc, page_url)})
    links: list[str] = []
    for anchor in doc.iter("a"):
        href = anchor.get("href")
        if href is None:
            continue
        parts = urlsplit(urljoin(page_url, href.strip()))
        url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
        if (
            same_origin(url, page_url)
            and not parts.path.startswith(known)
            and not _NOT_PAGES.search(parts.path)
            and not _SIGN_OUT.search(parts.path)
            and url not in links
        ):
            links.append(url)
    forms: list[Form] = []
    for element in doc.forms:
        action = urljoin(page_url, (element.get("action") or "").strip() or page_url)
        action = urlunsplit(urlsplit(action)._replace(fragment=""))
        marked = element.get("data-bastion") is not None
        if not (marked or urlsplit(action).path.startswith(known)):
            continue
        if (element.get("method") or "get").lower() != "post":
            continue
        if not same_origin(action, page_url):
            continue
        multipart = (element.get("enctype") or "").lower() == "multipart/form-data"
        fields = _fields(element)
        described = " ".join([element.get("id") or "", element.text_content(), action])
        forms.append(
            Form(
                page=page_url,
                action=action,
                fields=fields,
                multipart=multipart,
                sign_out=bool(_SIGN_OUT.search(described)),
                password=any(f.kind == "password" for f in fields),
            )
        )
    forms += _scripted(html, page_url, known, {f.action for f in forms})
    return links, forms


_ACTION_ID = r"[A-Za-z0-9_-]{8,}"


def _scripted(html: str, page_url: str, prefixes: Iterable[str], taken: set[str]) -> list[Form]:
    """Actions named outside a form: in a ``data-*`` attribute for a script (a passkey's
    begin and finish), or in the page's text (an API URL shown to copy). Called as
    ``bastion.js`` calls them: JSON, the page's token in ``X-CSRF-Token``."""
    found: list[Form] = []
    origin = urlunsplit((*urlsplit(page_url)[:2], "", "", ""))
    for prefix in prefixes:
        named = rf"(?<![\w/.])(?:{re.escape(origin)})?{re.escape(prefix)}({_ACTION_ID})(?![\w./-])"
        for match in re.finditer(named, html):
            action = origin + prefix + match[1]
            if action in taken:
                continue
            taken.add(action)
            found.append(Form(page=page_url, action=action, script=True))
    return found


def page_token(html: str) -> str | None:
    """The token a script on this page sends: ``<meta name="csrf-token">``, else the first
    ``_csrf`` field (as ``bastion.js`` finds it)."""
    doc = _document(html)
    if doc is None:
        return None
    for meta in doc.iter("meta"):
        if meta.get("name") == "csrf-token" and meta.get("content"):
            return str(meta.get("content"))
    for field in doc.iter("input"):
        if field.get("name") == "_csrf" and field.get("value"):
            return str(field.get("value"))
    return None


def login_form(html: str, page_url: str) -> Form | None:
    """The page's log-in form, as a browser's password manager finds it: the POST form with
    a password input (and no second one: that is a sign-up or a password change)."""
    doc = _document(html)
    if doc is None:
        return None
    for element in doc.forms:
        if (element.get("method") or "get").lower() != "post":
            continue
        fields = _fields(element)
        if sum(1 for f in fields if f.kind == "password") != 1:
            continue
        action = urljoin(page_url, (element.get("action") or "").strip() or page_url)
        if not same_origin(action, page_url):
            continue
        return Form(page=page_url, action=action, fields=fields, password=True)
    return None


def _fields(form: lxml.html.FormElement) -> list[FormField]:
    """What a browser submits, in document order: typed and hidden values, a textarea's
    text, the selected (else the first) option, checked boxes only; no buttons, no
    disabled or unnamed controls."""
    fields: list[FormField] = []
    for control in form.inputs:
        name = control.get("name")
        if not name or control.get("disabled") is not None:
            continue
        required = control.get("required") is not None
        cap = (control.get("maxlength") or "").strip()
        maxlength = int(cap) if cap.isdigit() and len(cap) < 10 else None
        if control.tag == "textarea":
            fields.append(FormField(name, control.text_content(), "textarea", required, maxlength))
        elif control.tag == "select":
            options = [o for o in control.iter("option") if o.get("disabled") is None]
            chosen = [o for o in options if o.get("selected") is not None] or options
            value = _option_value(chosen[0]) if chosen else ""
            fields.append(FormField(name, value, "select", required))
        elif control.tag == "input":
            kind = (control.get("type") or "text").lower()
            if kind in _IGNORED_INPUTS:
                continue
            if kind in ("checkbox", "radio"):
                if control.get("checked") is None:
                    continue
                fields.append(FormField(name, control.get("value", "on"), kind, required))
            else:
                value = control.get("value", "")
                fields.append(FormField(name, value, kind, required, maxlength))
    return fields


def _option_value(option: lxml.html.HtmlElement) -> str:
    """Its ``value``, or without one its text, as a browser submits it."""
    value = option.get("value")
    return str(option.text_content() if value is None else value)
