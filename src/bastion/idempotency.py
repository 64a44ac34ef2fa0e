"""Pipeline stage 21, with the claim stage 14 makes: exactly-once calls, for actions
declared ``idempotent=True``.

A call carries an idempotency key: a script in an ``Idempotency-Key`` header (the IETF
httpapi draft's), a form in its ``_idem`` field, which ``action_form()`` renders once
per page (random, bound by a MAC to the visitor's session and to the action, expiring).
The first call with a key claims it in the session store (compare-and-set, so of two at
once exactly one wins), runs, and its reply is kept there: status, body, headers and,
for a plain form, its flash. A repeat within the key's lifetime runs nothing and gets
that same reply (a double-clicked "Pay" pays once, and the second click lands on the same
page); a script's repeat while the first still runs gets ``409``, a plain form's waits
for the first call's reply (``FORM_WAIT``) and answers with it; the same key with another body
is ``422``, unless the key's call was refused (a 4xx: it did nothing, and its form is
still on the page to be corrected), when the corrected call takes the key over. Keys are
scoped to the session and the action: another visitor's key, or one made for another
action, never reaches someone else's reply.

What is kept depends on what happened. A handler that ran (whatever the reply then
was) or refused with a 4xx is kept: running it again could write twice. A handler that
failed with a 5xx (an exception, its database down) released the key: it may run again.
A handler that overran its timeout may still be running (a worker thread cannot be
stopped), so its claim stays until it expires and repeats get 409 until then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from starlette.datastructures import Headers, UploadFile
from starlette.responses import Response

from bastion.crypto.tokens import mac
from bastion.errors import ActionError, BadRequest, Timeout
from bastion.messages import CATALOG

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from bastion.actions.spec import ActionSpec
    from bastion.crypto.keys import KeyRing
    from bastion.sessions import Session
    from bastion.stores import Store

    Fields = dict[str, Any] | Sequence[tuple[str, str | UploadFile]]
    """A body's flat fields: the JSON object, or a form's (name, value) pairs."""

__all__ = [
    "FIELD",
    "FORM_WAIT",
    "HEADER",
    "Claim",
    "InProgress",
    "KeyInvalid",
    "KeyReused",
    "claim",
    "issue",
    "keep",
    "key_of",
]

FIELD: Final = "_idem"
"""The form field that carries a rendered form's key."""
HEADER: Final = "idempotency-key"
KEY_TTL: Final = 24 * 3600.0
"""Seconds a key (and the reply kept for it) lives: a form's key is refused after it."""
_MAX_KEY: Final = 255
FORM_WAIT: Final = 10.0
"""Seconds at most a plain form's repeat waits for the first call with its key (a
double click): the browser shows only the second reply, so a 409 there would land the
visitor on an error, and a form rendered again (a new key) would post twice. A
script's repeat (``Idempotency-Key``) gets 409 at once, as the IETF draft says."""
_FIRST_POLL: Final = 0.01
_LAST_POLL: Final = 0.2
_PREFIX: Final = "idem:"


class InProgress(ActionError):
    """A call with this key is still running: nothing ran twice; try again shortly."""

    status = 409
    code = "idempotency_in_progress"
    message = CATALOG["idempotency_in_progress"]


class KeyReused(ActionError):
    """The key was used before with another body: a different request, refused."""

    status = 422
    code = "idempotency_key_reused"
    message = CATALOG["idempotency_key_reused"]


class KeyInvalid(BadRequest):
    """A malformed key, or a form's key made for another session or action, or expired."""

    code = "idempotency_key_invalid"
    message = CATALOG["idempotency_key_invalid"]


@dataclass(slots=True)
class Claim:
    """A key this call holds: where it is stored, the body it was sent with, and the
    running record it wrote (a reply replaces that only if it is still there)."""

    storage_key: str
    fingerprint: str
    record: bytes
    ttl: float


# --- keys -------------------------------------------------------------------------------


def issue(keys: KeyRing, spec: ActionSpec, session: Session) -> str:
    """A new key for one rendered form of ``spec``: random, with when it was made and a
    MAC over both, the action and the session's CSRF secret (a new session, a sign-in
    included, makes every earlier key invalid, as it does its tokens)."""
    nonce = _b64(secrets.token_bytes(16))
    made = str(int(time.time()))
    return (
        f"{nonce}.{made}.{_b64(_form_mac(keys.current('idempotency'), spec, session, nonce, made))}"
    )


def _form_mac(key: bytes, spec: ActionSpec, session: Session, nonce: str, made: str) -> bytes:
    message = "\0".join((spec.id, nonce, made)).encode() + b"\0" + session.csrf_secret
    return mac(key, message)[:16]


def _checked_form_key(keys: KeyRing, spec: ActionSpec, session: Session, value: str) -> str:
    parts = value.split(".")
    if len(parts) != 3 or not session.exists:
        raise KeyInvalid()
    nonce, made, sent = parts
    if not (made.isascii() and made.isdigit()) or not 0 <= time.time() - int(made) <= KEY_TTL:
        raise KeyInvalid()
    try:
        sent_mac = base64.urlsafe_b64decode(sent + "==")
    except (binascii.Error, ValueError):
        raise KeyInvalid() from None
    found = [
        hmac.compare_digest(sent_mac, _form_mac(key, spec, session, nonce, made))
        for key in keys.all("idempotency")
    ]
    if not any(found):
        raise KeyInvalid()
    return value


def key_of(
    keys: KeyRing, spec: ActionSpec, session: Session, headers: Headers, reserved: Mapping[str, str]
) -> str | None:
    """The call's key (``None`` without one); 400 for a malformed or forged one."""
    sent = headers.getlist(HEADER)
    field = reserved.get(FIELD)
    if len(sent) > 1 or (sent and field is not None):
        raise KeyInvalid()
    if field is not None:
        return _checked_form_key(keys, spec, session, field)
    if not sent:
        return None
    # The draft's value is a structured-field string ("…"); a bare token is taken too.
    value = sent[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 0 < len(value) <= _MAX_KEY or not all("!" <= c <= "~" for c in value):
        raise KeyInvalid()
    return value


# --- the claim, before the handler (stage 14) -------------------------------------------


async def claim(
    store: Store,
    keys: KeyRing,
    spec: ActionSpec,
    session: Session,
    key: str,
    fields: Fields,
    reserved: Mapping[str, str],
    *,
    wait: float = 0.0,
) -> Claim | Response:
    """Claim ``key`` for this call, or the reply kept for it; 422 when it came with
    another body. While another call with it runs: wait up to ``wait`` seconds for that
    call's reply (polling the store), then 409 if it is still running."""
    storage_key = _storage_key(keys, spec, session, key)
    fingerprint = _fingerprint(fields, reserved.get("_bound"))
    # Long enough for the handler and its reply; past it, a claim left by a process that
    # died is gone and the key may run again.
    ttl = max(60.0, 2 * spec.timeout + 5.0)
    running = json.dumps({"state": "running", "fp": fingerprint}).encode()
    deadline = time.monotonic() + wait
    pause = _FIRST_POLL
    attempts = 0
    while attempts < 3:
        attempts += 1
        stored = await store.get(storage_key)
        if stored is None:
            if await store.compare_and_set(storage_key, None, running, ttl):
                return Claim(storage_key, fingerprint, running, ttl)
            continue  # another call claimed it between the two: read what it wrote
        record = json.loads(stored)
        same = hmac.compare_digest(record["fp"], fingerprint)
        if record["state"] == "done" and not same and record["status"] >= 400:
            # The key's call was refused (it did nothing) and the form, still on the
            # page, was corrected: the corrected call takes the key over.
            if await store.compare_and_set(storage_key, stored, running, ttl):
                return Claim(storage_key, fingerprint, running, ttl)
            continue
        if not same:
            raise KeyReused()
        if record["state"] == "running":
            left = deadline - time.monotonic()
            if left <= 0:
                raise InProgress()
            # The first call is still at work: its reply (or its released key, after a
            # failure that did nothing) is what this one answers with.
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, _LAST_POLL)
            attempts = 0
            continue
        return _replay(record, session)
    raise InProgress()


def _replay(record: dict[str, Any], session: Session) -> Response:
    response = Response(base64.b64decode(record["body"]), status_code=record["status"])
    response.raw_headers = [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in record["headers"]
    ]
    if record.get("flash") is not None:
        # The plain form's next page shows what the first call's showed.
        session.set_flash(record["flash"])
    return response


# --- the reply, kept (stage 21) ---------------------------------------------------------


async def keep(
    store: Store,
    held: Claim,
    response: Response | None,
    error: ActionError | None,
    ran: bool,
    flash: dict[str, Any] | None,
) -> None:
    """Keep the reply for the key's repeats, or release the key, or leave the claim."""
    if response is not None and (ran or (error is not None and error.status < 500)):
        record = {
            "state": "done",
            "fp": held.fingerprint,
            "status": response.status_code,
            "body": base64.b64encode(bytes(response.body)).decode(),
            "headers": [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in response.raw_headers
                if k.lower() != b"set-cookie"
            ],
            "flash": flash,
        }
        await store.compare_and_set(
            held.storage_key, held.record, json.dumps(record).encode(), KEY_TTL
        )
    elif isinstance(error, Timeout):
        return  # it may still be running: the claim stays until it expires
    elif await store.get(held.storage_key) == held.record:
        # It failed before doing anything a repeat could double: the key may run again.
        await store.delete(held.storage_key)


# --- what the key is stored under, and what it was sent with -----------------------------


def _storage_key(keys: KeyRing, spec: ActionSpec, session: Session, key: str) -> str:
    scope = "\0".join((spec.id, key)).encode() + b"\0" + session.csrf_secret
    return _PREFIX + mac(keys.current("idempotency"), scope).hex()


def _fingerprint(fields: Fields, sealed: str | None) -> str:
    """A digest of what the call asked for: its fields (not the token, the key or
    ``_next``, which a repeat may carry afresh) and its sealed values."""
    data: Any
    if isinstance(fields, dict):
        data = fields
    else:
        data = [
            [name, [value.filename, value.size] if isinstance(value, UploadFile) else value]
            for name, value in fields
        ]
    canonical = json.dumps([data, sealed], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
