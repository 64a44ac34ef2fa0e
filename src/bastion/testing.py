"""Test your own actions over the real ASGI stack, by function rather than by ID.

::

    from bastion.testing import ActionClient

    def test_greet():
        with ActionClient(app, bastion) as client:
            reply = client.call(greet, {"name": "Ada"})
        assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}

The client does what a browser on your page would: it keeps the session cookie,
sends ``Origin``, and puts a valid CSRF token on every action call. Each can be
left out or replaced, to test the refusals::

    client.call(greet, {...}, token=None)             # no token
    client.call(greet, {...}, token="forged")         # a token of your own
    client.call(greet, {...}, origin="https://evil.example")
    client.call(greet, {...}, origin=None)            # no Origin header
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.types import ASGIApp

try:
    import httpx2 as httpx
    from starlette.testclient import TestClient
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion.testing drives your app with Starlette's TestClient, which needs httpx2: "
        "pip install 'bastion[testing]'"
    ) from missing

from bastion import csrf
from bastion.app import Bastion
from bastion.sessions import cookie_name

__all__ = ["AUTO", "ActionClient"]


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
"""Let the client supply the value a real page would (the default)."""

_MARK: Final = "bastion.testing"


class ActionClient(TestClient):
    """A Starlette ``TestClient`` that knows the app's actions and speaks their protocol.

    It talks to ``http://127.0.0.1`` (a loopback server, so debug mode is allowed),
    sends ``Origin: http://127.0.0.1`` (list it in ``allowed_origins``, or use debug
    mode), and never follows redirects, so a plain form post's 303 can be inspected.
    Requests sent with the plain ``post()`` get the token and Origin headers too.
    """

    def __init__(
        self,
        app: ASGIApp,
        bastion: Bastion,
        *,
        origin: str | None = "http://127.0.0.1",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("base_url", "http://127.0.0.1")
        kwargs.setdefault("follow_redirects", False)
        super().__init__(app, **kwargs)
        self.bastion = bastion
        self.origin = origin
        """Sent as ``Origin`` on action calls; ``None`` sends none."""

    def url(self, action: Callable[..., Any] | str) -> str:
        return self.bastion.url_for(action)

    # --- the session and its token -----------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The session cookie this client holds, if any."""
        return self.cookies.get(self._cookie_name())

    def token(self) -> str:
        """A valid CSRF token for this client's session, which is created if needed."""
        with self._portal_factory() as portal:
            return portal.call(self._token)

    async def _token(self) -> str:
        manager = self.bastion.session_manager
        session = await manager.load(self.session_id)
        if session.id is None:
            session.ensure()
            set_cookie = await manager.save(session, self._cookie_name(), self._secure())
            # Into the jar as a browser takes it from a reply (same domain, same flags), so
            # the server's later Set-Cookie replaces it instead of sitting beside it.
            reply = httpx.Response(
                200, headers=set_cookie, request=httpx.Request("GET", self.base_url)
            )
            self.cookies.extract_cookies(reply)
        return csrf.issue(session, self.bastion.keys)

    def session(self) -> dict[str, Any]:
        """The data in this client's server-side session (a copy)."""
        with self._portal_factory() as portal:
            session = portal.call(self.bastion.session_manager.load, self.session_id)
        return dict(session)

    def _secure(self) -> bool:
        """As ``Bastion.is_https`` decides: the configuration first, else the scheme."""
        if self.bastion.config.https is not None:
            return self.bastion.config.https
        return self.base_url.scheme == "https"

    def _cookie_name(self) -> str:
        return cookie_name(self.bastion.config.sessions.cookie_name, self._secure())

    # --- calls -------------------------------------------------------------------------

    def call(
        self,
        action: Callable[..., Any] | str,
        data: Mapping[str, Any] | None = None,
        *,
        token: str | _Auto | None = AUTO,
        origin: str | _Auto | None = AUTO,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call an action as a script does: a JSON body, the token in ``X-CSRF-Token``."""
        sent = self._action_headers(token, origin, headers, header_token=True)
        return self.post(
            self.url(action),
            content=json.dumps(dict(data or {})),
            headers={"Content-Type": "application/json", "Accept": "application/json", **sent},
            extensions={_MARK: True},
        )

    def submit(
        self,
        action: Callable[..., Any] | str,
        fields: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, Any] | None = None,
        token: str | _Auto | None = AUTO,
        origin: str | _Auto | None = AUTO,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Post a form as a browser without JavaScript does: the token in ``_csrf``, and
        the reply is a 303 (its flash is kept for the next page)."""
        form = dict(fields or {})
        if token is AUTO:
            form.setdefault(csrf.FIELD, self.token())
        elif token is not None:
            form[csrf.FIELD] = token
        sent = self._action_headers(None, origin, headers, header_token=False)
        return self.post(
            self.url(action), data=form, files=files, headers=sent, extensions={_MARK: True}
        )

    def _action_headers(
        self,
        token: str | _Auto | None,
        origin: str | _Auto | None,
        extra: Mapping[str, str] | None,
        *,
        header_token: bool,
    ) -> dict[str, str]:
        sent: dict[str, str] = {}
        chosen_origin = self.origin if origin is AUTO else origin
        if isinstance(chosen_origin, str):
            sent["Origin"] = chosen_origin
        if header_token:
            chosen = self.token() if token is AUTO else token
            if isinstance(chosen, str):
                sent["X-CSRF-Token"] = chosen
        sent.update(extra or {})
        return sent

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        # A plain post() to an action gets what a page would send, unless it set them.
        if (
            not request.extensions.get(_MARK)
            and request.method == "POST"
            and request.url.path.startswith(self.bastion.config.prefix + "/")
        ):
            if self.origin is not None and "origin" not in request.headers:
                request.headers["Origin"] = self.origin
            if "x-csrf-token" not in request.headers and not _has_form_token(request):
                request.headers["X-CSRF-Token"] = self.token()
                # The token may have just created the session: send its cookie too.
                request.headers.pop("cookie", None)
                self.cookies.set_cookie_header(request)
        return super().send(request, **kwargs)


def _has_form_token(request: httpx.Request) -> bool:
    """Whether a form body in memory already has a ``_csrf`` field. Only forms count: a
    JSON body that merely mentions ``_csrf`` still gets the header token. A streamed
    body (httpx streams multipart) is not read; ``submit()`` handles those itself."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    try:
        body = request.content
    except httpx.RequestNotRead:
        return False
    if media_type == "multipart/form-data":
        return b'name="' + csrf.FIELD.encode() + b'"' in body
    return any(name == csrf.FIELD for name, _ in parse_qsl(body.decode("latin-1"), True))
