"""bastion.identity: one spelling per account name, and no new name that imitates another."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from bastion import LoginName, NewLoginName, canonical_login, check_new_login

LOOKALIKE = "This mixes letters of different alphabets that look alike: type it in one alphabet."


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("Ada@Example.COM", "ada@example.com"),  # case
        ("  ada@example.com\t", "ada@example.com"),  # surrounding white space
        ("\uff41dmin@board.example", "admin@board.example"),  # full-width a (NFKC)
        ("\uff21\uff24\uff21@example.com", "ada@example.com"),  # full-width capitals
        ("stra\u00dfe@example.com", "strasse@example.com"),  # ß folds to ss
        ("\u212bngstr\u00f6m@example.com", "\u00e5ngstr\u00f6m@example.com"),  # Å sign → å
        ("e\u0301cole@example.com", "\u00e9cole@example.com"),  # composed (NFC within NFKC)
        ("\u2460@example.com", "1@example.com"),  # circled digit one
    ],
)
def test_canonical_login_folds_every_spelling_of_one_name(typed: str, canonical: str) -> None:
    """Each way of typing one name gives the one canonical spelling."""
    assert canonical_login(typed) == canonical
    assert check_new_login(typed) == canonical


def test_canonical_login_is_idempotent() -> None:
    """The canonical spelling of a canonical spelling is itself (stored names stay found)."""
    for name in ("ada@example.com", "\u00e5ngstr\u00f6m@example.com", "strasse@x.example"):
        assert canonical_login(canonical_login(name)) == canonical_login(name)


@pytest.mark.parametrize(
    ("name", "script"),
    [
        ("\u0430dmin@board.example", "Cyrillic a"),
        ("adm\u0456n@board.example", "Cyrillic i"),
        ("admin@b\u03bfard.example", "Greek omicron in the domain"),
        ("\u0570dmin@board.example", "Armenian h-like letter"),
        ("admin@board.exampl\u0435", "Cyrillic e in the top-level domain"),
        ("\u13aadmin@board.example", "Cherokee A"),
    ],
)
def test_mixed_script_look_alikes_are_refused(name: str, script: str) -> None:
    """A part that mixes scripts with look-alike letters imitates a plain-Latin name."""
    with pytest.raises(ValueError, match="different alphabets") as refused:
        check_new_login(name)
    assert str(refused.value) == LOOKALIKE, script


@pytest.mark.parametrize(
    "name",
    [
        "ad\u200bmin@board.example",  # zero-width space
        "admin\u200d@board.example",  # zero-width joiner
        "\u202eadmin@board.example",  # right-to-left override
        "ad min@board.example",  # a space inside
        "admin\x00@board.example",  # NUL
        "admin\ue000@board.example",  # private use
    ],
)
def test_invisible_characters_are_refused(name: str) -> None:
    """Characters a person cannot see or tell apart never make a new name."""
    with pytest.raises(ValueError, match="visible characters only"):
        check_new_login(name)


def test_a_name_wholly_in_another_script_is_accepted() -> None:
    """A Cyrillic or Greek name is a name: only a mix of look-alikes is refused."""
    assert (
        check_new_login("\u0418\u0432\u0430\u043d@mail.example")
        == "\u0438\u0432\u0430\u043d@mail.example"
    )
    assert (
        check_new_login("\u03bd\u03af\u03ba\u03b7@mail.example")
        == "\u03bd\u03af\u03ba\u03b7@mail.example"
    )


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="Enter a name"):
        check_new_login("   ")


class SignUp(BaseModel):
    email: NewLoginName


class LogIn(BaseModel):
    email: LoginName


def test_the_field_types_canonicalise_and_refuse_in_a_model() -> None:
    """In pydantic models: sign-up refuses a look-alike with the sentence; log-in finds
    the canonical spelling, and never refuses (a look-alike simply matches no account)."""
    assert SignUp(email="\uff41dmin@board.example").email == "admin@board.example"
    assert LogIn(email=" \uff21DMIN@Board.Example").email == "admin@board.example"
    assert LogIn(email="\u0430dmin@board.example").email == "\u0430dmin@board.example"
    with pytest.raises(ValidationError) as refused:
        SignUp(email="\u0430dmin@board.example")
    assert refused.value.errors()[0]["msg"] == "Value error, " + LOOKALIKE
