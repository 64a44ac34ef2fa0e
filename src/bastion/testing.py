"""Test your own actions over the real ASGI stack, by function rather than by ID.

::

    from bastion.testing import ActionClient

    def test_greet():
        with ActionClient(app, bastion) as client:
            reply = client.call(greet, {"name": "Ada"})
        assert reply.json() == {"ok": True, "data": {"message": "Hello, Ada!"}}

The client does what a browser on your page would: it keeps the session cookie,
sends ``Origin`` (and, for a form, ``Referer``), and puts a valid CSRF token on every
action call. Each can be left out or replaced, to test the refusals::

    client.call(greet, {...}, token=None)             # no token
    client.call(greet, {...}, token="forged")         # a token of your own
    client.call(greet, {...}, origin="https://evil.example")
    client.call(greet, {...}, origin=None)            # no Origin header

Each client is a visitor of its own: it calls from an address no other client of the
process has (``client_address``), so rate limits count it apart from the others, as they
would two people. ``reset_limits()`` forgets every count; ``flash()`` reads what a plain
form post left for the next page; ``bound()`` seals values as a page would; and
``fast_passwords()`` makes argon2 cheap while a test runs. docs/guides/testing.md shows
each in a test.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from argon2 import PasswordHasher
from starlette.types import ASGIApp

try:
    import httpx2 as httpx
    from starlette.testclient import TestClient
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion.testing drives your app with Starlette's TestClient, which needs httpx2: "
        "pip install 'bastion[testing]'"
    ) from missing

from bastion import csrf, idempotency, passwords
from bastion.app import Bastion
from bastion.pipeline.flash import Flash
from bastion.pipeline.stages.binding import DEFAULT_TTL
from bastion.sessions import Session, cookie_name

__all__ = ["AUTO", "ActionClient", "fast_passwords"]


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
"""Let the client supply the value a real page would (the default)."""

_MARK: Final = "bastion.testing"
_PORT: Final = 50000
"""The client port, Starlette's TestClient's own; never 0, which bastion reads as an
address the server rewrote from ``X-Forwarded-For``."""

_BOUND: Final = "_bound"

# --- one address per client -------------------------------------------------------------

_SPAN: Final = 254 * 256 * 256
"""127.0.0.0/8 less the addresses ending in .0 or .255: 16.6 million clients apart."""
_handed_out = itertools.count()
_handing: Final = threading.Lock()


def _fresh_address() -> str:
    """127.0.0.2, 127.0.0.3 … one per client of this process, never 127.0.0.1 (the server
    the client talks to). Loopback, so it is never a real visitor's address; so many that
    a long test run does not reuse one, which on a shared Redis would share a window."""
    with _handing:
        n = next(_handed_out) % (_SPAN - 1) + 1
    block, last = divmod(n, 254)
    return f"127.{block >> 8 & 255}.{block & 255}.{last + 1}"


class ActionClient(TestClient):
    """A Starlette ``TestClient`` that knows the app's actions and speaks their protocol.

    It talks to ``http://127.0.0.1`` (a loopback server, so debug mode is allowed),
    sends ``Origin: http://127.0.0.1`` (list it in ``allowed_origins``, or use debug
    mode), and never follows redirects, so a plain form post's 303 can be inspected.
    Requests sent with the plain ``post()`` get the token and Origin headers too.

    ``client_address`` is the address the app sees (``ctx.client``, the key of rate
    limits and log-in throttles): by default one of 127.0.0.0/8 that no other client of
    this process has, so two clients are two visitors and one client stays one. Give an
    address (``"203.0.113.9"``) or an ``(address, port)`` pair to choose it; Starlette's
    own ``client=("testclient", 50000)`` is accepted as well.
    """

    def __init__(
        self,
        app: ASGIApp,
        bastion: Bastion[Any],
        *,
        origin: str | None = "http://127.0.0.1",
        client_address: str | tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("base_url", "http://127.0.0.1")
        kwargs.setdefault("follow_redirects", False)
        if "client" in kwargs:
            if client_address is not None:
                raise TypeError("give client_address= or Starlette's client=, not both")
            client_address = kwargs.pop("client")
        if client_address is None:
            client_address = _fresh_address()
        peer = (client_address, _PORT) if isinstance(client_address, str) else client_address
        super().__init__(app, client=peer, **kwargs)
        self.bastion = bastion
        self.origin = origin
        """Sent as ``Origin`` on action calls; ``None`` sends none."""
        self.client_address: str = peer[0]
        """The address the app sees this client call from (``ctx.client``)."""

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
            session = portal.call(self._ensure_session)
        return csrf.issue(session, self.bastion.keys)

    def idempotency_key(self, action: Callable[..., Any] | str) -> str:
        """The ``_idem`` value ``action_form()`` renders for an ``idempotent=True`` action
        in a page for this client (its session is created if needed): send it in a form,
        twice for a double click."""
        with self._portal_factory() as portal:
            session = portal.call(self._ensure_session)
        return idempotency.issue(self.bastion.keys, self.bastion.registry.get(action), session)

    async def _ensure_session(self) -> Session:
        """This client's session; created (and its cookie taken) if it has none."""
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
        return session

    def session(self) -> dict[str, Any]:
        """The data in this client's server-side session (a copy)."""
        return dict(self._load_session())

    def flash(self, action: Callable[..., Any] | str | None = None) -> Flash | None:
        """What the last plain form post left for the next page (for ``action``, if
        given), or ``None``: read from the session, with no page to render. It stays
        pending, so the next page asking for HTML still shows it, once."""
        # pop_flash() on a copy loaded for this look only, which is never saved.
        stored = self._load_session().pop_flash()
        if stored is None:
            return None
        if action is not None and stored.get("action") != self.bastion.registry.get(action).name:
            return None
        return Flash.from_dict(stored)

    def bound(
        self,
        action: Callable[..., Any] | str,
        values: Mapping[str, Any],
        *,
        ttl: float = DEFAULT_TTL,
        bind_session: bool | None = None,
    ) -> str:
        """``values`` sealed for ``action``'s bound parameter, as a page rendering the form
        for this client would seal them (``Bastion.seal`` with this client's session): the
        ``_bound`` value, to send with ``submit(..., bound=...)`` or in a form of your own.
        ``bind_session=True`` ties it to this session (created if needed); by default it
        is tied when a user is signed in."""
        if bind_session:
            with self._portal_factory() as portal:
                session = portal.call(self._ensure_session)
        else:
            session = self._load_session()
        return self.bastion.seal(
            action, dict(values), session=session, ttl=ttl, bind_session=bind_session
        )

    def _load_session(self) -> Session:
        with self._portal_factory() as portal:
            return portal.call(self.bastion.session_manager.load, self.session_id)

    def _secure(self) -> bool:
        """As ``Bastion.is_https`` decides: the configuration first, else the scheme."""
        if self.bastion.config.https is not None:
            return self.bastion.config.https
        return self.base_url.scheme == "https"

    def _cookie_name(self) -> str:
        return cookie_name(self.bastion.config.sessions.cookie_name, self._secure())

    # --- rate limits -------------------------------------------------------------------

    def reset_limits(self) -> None:
        """Forget every count the app's rate limits hold (every action's, every caller's,
        and the log-in throttles'), as if the app had just started, so a test can go past
        a limit it reached on purpose.

        The app's own counters are kept in memory unless it was given Redis; there this
        clears the app alone. On Redis (``rate_limit_storage`` or a Redis store) it deletes
        every limits counter in that Redis database, under the ``limits`` key prefix:
        those of any other app or test process sharing it too. Give tests a database of
        their own (``redis://…/15``)."""
        with self._portal_factory() as portal:
            portal.call(self._reset_limits)

    async def _reset_limits(self) -> None:
        reset = self.bastion.counter.storage.reset()
        if inspect.isawaitable(reset):
            await reset

    # --- calls -------------------------------------------------------------------------

    def call(
        self,
        action: Callable[..., Any] | str,
        data: Mapping[str, Any] | None = None,
        *,
        token: str | _Auto | None = AUTO,
        origin: str | _Auto | None = AUTO,
        bound: str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call an action as a script does: a JSON body, the token in ``X-CSRF-Token``.
        ``bound`` is the sealed ``_bound`` value (or values to seal with ``bound()``)."""
        body = dict(data or {})
        if bound is not None:
            body[_BOUND] = self._sealed(action, bound)
        sent = self._action_headers(token, origin, headers, header_token=True)
        return self.post(
            self.url(action),
            content=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "application/json", **sent},
            extensions={_MARK: True},
        )

    def submit(
        self,
        action: Callable[..., Any] | str,
        fields: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        token: str | _Auto | None = AUTO,
        origin: str | _Auto | None = AUTO,
        referer: str | _Auto | None = AUTO,
        bound: str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Post a form as a browser without JavaScript does: the token in ``_csrf``, and
        the reply is a 303 (its flash is kept for the next page: see ``flash()``).

        ``referer`` is the page the form was on, sent as a browser sends it: by default
        ``/`` of the origin the call comes from; a path (``"/contact"``) on that origin;
        a whole URL as it is; ``None`` for none. A refused form goes back to it, and so
        does a successful one without ``_next``. ``bound`` is the sealed ``_bound`` value,
        or values for ``bound()`` to seal."""
        form = dict(fields or {})
        if token is AUTO:
            form.setdefault(csrf.FIELD, self.token())
        elif token is not None:
            form[csrf.FIELD] = token
        if bound is not None:
            form[_BOUND] = self._sealed(action, bound)
        sent = self._action_headers(None, origin, None, header_token=False)
        page = self._referer(referer, sent.get("Origin"))
        given = {name.lower() for name in (headers or {})}
        if page is not None and "referer" not in given:  # a Referer in headers= wins
            sent["Referer"] = page
        sent.update(headers or {})
        return self.post(
            self.url(action), data=form, files=files, headers=sent, extensions={_MARK: True}
        )

    def _sealed(self, action: Callable[..., Any] | str, bound: str | Mapping[str, Any]) -> str:
        return bound if isinstance(bound, str) else self.bound(action, bound)

    def _referer(self, referer: str | _Auto | None, origin: str | None) -> str | None:
        """The page's URL: a path is put on the origin the call comes from (else the
        client's own, else its base URL's), a whole URL is kept."""
        if referer is None:
            return None
        path = "/" if isinstance(referer, _Auto) else referer
        if urlsplit(path).scheme:
            return path
        if origin is None:
            origin = self.origin or f"{self.base_url.scheme}://{self.base_url.netloc.decode()}"
        return origin + path

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


# --- passwords ---------------------------------------------------------------------------

_FAST_HASHER: Final = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""argon2id at its cheapest costs (one pass over 8 KiB): ~0.1 ms a hash instead of ~150 ms
and 64 MiB. Hash and salt keep their usual lengths, so a stored hash has the shape of a
real one (the column it goes in still fits it)."""


@contextlib.contextmanager
def fast_passwords() -> Iterator[None]:
    """While the block runs, ``hash_password`` (and the dummy check for unknown accounts)
    use argon2id at its cheapest costs, so a suite that signs up hundreds of users does not
    spend a minute hashing. Never the default: only inside this block, process-wide (the
    app's worker threads included), and the costs in use before come back after it.

    A hash made here verifies anywhere, since argon2 reads its costs from the hash itself;
    outside the block, ``needs_rehash`` says it should be made again. As a pytest fixture::

        @pytest.fixture(autouse=True)
        def _fast_passwords():
            with fast_passwords():
                yield
    """
    previous = passwords.swap_hasher(_FAST_HASHER)
    try:
        yield
    finally:
        passwords.swap_hasher(previous)
