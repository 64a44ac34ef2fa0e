"""Properties of the whole pipeline under arbitrary input (hypothesis).

For any bytes as a JSON, form or multipart body (arbitrary boundaries and part headers
included), any value of the headers a client controls (Origin, Referer, Content-Type,
Content-Length, Cookie, X-CSRF-Token, Sec-Fetch-Site, Accept) and any action path, the
pipeline never fails outside its error tree: no 5xx (the quickstart's ``boom``, which
fails on purpose, is left out), nothing logged as an internal failure, and every reply
is either the documented envelope ``{"ok": bool, ...}`` or, for a plain form, a 303 to
a same-origin path. No reply leaks a traceback, a path or a secret.

Calls go straight into the ASGI app, each from an address of its own (no rate limit
interferes), with a valid session and token unless the example replaces them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlencode

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import probe
from ._support import (
    FORM,
    JSON,
    ORIGIN,
    CountingReceive,
    Reply,
    Target,
    asgi_call,
    assert_no_leak_in,
    fresh_address,
    session_and_token,
)

SETTINGS: Final = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the suite's environment fixture, harmless here
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ACTIONS: Final = ["greet", "count", "publish", "whoami", "stats", "logout", "login"]
"""Every quickstart action but ``boom`` (a 500 by design)."""
ENVELOPE_ERROR: Final = {"code", "message", "digest", "fields"}


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def internal_failures() -> Iterator[list[logging.LogRecord]]:
    """What bastion logs as an internal failure (an exception outside its error tree)."""
    handler = _Failures()
    logger = logging.getLogger("bastion")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@functools.cache
def _credentials(target_name: str, bastion: Any) -> tuple[str, str]:
    return anyio.run(session_and_token, bastion)


def send(
    target: Target,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    chunk: int = 0,
) -> Reply:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]

    async def run() -> Reply:
        with anyio.fail_after(60):
            return await asgi_call(
                target.app, "POST", path, headers, CountingReceive(chunks), client=fresh_address()
            )

    with internal_failures() as failures:
        reply = anyio.run(run)
    assert failures == [], [r.getMessage() for r in failures]
    return reply


def check(reply: Reply, sent: bytes) -> None:
    """No 5xx; the envelope (or a same-origin 303); nothing leaked."""
    assert reply.status < 500, reply.body[:300]
    assert_no_leak_in(reply, sent)
    if reply.status == 303:
        (location,) = reply.header(b"location")
        assert location.startswith(b"/")
        assert not location.startswith((b"//", b"/\\"))
        assert reply.body == b""
        return
    assert reply.header(b"content-type") == [JSON.encode()]
    envelope = json.loads(reply.body)
    assert isinstance(envelope, dict)
    assert isinstance(envelope["ok"], bool)
    if envelope["ok"]:
        assert reply.status == 200
        assert set(envelope) == {"ok", "data"}
    else:
        assert 400 <= reply.status < 500
        assert set(envelope) == {"ok", "error"}
        assert {"code", "message"} <= set(envelope["error"]) <= ENVELOPE_ERROR


def headers_for(target: Target, content_type: bytes, *, plain: bool = False) -> list[Any]:
    sid, token = _credentials(target.name, target.bastion)
    headers = [
        (b"content-type", content_type),
        (b"origin", ORIGIN.encode()),
        (b"cookie", f"bastion_session={sid}".encode()),
    ]
    if plain:
        return [*headers, (b"accept", b"text/html"), (b"referer", ORIGIN.encode() + b"/form")]
    return [*headers, (b"accept", JSON.encode()), (b"x-csrf-token", token.encode())]


# --- bodies --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(
            st.sampled_from(["name", "title", "email", "_bound", "_csrf", "__class__", "x"])
            | st.text(max_size=12),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


json_bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(_dumps),
    st.dictionaries(st.sampled_from(["name", "title"]), json_values, max_size=2).map(_dumps),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@SETTINGS
@given(
    action=st.sampled_from(ACTIONS),
    body=json_bodies,
    chunk=st.sampled_from([0, 0, 1, 7, 64]),
)
def test_any_json_body(qs: Target, action: str, body: bytes, chunk: int) -> None:
    """Arbitrary bytes (and arbitrary JSON documents) posted as JSON to any action."""
    path = qs.bastion.url_for(action)
    check(send(qs, path, headers_for(qs, JSON.encode()), body, chunk), body)


form_pairs = st.lists(
    st.tuples(
        st.sampled_from(["name", "_csrf", "_next", "_bound", "title", "x[]"]) | st.text(),
        st.text(max_size=80),
    ),
    max_size=8,
)

form_bodies = st.one_of(
    st.binary(max_size=2048),
    form_pairs.map(lambda pairs: urlencode(pairs, encoding="utf-8", errors="surrogatepass")),
).map(lambda b: b if isinstance(b, bytes) else b.encode())


@SETTINGS
@given(action=st.sampled_from(ACTIONS), body=form_bodies, plain=st.booleans())
def test_any_form_body(qs: Target, action: str, body: bytes, plain: bool) -> None:
    """Arbitrary bytes (and arbitrary name/value pairs) posted as a form, by a script or as
    a browser's plain form (whose 303 goes to a same-origin path)."""
    headers = headers_for(qs, FORM.encode(), plain=plain)
    check(send(qs, qs.bastion.url_for(action), headers, body), body)


def _part(draw: Any, boundary: bytes) -> bytes:
    name = draw(st.sampled_from([b"file", b"title", b"_csrf", b"_bound"]) | st.binary(max_size=20))
    disposition = b'form-data; name="' + name + b'"'
    if draw(st.booleans()):
        disposition += b'; filename="' + draw(st.binary(max_size=30)) + b'"'
    lines = [b"Content-Disposition: " + disposition]
    lines += draw(st.lists(st.binary(max_size=40), max_size=3))
    content = draw(st.binary(max_size=200))
    return b"--" + boundary + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + content + b"\r\n"


@st.composite
def multipart(draw: Any) -> tuple[bytes, bytes]:
    """(Content-Type, body): parts around a boundary that may be anything, closed or not,
    with a boundary in the header that may not be the one in the body."""
    boundary = draw(st.sampled_from([b"XX", b"----b0undary"]) | st.binary(max_size=80))
    declared = boundary if draw(st.integers(0, 3)) else draw(st.binary(max_size=20))
    parts = [_part(draw, boundary) for _ in range(draw(st.integers(0, 4)))]
    end = draw(st.sampled_from([b"--" + boundary + b"--\r\n", b"", b"--" + boundary]))
    body = b"".join(parts) + end
    if draw(st.integers(0, 4)) == 0:
        body = draw(st.binary(max_size=1024))
    params = draw(st.sampled_from([b"", b"; charset=utf-8", b'; boundary="x"']))
    quoted = draw(st.booleans())
    value = b'boundary="' + declared + b'"' if quoted else b"boundary=" + declared
    return b"multipart/form-data; " + value + params, body


@SETTINGS
@given(case=multipart(), plain=st.booleans(), chunk=st.sampled_from([0, 3, 100]))
def test_any_multipart_body(
    probe_target: Target, case: tuple[bytes, bytes], plain: bool, chunk: int
) -> None:
    """Arbitrary multipart bodies, boundaries and part headers, to an upload action."""
    content_type, body = case
    headers = headers_for(probe_target, content_type, plain=plain)
    reply = send(probe_target, probe.bastion.url_for("upload"), headers, body, chunk)
    check(reply, body + content_type)


header_value = st.one_of(
    st.binary(max_size=120),
    st.sampled_from(
        [
            b"null",
            ORIGIN.encode(),
            b"http://127.0.0.1:99999",
            b"http://[::1",
            b"https://evil.example",
            b"application/json",
            b"multipart/form-data; boundary=",
            b"application/x-www-form-urlencoded; charset=utf-8",
            b"-1",
            b"99999999999999999999999999",
            b"bastion_session=" + b"A" * 43,
            b"same-origin",
            b"cross-site",
        ]
    ),
)
HEADERS: Final = [
    "origin",
    "referer",
    "content-type",
    "content-length",
    "cookie",
    "x-csrf-token",
    "sec-fetch-site",
    "accept",
]


@SETTINGS
@given(
    action=st.sampled_from(ACTIONS),
    replaced=st.dictionaries(st.sampled_from(HEADERS), st.lists(header_value, max_size=2)),
    body=st.sampled_from([b'{"name":"a"}', b"name=a", b"", b'{"title":"t"}']),
)
def test_any_header_values(
    qs: Target, action: str, replaced: dict[str, list[bytes]], body: bytes
) -> None:
    """Any value, repeated or absent, of the headers a client controls."""
    headers = [
        (name, value)
        for name, value in headers_for(qs, JSON.encode())
        if name.decode() not in replaced
    ]
    headers += [(name.encode(), v) for name, values in replaced.items() for v in values]
    sent = body + b"".join(v for _, v in headers)
    check(send(qs, qs.bastion.url_for(action), headers, body), sent)


@SETTINGS
@given(action_id=st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_any_action_path(qs: Target, action_id: str) -> None:
    """Any action ID (an arbitrary path below the prefix) is answered 404 with bastion's
    envelope. A line break in the path (``%0A`` decoded by the server) does not reach the
    mount at all: Starlette's router answers its own plain 404, which is fine too."""
    path = "/_actions/" + action_id
    reply = send(qs, path, headers_for(qs, JSON.encode()), b"{}")
    if "\n" in action_id and reply.header(b"content-type") == [b"text/plain; charset=utf-8"]:
        assert (reply.status, reply.body) == (404, b"Not Found")
        return
    check(reply, path.encode("utf-8", "replace"))
