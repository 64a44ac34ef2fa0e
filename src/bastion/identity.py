"""One spelling per account, and no account that imitates another.

An account is found by what its owner types to sign in (an e-mail address, a user
name). If sign-up, log-in and the log-in throttle spell it differently, one person gets
two accounts, or an attacker opens ``admin@…`` spelled with a full-width ``a`` (U+FF41),
whose throttle window is
the admin's, and resets it at will. So there is one canonical spelling, used everywhere:

``canonical_login(value)``
    NFKC, then case folding, then NFKC again (Unicode's ``NFKC_Casefold`` idea: full-width
    and compatibility forms fold to their plain letters, ``ß`` to ``ss``), stripped of
    surrounding white space. The log-in throttle keys on it; log-in forms look accounts up
    by it (``LoginName``).

``check_new_login(value)``
    The canonical spelling, refused when it cannot be told apart from another: invisible
    or control characters, and a part (between ``@`` and ``.``) that mixes scripts with
    look-alike letters (a Cyrillic ``a``, U+0430, among Latin letters), as Unicode's UTS #39 calls a
    mixed-script confusable; the confusable data is the ``confusable_homoglyphs``
    library's. Sign-up forms use it (``NewLoginName``). A name written wholly in another
    script (Cyrillic ``ivan@…``) is a name, not a look-alike, and is accepted.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Final

from pydantic import AfterValidator

__all__ = ["LoginName", "NewLoginName", "canonical_login", "check_new_login"]

_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs"})
"""Control, format (zero-width, bidi), unassigned, private-use and surrogate characters,
and white space: nothing a person can see or type apart inside an account name."""


def canonical_login(value: str) -> str:
    """The one spelling of an account name: ``"Ada@X.example "`` → ``"ada@x.example"``, and
    a full-width capital A (U+FF21) → ``a``."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return folded.strip()


def check_new_login(value: str) -> str:
    """The canonical spelling of a new account's name, or ``ValueError`` with a sentence
    for the person signing up (pydantic shows it as the field's message)."""
    canonical = canonical_login(value)
    if not canonical:
        raise ValueError("Enter a name to sign in with.")
    if any(unicodedata.category(char) in _INVISIBLE for char in canonical):
        raise ValueError("Use visible characters only, without spaces.")
    # Imported on first use: its tables are only needed when an account is created.
    from confusable_homoglyphs import confusables

    parts = canonical.replace("@", ".").split(".")
    if any(part and confusables.is_dangerous(part) for part in parts):
        raise ValueError(
            "This mixes letters of different alphabets that look alike: type it in one alphabet."
        )
    return canonical


LoginName = Annotated[str, AfterValidator(canonical_login)]
"""A field a log-in form reads an account name from: canonical, so that it finds the
account sign-up made, and shares that account's throttle."""

NewLoginName = Annotated[str, AfterValidator(check_new_login)]
"""A field a sign-up form reads a new account's name from: canonical, and refused when it
imitates another spelling (``check_new_login``)."""
