"""Passkeys (WebAuthn): the two ceremonies, registration and sign-in, on py_webauthn.

Each ceremony is two calls, ``*_options`` (for the browser's ``navigator.credentials``)
and ``verify_*`` (its answer). What bastion adds to the library is where the
trust comes from:

- **The relying party is configuration.** ``rp_id`` and the expected origins come from
  the app's settings (``Passkeys.from_config``: its ``allowed_origins``), never from the
  request's ``Host`` or ``X-Forwarded-*``: a response made for another site, or on a
  page served from a host the app does not know, is refused.
- **A challenge is bound to the session and to its purpose.** ``*_options`` keeps the
  random challenge in the server-side session (``CHALLENGE_KEY``) with its purpose,
  the signed-in user at the time and an expiry (five minutes by default). ``verify_*``
  takes it out *before* verifying anything, so each challenge is tried once: a replayed
  response, one for the other ceremony, one from another session, one for a challenge
  never issued or one that expired is refused. A new ``*_options`` replaces any
  challenge still pending.
- **User verification is required** (a PIN, a fingerprint), so a passkey is two factors
  on its own; and resident keys, so signing in needs no user name.
- **Refusals are ``ActionError``s** (a clean 4xx, never a 500); why the response was
  refused goes to the ``bastion.security`` log, not to the caller::

      PasskeyError               400 passkey_invalid       the response does not verify
      ├── PasskeyChallengeMissing  400 passkey_no_challenge  none pending (replay, no begin)
      ├── PasskeyChallengeExpired  400 passkey_expired       pending too long
      └── PasskeyRejected          401 passkey_rejected      a sign-in that does not verify

The signature counter is checked (py_webauthn refuses a count that did not go up, for
an authenticator that counts); the caller stores ``PasskeyAuthentication.sign_count``.
py_webauthn is imported lazily: ``pip install 'bastion[passkeys]'``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit

from bastion.config import check_timeout
from bastion.errors import ActionError, ConfigurationError
from bastion.messages import CATALOG

if TYPE_CHECKING:
    from webauthn.helpers.structs import RegistrationCredential

    from bastion.config import Config
    from bastion.sessions import Session

__all__ = [
    "CHALLENGE_KEY",
    "PasskeyAuthentication",
    "PasskeyChallengeExpired",
    "PasskeyChallengeMissing",
    "PasskeyCredential",
    "PasskeyError",
    "PasskeyRejected",
    "Passkeys",
    "StoredPasskey",
]

security_log = logging.getLogger("bastion.security")

CHALLENGE_KEY: Final = "_passkey_challenge"
"""The session key of the pending challenge: ``{"challenge", "purpose", "expires", …}``."""

MAX_RESPONSE_CHARS: Final = 64 * 1024
"""A browser's answer is a few KiB; anything longer is refused unread."""

MAX_USER_HANDLE: Final = 64
"""Bytes in a WebAuthn user handle, at most (the specification's bound)."""

Purpose = Literal["registration", "authentication"]

_DOMAIN: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


# --- refusals --------------------------------------------------------------------------------


class PasskeyError(ActionError):
    """A passkey response that does not verify (a registration's, or a malformed one)."""

    status = 400
    code = "passkey_invalid"
    message = CATALOG["passkey_invalid"]


class PasskeyChallengeMissing(PasskeyError):
    """No challenge of this purpose is pending in the session: never asked for, already
    used (a replay), or replaced by another."""

    code = "passkey_no_challenge"
    message = CATALOG["passkey_no_challenge"]


class PasskeyChallengeExpired(PasskeyError):
    """The challenge was pending longer than ``challenge_ttl``."""

    code = "passkey_expired"
    message = CATALOG["passkey_expired"]


class PasskeyRejected(PasskeyError):
    """A sign-in whose passkey is unknown, or whose assertion does not verify."""

    status = 401
    code = "passkey_rejected"
    message = CATALOG["passkey_rejected"]


# --- what is stored ------------------------------------------------------------------------


class StoredPasskey(Protocol):
    """What ``verify_authentication`` needs of a credential the app stored."""

    @property
    def public_key(self) -> bytes: ...

    @property
    def sign_count(self) -> int: ...

    @property
    def user_handle(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class PasskeyCredential:
    """A verified registration: what the app stores for its user (none of it secret)."""

    id: bytes
    """The credential ID, as the browser names it in every sign-in."""
    public_key: bytes
    """The COSE public key the sign-ins are verified with."""
    sign_count: int
    """The authenticator's signature counter (0 for those that do not count)."""
    transports: tuple[str, ...]
    """How the browser reaches the authenticator (``internal``, ``usb``, ``hybrid``…)."""
    user_handle: bytes
    """The WebAuthn user ID the credential was made for."""
    backed_up: bool = False
    """Whether the passkey is synced (a cloud keychain) rather than bound to one device."""

    def __repr__(self) -> str:
        return f"PasskeyCredential(id={_b64(self.id)[:12]}…, sign_count={self.sign_count})"


C = TypeVar("C", bound=StoredPasskey)
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class PasskeyAuthentication(Generic[C]):
    """A verified sign-in: the stored credential it used, and its new counter (store it)."""

    credential: C
    credential_id: bytes
    sign_count: int
    backed_up: bool


# --- the relying party ---------------------------------------------------------------------


class Passkeys:
    """The relying party: ``rp_id`` (the site's domain), its name shown by the browser, and
    the origins its pages are served from. All of them configuration, checked here.

    ::

        passkeys = Passkeys.from_config(bastion.config, rp_name="Team board")
        options = passkeys.registration_options(ctx.session, user_id=me.id, user_name=me.email)
        credential = passkeys.verify_registration(ctx.session, data.credential)
    """

    __slots__ = ("challenge_ttl", "origins", "rp_id", "rp_name")

    def __init__(
        self,
        rp_id: str,
        rp_name: str,
        origin: str | Sequence[str],
        *,
        challenge_ttl: float = 300.0,
    ) -> None:
        _require_webauthn()  # a missing extra stops the app here, at start-up
        if not (isinstance(rp_id, str) and _DOMAIN.fullmatch(rp_id)) or _is_ip(rp_id):
            raise ConfigurationError(
                f"Passkeys: rp_id must be a lower-case domain name, not {rp_id!r} (an IP "
                "address is none: serve the app at a host name, localhost for development)"
            )
        if not (isinstance(rp_name, str) and rp_name.strip()):
            raise ConfigurationError("Passkeys: rp_name must be a non-empty name")
        listed = [origin] if isinstance(origin, str) else list(origin)
        if not listed:
            raise ConfigurationError("Passkeys: at least one origin is needed")
        self.rp_id: Final = rp_id
        """The relying party ID: a domain, which every origin's host is or is below."""
        self.rp_name: Final = rp_name
        """The site's name, as the browser's passkey dialogue shows it."""
        self.origins: Final = tuple(_browser_origin(value, rp_id) for value in listed)
        """The origins a browser may report in its answer, as browsers spell them."""
        self.challenge_ttl: Final = check_timeout(challenge_ttl, "Passkeys.challenge_ttl")
        """Seconds a challenge may wait for its answer."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        rp_name: str,
        *,
        rp_id: str | None = None,
        challenge_ttl: float = 300.0,
    ) -> Passkeys:
        """The relying party of an app: by default, ``rp_id`` is the host name of its first
        allowed origin that has one, and the expected origins are the allowed origins at
        that host or below it. ``ConfigurationError`` when none has a host name."""
        hosts = [(o, urlsplit(o).hostname or "") for o in config.allowed_origins]
        if rp_id is None:
            rp_id = next((host for _o, host in hosts if not _is_ip(host)), None)
            if rp_id is None:
                raise ConfigurationError(
                    "Passkeys need an allowed origin with a host name (an IP address cannot "
                    "be a WebAuthn rp_id): e.g. BASTION_ALLOWED_ORIGINS=http://localhost:8000"
                )
        origins = [o for o, host in hosts if _within(host, rp_id)]
        return cls(rp_id, rp_name, origins, challenge_ttl=challenge_ttl)

    # --- registration ------------------------------------------------------------------

    def registration_options(
        self,
        session: Session,
        user_id: str | int,
        user_name: str,
        existing_credential_ids: Iterable[bytes] = (),
        *,
        display_name: str | None = None,
        user_handle: bytes | None = None,
    ) -> str:
        """The options for ``navigator.credentials.create()``, as JSON, for ``user_id``
        (shown to the user as ``user_name``). The challenge waits in ``session``, tied to
        its signed-in user. ``existing_credential_ids`` are the user's passkeys already
        registered: an authenticator holding one is not registered twice.
        ``user_handle`` (at most 64 bytes, no personal data) defaults to the JSON of
        ``user_id``."""
        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers import structs

        handle = user_handle if user_handle is not None else json.dumps(user_id).encode()
        if not 0 < len(handle) <= MAX_USER_HANDLE:
            raise ValueError(f"a WebAuthn user handle is 1 to {MAX_USER_HANDLE} bytes")
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_id=handle,
            user_name=user_name,
            user_display_name=display_name or user_name,
            timeout=self._timeout_ms,
            attestation=structs.AttestationConveyancePreference.NONE,
            authenticator_selection=structs.AuthenticatorSelectionCriteria(
                resident_key=structs.ResidentKeyRequirement.REQUIRED,
                user_verification=structs.UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                structs.PublicKeyCredentialDescriptor(id=bytes(i)) for i in existing_credential_ids
            ],
        )
        self._keep(session, "registration", options.challenge, handle=_b64(handle))
        return options_to_json(options)

    def verify_registration(self, session: Session, response_json: str) -> PasskeyCredential:
        """The credential the browser's answer to ``registration_options`` made, verified
        (challenge, origin, rp_id, user presence and verification). Raises a
        ``PasskeyError``; the challenge is spent either way."""
        from webauthn import verify_registration_response
        from webauthn.helpers import parse_registration_credential_json

        record = self._take(session, "registration")
        if record.get("user") != session.user_id:
            # Begun by another user of this browser (signed out and in since).
            _refused("registration", "the challenge was issued to another user")
            raise PasskeyChallengeMissing()
        parsed = _parse(response_json, "registration", parse_registration_credential_json)
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=_unb64(record["challenge"]),
                expected_rp_id=self.rp_id,
                expected_origin=list(self.origins),
                require_user_verification=True,
            )
        except _failures() as exc:
            _refused("registration", exc)
            raise PasskeyError() from None
        transports = _transports(parsed)
        return PasskeyCredential(
            id=bytes(verified.credential_id),
            public_key=bytes(verified.credential_public_key),
            sign_count=int(verified.sign_count),
            transports=transports,
            user_handle=_unb64(record["handle"]),
            backed_up=bool(verified.credential_backed_up),
        )

    # --- sign-in -----------------------------------------------------------------------

    def authentication_options(
        self, session: Session, allowed_credential_ids: Iterable[bytes] = ()
    ) -> str:
        """The options for ``navigator.credentials.get()``, as JSON. With no
        ``allowed_credential_ids``, any passkey of this site the authenticator holds may
        answer (the user picks one; no user name typed); with some, only those."""
        from webauthn import generate_authentication_options, options_to_json
        from webauthn.helpers import structs

        allowed = [bytes(i) for i in allowed_credential_ids]
        options = generate_authentication_options(
            rp_id=self.rp_id,
            timeout=self._timeout_ms,
            allow_credentials=[structs.PublicKeyCredentialDescriptor(id=i) for i in allowed],
            user_verification=structs.UserVerificationRequirement.REQUIRED,
        )
        self._keep(session, "authentication", options.challenge, allowed=[_b64(i) for i in allowed])
        return options_to_json(options)

    def verify_authentication(
        self,
        session: Session,
        response_json: str,
        credential_lookup: Callable[[bytes], C | None],
    ) -> PasskeyAuthentication[C]:
        """The browser's answer to ``authentication_options``, verified against the stored
        credential that ``credential_lookup(credential_id)`` finds (``None``: unknown).
        Checks the challenge, origin, rp_id, user presence and verification, the
        signature, the counter, and the user handle against the stored one. Raises a
        ``PasskeyError`` (``PasskeyRejected`` for a response that does not verify); the
        challenge is spent either way. The caller stores the new ``sign_count``."""
        from webauthn import verify_authentication_response
        from webauthn.helpers import parse_authentication_credential_json

        record = self._take(session, "authentication")
        parsed = _parse(response_json, "authentication", parse_authentication_credential_json)
        raw_id = bytes(parsed.raw_id)
        allowed: Collection[str] = record.get("allowed") or ()
        if allowed and _b64(raw_id) not in allowed:
            _refused("authentication", "a credential the options did not allow")
            raise PasskeyRejected()
        stored = credential_lookup(raw_id)
        if stored is None:
            _refused("authentication", "an unknown credential")
            raise PasskeyRejected()
        handle = parsed.response.user_handle
        if handle and stored.user_handle is not None and bytes(handle) != stored.user_handle:
            _refused("authentication", "the user handle is not the credential's")
            raise PasskeyRejected()
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=_unb64(record["challenge"]),
                expected_rp_id=self.rp_id,
                expected_origin=list(self.origins),
                credential_public_key=stored.public_key,
                credential_current_sign_count=stored.sign_count,
                require_user_verification=True,
            )
        except _failures() as exc:
            _refused("authentication", exc)
            raise PasskeyRejected() from None
        return PasskeyAuthentication(
            credential=stored,
            credential_id=raw_id,
            sign_count=int(verified.new_sign_count),
            backed_up=bool(verified.credential_backed_up),
        )

    # --- the challenge -----------------------------------------------------------------

    @property
    def _timeout_ms(self) -> int:
        # The browser gives up when the challenge would have expired anyway.
        return int(self.challenge_ttl * 1000)

    def _keep(self, session: Session, purpose: Purpose, challenge: bytes, **extra: Any) -> None:
        session[CHALLENGE_KEY] = {
            "challenge": _b64(challenge),
            "purpose": purpose,
            "expires": time.time() + self.challenge_ttl,
            "user": session.user_id,
            **extra,
        }

    def _take(self, session: Session, purpose: Purpose) -> Mapping[str, Any]:
        """The pending challenge of ``purpose``, out of the session: whatever follows, it
        is never used again."""
        record = session.pop(CHALLENGE_KEY, None)
        if not isinstance(record, dict) or record.get("purpose") != purpose:
            _refused(purpose, "no challenge of this purpose pending")
            raise PasskeyChallengeMissing()
        expires = record.get("expires")
        if not isinstance(expires, int | float) or expires <= time.time():
            _refused(purpose, "the challenge expired")
            raise PasskeyChallengeExpired()
        return record

    def __repr__(self) -> str:
        return f"Passkeys(rp_id={self.rp_id!r}, origins={self.origins!r})"


# --- helpers ---------------------------------------------------------------------------------


def _require_webauthn() -> None:
    """py_webauthn is there, or a clear ImportError saying how to install it."""
    try:
        import webauthn  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "bastion.passkeys needs py_webauthn: pip install 'bastion[passkeys]'"
        ) from exc


def _failures() -> tuple[type[Exception], ...]:
    # What py_webauthn raises for a response it cannot read or verify: every error of its
    # own (they share a base class only from 2.2 on), and the ValueError family of the
    # decoders beneath it (base64, CBOR, JSON, keys).
    from webauthn.helpers import exceptions

    own = (v for v in vars(exceptions).values() if isinstance(v, type) and issubclass(v, Exception))
    return (*own, ValueError, TypeError, KeyError, IndexError)


def _parse(response_json: str, purpose: Purpose, parse: Callable[[str], P]) -> P:
    if not isinstance(response_json, str) or len(response_json) > MAX_RESPONSE_CHARS:
        _refused(purpose, "a response that is not a string of at most 64 KiB")
        raise _refusal(purpose)
    try:
        return parse(response_json)
    except _failures() as exc:
        _refused(purpose, exc)
        raise _refusal(purpose) from None


def _refusal(purpose: Purpose) -> PasskeyError:
    """A sign-in that does not verify is a 401; a registration, a 400."""
    return PasskeyError() if purpose == "registration" else PasskeyRejected()


def _transports(parsed: RegistrationCredential) -> tuple[str, ...]:
    found = parsed.response.transports or ()
    return tuple(sorted({transport.value for transport in found}))


def _refused(purpose: Purpose, why: object) -> None:
    security_log.info("bastion: passkey %s refused: %r", purpose, str(why))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _within(host: str, rp_id: str) -> bool:
    return host == rp_id or host.endswith("." + rp_id)


def _secure(scheme: str, host: str) -> bool:
    """A secure context: https, or http on localhost (browsers treat it as secure)."""
    return scheme == "https" or host == "localhost" or host.endswith(".localhost")


def _browser_origin(value: str, rp_id: str) -> str:
    """``value`` as a browser writes it in ``clientDataJSON``: scheme, host, and the port
    only when it is not the scheme's default."""
    parts: SplitResult | None
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        port = parts.port if parts is not None else None
    except ValueError:  # a port that is no number, or out of range
        parts = port = None
    if (
        parts is None
        or parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigurationError(f"Passkeys: {value!r} is not an origin like https://app.example")
    host = parts.hostname
    if not _within(host, rp_id):
        raise ConfigurationError(f"Passkeys: the origin {value!r} is not at {rp_id} or below it")
    if not _secure(parts.scheme, host):
        raise ConfigurationError(
            f"Passkeys: {value!r} is no secure context (https, or http://localhost only)"
        )
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"
