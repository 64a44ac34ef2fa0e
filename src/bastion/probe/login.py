"""Signing in as a visitor does: the app's own log-in page, its form found as a browser's
password manager finds it, filled in and posted once, the cookies kept.

Only ever once per identity: every attempt counts against the app's log-in throttle, so
the probe never posts the log-in form again (its cases skip it), and no control call is
ever a log-in.
"""

from __future__ import annotations

from urllib.parse import urlencode, urljoin, urlsplit

from .http import _get_page, _Http
from .model import Form, Identity, ProbeError
from .pages import login_form
from .target import same_origin

__all__ = ["sign_in"]

_USER_INPUTS = ("email", "text", "")


def sign_in(http: _Http, identity: Identity, login_url: str, origin: str) -> str:
    """Sign ``identity`` in through the page at ``login_url``; the log-in action's path.
    ``ProbeError`` says why not (never with the password)."""
    reply, final = _get_page(http, f"sign in as {identity.name}", login_url)
    if reply is None or reply.status != 200:
        got = "another origin" if reply is None else reply.got()
        raise ProbeError(f"{identity.name}: the log-in page {login_url} answered {got}")
    form = login_form(reply.text, final)
    if form is None:
        raise ProbeError(f"{identity.name}: no log-in form (one password input) on {final}")
    pairs = _filled(form, identity)
    before = _cookies(http)
    response = http.send(
        f"sign in as {identity.name}",
        "POST",
        form.action,
        headers={
            "Origin": origin,
            "Referer": final,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        content=urlencode(pairs).encode(),
    )
    location = response.headers.get("location")
    back = location is not None and urlsplit(urljoin(final, location)).path == urlsplit(final).path
    # A log-in gives the browser a new session (bastion's, Django's, Rails' all rotate it);
    # a refused one keeps the old. That tells them apart when both land on the same page
    # (a log-in form on the home page).
    after = _cookies(http)
    rotated = any(name in before and before[name] != value for name, value in after.items())
    if response.status is None or response.status >= 400 or (back and not rotated):
        shown = f" to {location}" if location else ""
        raise ProbeError(
            f"{identity.name}: signing in as {identity.user} failed ({response.got()}{shown})"
        )
    if location is not None and same_origin(urljoin(final, location), final):
        _get_page(http, f"sign in as {identity.name}", urljoin(final, location))
    return urlsplit(form.action).path


def _cookies(http: _Http) -> dict[str, str]:
    return {cookie.name: cookie.value or "" for cookie in http.client.cookies.jar}


def _filled(form: Form, identity: Identity) -> list[tuple[str, str]]:
    """The form's values with the user in its first email or text input and the password
    in its password input; hidden fields (the token, ``_next``) as the page set them."""
    user = next((f.name for f in form.fields if f.kind == "email"), None) or next(
        (f.name for f in form.fields if f.kind in _USER_INPUTS and not f.name.startswith("_")),
        None,
    )
    password = next(f.name for f in form.fields if f.kind == "password")
    if user is None:
        raise ProbeError(f"{identity.name}: the log-in form on {form.page} has no user field")
    pairs = []
    for field in form.fields:
        if field.kind in ("checkbox", "radio", "file"):
            continue
        if field.name == user:
            pairs.append((field.name, identity.user or ""))
        elif field.name == password:
            pairs.append((field.name, identity.password or ""))
        else:
            pairs.append((field.name, field.value))
    return pairs
