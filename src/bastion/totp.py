"""A second factor: time-based one-time codes (TOTP, RFC 6238) and recovery codes.

The app stores, per account, a secret (``new_secret``), the last time step a code was
accepted for, and the hashes of its recovery codes; bastion does the rest:

- ``provisioning_uri`` and ``qr_svg``: what the authenticator app scans at enrolment.
- ``verify``: a code of 6 digits, for the 30-second step now or one step either side
  (the phone's clock drifts, the person types slowly), and only for a step after the
  last one used, so a code seen over a shoulder or in a proxy's log is dead once used.
  It returns the step to store; ``matching_step`` tells a reused code from a wrong one.
- ``new_recovery_codes``, ``hash_recovery_code``, ``match_recovery_code``: codes to sign
  in with when the phone is lost, each stored as a hash and deleted once used.

None of it throttles: six digits are guessed in 10^6 tries at most, so the app counts
wrong codes per account (as ``LoginThrottle`` counts wrong passwords) and refuses past a
handful. Storing a step and deleting a recovery code must be compare-and-set (``UPDATE
… WHERE last_step < :step``, ``DELETE … WHERE code_hash = :hash``, one row or refused):
two requests with the same code at once must not both sign in.

``pyotp`` and ``segno`` (``pip install 'bastion[totp]'``) are imported by the first call
that needs them: ``import bastion.totp`` costs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import pyotp

__all__ = [
    "DIGITS",
    "DRIFT",
    "RECOVERY_CODES",
    "STEP",
    "hash_recovery_code",
    "match_recovery_code",
    "matching_step",
    "new_recovery_codes",
    "new_secret",
    "normalize_code",
    "normalize_recovery_code",
    "provisioning_uri",
    "qr_svg",
    "verify",
]

STEP: Final = 30
"""Seconds per time step: RFC 6238's default, and the only one authenticator apps all
honour (Google Authenticator ignores ``period=``)."""

DIGITS: Final = 6
"""Digits per code: the default every app shows."""

DRIFT: Final = 1
"""Steps accepted before and after the current one (RFC 6238 section 5.2 recommends at
most one): a code stays good for 60 to 90 seconds, enough for a clock a little off and
for typing it, and no more for someone who saw it."""

RECOVERY_CODES: Final = 10
"""Recovery codes made at enrolment."""

SECRET_BYTES: Final = 20
"""160 bits: the key length RFC 4226 recommends, the length of an HMAC-SHA1 block's
key that authenticator apps expect."""

_CODE: Final = re.compile(rf"[0-9]{{{DIGITS}}}")
_RECOVERY_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
"""Crockford's base32, lower case: no i, l, o or u, so nothing reads as another symbol."""
_RECOVERY_LENGTH: Final = 16
"""Symbols of a recovery code: 80 bits."""
_RECOVERY: Final = re.compile(rf"[0-9a-hjkmnp-tv-z]{{{_RECOVERY_LENGTH}}}")
_GROUP: Final = 4
_RECOVERY_FOLD: Final = str.maketrans({"i": "1", "l": "1", "o": "0"})
"""What a person may type for a symbol the alphabet leaves out (Crockford's decoding)."""
_SEPARATORS: Final = re.compile(r"[\s\-]+")
_HASH_PREFIX: Final = b"bastion recovery code\x00"


def _totp(secret: str) -> pyotp.TOTP:
    try:
        import pyotp
    except ImportError as missing:  # pragma: no cover - depends on what is installed
        raise ImportError(
            "bastion.totp (one-time codes) needs pyotp: pip install 'bastion[totp]'"
        ) from missing
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP)


# --- enrolment --------------------------------------------------------------------------------


def new_secret() -> str:
    """A new TOTP secret: 160 random bits in base32 (32 letters and digits, no padding),
    as authenticator apps read it. Keep it server-side only (the session, then the
    account's row once the first code confirms it); show it only on the enrolment page."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/…`` URI an authenticator app scans: ``issuer`` (the app's
    name) and ``account`` (what the person signs in with) label the entry in the app;
    pyotp percent-encodes both."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str, *, scale: int = 4) -> str:
    """``uri`` as a QR code in inline SVG markup (segno), to put in a page as it is
    (``{{ svg | safe }}``).

    Safe so, whatever the account name in the URI: the data becomes the geometry of one
    ``<path>`` (its ``d`` holds only digits and path commands), never text in the
    markup; no title, description, XML declaration, link or image is written, so the
    SVG names no other resource and runs nothing. Label it in the page
    (``role="img" aria-label=…``)."""
    try:
        import segno
    except ImportError as missing:  # pragma: no cover - depends on what is installed
        raise ImportError(
            "bastion.totp.qr_svg (QR codes) needs segno: pip install 'bastion[totp]'"
        ) from missing
    # Level M: a code read off a screen needs little error correction; a smaller code
    # scans faster.
    code = segno.make(uri, error="m", micro=False)
    out = io.BytesIO()
    code.save(
        out,
        kind="svg",
        scale=scale,
        dark="#000",
        light="#fff",  # scanned on a dark page too
        xmldecl=False,
        svgns=False,  # inline in HTML: no namespace URL either
        svgclass="totp-qr",
        nl=False,
    )
    return out.getvalue().decode("ascii")


# --- signing in -------------------------------------------------------------------------------


def normalize_code(code: str) -> str | None:
    """The 6 digits of a one-time code as a person types it (``"123 456"``, ``"123-456"``,
    full-width digits), or ``None`` if it is not one."""
    plain = _SEPARATORS.sub("", unicodedata.normalize("NFKC", code))
    return plain if _CODE.fullmatch(plain) else None


def matching_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The time step ``code`` is right for, within ``DRIFT`` steps of ``at`` (now), used
    or not; ``None`` for a wrong or malformed code. ``verify`` is what signs in: this is
    for telling a person that the code they typed was just used.

    Each step's code is compared in constant time (``hmac.compare_digest``), and all of
    them are, whichever matches: the time taken says nothing of the code."""
    digits = normalize_code(code)
    if digits is None:
        return None
    totp = _totp(secret)
    # The step worked out here, from Unix time alone: pyotp before 2.11 goes through
    # local time (fromtimestamp, then mktime), an hour off in a DST change's repeated hour.
    now = int((time.time() if at is None else at) // STEP)
    found = None
    # Latest first: were two steps' codes the same (one chance in a million), the later
    # step is the one to store.
    for step in range(now + DRIFT, now - DRIFT - 1, -1):
        expected = totp.generate_otp(step).encode("ascii")
        if hmac.compare_digest(expected, digits.encode("ascii")) and found is None:
            found = step
    return found


def verify(
    secret: str, code: str, last_used_step: int | None, *, at: float | None = None
) -> int | None:
    """The time step to store if ``code`` signs in, else ``None``.

    Right within ``DRIFT`` steps of now (``at``, for tests), and for a step after
    ``last_used_step`` (``None``: none used yet): a code is good once, and so is every
    code of an earlier step once a later one was used (RFC 6238 section 5.2). Store the
    step returned with compare-and-set (``… WHERE last_step IS NULL OR last_step <
    :step``): of two requests racing with one code, only the one that wrote may sign in."""
    step = matching_step(secret, code, at=at)
    if step is None or (last_used_step is not None and step <= last_used_step):
        return None
    return step


# --- recovery codes ---------------------------------------------------------------------------


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    """``n`` recovery codes like ``7kq2-m9xd-4hrt-b0we``: 16 symbols of Crockford's base32,
    80 random bits each (``secrets``). Show them once, store only their hashes
    (``hash_recovery_code``)."""
    if n < 1:
        raise ValueError("make at least one recovery code")
    codes = []
    for _ in range(n):
        symbols = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(symbols[i : i + _GROUP] for i in range(0, _RECOVERY_LENGTH, _GROUP)))
    return codes


def normalize_recovery_code(code: str) -> str | None:
    """A recovery code's 16 symbols as a person types it (any case, spaces or dashes, an
    ``O`` for a zero, an ``I`` or ``L`` for a one), or ``None`` if it is not one."""
    plain = _SEPARATORS.sub("", unicodedata.normalize("NFKC", code).casefold())
    plain = plain.translate(_RECOVERY_FOLD)
    return plain if _RECOVERY.fullmatch(plain) else None


def hash_recovery_code(code: str) -> str:
    """What to store for a recovery code: SHA-256 of its normalized symbols, in hex.
    ``ValueError`` for something that is not a recovery code.

    A fast hash, and deliberately so. argon2 is for passwords: a person's choice, found
    among a few billion guesses, which only a slow hash makes expensive. A recovery code
    is 80 random bits: a copy of the table gives an attacker nothing to enumerate (2^80
    SHA-256 at 10^12 a second is 38,000 years, per code, and a salt would change
    nothing), while argon2 would cost every sign-in with a code ten hashes of 64 MiB."""
    plain = normalize_recovery_code(code)
    if plain is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(_HASH_PREFIX + plain.encode("ascii")).hexdigest()


def match_recovery_code(code: str, hashes: Iterable[str]) -> str | None:
    """Which of the account's stored ``hashes`` ``code`` is, or ``None``: delete that one
    (compare-and-set, one row or refused) and let the person in. Every hash is compared,
    in constant time, whichever matches."""
    try:
        typed = hash_recovery_code(code).encode("ascii")
    except ValueError:
        return None
    found = None
    for stored in hashes:
        if hmac.compare_digest(typed, stored.encode()) and found is None:
            found = stored
    return found
