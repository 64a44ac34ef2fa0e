"""What every attack of this suite shares.

- The apps under attack (``Target``): the quickstart and the board, imported as uvicorn
  imports them, with their configuration in the environment.
- A raw browser (``Browser``): a Starlette ``TestClient`` that sends exactly the headers an
  attack names (``ActionClient`` would add a token and an Origin of its own), from an
  address of its own, so no attack shares a rate-limit window with another.
- ``handlers_run``: which registered handlers ran, observed with a profiler on the
  threads started inside the block (the client's event loop and its worker threads),
  never by replacing them.
- The checks every refusal passes: its status, the JSON envelope (or, for a browser's
  plain form post, the 303 and an error flash), and no traceback, path or secret in it.
- ``Attack`` and ``run_attack``: one hostile request, as data, and what it must answer.
"""

from __future__ import annotations

import collections
import cProfile
import importlib.util
import itertools
import json
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Final
from urllib.parse import quote

import anyio
import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from bastion import Bastion, csrf
from bastion.sessions import Session, cookie_name

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = ROOT / "examples"
QUICKSTART: Final = EXAMPLES / "quickstart.py"
KEY: Final = "security-suite-key-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER_KEY: Final = "another-suite-key-9876543210-ZYXWVUTSRQPONMLKJIHGFEDCBA"
PASSWORD: Final = "security-suite-password-5e1f"
ORIGIN: Final = "http://127.0.0.1"
JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
FORM_PAGE: Final = "/form"
"""Where a plain form is posted from (its Referer's path): a refused form goes back there."""
DIGEST: Final = re.compile(r"[0-9a-f]{16}")

LEAKS: Final = (
    "Traceback",
    'File "',
    "/src/",
    ".py",
    KEY,
    PASSWORD,
    "hunter2",
    "$argon2",
    "postgresql://",
    "RuntimeError",
    "OperationalError",
    "ValidationError",
    "TypeError",
    "ValueError",
    "KeyError",
)
"""What no reply may hold: a traceback, a source path, the secret key, a password or its
hash, an exception's class or message (the quickstart's ``boom`` raises a RuntimeError
naming ``postgresql://…hunter2``)."""

JSON_ONLY: Final = frozenset({"cross_origin", "not_found", "method_not_allowed"})
"""Refusals a plain form gets as JSON too: never a navigable redirect for a cross-site
page, and no form post at all before the action and the method are known."""

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A client address no other attack uses (100.64.0.0/10), for rate limits of its own."""
    n = next(_addresses)
    return f"100.{64 + (n >> 16 & 63)}.{n >> 8 & 255}.{n & 255}"


def load_quickstart(mp: pytest.MonkeyPatch) -> ModuleType:
    """examples/quickstart.py, imported as uvicorn imports it (``quickstart``), with the
    environment already set; ``mp`` restores sys.modules afterwards."""
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    mp.setitem(sys.modules, "quickstart", module)
    spec.loader.exec_module(module)
    return module


@dataclass
class Target:
    """An app under attack."""

    name: str
    app: Any
    bastion: Bastion
    state: Callable[[], object] = lambda: None
    """A snapshot of what a handler would change (the quickstart's click count)."""
    signed_in: Callable[[str], str] | None = None
    """The session ID of a caller signed in with this role."""
    secrets: tuple[str, ...] = ()
    """What no reply may hold besides ``LEAKS``: the app's own key and passwords."""


# --- which handlers ran ----------------------------------------------------------------


@contextmanager
def handlers_run(*bastions: Bastion, this_thread: bool = False) -> Iterator[list[str]]:
    """The names of the registered handlers whose code ran on threads started in this
    block (and on this thread too with ``this_thread``, for raw ASGI calls), filled in
    when the block ends.

    Each new thread is handed to a C profiler (``cProfile``) at its first event: it
    sees every function that runs there, at a fraction of a Python hook's cost."""
    codes = {spec.fn.__code__: spec.name for b in bastions for spec in b.registry}
    profilers: list[cProfile.Profile] = []
    ran: list[str] = []

    def start(frame: FrameType, event: str, arg: object) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()  # replaces this hook, on this thread only

    here = cProfile.Profile() if this_thread else None
    threading.setprofile(start)  # type: ignore[arg-type]
    if here is not None:
        here.enable()
    try:
        yield ran
    finally:
        if here is not None:
            here.disable()
            profilers.append(here)
        threading.setprofile(None)  # type: ignore[arg-type]
        seen = {
            codes[entry.code]
            for profiler in profilers
            for entry in profiler.getstats()
            if entry.code in codes
        }
        ran.extend(sorted(seen))


# --- a raw browser ---------------------------------------------------------------------


class Browser:
    """A test client that sends only what it is told to, from an address of its own."""

    def __init__(self, target: Target, address: str | None = None) -> None:
        self.target = target
        self.bastion = target.bastion
        self.cookie = cookie_name(self.bastion.config.sessions.cookie_name, False)
        self.client = TestClient(
            target.app,
            base_url=ORIGIN,
            follow_redirects=False,
            client=(address or fresh_address(), 50000),
        )

    def __enter__(self) -> Browser:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def new_session(self) -> tuple[str, str]:
        """A session as a page render makes one: its ID and a CSRF token for it."""
        return self.client.portal.call(self._new_session)

    def token(self, sid: str, bastion: Bastion | None = None) -> str:
        """A token for the session ``sid``, made with this app's keys (or another's)."""
        return self.client.portal.call(self._token, sid, bastion or self.bastion)

    def flash(self, sid: str) -> dict[str, Any] | None:
        """The flash waiting in the session ``sid`` for the next page (left in place)."""
        return self.client.portal.call(self._flash, sid)

    def session_exists(self, sid: str) -> bool:
        return self.client.portal.call(self._exists, sid)

    def user_id(self, sid: str) -> Any:
        """Who is signed in to the session ``sid`` (``None``: nobody)."""
        return self.client.portal.call(self._user_id, sid)

    def send(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        content: bytes | Iterator[bytes] | None = None,
    ) -> httpx.Response:
        # As bytes: a header may hold any text a client can put on the wire.
        raw = [(k.encode("latin-1"), v.encode("utf-8")) for k, v in headers]
        request = self.client.build_request(method, path, headers=raw, content=content)
        return self.client.send(request)

    async def _new_session(self) -> tuple[str, str]:
        session = Session()
        session.ensure()
        await self.bastion.session_manager.save(session, self.cookie, False)
        assert session.id is not None
        return session.id, csrf.issue(session, self.bastion.keys)

    async def _token(self, sid: str, bastion: Bastion) -> str:
        session = await self.bastion.session_manager.load(sid)
        assert session.exists, "the session to make a token for is gone"
        return csrf.issue(session, bastion.keys)

    async def _flash(self, sid: str) -> dict[str, Any] | None:
        return (await self.bastion.session_manager.load(sid)).pop_flash()

    async def _exists(self, sid: str) -> bool:
        return (await self.bastion.session_manager.load(sid)).exists

    async def _user_id(self, sid: str) -> Any:
        return (await self.bastion.session_manager.load(sid)).user_id


# --- what every reply must pass --------------------------------------------------------


def assert_no_leak(
    response: httpx.Response, sent: bytes = b"", secrets: tuple[str, ...] = ()
) -> None:
    """No traceback, source path, secret or exception detail, in the body or a header.
    A marker the request itself carried (a field name echoed in a 422) does not count."""
    seen = response.content + b"".join(k + b": " + v + b"\n" for k, v in response.headers.raw)
    for marker in (*LEAKS, *secrets):
        raw = marker.encode()
        if raw not in sent:
            assert raw not in seen, f"the reply holds {marker!r}: {seen[:400]!r}"


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    """The documented JSON envelope, with the headers every reply carries."""
    assert response.headers["content-type"] == JSON
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    envelope = response.json()
    assert isinstance(envelope, dict)
    assert isinstance(envelope.get("ok"), bool)
    if envelope["ok"]:
        assert set(envelope) == {"ok", "data"}
        return envelope
    assert set(envelope) == {"ok", "error"}
    error = envelope["error"]
    assert isinstance(error, dict)
    assert {"code", "message"} <= set(error) <= {"code", "message", "digest", "fields"}
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    if "digest" in error:
        assert DIGEST.fullmatch(error["digest"])
    if "fields" in error:
        assert isinstance(error["fields"], dict)
        assert all(isinstance(v, str) for v in error["fields"].values())
    return envelope


def assert_refused_json(response: httpx.Response, status: int, code: str) -> None:
    """A 4xx with the envelope: this code, a public message, no digest (nothing broke).
    A reply to HEAD has no body: its status and headers say it all."""
    if response.request.method == "HEAD":
        assert response.status_code == status
        assert response.content == b""
        return
    assert (response.status_code, _code_of(response)) == (status, code), response.text[:400]
    error = assert_envelope(response)["error"]
    assert "digest" not in error


def _code_of(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def session_after(response: httpx.Response, cookie: str, sent: str | None) -> str | None:
    """The session the browser holds after this reply: a new cookie, else the one sent."""
    for value in response.headers.get_list("set-cookie"):
        name, _, rest = value.partition("=")
        if name == cookie:
            return rest.split(";", 1)[0] or None
    return sent


# --- one hostile request, as data ------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """A hostile request and the refusal it must get.

    ``token`` says how the CSRF token travels: ``valid`` (the session's own, in
    ``X-CSRF-Token``, or in ``_csrf`` for a plain form), ``none``, ``empty``, ``forged``,
    ``other-session``, ``other-secret``, ``long``, ``non-ascii``, ``flipped``,
    ``padded``, ``truncated``, ``twice``, ``in-query``, ``in-cookie``. ``cookie`` says
    which session cookie is sent: ``session``, ``none``, ``forged``, ``twice``,
    ``giant``, ``many``, ``host-prefix``, ``huge-value``, ``uppercase``, ``quoted``.
    """

    action: str
    status: int
    code: str
    body: bytes | Callable[[], bytes] = b"{}"
    content_type: str | None = JSON
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    token: str = "valid"
    origin: str | None = ORIGIN
    cookie: str = "session"
    caller: str = "anonymous"
    plain: bool = False
    """A browser's plain form post (no JavaScript): a 303 back to the form, with a flash."""
    path: str | None = None
    """Posted here instead of the action's URL: ``{id}`` is the action's ID, ``{other}``
    its ID under another secret key, ``{swapped}`` and ``{truncated}`` its ID with the
    case of each letter swapped or the last character cut."""
    chunked: bool = False
    """Sent in 64 KiB chunks without a Content-Length."""

    @property
    def redirects(self) -> bool:
        return self.plain and self.code not in JSON_ONLY


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


def _forged(length: int) -> str:
    return secrets.token_urlsafe(length)[:length]


def _tokens(attack: Attack, browser: Browser, sid: str, token: str, other: Bastion) -> list[str]:
    """The token values this attack sends (none, one, or two)."""
    kind = attack.token
    if kind in ("none", "in-query", "in-cookie"):
        return []
    if kind == "twice":
        return [token, token]
    if kind == "other-session":
        return [browser.new_session()[1]]
    if kind == "other-secret":
        return [browser.token(sid, other)]
    values = {
        "valid": token,
        "empty": "",
        "forged": _forged(86),
        "long": "A" * 10_000,
        "non-ascii": "\u00e9" * 86,
        "flipped": token[:40] + ("B" if token[40] != "B" else "C") + token[41:],
        "padded": token + "==",
        "truncated": token[:-1],
    }
    return [values[kind]]


def _body(attack: Attack, tokens: list[str], token: str) -> bytes:
    """The body, ``{csrf}`` replaced by the session's token; a plain form's ``_csrf``
    fields appended (unless the body places its own)."""
    body = attack.body() if callable(attack.body) else attack.body
    if b"{csrf}" in body:
        return body.replace(b"{csrf}", token.encode())
    if attack.plain and (attack.content_type or "").startswith("multipart/"):
        disposition = b'--XX\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\n'
        return b"".join(disposition + t.encode() + b"\r\n" for t in tokens) + body
    if attack.plain:
        body += b"".join(b"&_csrf=" + quote(t).encode() for t in tokens)
    return body


def _cookies(attack: Attack, browser: Browser, sid: str, token: str) -> list[str]:
    name = browser.cookie
    junk = "j" * 100_000
    kind = "in-cookie" if attack.token == "in-cookie" else attack.cookie
    return {
        "session": [f"{name}={sid}"],
        "none": [],
        "forged": [f"{name}={_forged(43)}"],
        "twice": [f"{name}={sid}; {name}={_forged(43)}"],
        "giant": [f"junk={junk}"],
        "many": ["; ".join(f"c{i}=v{i}" for i in range(1000))],
        "host-prefix": [f"__Host-{name}={sid}"],
        "huge-value": [f"{name}={sid}{junk}"],
        "uppercase": [f"{name.upper()}={sid}"],
        "quoted": [f'{name}="{sid}"'],
        "in-cookie": [f"{name}={sid}; csrf_token={token}; X-CSRF-Token={token}"],
    }[kind]


def run_attack(target: Target, attack: Attack, other: Bastion) -> httpx.Response:
    """Send the attack from a fresh browser; check it is refused as it must be, that no
    handler ran, nothing changed, and nothing leaked. Returns the reply."""
    signed_in = None
    if attack.caller != "anonymous":
        assert target.signed_in is not None
        signed_in = target.signed_in(attack.caller)  # before the count and the snapshot
    before = target.state()
    with handlers_run(target.bastion) as ran, Browser(target) as browser:
        if signed_in is None:
            sid, token = browser.new_session()
        else:
            sid, token = signed_in, browser.token(signed_in)
        tokens = _tokens(attack, browser, sid, token, other)
        headers: list[tuple[str, str]] = []
        if not attack.plain:
            headers += [("x-csrf-token", t) for t in tokens]
        headers += [("cookie", c) for c in _cookies(attack, browser, sid, token)]
        if attack.content_type is not None:
            headers.append(("content-type", attack.content_type))
        if attack.origin is not None:
            headers.append(("origin", attack.origin))
        if attack.plain:
            headers += [("accept", "text/html"), ("referer", ORIGIN + FORM_PAGE)]
        else:
            headers.append(("accept", JSON))
        headers.extend(attack.headers)
        path = _path(attack, target.bastion, other)
        if attack.token == "in-query":
            path += f"?_csrf={token}&x-csrf-token={token}"
        body = _body(attack, tokens, token)
        content = _chunks(body) if attack.chunked else body
        response = browser.send(attack.method, path, headers, content)

        sent = body + path.encode() + json.dumps(headers).encode()
        assert_no_leak(response, sent, target.secrets)
        if attack.redirects:
            assert response.status_code == 303, response.text[:400]
            assert response.headers["location"] == FORM_PAGE
            assert response.content == b""
            after = session_after(response, browser.cookie, sid)
            assert after is not None
            flash = browser.flash(after)
            assert flash is not None
            assert (flash["ok"], flash["code"]) == (False, attack.code), flash
        else:
            assert_refused_json(response, attack.status, attack.code)
    assert ran == [], f"handlers ran: {ran}"
    assert target.state() == before
    return response


def _path(attack: Attack, bastion: Bastion, other: Bastion) -> str:
    if attack.path is None:
        return bastion.url_for(attack.action)
    spec_id = bastion.registry.get(attack.action).id
    path = (
        attack.path.replace("{id}", spec_id)
        .replace("{swapped}", spec_id.swapcase())
        .replace("{truncated}", spec_id[:-1])
    )
    if "{other}" in path:
        path = path.replace("{other}", other.registry.get(attack.action).id)
    return path


def with_ids(attacks: list[tuple[str, Attack]]) -> list[Any]:
    """pytest params, each named by its attack."""
    ids = [name for name, _ in attacks]
    duplicates = {name for name in ids if ids.count(name) > 1}
    assert not duplicates, duplicates
    return [pytest.param(attack, id=name) for name, attack in attacks]


# --- raw ASGI calls ----------------------------------------------------------------------


@dataclass
class Reply:
    """What a raw ASGI call answered, and how many times it asked for the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reads: int

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)


class CountingReceive:
    """An ASGI ``receive`` that hands out the body in the chunks given (then, if told to,
    waits forever or reports a disconnect), counting every call and every byte taken."""

    def __init__(self, chunks: list[bytes], *, then: str = "end") -> None:
        self.chunks = collections.deque(chunks)
        self.then = then
        self.reads = 0
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.chunks:
            chunk = self.chunks.popleft()
            self.taken += len(chunk)
            more = bool(self.chunks) or self.then != "end"
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self.then == "stall":
            await anyio.sleep_forever()
        if self.then == "end" and self.reads == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    receive: CountingReceive | None = None,
    *,
    client: str = "127.0.0.1",
    query: bytes = b"",
) -> Reply:
    """One request straight into the ASGI app: no client library between, so the path,
    the headers and the body arrive exactly as given."""
    receive = receive or CountingReceive([])
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": (client, 50000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Reply(start["status"], list(start.get("headers", [])), body, receive.reads)


def raw_headers(**values: str | bytes) -> list[tuple[bytes, bytes]]:
    """ASGI headers from keyword arguments (``content_type`` is ``content-type``)."""
    return [
        (name.replace("_", "-").encode(), v if isinstance(v, bytes) else v.encode("latin-1"))
        for name, v in values.items()
    ]


async def session_and_token(bastion: Bastion) -> tuple[str, str]:
    """A session saved in the app's store, and a CSRF token for it."""
    session = Session()
    session.ensure()
    name = cookie_name(bastion.config.sessions.cookie_name, False)
    await bastion.session_manager.save(session, name, False)
    assert session.id is not None
    return session.id, csrf.issue(session, bastion.keys)


def assert_no_leak_in(reply: Reply, sent: bytes = b"") -> None:
    """``assert_no_leak`` for a raw ASGI reply."""
    seen = reply.body + b"".join(k + b": " + v + b"\n" for k, v in reply.headers)
    for marker in LEAKS:
        raw = marker.encode()
        if raw not in sent:
            assert raw not in seen, f"the reply holds {marker!r}: {seen[:400]!r}"


def script_headers(browser: Browser, sid: str, token: str) -> list[tuple[str, str]]:
    """A script's call as bastion.js sends it: JSON, the token in its header, in the
    session ``sid``."""
    return [
        ("content-type", JSON),
        ("accept", JSON),
        ("origin", ORIGIN),
        ("x-csrf-token", token),
        ("cookie", f"{browser.cookie}={sid}"),
    ]
