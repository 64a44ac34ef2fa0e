"""``RequestHeaders`` answers every lookup exactly as Starlette's ``Headers`` does: the
pipeline's checks read the same values through either."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SECRET
from helpers import CROSS_ORIGIN
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion import Bastion, public
from bastion.http.incoming import RequestHeaders
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

NAMES = st.sampled_from(
    [b"origin", b"referer", b"x-csrf-token", b"content-type", b"content-length", b"cookie"]
)
VALUES = st.binary(max_size=20).map(lambda raw: bytes(b % 128 for b in raw))
LOOKUPS = ["Origin", "origin", "X-CSRF-Token", "content-type", "Content-Length", "cookie", "host"]


@given(st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_every_lookup_matches_starlettes(raw: list[tuple[bytes, bytes]]) -> None:
    """Repeated names keep every value in order; absent names are absent; case-blind."""
    ours = RequestHeaders({"headers": list(raw)})
    theirs = Headers(scope={"headers": list(raw)})
    for name in LOOKUPS:
        assert ours.getlist(name) == theirs.getlist(name)
        assert ours.get(name) == theirs.get(name)
        assert ours.get(name, "none") == theirs.get(name, "none")
        assert (name in ours) == (name in theirs)
        if name in theirs:
            assert ours[name] == theirs[name]
        else:
            with pytest.raises(KeyError):
                ours[name]
    assert ours.items() == theirs.items()


def test_a_returned_list_is_a_copy() -> None:
    """A caller changing what getlist gave cannot change what the next stage reads."""
    headers = RequestHeaders({"headers": [(b"origin", b"https://a.example")]})
    headers.getlist("origin").append("https://evil.example")
    assert headers.getlist("origin") == ["https://a.example"]


# --- one index per request: the session middleware's, reused while the headers stand ---


def _kept(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], RequestHeaders]:
    scope: dict[str, Any] = {"headers": raw}
    made = RequestHeaders(scope)
    made.keep(scope)
    return scope, made


def test_the_kept_index_is_reused_while_the_headers_are_unchanged() -> None:
    scope, made = _kept([(b"origin", b"https://a.example")])
    assert RequestHeaders.of(scope) is made


def test_headers_replaced_after_the_index_are_indexed_again() -> None:
    scope, made = _kept([(b"origin", b"https://a.example")])
    scope["headers"] = [(b"origin", b"https://b.example")]
    again = RequestHeaders.of(scope)
    assert again is not made
    assert again.get("origin") == "https://b.example"


@pytest.mark.parametrize("change", ["replace", "append", "remove"])
def test_headers_changed_in_place_after_the_index_are_indexed_again(change: str) -> None:
    """A middleware between the session middleware and the pipeline edits the list it got:
    the pipeline reads what it left, not the index made before."""
    scope, made = _kept([(b"origin", b"https://a.example"), (b"accept", b"*/*")])
    headers = scope["headers"]
    if change == "replace":
        headers[0] = (b"origin", b"https://b.example")
    elif change == "append":
        headers.append((b"x-csrf-token", b"t"))
    else:
        headers.pop(0)
    again = RequestHeaders.of(scope)
    assert again is not made
    assert again.items() == Headers(raw=list(headers)).items()


def test_a_scope_without_a_kept_index_gets_a_new_one() -> None:
    made = RequestHeaders.of({"headers": [(b"origin", b"https://a.example")]})
    assert made.get("origin") == "https://a.example"


def test_a_middleware_rewriting_origin_in_place_is_seen_by_the_origin_check() -> None:
    """Attack: the session middleware indexes a request from the app's own origin; a
    middleware inside it (added before ``mount``) rewrites ``Origin`` in place to a foreign
    one. The pipeline must judge the headers the app passes on: 403 cross_origin, and the
    handler does not run. Without the rewrite, the same call passes."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    calls: list[str] = []

    @bastion.action(policy=public)
    def ping() -> None:
        calls.append("ping")

    def rewriting(app: ASGIApp) -> ASGIApp:
        async def rewrite(scope: Scope, receive: Receive, send: Send) -> None:
            headers = scope.get("headers", [])
            for i, (name, _value) in enumerate(headers):
                if name == b"origin":
                    headers[i] = (name, b"https://evil.example")
            await app(scope, receive, send)

        return rewrite

    for rewrite, expected in (
        (False, (200, {"ok": True, "data": None})),
        (True, (403, CROSS_ORIGIN)),
    ):
        app = Starlette()
        if rewrite:
            app.add_middleware(rewriting)  # before mount: inside the session middleware
        bastion.mount(app)
        with ActionClient(app, bastion) as client:
            reply = client.call(ping)
        assert (reply.status_code, reply.json()) == expected
    assert calls == ["ping"]  # the first call only
