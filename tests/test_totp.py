"""One-time codes (RFC 6238) and recovery codes: the RFC's test vectors, a step of drift
either way and no more, a code good once, recovery codes single-use and typed loosely,
and a QR code that is inert markup whatever the account name."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from bastion import totp

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
"""RFC 6238 appendix B's SHA-1 key, the ASCII of "12345678901234567890", in base32."""

RFC_VECTORS = [
    # (Unix time, the RFC's 8-digit code): 6 digits are its last six (mod 10^6).
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

NOW = 1_700_000_000.0
"""A fixed instant, 20 seconds into its step."""
SECRET = totp.new_secret()


def code_at(secret: str, moment: float) -> str:
    """The code an authenticator app shows at ``moment``, from pyotp itself."""
    import pyotp

    return pyotp.TOTP(secret).at(int(moment))


@pytest.mark.parametrize(("moment", "expected"), RFC_VECTORS)
def test_rfc_6238_test_vectors(moment: int, expected: str) -> None:
    """Each of the RFC's SHA-1 vectors verifies at its time, and its step is T // 30."""
    assert totp.verify(RFC_SECRET, expected[-6:], None, at=moment) == moment // 30


def test_a_new_secret_is_160_random_bits_in_base32() -> None:
    secret = totp.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert secret != totp.new_secret()


@pytest.mark.parametrize("steps", [-1, 0, 1])
def test_one_step_of_drift_either_way_is_accepted(steps: int) -> None:
    """A code of the step before, this one or the next: the step it was made for."""
    code = code_at(SECRET, NOW + 30 * steps)
    assert totp.verify(SECRET, code, None, at=NOW) == int(NOW // 30) + steps


@pytest.mark.parametrize("steps", [-3, -2, 2, 3])
def test_two_steps_of_drift_are_refused(steps: int) -> None:
    code = code_at(SECRET, NOW + 30 * steps)
    assert code != code_at(SECRET, NOW)  # no coincidence in this fixed case
    assert totp.verify(SECRET, code, None, at=NOW) is None
    assert totp.matching_step(SECRET, code, at=NOW) is None


def test_a_code_is_good_once() -> None:
    """The step returned, stored as the last used, refuses the same code within its
    whole window: ``matching_step`` still finds it (to say it was used)."""
    code = code_at(SECRET, NOW)
    step = totp.verify(SECRET, code, None, at=NOW)
    assert step is not None
    for later in (NOW, NOW + 10, NOW + 30):
        assert totp.verify(SECRET, code, step, at=later) is None
        assert totp.matching_step(SECRET, code, at=later) == step


def test_an_earlier_steps_code_is_refused_once_a_later_one_was_used() -> None:
    """RFC 6238 section 5.2: after the next step's code, the previous one is dead too."""
    used = totp.verify(SECRET, code_at(SECRET, NOW + 30), None, at=NOW)
    assert used == int(NOW // 30) + 1
    assert totp.verify(SECRET, code_at(SECRET, NOW), used, at=NOW) is None
    # and the step after that one passes
    following = totp.verify(SECRET, code_at(SECRET, NOW + 60), used, at=NOW + 30)
    assert following == used + 1


@pytest.mark.parametrize(
    ("typed", "digits"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123-456", "123456"),
        ("\uff11\uff12\uff13\uff14\uff15\uff16", "123456"),  # full-width digits
        ("12345", None),
        ("1234567", None),
        ("12345a", None),
        ("", None),
        ("\u0661\u0662\u0663\u0664\u0665\u0666", None),  # Arabic-Indic digits: not ASCII
    ],
)
def test_codes_are_read_as_people_type_them(typed: str, digits: str | None) -> None:
    assert totp.normalize_code(typed) == digits


def test_a_code_typed_with_a_space_verifies() -> None:
    code = code_at(SECRET, NOW)
    assert totp.verify(SECRET, f"{code[:3]} {code[3:]}", None, at=NOW) == int(NOW // 30)


def test_a_wrong_or_malformed_code_is_refused() -> None:
    right = code_at(SECRET, NOW)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for code in (wrong, "abcdef", "", "0" * 100):
        assert totp.verify(SECRET, code, None, at=NOW) is None


def test_the_uri_names_the_issuer_the_account_and_the_secret() -> None:
    """Key URI format: ``otpauth://totp/Issuer:account?secret=…&issuer=Issuer``, each part
    percent-encoded (older pyotp leaves ``@`` as it is)."""
    uri = urlsplit(totp.provisioning_uri(SECRET, "ada@board.example", "Team board"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == "/Team board:ada@board.example"
    query = parse_qs(uri.query, strict_parsing=True)
    assert {k: v for k, v in query.items() if k in ("secret", "issuer")} == {
        "secret": [SECRET],
        "issuer": ["Team board"],
    }


def test_the_account_name_cannot_break_out_of_the_label() -> None:
    """A name with a colon, ``?``, ``&``, ``#`` or quotes stays inside the label: it adds
    no query parameter (no ``secret=`` of the attacker's) and no fragment."""
    uri = urlsplit(totp.provisioning_uri(SECRET, 'x?secret=AAAA&a=b#"<>', "Team board"))
    assert uri.fragment == ""
    assert parse_qs(uri.query)["secret"] == [SECRET]
    assert unquote(uri.path) == '/Team board:x?secret=AAAA&a=b#"<>'


HOSTILE = '"><script>alert(1)</script><image href="https://evil.example/x.png"/>@x'

SVG_ATTRIBUTES = {
    "svg": {"width", "height", "class"},
    "g": {"transform"},
    "path": {"d", "class", "stroke", "fill", "transform"},
}


def test_the_qr_code_is_inert_svg_whatever_the_account_name() -> None:
    """One ``<svg>`` of ``<path>`` elements (in a scaling group) with only geometry and
    colours: no script, no link, no URL of any kind, nothing of the account name as text."""
    svg = totp.qr_svg(totp.provisioning_uri(SECRET, HOSTILE, "Team <board>"))
    root = ET.fromstring(svg)  # noqa: S314 - our own output, parsed to inspect it
    assert root.tag == "svg"
    paths = list(root.iter("path"))
    assert len(paths) >= 1
    for element in root.iter():
        assert set(element.attrib) <= SVG_ATTRIBUTES[element.tag], element.attrib
        assert not (element.text or "").strip()
        assert not (element.tail or "").strip()
        if "transform" in element.attrib:
            assert re.fullmatch(r"scale\(\d+\)", element.attrib["transform"])
        if "fill" in element.attrib or "stroke" in element.attrib:
            assert {element.get("fill"), element.get("stroke")} <= {"#fff", "#000", None}
    for path in paths:
        assert re.fullmatch(r"[MmHhVvLlZz0-9. \-]+", path.attrib["d"])
    for banned in ("script", "href", "http", "url(", "evil", "<!", "<?", "board"):
        assert banned not in svg.lower()


def test_the_qr_code_depends_on_the_uri_only() -> None:
    uri = totp.provisioning_uri(SECRET, "ada@board.example", "Team board")
    other = totp.provisioning_uri(totp.new_secret(), "ada@board.example", "Team board")
    assert totp.qr_svg(uri) == totp.qr_svg(uri)
    assert totp.qr_svg(uri) != totp.qr_svg(other)


def test_recovery_codes_are_ten_distinct_codes_of_80_bits() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"([0-9a-hjkmnp-tv-z]{4}-){3}[0-9a-hjkmnp-tv-z]{4}", code), code
    assert len(totp.new_recovery_codes(3)) == 3
    with pytest.raises(ValueError, match="at least one"):
        totp.new_recovery_codes(0)


def test_a_recovery_code_is_stored_as_a_sha256_hash_and_matched_loosely() -> None:
    """Upper case, spaces instead of dashes, an O for a 0 and an L for a 1 find the same
    hash; the code itself is not in it."""
    code = "0k1m-2n3p-4q5r-6s7t"
    stored = totp.hash_recovery_code(code)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert stored == hashlib.sha256(b"bastion recovery code\x00" + b"0k1m2n3p4q5r6s7t").hexdigest()
    hashes = [totp.hash_recovery_code(c) for c in totp.new_recovery_codes(5)] + [stored]
    for typed in (code, "0K1M 2N3P 4Q5R 6S7T", "OK1M2N3P4Q5R6S7T", "0klm-2n3p-4q5r-6s7t"):
        assert totp.match_recovery_code(typed, hashes) == stored, typed


def test_a_recovery_code_is_single_use_once_its_hash_is_deleted() -> None:
    """The caller deletes the hash that matched: the same code then matches nothing,
    and the other codes still do."""
    codes = totp.new_recovery_codes()
    hashes = [totp.hash_recovery_code(c) for c in codes]
    used = totp.match_recovery_code(codes[3], hashes)
    assert used == hashes[3]
    hashes.remove(used)
    assert totp.match_recovery_code(codes[3], hashes) is None
    assert totp.match_recovery_code(codes[4], hashes) == totp.hash_recovery_code(codes[4])


@pytest.mark.parametrize("typed", ["", "123456", "0k1m-2n3p-4q5r-6s7", "0k1m-2n3p-4q5r-6s7u"])
def test_what_is_not_a_recovery_code_matches_nothing(typed: str) -> None:
    """Too short, a TOTP code, a letter out of the alphabet (u)."""
    assert totp.normalize_recovery_code(typed) is None
    assert totp.match_recovery_code(typed, [totp.hash_recovery_code("0" * 16)]) is None
    with pytest.raises(ValueError, match="not a recovery code"):
        totp.hash_recovery_code(typed)


def test_importing_the_module_loads_neither_pyotp_nor_segno() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bastion.totp; print(sorted({'pyotp', 'segno'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("blocked", "statement"),
    [
        ("pyotp", "from bastion import totp; totp.verify(totp.new_secret(), '123456', None)"),
        ("segno", "from bastion import totp; totp.qr_svg('otpauth://totp/x?secret=AAAA')"),
    ],
)
def test_without_the_extra_the_error_names_it(blocked: str, statement: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules[{blocked!r}] = None; {statement}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    assert "pip install 'bastion[totp]'" in last
