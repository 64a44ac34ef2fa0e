"""The hostile bodies, headers and paths of the corpus, as data.

Each entry names its attack and the refusal it must get (status, error code). The
builders at the bottom turn them into ``Attack`` cases for one action and one caller.
Large bodies are built on first use and kept (``functools.cache``).
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ._support import FORM, Attack

Body = bytes | Callable[[], bytes]
Entry = tuple[str, Body, int, str]
"""An attack's name, its body, and the status and error code it must be answered with."""

MALFORMED: Final = (400, "malformed")
INVALID: Final = (422, "invalid")
TOO_LARGE: Final = (413, "payload_too_large")
UNSUPPORTED: Final = (415, "unsupported_media_type")
CSRF: Final = (403, "csrf_failed")
NO_SESSION: Final = (403, "no_session")
"""A page's token sent without its session: no cookie, or one for no live session."""
CROSS_ORIGIN: Final = (403, "cross_origin")
NOT_FOUND: Final = (404, "not_found")
NOT_ALLOWED: Final = (405, "method_not_allowed")
BOUND_INVALID: Final = (400, "bound_invalid")

CANARY: Final = Path(tempfile.gettempdir()) / f"bastion-pickle-canary-{os.getpid()}"
"""The file the pickle payloads would create if anything ever unpickled them."""

MIB: Final = 1024 * 1024


# --- large bodies ----------------------------------------------------------------------


@functools.cache
def million_json_fields() -> bytes:
    return b"{" + b",".join(b'"f%d":1' % i for i in range(1_000_000)) + b"}"


@functools.cache
def million_form_fields() -> bytes:
    return b"&".join(b"f%d=1" % i for i in range(1_000_000))


def json_fields(n: int) -> Callable[[], bytes]:
    return lambda: b'{"name":"a",' + b",".join(b'"f%d":1' % i for i in range(n)) + b"}"


def form_fields(n: int) -> Callable[[], bytes]:
    return lambda: b"name=a&" + b"&".join(b"f%d=1" % i for i in range(n))


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> Callable[[], bytes]:
    return lambda: b'{"name":' + open_ * depth + close * depth + b"}"


def json_text(value: bytes) -> Callable[[], bytes]:
    return lambda: b'{"name":"' + value + b'"}'


class _Exploit:
    """Unpickling this runs a shell command: what a pickle payload is for."""

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {CANARY}",))


@functools.cache
def pickled(protocol: int) -> bytes:
    return pickle.dumps(_Exploit(), protocol=protocol)


# --- JSON bodies -----------------------------------------------------------------------

MALFORMED_JSON: Final[list[Entry]] = [
    ("truncated-object", b'{"name":"a"', *MALFORMED),
    ("lone-open-brace", b"{", *MALFORMED),
    ("lone-close-brace", b"}", *MALFORMED),
    ("missing-value", b'{"name":}', *MALFORMED),
    ("trailing-comma", b'{"name":"a",}', *MALFORMED),
    ("single-quotes", b"{'name':'a'}", *MALFORMED),
    ("unquoted-key", b'{name:"a"}', *MALFORMED),
    ("trailing-garbage", b'{"name":"a"} x', *MALFORMED),
    ("two-documents", b'{"name":"a"}{"name":"b"}', *MALFORMED),
    ("block-comment", b'{"name":"a"/**/}', *MALFORMED),
    ("line-comment", b'{"name":"a"}//', *MALFORMED),
    ("raw-newline-in-string", b'{"name":"a\nb"}', *MALFORMED),
    ("raw-tab-in-string", b'{"name":"a\tb"}', *MALFORMED),
    ("raw-nul-in-string", b'{"name":"a\x00b"}', *MALFORMED),
    ("nul-after-document", b'{"name":"a"}\x00', *MALFORMED),
    ("hex-escape", b'{"name":"\\x41"}', *MALFORMED),
    ("short-unicode-escape", b'{"name":"\\u12"}', *MALFORMED),
    ("hex-number", b'{"name":0x10}', *MALFORMED),
    ("leading-zero", b'{"name":012}', *MALFORMED),
    ("plus-sign", b'{"name":+1}', *MALFORMED),
    ("bare-fraction", b'{"name":.5}', *MALFORMED),
    ("undefined", b'{"name":undefined}', *MALFORMED),
    ("python-none", b'{"name":None}', *MALFORMED),
    ("python-bytes", b"{\"name\":b'a'}", *MALFORMED),
    ("javascript-function", b'{"name":function(){return 1}}', *MALFORMED),
    ("regex-literal", b'{"name":/a/}', *MALFORMED),
    ("utf8-bom", b'\xef\xbb\xbf{"name":"a"}', *MALFORMED),
    ("key-without-quotes-or-name", b'{:"a"}', *MALFORMED),
    ("unclosed-array", b'{"name":["a"}', *MALFORMED),
    ("top-level-array", b"[]", *MALFORMED),
    ("top-level-array-of-the-object", b'[{"name":"a"}]', *MALFORMED),
    ("top-level-string", b'"a"', *MALFORMED),
    ("top-level-number", b"1", *MALFORMED),
    ("top-level-null", b"null", *MALFORMED),
    ("top-level-true", b"true", *MALFORMED),
]

WRONG_TYPES: Final[list[Entry]] = [
    ("name-integer", b'{"name":1}', *INVALID),
    ("name-float", b'{"name":1.5}', *INVALID),
    ("name-true", b'{"name":true}', *INVALID),
    ("name-null", b'{"name":null}', *INVALID),
    ("name-empty-array", b'{"name":[]}', *INVALID),
    ("name-array-of-text", b'{"name":["a"]}', *INVALID),
    ("name-object", b'{"name":{}}', *INVALID),
    ("mongo-ne-operator", b'{"name":{"$ne":null}}', *INVALID),
    ("mongo-gt-operator", b'{"name":{"$gt":""}}', *INVALID),
    ("mongo-regex-operator", b'{"name":{"$regex":".*"}}', *INVALID),
    ("name-missing", b"{}", *INVALID),
    ("only-whitespace-is-an-empty-object", b" \n\t ", *INVALID),
    ("name-empty", b'{"name":""}', *INVALID),
    ("unknown-field", b'{"name":"a","admin":true}', *INVALID),
    ("role-escalation-field", b'{"name":"a","roles":["admin"],"user_id":3}', *INVALID),
]

NUMBERS: Final[list[Entry]] = [
    ("float-1e400", b'{"name":1e400}', *MALFORMED),
    ("float-minus-1e400", b'{"name":-1e400}', *MALFORMED),
    ("float-1e309", b'{"name":1e309}', *MALFORMED),
    ("float-exponent-overflow", b'{"name":1e999999999999999999999}', *MALFORMED),
    ("float-1e400-in-a-list", b'{"name":[1,1e400]}', *MALFORMED),
    ("float-1e400-as-a-key-value-deep", b'{"name":{"a":{"b":1e400}}}', *MALFORMED),
    ("integer-5000-digits", lambda: b'{"name":' + b"9" * 5000 + b"}", *MALFORMED),
    ("integer-10-to-the-5000", lambda: b'{"name":1' + b"0" * 5000 + b"}", *MALFORMED),
    ("integer-100000-digits", lambda: b'{"name":' + b"7" * 100_000 + b"}", *MALFORMED),
    ("integer-4300-digits-reaches-the-model", lambda: b'{"name":' + b"9" * 4300 + b"}", *INVALID),
    ("float-1e-400-underflows-to-zero", b'{"name":1e-400}', *INVALID),
    ("nan", b'{"name":NaN}', *MALFORMED),
    ("infinity", b'{"name":Infinity}', *MALFORMED),
    ("minus-infinity", b'{"name":-Infinity}', *MALFORMED),
    ("nan-lowercase", b'{"name":nan}', *MALFORMED),
    ("inf-lowercase", b'{"name":inf}', *MALFORMED),
]

NESTING: Final[list[Entry]] = [
    ("array-100000-deep", lambda: b"[" * 100_000 + b"]" * 100_000, *MALFORMED),
    ("array-100000-deep-unclosed", lambda: b"[" * 100_000, *MALFORMED),
    ("object-100000-deep", lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, *MALFORMED),
    ("array-100000-deep-in-a-field", nested(100_000), *MALFORMED),
    ("mixed-1000-deep", nested(500, b'[{"a":', b"}]"), *MALFORMED),
    ("depth-200", nested(200), *MALFORMED),
    ("depth-33", nested(32), *MALFORMED),
    ("depth-32-reaches-the-model", nested(31), *INVALID),
]

FIELDS: Final[list[Entry]] = [
    ("million-fields", million_json_fields, *TOO_LARGE),
    ("fields-1001", json_fields(1000), *TOO_LARGE),
    (
        "fields-1001-across-objects",
        lambda: (
            b'{"name":"a","o":['
            + b",".join(b'{"a":1,"b":2,"c":3,"d":4,"e":5}' for _ in range(200))
            + b"]}"
        ),
        *TOO_LARGE,
    ),
    ("field-name-129-characters", lambda: b'{"name":"a","' + b"k" * 129 + b'":1}', *MALFORMED),
    ("field-name-100000-characters", lambda: b'{"' + b"k" * 100_000 + b'":1}', *MALFORMED),
    ("name-51-characters", json_text(b"n" * 51), *INVALID),
    ("name-1-MB-under-the-cap", json_text(b"n" * 1_000_000), *INVALID),
    ("name-over-the-body-cap", json_text(b"n" * (MIB + 1)), *TOO_LARGE),
    ("name-of-combining-marks", json_text(b"a" + "\u0301".encode() * 60), *INVALID),
]

DUPLICATES: Final[list[Entry]] = [
    # A repeated key is one value, the last (as pydantic parses it): the value checked is
    # the value used, so the last one decides, and is refused here.
    ("duplicate-key-the-last-empty", b'{"name":"a","name":""}', *INVALID),
    ("duplicate-key-the-last-too-long", b'{"name":"a","name":"' + b"n" * 51 + b'"}', *INVALID),
    ("duplicate-key-spelled-with-an-escape", b'{"name":"a","n\\u0061me":1}', *INVALID),
    (
        "duplicate-key-the-last-too-deep",
        b'{"name":"a","name":' + b"[" * 40 + b"]" * 40 + b"}",
        *MALFORMED,
    ),
    ("duplicate-key-the-last-with-a-nul", b'{"name":"a","name":"\\u0000"}', *MALFORMED),
    ("duplicate-key-the-last-infinite", b'{"name":"a","name":1e400}', *MALFORMED),
    (
        "duplicate-bound-the-last-forged",
        b'{"name":"a","_bound":"x","_bound":"' + b"A" * 64 + b'"}',
        *BOUND_INVALID,
    ),
]

NUL: Final[list[Entry]] = [
    ("nul-escape-in-a-value", json_text(b"a\\u0000b"), *MALFORMED),
    ("nul-escape-alone", json_text(b"\\u0000"), *MALFORMED),
    ("nul-escape-in-a-key", b'{"name":"a","na\\u0000me":"b"}', *MALFORMED),
    ("nul-escape-in-a-list", b'{"name":["\\u0000"]}', *MALFORMED),
]

UTF8: Final[list[Entry]] = [
    ("utf8-invalid-byte-ff", json_text(b"\xff"), *MALFORMED),
    ("utf8-overlong-slash", json_text(b"\xc0\xaf"), *MALFORMED),
    ("utf8-overlong-nul", json_text(b"\xc0\x80"), *MALFORMED),
    ("utf8-cesu-surrogate", json_text(b"\xed\xa0\x80"), *MALFORMED),
    ("utf8-beyond-u10ffff", json_text(b"\xf4\x90\x80\x80"), *MALFORMED),
    ("utf8-truncated-sequence", json_text(b"\xe2\x82"), *MALFORMED),
    ("utf8-lone-continuation-byte", json_text(b"\x80"), *MALFORMED),
    ("latin1-e-acute", json_text(b"caf\xe9"), *MALFORMED),
    ("lone-high-surrogate-escape", json_text(b"\\ud800"), *MALFORMED),
    ("lone-low-surrogate-escape", json_text(b"\\udc00"), *MALFORMED),
    ("reversed-surrogate-pair-escape", json_text(b"\\udc00\\ud800"), *MALFORMED),
    ("utf16le-with-bom", '{"name":"a"}'.encode("utf-16"), *MALFORMED),
    ("utf16be-without-bom", '{"name":"a"}'.encode("utf-16-be"), *MALFORMED),
    ("utf32le", '{"name":"a"}'.encode("utf-32-le"), *MALFORMED),
]

MAGIC_KEYS: Final = [
    "__class__",
    "__init__",
    "__dict__",
    "__proto__",
    "constructor",
    "prototype",
    "__globals__",
    "__builtins__",
    "__reduce__",
    "__reduce_ex__",
    "__getattribute__",
    "__subclasses__",
    "__pydantic_fields__",
    "__pydantic_extra__",
    "__fields_set__",
    "model_config",
    "model_fields",
    "_csrf",
    "_next",
    "_method",
    "$type",
    "@type",
    "__type",
    "py/object",
    "py/reduce",
    "!!python/object/apply:os.system",
    "$ref",
    "$id",
]

MAGIC: Final[list[Entry]] = [
    *(
        (f"key-{key}", b'{"name":"a","' + key.encode() + b'":{"x":1}}', *INVALID)
        for key in MAGIC_KEYS
    ),
    ("proto-pollution", b'{"name":"a","__proto__":{"isAdmin":true}}', *INVALID),
    (
        "constructor-prototype-pollution",
        b'{"name":"a","constructor":{"prototype":{"isAdmin":true}}}',
        *INVALID,
    ),
    ("bound-not-text", b'{"name":"a","_bound":1}', *MALFORMED),
    ("bound-an-object", b'{"name":"a","_bound":{"post_id":1}}', *MALFORMED),
    ("bound-forged", b'{"name":"a","_bound":"' + b"A" * 64 + b'"}', *BOUND_INVALID),
    ("bound-empty-to-an-action-without-bound-values", b'{"name":"a","_bound":""}', *BOUND_INVALID),
]

PICKLE_JSON: Final[list[Entry]] = [
    (f"pickle-protocol-{p}-posted-as-json", functools.partial(pickled, p), *MALFORMED)
    for p in (0, 2, 4, 5)
]

JSON_ENTRIES: Final = [
    *MALFORMED_JSON,
    *WRONG_TYPES,
    *NUMBERS,
    *NESTING,
    *FIELDS,
    *DUPLICATES,
    *NUL,
    *UTF8,
    *MAGIC,
    *PICKLE_JSON,
]
"""Every JSON attack, with the answer for an action whose input requires a text field
(``name`` for greet; for others, the unknown ``name`` is refused the same way)."""

STRUCTURAL_JSON: Final = [
    entry for entry in JSON_ENTRIES if entry[2] != 422 and entry[3] != "bound_invalid"
]
"""The attacks refused whatever the input model (400, 413): for actions without input."""


# --- form bodies -----------------------------------------------------------------------

FORM_ENTRIES: Final[list[Entry]] = [
    ("million-fields", million_form_fields, *TOO_LARGE),
    ("fields-1001", form_fields(1000), *TOO_LARGE),
    ("nul-in-a-value", b"name=a%00b", *MALFORMED),
    ("nul-in-a-name", b"na%00me=a", *MALFORMED),
    ("raw-nul-byte", b"name=a\x00b", *MALFORMED),
    ("invalid-utf8-percent-encoded", b"name=%ff", *MALFORMED),
    ("invalid-utf8-raw", b"name=\xff", *MALFORMED),
    ("overlong-utf8-slash", b"name=%c0%af", *MALFORMED),
    ("cesu-surrogate", b"name=%ed%a0%80", *MALFORMED),
    ("latin1-e-acute", b"name=caf%e9", *MALFORMED),
    ("name-repeated", b"name=a&name=b", *INVALID),
    ("csrf-repeated", b"name=a&_csrf={csrf}&_csrf={csrf}", *MALFORMED),
    ("next-repeated", b"name=a&_next=/&_next=/", *MALFORMED),
    ("bound-repeated", b"name=a&_bound=x&_bound=y", *MALFORMED),
    ("bound-forged", b"name=a&_bound=" + b"A" * 64, *BOUND_INVALID),
    ("field-name-129-characters", b"name=a&" + b"k" * 129 + b"=1", *MALFORMED),
    ("dunder-class", b"name=a&__class__=x", *INVALID),
    ("dunder-proto", b"name=a&__proto__[isAdmin]=1", *INVALID),
    ("method-override-field", b"name=a&_method=DELETE", *INVALID),
    ("php-array-name", b"name[]=a", *INVALID),
    ("php-nested-proto", b"name=a&name[__proto__][admin]=1", *INVALID),
    ("dotted-attribute-path", b"name=a&name.__class__=x", *INVALID),
    ("name-empty", b"name=", *INVALID),
    ("name-missing", b"x=1", *INVALID),
    ("name-51-characters", b"name=" + b"n" * 51, *INVALID),
    ("name-over-the-body-cap", lambda: b"name=" + b"n" * (MIB + 1), *TOO_LARGE),
    ("pickle-protocol-0-as-a-form", functools.partial(pickled, 0), *INVALID),
    ("pickle-protocol-4-as-a-form", functools.partial(pickled, 4), *MALFORMED),
]


# --- multipart bodies ------------------------------------------------------------------

BOUNDARY: Final = "XX"
MULTIPART: Final = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: bytes, value: bytes, filename: bytes | None = None, extra: bytes = b"") -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return (
        b"--XX\r\nContent-Disposition: " + disposition + b"\r\n" + extra + b"\r\n" + value + b"\r\n"
    )


END: Final = b"--XX--\r\n"
FILE: Final = part(b"file", b"hello", b"a.txt")

MULTIPART_ENTRIES: Final[list[Entry]] = [
    ("parts-5000", lambda: b"".join(part(b"t%d" % i, b"x") for i in range(5000)) + END, *TOO_LARGE),
    ("parts-1001", lambda: b"".join(part(b"t%d" % i, b"x") for i in range(1001)) + END, *TOO_LARGE),
    (
        "files-11",
        lambda: b"".join(part(b"file", b"x", b"f%d" % i) for i in range(11)) + END,
        *TOO_LARGE,
    ),
    (
        "files-500",
        lambda: b"".join(part(b"file", b"x", b"f%d" % i) for i in range(500)) + END,
        *TOO_LARGE,
    ),
    ("file-over-its-cap", lambda: part(b"file", b"x" * 70_000, b"a") + END, *TOO_LARGE),
    ("body-over-the-cap", lambda: part(b"file", b"x" * (MIB + 1), b"a") + END, *TOO_LARGE),
    (
        "part-header-900-KB",
        lambda: part(b"file", b"hi", b"a", b"X-Pad: " + b"a" * 900_000 + b"\r\n") + END,
        *MALFORMED,
    ),
    (
        "part-headers-50000",
        lambda: part(b"file", b"hi", b"a", b"X-Pad: a\r\n" * 50_000) + END,
        *MALFORMED,
    ),
    ("no-closing-boundary", FILE, *MALFORMED),
    ("closing-boundary-only", END, *INVALID),
    ("empty-body", b"", *MALFORMED),
    ("binary-garbage", b"\x00\x01\x02" * 1000, *MALFORMED),
    ("lf-line-endings", FILE.replace(b"\r\n", b"\n") + b"--XX--\n", *MALFORMED),
    (
        "header-without-colon",
        b"--XX\r\nContent-Disposition form-data\r\n\r\nhi\r\n" + END,
        *MALFORMED,
    ),
    ("no-content-disposition", b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n" + END, *MALFORMED),
    (
        "disposition-without-name",
        b'--XX\r\nContent-Disposition: form-data; filename="a"\r\n\r\nhi\r\n' + END,
        *MALFORMED,
    ),
    (
        "nested-multipart-mixed",
        b'--XX\r\nContent-Disposition: form-data; name="file"\r\n'
        b"Content-Type: multipart/mixed; boundary=YY\r\n\r\n"
        b'--YY\r\nContent-Disposition: file; filename="a"\r\n\r\nhi\r\n--YY--\r\n' + END,
        *INVALID,
    ),
    ("invalid-utf8-field-name", part(b"fi\xffle", b"x", b"a") + END, *MALFORMED),
    ("invalid-utf8-file-name", part(b"file", b"x", b"\xff.txt") + END, *MALFORMED),
    ("nul-in-a-file-name", part(b"file", b"x", b"a.txt\x00.png") + END, *MALFORMED),
    ("invalid-utf8-text-value", part(b"title", b"\xff") + FILE + END, *MALFORMED),
    ("nul-in-a-text-value", part(b"title", b"a\x00b") + FILE + END, *MALFORMED),
    ("field-name-200-characters", part(b"t" * 200, b"x") + FILE + END, *MALFORMED),
    ("csrf-sent-as-a-file", part(b"_csrf", b"x", b"a") + FILE + END, *MALFORMED),
    ("bound-sent-as-a-file", part(b"_bound", b"x", b"a") + FILE + END, *MALFORMED),
    ("file-sent-as-text", part(b"file", b"just text") + END, *INVALID),
    (
        "filename-star-traversal",
        b'--XX\r\nContent-Disposition: form-data; name="file"; '
        b"filename*=utf-8''%2e%2e%2fetc%2fpasswd\r\n\r\nhi\r\n" + END,
        *INVALID,
    ),
    ("unknown-text-field", part(b"__class__", b"x") + FILE + END, *INVALID),
    ("title-too-long", part(b"title", b"t" * 101) + FILE + END, *INVALID),
]

MULTIPART_HEADERS: Final[list[tuple[str, str, int, str]]] = [
    ("boundary-missing", "multipart/form-data", *MALFORMED),
    ("boundary-empty", 'multipart/form-data; boundary=""', *MALFORMED),
    ("boundary-other-than-the-body", "multipart/form-data; boundary=YY", *MALFORMED),
    ("boundary-given-twice", 'multipart/form-data; boundary="XX"; boundary=YY', *MALFORMED),
    ("boundary-2000-characters", "multipart/form-data; boundary=" + "B" * 2000, *MALFORMED),
    ("charset-latin1", f"{MULTIPART}; charset=latin-1", *UNSUPPORTED),
    ("charset-utf16", f"{MULTIPART}; charset=utf-16", *UNSUPPORTED),
]


# --- headers, methods and paths --------------------------------------------------------

CONTENT_TYPES: Final = [
    "text/plain",
    "text/html",
    "application/xml",
    "text/xml",
    "application/x-yaml",
    "application/yaml",
    "application/msgpack",
    "application/cbor",
    "application/octet-stream",
    "application/javascript",
    "application/json-patch+json",
    "application/vnd.api+json",
    "application/ld+json",
    "text/json",
    "application/json, text/plain",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/x-www-form-urlencoded; charset=iso-8859-1",
    "multipart/form-data; boundary=XX",
    "multipart/mixed; boundary=XX",
    "application/python-pickle",
    "application/x-python-pickle",
    "application/x-python-serialize",
    "*/*",
]

ORIGINS: Final = [
    ("null", "null"),
    ("null-uppercase", "NULL"),
    ("null-with-a-space", "null "),
    ("another-site", "https://evil.example"),
    ("a-suffix-of-ours", "http://127.0.0.1.evil.example"),
    ("another-port", "http://127.0.0.1:8080"),
    ("https-instead-of-http", "https://127.0.0.1"),
    ("localhost-alias", "http://localhost"),
    ("ipv6-loopback", "http://[::1]"),
    ("hex-ip", "http://0x7f.0.0.1"),
    ("decimal-ip", "http://2130706433"),
    ("short-ip", "http://127.1"),
    ("trailing-slash", "http://127.0.0.1/"),
    ("with-a-path", "http://127.0.0.1/x"),
    ("with-user-info", "http://user@127.0.0.1"),
    ("backslash-user-info", "http://127.0.0.1\\@evil.example"),
    ("percent-dot", "http://127.0.0.1%2eevil.example"),
    ("file-scheme", "file://"),
    ("extension-scheme", "chrome-extension://abcdefghijklmnop"),
    ("wildcard", "*"),
    ("empty", ""),
    ("two-in-one", "http://127.0.0.1, https://evil.example"),
    ("unicode-host", "http://\uff45vil.example"),
    ("port-out-of-range", "http://127.0.0.1:99999"),
]

REFERERS: Final = [
    ("referer-another-site", "https://evil.example/page"),
    ("referer-user-info", "http://127.0.0.1@evil.example/"),
    ("referer-suffix-of-ours", "http://127.0.0.1.evil.example/"),
    ("referer-null", "null"),
    ("referer-about-blank", "about:blank"),
    ("referer-javascript", "javascript:alert(1)"),
    ("referer-broken-ipv6", "http://[::1/"),
    ("referer-scheme-relative", "//evil.example/"),
]

FETCH_SITES: Final = ["cross-site", "same-site", "none", "Same-Origin", "same-origin, cross-site"]

TOKENS: Final = [
    "none",
    "empty",
    "forged",
    "other-session",
    "other-secret",
    "long",
    "non-ascii",
    "flipped",
    "padded",
    "truncated",
    "twice",
    "in-query",
    "in-cookie",
]

COOKIES: Final = [
    "none",
    "forged",
    "twice",
    "giant",
    "many",
    "host-prefix",
    "huge-value",
    "uppercase",
    "quoted",
]

ACTION_PATHS: Final = [
    ("random-id", "/_actions/Zm9yZ2VkLWFjdGlvbi1pZA12"),
    ("the-action-name", "/_actions/greet"),
    ("empty-id", "/_actions/"),
    ("prefix-without-slash", "/_actions"),
    ("double-slash", "/_actions//{id}"),
    ("id-then-slash", "/_actions/{id}/"),
    ("id-then-more-path", "/_actions/{id}/extra"),
    ("id-with-a-suffix", "/_actions/{id}x"),
    ("id-with-a-prefix", "/_actions/x{id}"),
    ("id-with-padding", "/_actions/{id}=="),
    ("id-case-swapped", "/_actions/{swapped}"),
    ("id-truncated", "/_actions/{truncated}"),
    ("id-10000-characters", "/_actions/" + "A" * 10_000),
    ("id-with-an-encoded-nul", "/_actions/{id}%00"),
    ("id-with-an-encoded-slash", "/_actions/..%2f{id}"),
    ("dot-dot-encoded", "/_actions/%2e%2e%2f{id}"),
    ("double-percent-encoded", "/_actions/%25%32%65{id}"),
    ("id-with-a-lookalike-letter", "/_actions/{id}\u0430"),
    ("id-under-another-secret", "/_actions/{other}"),
    ("the-script-path-posted", "/_actions/bastion.js"),
    ("the-health-path-posted", "/_actions/health"),
]

METHODS: Final = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]

OVERRIDE_HEADERS: Final = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]


# --- builders ----------------------------------------------------------------------------


def json_attacks(action: str, entries: list[Entry], **options: Any) -> list[tuple[str, Attack]]:
    return [
        (f"{action}-json-{name}", Attack(action, status, code, body=body, **options))
        for name, body, status, code in entries
    ]


def form_attacks(action: str, entries: list[Entry], **options: Any) -> list[tuple[str, Attack]]:
    cases = []
    for name, body, status, code in entries:
        for plain in (False, True):
            mode = "plain-form" if plain else "script-form"
            attack = Attack(
                action, status, code, body=body, content_type=FORM, plain=plain, **options
            )
            cases.append((f"{action}-{mode}-{name}", attack))
    return cases
