"""Pipeline stage 6: server-side sessions behind an opaque cookie.

The cookie holds only a random ID (256 bits); the data lives in a store, under an
HMAC of that ID, so a copy of the store holds no usable cookie. A session is made
only when something needs one (a CSRF token is rendered, data is set), so plain
pages set no cookie. An ID the server did not issue is never adopted: an unknown or
expired cookie gets a fresh session (no fixation). ``rotate()`` issues a new ID and
CSRF secret and kills the old ID; ``clear()`` ends the session.

Every signed-in session is also listed under its user (``user-sessions:<id>``, the
storage keys of its sessions and when each expires, written with compare-and-set at
sign-in), so that ``SessionManager.end_all`` can end every session of a user, on every
worker and host that shares the store: a "sign out everywhere", or an admin's.

A session is written back only if the store still holds what this request loaded
(``Store.compare_and_set``): a request that loaded it before a log-out, a rotation or
another request's change can never resurrect or overwrite it; its own change is
dropped. A call whose body arrived late is refused if its session ended meanwhile
(``SessionManager.confirm``).

The cookie is ``HttpOnly; SameSite=Lax; Path=/``, and over https also ``Secure``
with the ``__Host-`` prefix. Whether the app is served over https comes from the
configuration or the connection's own scheme, never from a request header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Final

import pydantic_core
from starlette.datastructures import Headers
from starlette.types import Scope

from bastion.crypto.tokens import mac

if TYPE_CHECKING:
    from bastion.config import SessionConfig
    from bastion.crypto.keys import KeyRing
    from bastion.stores import Store

__all__ = [
    "Pending",
    "Session",
    "SessionManager",
    "cookie_name",
    "get_session",
    "session_cookie",
    "session_id",
]

logger = logging.getLogger("bastion")

SCOPE_KEY: Final = "bastion.session"
FLASH_KEY: Final = "bastion.flash"

_ID: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_TOUCH_EVERY: Final = 60.0
"""Seconds between writes that only record activity (for the idle timeout)."""
_INDEX: Final = "user-sessions:"
_INDEX_ATTEMPTS: Final = 20
"""Compare-and-set attempts on a user's list of sessions before giving up (only
simultaneous sign-ins of one user contend for it)."""
_HINTS: Final = 10_000
"""Sessions whose user this process keeps in mind (``SessionManager.hint``): ~2 MB."""
UNKNOWN: Final = object()
"""``SessionManager.hint`` for a session this process has not loaded lately."""
_CONFIRM_AFTER: Final = 0.1
"""Seconds after its session was loaded past which a call confirms that the session
still exists before its handler runs (a log-out may have ended it meanwhile)."""


class Session(MutableMapping[str, Any]):
    """One visitor's server-side state. A mapping of JSON-serialisable values."""

    def __init__(self, sid: str | None = None, record: dict[str, Any] | None = None) -> None:
        self._sid = sid
        self._record: dict[str, Any] = record or {}
        self._data: dict[str, Any] = self._record.setdefault("data", {})
        self._dead: list[str] = []
        """IDs to delete from the store at the end of the request (rotated or cleared)."""
        self.modified = False
        self.cookie_changed = False
        self._stored: tuple[str, bytes] | None = None
        """Where this request found the session in the store, and what it found: a save
        writes only if that is still there."""
        self._loaded_at = time.monotonic()
        self._csrf: tuple[str, bytes] | None = None

    @classmethod
    def for_token(cls, token_id: str, user_id: str | int) -> Session:
        """The session of a call made with an API token: its user, never a log-in time
        (``recent_login`` refuses it), a CSRF secret of the token's own (idempotency
        keys are scoped to it), and never saved: the middleware saves only the session
        of the request's cookie, and a token call has none."""
        secret = base64.urlsafe_b64encode(
            hashlib.sha256(b"api-token\0" + token_id.encode()).digest()
        )
        now = time.time()
        record = {"user": user_id, "created": now, "seen": now, "csrf": secret.decode()}
        return cls(f"token:{token_id}", record)

    # --- identity --------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The current session ID, or ``None`` while no session exists."""
        return self._sid

    @property
    def exists(self) -> bool:
        return self._sid is not None

    @property
    def needs_saving(self) -> bool:
        """Whether the end of the request has anything to write, delete or set: most
        requests change nothing, and skip the save altogether."""
        return self.modified or self.cookie_changed or bool(self._dead)

    def ensure(self) -> None:
        """Make the session exist now (a fresh ID and CSRF secret) if it does not yet."""
        if self._sid is None:
            now = time.time()
            self._sid = secrets.token_urlsafe(32)
            self._record.update(created=now, seen=now, csrf=_new_secret())
            self.modified = self.cookie_changed = True

    @property
    def csrf_secret(self) -> bytes:
        """The per-session secret CSRF tokens are derived from (creates the session)."""
        self.ensure()
        encoded: str = self._record["csrf"]
        # Decoded once per value: every call reads it, and rotate() or clear() replace it.
        if self._csrf is None or self._csrf[0] is not encoded:
            self._csrf = (encoded, base64.urlsafe_b64decode(encoded))
        return self._csrf[1]

    def rotate(self) -> None:
        """A new ID and CSRF secret, same data; the old ID dies. Call it at login."""
        if self._sid is not None:
            self._dead.append(self._sid)
            self._sid = None
        self.ensure()

    def clear(self) -> None:
        """End the session: its data is dropped and its ID dies. Call it at logout."""
        if self._sid is not None:
            self._dead.append(self._sid)
        self._sid = None
        self._record = {}
        self._data = self._record.setdefault("data", {})
        self.modified = self.cookie_changed = True

    # --- sign-in ---------------------------------------------------------------------

    @property
    def user_id(self) -> Any:
        """The ID of the signed-in user, or ``None`` for an anonymous visitor."""
        return self._record.get("user")

    def login(self, user_id: str | int) -> None:
        """Sign in: rotate first (a session ID known before log-in dies), then remember
        the user and when they proved who they are. The CSRF secret is new, so tokens
        rendered before are refused. Signing the same user in again is how a re-
        authentication (``recent_login``) is recorded."""
        if isinstance(user_id, bool) or not isinstance(user_id, str | int):
            raise TypeError(f"a user ID is a str or an int, not {type(user_id).__name__}")
        self.rotate()
        self._record["user"] = user_id
        self._record["auth"] = time.time()
        self.modified = True

    @property
    def authenticated_at(self) -> float | None:
        """When the signed-in user last proved who they are (their log-in), as a Unix
        time; ``None`` for an anonymous visitor."""
        at = self._record.get("auth") if self.user_id is not None else None
        return float(at) if isinstance(at, int | float) else None

    def logout(self) -> None:
        """Sign out: the whole session ends (its data and its ID)."""
        self.clear()

    # --- flash -----------------------------------------------------------------------

    def set_flash(self, flash: dict[str, Any]) -> None:
        """Keep a message for the next page shown to this visitor (creates the session)."""
        self.ensure()
        self._record["flash"] = flash
        self.modified = True

    def pop_flash(self) -> dict[str, Any] | None:
        flash: dict[str, Any] | None = self._record.pop("flash", None)
        if flash is not None:
            self.modified = True
        return flash

    # --- the mapping -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.ensure()
        self._data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # Never the ID: it is a bearer credential.
        return f"Session(exists={self.exists}, keys={sorted(self._data)})"


def session_id(cookie: str | None) -> str | None:
    """``cookie`` if it has the shape of a session ID bastion issues, else ``None``."""
    return cookie if cookie is not None and _ID.fullmatch(cookie) else None


class Pending:
    """The session of an action call until bastion's pipeline loads it, after the
    checks that need no state (route, origin, the CSRF token), so that its read can go
    with the call's rate-limit hit in one round trip to a shared Redis. The middleware
    saves what the pipeline put here; it is one object, so a middleware that copies the
    scope between them sees it too."""

    __slots__ = ("session", "sid")

    def __init__(self, cookie: str | None) -> None:
        self.sid = session_id(cookie)
        """The session ID the call's cookie names, if it has the shape of one."""
        self.session: Session | None = None


def get_session(scope: Scope) -> Session:
    """The session of this request; bastion's middleware put it in the scope."""
    session: Session | Pending | None = scope.get(SCOPE_KEY)
    if isinstance(session, Pending):
        if session.session is None:
            raise RuntimeError(
                "this action call's session is not loaded yet: bastion's pipeline loads it "
                "after the checks that need none; an action reads it as ctx.session"
            )
        return session.session
    if session is None:
        raise RuntimeError(
            "no bastion session here: add bastion to the app with bastion.mount(app)"
        )
    return session


def _new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class SessionManager:
    """Reads and writes sessions in the app's store, under HMACs of their IDs."""

    def __init__(self, store: Store, keys: KeyRing, config: SessionConfig) -> None:
        self.store = store
        self.keys = keys
        self.config = config
        self._users: dict[str, Any] = {}
        """The user of each session this process loaded lately, by storage key (``hint``)."""

    def hint(self, sid: str | None) -> tuple[str, Any] | None:
        """The storage key of ``sid`` and the user its session had when this process last
        loaded it (``None``: anonymous), or ``UNKNOWN``; ``None`` when ``sid`` is not a
        session ID at all (no store read is needed to know there is no session).

        A session ID's user never changes: signing in or out gives the session a new ID.
        So the rate-limit hit of a call can be sent with its session's read, keyed by
        this user; if the session turns out to have ended, the call is counted again
        under what it is now (``forget``)."""
        if sid is None or session_id(sid) is None:
            return None
        key = self.store_keys(sid)[0]
        return key, self._users.get(key, UNKNOWN)

    def forget(self, key: str) -> None:
        self._users.pop(key, None)

    def _remember_user(self, key: str, user: Any) -> None:
        users = self._users
        if len(users) >= _HINTS and key not in users:
            del users[next(iter(users))]  # the oldest: dicts keep their insertion order
        users[key] = user

    def store_keys(self, sid: str) -> list[str]:
        """Where a session is stored: under the current key first, then each fallback."""
        raw = sid.encode()
        return ["session:" + mac(key, raw).hex() for key in self.keys.all("session")]

    async def load(self, sid: str | None, first: tuple[str, bytes | None] | None = None) -> Session:
        """The session ``sid`` names, or a new one (not yet in the store) if none is live.
        ``first``: what the store held under its current storage key, read already."""
        if sid is None or not _ID.fullmatch(sid):
            return Session()
        raw, generation = None, 0
        if first is not None and first[1] is not None:
            keys, (key, raw) = [first[0]], first
        else:
            keys = self.store_keys(sid)
            for generation, key in enumerate(keys):
                # Under the current key: what the caller read already (nothing), if it did.
                read = first is not None and not generation
                raw = None if read else await self.store.get(key)
                if raw is not None:
                    break
        if raw is None:
            self.forget(keys[0])
            return Session()
        # pydantic-core's parser: ~0.6 µs for a record, against ~3.5 µs for json.loads (every
        # call reads one). Keys only in its string cache: never a session's secret.
        record = pydantic_core.from_json(raw, cache_strings="keys")
        now = time.time()
        timeouts = self.config
        if (
            now - record["created"] > timeouts.absolute_timeout
            or now - record["seen"] > timeouts.idle_timeout
        ):
            self.forget(keys[0])
            return Session()
        session = Session(sid, record)
        session._stored = (key, raw)
        if not generation:
            self._remember_user(key, session.user_id)
        else:
            # Stored under a key now in the fallbacks: move it under the current one.
            session._dead.append(sid)
            session.modified = True
        # Activity is recorded at most every minute, and more often for a short idle
        # timeout: a session used more often than its idle timeout must never expire.
        if now - record["seen"] > min(_TOUCH_EVERY, timeouts.idle_timeout / 10):
            record["seen"] = now
            session.modified = True
        return session

    async def confirm(self, session: Session) -> bool:
        """Whether the session this request loaded still exists in the store. Asked only
        when the call has taken a while since the session was loaded (a body arriving
        slowly): a log-out in the meantime must not let the call go on."""
        stored = session._stored
        if stored is None or time.monotonic() - session._loaded_at < _CONFIRM_AFTER:
            return True
        return await self.store.get(stored[0]) is not None

    async def save(self, session: Session, name: str, secure: bool) -> list[tuple[bytes, bytes]]:
        store = self.store
        for dead in session._dead:
            keys = self.store_keys(dead)
            for key in keys[0 if dead != session.id else 1 :]:
                await store.delete(key)
            if dead != session.id:
                self.forget(keys[0])
        session._dead.clear()
        sid = session.id
        if sid is not None and session.modified:
            record = session._record
            timeouts = self.config
            now = time.time()
            ttl = min(
                timeouts.idle_timeout,
                record["created"] + timeouts.absolute_timeout - now,
            )
            key = self.store_keys(sid)[0]
            value = json.dumps(record).encode()
            # What this request loaded must still be there: a session that another
            # request ended, rotated or changed meanwhile is not written back.
            stored = session._stored
            expected = stored[1] if stored is not None and stored[0] == key else None
            if await store.compare_and_set(key, expected, value, max(ttl, 1.0)):
                session._stored = (key, value)
                self._remember_user(key, record.get("user"))
                if expected is None and record.get("user") is not None:
                    # A new storage key of a signed-in session (a sign-in, or a move
                    # from a fallback key): listed under its user, to be ended with
                    # the user's other sessions.
                    # Listed until it can no longer be alive: its absolute timeout
                    # (activity extends its idle one, never that).
                    expires = record["created"] + timeouts.absolute_timeout
                    await self._remember(record["user"], key, expires)
            else:
                logger.info(
                    "bastion: a session changed or ended while a request used it; "
                    "that request's changes to it are dropped"
                )
            session.modified = False
        if not session.cookie_changed:
            return []
        session.cookie_changed = False
        if sid is None:
            return [(b"set-cookie", _cookie_header(name, "", 0, secure))]
        created: float = session._record["created"]
        max_age = int(created + self.config.absolute_timeout - time.time())
        return [(b"set-cookie", _cookie_header(name, sid, max_age, secure))]

    async def end_all(self, user_id: str | int) -> int:
        """End every session of ``user_id``, wherever it is being used: each storage key
        listed under the user is deleted, so the next request with any of their cookies
        is anonymous (a request in flight cannot write its session back: compare-and-set
        finds it gone). Returns how many sessions were ended.

        A sign-in that completes meanwhile is ended too: the list is emptied with
        compare-and-set, and read again whenever a sign-in changed it first."""
        store, index = self.store, _index_key(user_id)
        seen: set[str] = set()
        ended = 0
        for _ in range(_INDEX_ATTEMPTS):
            raw = await store.get(index)
            if raw is None:
                return ended
            for key, _expires in _live(raw):
                if key in seen:
                    continue
                seen.add(key)
                # Counted only if still there: a session signed out on its own is listed
                # until it would have expired.
                if await store.get(key) is not None:
                    ended += 1
                await store.delete(key)
            if await store.compare_and_set(index, raw, b"[]", 1.0):
                return ended
        raise RuntimeError(f"the sessions of user {user_id!r} changed too often to end them")

    async def _remember(self, user_id: str | int, key: str, expires: float) -> None:
        """List ``key`` under its user. Past ``max_per_user`` live sessions, the oldest
        is ended, so that no session of the user is ever left off the list."""
        store, index = self.store, _index_key(user_id)
        for _ in range(_INDEX_ATTEMPTS):
            raw = await store.get(index)
            entries = [e for e in _live(raw) if e[0] != key] + [(key, expires)]
            excess = len(entries) - self.config.max_per_user
            dropped, entries = entries[: max(excess, 0)], entries[max(excess, 0) :]
            value = json.dumps(entries).encode()
            ttl = max(e[1] for e in entries) - time.time()
            if await store.compare_and_set(index, raw, value, max(ttl, 1.0)):
                for old, _expires in dropped:
                    await store.delete(old)
                return
        # The session exists but could not be listed, so it could never be ended: it
        # must not live on (the save fails; the middleware answers 503).
        await store.delete(key)
        raise RuntimeError(f"could not list a new session of user {user_id!r}")


def _index_key(user_id: str | int) -> str:
    # JSON keeps 1 and "1" apart, as the session records do.
    return _INDEX + json.dumps(user_id)


def _live(raw: bytes | None) -> list[tuple[str, float]]:
    """A user's list of sessions, without those expired."""
    if not raw:
        return []
    now = time.time()
    return [(key, expires) for key, expires in json.loads(raw) if expires > now]


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base


def _cookie_header(name: str, value: str, max_age: int, secure: bool) -> bytes:
    parts = [f"{name}={value}", f"Max-Age={max(max_age, 0)}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def session_cookie(headers: Headers, name: str) -> str | None:
    """The named cookie's value; a cookie sent twice (a planted duplicate) counts as none."""
    found: list[str] = []
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                found.append(value)
    return found[0] if len(found) == 1 else None


def sends_cookie(headers: Headers, base: str) -> bool:
    """Whether the call sends a session cookie named after ``base``, once or more, with
    or without the ``__Host-`` prefix: an API token call must send none."""
    names = (base, cookie_name(base, True))
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            key, sep, _value = pair.strip().partition("=")
            if sep and key in names:
                return True
    return False
