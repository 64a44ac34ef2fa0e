"""Pipeline stage 3: API tokens, how a script or another service calls an action without
a browser.

A user (or an admin, for a service account) creates a named token with scopes and an
expiry; its secret is shown once and kept only as its SHA-256. A call that sends it as
``Authorization: Bearer bst_…`` is that user's call, with no cookie and so no CSRF token
(pipeline stage 3, "API token"), but only to an action that accepts tokens
(``@bastion.action(tokens=...)``) and whose scopes the token holds. Refused, always:

- a token and a session cookie on one call: which of the two is the caller? (400)
- a token in the URL, where logs and ``Referer`` headers keep it (400);
- a token an action does not accept (403), a scope it does not hold (403), a token
  that is unknown, expired or revoked (401, ``WWW-Authenticate: Bearer``);
- and a call a browser made (``Sec-Fetch-Site`` present) is a browser's call: its
  token authenticates nothing, and the call needs the session and CSRF token any
  browser call needs.

Why a hash and not an HMAC: the secret is 32 random bytes, so its SHA-256 cannot be
reversed or guessed, and it does not depend on the app's secret key (rotating the key
must not revoke every token). The hash is the token's storage key: finding a token is
comparing hashes, in the store, never the secret byte by byte in Python.

Tokens live in the app's store (memory, SQLite, Redis), each under its hash with the
token's expiry as its TTL, and each user's tokens are listed under the user
(compare-and-set, as their sessions are). Revoking deletes the token: the next call
with it, on any host, is 401.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, NoReturn

from starlette.datastructures import Headers

from bastion import events
from bastion.errors import ActionError, BadRequest, Forbidden, ServiceUnavailable
from bastion.messages import CATALOG
from bastion.sessions import sends_cookie
from bastion.stores import Store

__all__ = [
    "PREFIX",
    "ApiToken",
    "InsufficientScope",
    "InvalidToken",
    "TokenInURL",
    "TokenNotAccepted",
    "TokenWithCookie",
    "Tokens",
    "check",
]

logger = logging.getLogger("bastion")

PREFIX: Final = "bst_"
"""What every token starts with: secret scanners (and bastion's URL check) know it."""

_SECRET = re.compile(r"bst_[A-Za-z0-9_-]{43}")
_RECORD: Final = "api-token:"
_INDEX: Final = "api-tokens:"
_INDEX_ATTEMPTS: Final = 20
_MAX_LIFETIME: Final = 366 * 86400.0
"""A token lives a year at most: one that never expires outlives whoever made it."""
_TOUCH_EVERY: Final = 60.0
"""Seconds between two writes of a token's last use (not one write per call)."""
_MAX_NAME: Final = 100
_MAX_SCOPES: Final = 50


class InvalidToken(ActionError):
    """401: the bearer token is unknown, expired or revoked (RFC 6750 ``invalid_token``)."""

    status = 401
    code = "invalid_token"
    message = CATALOG["invalid_token"]

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class InsufficientScope(Forbidden):
    """403: the token's scopes do not include this action (RFC 6750 ``insufficient_scope``)."""

    code = "insufficient_scope"
    message = CATALOG["insufficient_scope"]

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


class TokenNotAccepted(Forbidden):
    """403: the action does not accept API tokens (it did not declare ``tokens=``)."""

    code = "token_not_accepted"
    message = CATALOG["token_not_accepted"]


class TokenWithCookie(BadRequest):
    """400: a call with a bearer token and a session cookie: two callers in one call."""

    code = "token_with_cookie"
    message = CATALOG["token_with_cookie"]


class TokenInURL(BadRequest):
    """400: an API token in the query string, where logs and Referer headers keep it."""

    code = "token_in_url"
    message = CATALOG["token_in_url"]


@dataclass(frozen=True, slots=True)
class ApiToken:
    """What is known of a token: never its secret."""

    id: str
    """A short public name for it (lists, revocation, audit events)."""
    name: str
    user_id: str | int
    scopes: frozenset[str]
    created: float
    expires: float
    last_used: float | None = None
    """Unix time of its last accepted call, to the minute (``None``: never used)."""

    def grants(self, scopes: Iterable[str]) -> bool:
        """Whether the token holds one of ``scopes``."""
        return not self.scopes.isdisjoint(scopes)

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "user": self.user_id,
            "scopes": sorted(self.scopes),
            "created": self.created,
            "expires": self.expires,
            "last_used": self.last_used,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ApiToken:
        return cls(
            id=record["id"],
            name=record["name"],
            user_id=record["user"],
            scopes=frozenset(record["scopes"]),
            created=record["created"],
            expires=record["expires"],
            last_used=record.get("last_used"),
        )


def presented(
    headers: Headers,
    query_string: bytes,
    cookie: str,
    accepted: frozenset[str] | None,
    action: str,
) -> str | None:
    """The secret of the API token a call is made with, to ``check`` (``None``: a call
    without one, or a browser's), or its refusal, from the request alone. ``cookie`` is
    the base name of the session cookie, ``accepted`` the scopes that grant the action
    (``ActionSpec.tokens``)."""
    if in_url(query_string):
        _refuse(action, "in the URL", TokenInURL())
    secret = bearer_of(headers.getlist("authorization"))
    if secret is None or "sec-fetch-site" in headers:
        # A browser sends Sec-Fetch-Site on every request and a script need not: a
        # browser's call is decided by its session and CSRF token, never by a token a
        # page's script attached (the CSRF stage refuses it if it has neither).
        return None
    if sends_cookie(headers, cookie):
        _refuse(action, "sent with a session cookie", TokenWithCookie())
    if accepted is None:
        _refuse(action, "not accepted by the action", TokenNotAccepted())
    return secret


async def check(
    tokens: Tokens, secret: str, accepted: frozenset[str] | None, action: str
) -> ApiToken:
    """The live token behind a ``presented`` secret, granting ``accepted``, or its
    refusal."""
    try:
        token = await tokens.authenticate(secret)
    except Exception as exc:
        # Fail closed: a token that cannot be checked is not believed.
        logger.exception("bastion: the store failed to look up an API token")
        raise ServiceUnavailable() from exc
    if token is None:
        _refuse(action, "unknown, expired or revoked", InvalidToken())
    if accepted is None or not token.grants(accepted):  # (None: refused by presented)
        _refuse(action, f"{token.id} lacks the scope", InsufficientScope())
    return token


def _refuse(action: str, reason: str, refusal: ActionError) -> NoReturn:
    # A security event, never with the token's secret (its ID at most).
    events.refused(
        "refused %s: API token %s",
        action,
        reason,
        event="token_refused",
        action=action,
        reason=reason,
        stage="API token",
        code=refusal.code,
    )
    raise refusal


def bearer_of(values: list[str]) -> str | None:
    """The bearer credentials of a call's ``Authorization`` headers; ``None`` when it
    sends none (or another scheme, which is not bastion's: a proxy's Basic auth)."""
    if len(values) > 1:
        raise BadRequest()
    if not values:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def in_url(query_string: bytes) -> bool:
    """Whether a URL's query string carries something shaped like a token."""
    return PREFIX.encode() in query_string and bool(_SECRET.search(query_string.decode("latin-1")))


_Entries = list[list[Any]]
"""A user's list of tokens: ``[id, storage key, expires]`` each."""


def _storage_key(secret: str) -> str:
    return _RECORD + hashlib.sha256(secret.encode()).hexdigest()


def _index_key(user_id: str | int) -> str:
    return _INDEX + json.dumps(user_id)


class Tokens:
    """A user's API tokens, in the app's store: ``bastion.tokens``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(
        self,
        user_id: str | int,
        *,
        name: str,
        scopes: Iterable[str],
        expires_in: timedelta | float,
    ) -> tuple[ApiToken, str]:
        """A new token for ``user_id`` and its secret, which is never stored: show it to
        the user once. ``scopes`` name what it may call (action names, or the scopes
        the actions list in ``tokens=``); ``expires_in`` is at most a year."""
        if isinstance(user_id, bool) or not isinstance(user_id, str | int):
            raise TypeError(f"a user ID is a str or an int, not {type(user_id).__name__}")
        name = name.strip() if isinstance(name, str) else ""
        if not 0 < len(name) <= _MAX_NAME:
            raise ValueError(f"a token's name is 1 to {_MAX_NAME} characters")
        wanted = frozenset(scopes) if not isinstance(scopes, str) else frozenset((scopes,))
        if (
            not wanted
            or len(wanted) > _MAX_SCOPES
            or not all(isinstance(s, str) and s for s in wanted)
        ):
            raise ValueError(f"a token needs 1 to {_MAX_SCOPES} scopes, each a non-empty string")
        lifetime = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        if isinstance(lifetime, bool) or not 0 < float(lifetime) <= _MAX_LIFETIME:
            raise ValueError("a token expires after more than 0 seconds and at most a year")
        now = time.time()
        secret = PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=secrets.token_hex(6),
            name=name,
            user_id=user_id,
            scopes=wanted,
            created=now,
            expires=now + float(lifetime),
        )
        key = _storage_key(secret)
        # Listed first: a token the user cannot see in their list could never be revoked.
        await self._update_index(
            user_id, lambda entries: [*entries, [token.id, key, token.expires]]
        )
        await self.store.set(key, json.dumps(token.as_record()).encode(), float(lifetime))
        return token, secret

    async def list(self, user_id: str | int) -> list[ApiToken]:
        """The user's live tokens, oldest first, with their last use."""
        found = []
        for _id, key, _expires in await self._entries(user_id):
            raw = await self.store.get(key)
            if raw is not None:
                found.append(ApiToken.from_record(json.loads(raw)))
        return found

    async def revoke(self, user_id: str | int, token_id: str) -> bool:
        """End one of the user's tokens at once, on every host; ``False`` if the user has
        no live token with that ID (another user's ID is not theirs to revoke)."""
        revoked = False

        def without(entries: _Entries) -> _Entries:
            return [e for e in entries if e[0] != token_id]

        for entry in await self._entries(user_id):
            if entry[0] == token_id:
                revoked = await self.store.get(entry[1]) is not None
                await self.store.delete(entry[1])
        await self._update_index(user_id, without)
        return revoked

    async def revoke_all(self, user_id: str | int) -> int:
        """End every token of the user (an account deleted or taken over); how many."""
        ended = 0
        for token in await self.list(user_id):
            ended += await self.revoke(user_id, token.id)
        return ended

    async def authenticate(self, secret: str) -> ApiToken | None:
        """The live token whose secret this is, its last use recorded (at most once a
        minute); ``None`` for anything else."""
        if not _SECRET.fullmatch(secret):
            return None
        key = _storage_key(secret)
        raw = await self.store.get(key)
        if raw is None:
            return None
        token = ApiToken.from_record(json.loads(raw))
        now = time.time()
        if token.expires <= now:
            return None
        if token.last_used is None or now - token.last_used >= _TOUCH_EVERY:
            record = token.as_record() | {"last_used": now}
            # Compare-and-set: a token revoked meanwhile is gone, and stays gone.
            await self.store.compare_and_set(
                key, raw, json.dumps(record).encode(), max(token.expires - now, 1.0)
            )
        return token

    async def _entries(self, user_id: str | int) -> _Entries:
        raw = await self.store.get(_index_key(user_id))
        now = time.time()
        return [e for e in json.loads(raw) if e[2] > now] if raw else []

    async def _update_index(
        self, user_id: str | int, change: Callable[[_Entries], _Entries]
    ) -> None:
        store, index = self.store, _index_key(user_id)
        for _ in range(_INDEX_ATTEMPTS):
            raw = await store.get(index)
            now = time.time()
            entries = [e for e in json.loads(raw) if e[2] > now] if raw else []
            updated = change(entries)
            ttl = max((e[2] for e in updated), default=now + 1.0) - now
            if await store.compare_and_set(index, raw, json.dumps(updated).encode(), max(ttl, 1.0)):
                return
        raise RuntimeError(f"the API tokens of user {user_id!r} changed too often to list")
