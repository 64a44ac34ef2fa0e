"""``RequestHeaders`` answers every lookup exactly as Starlette's ``Headers`` does: the
pipeline's checks read the same values through either."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from bastion.http.incoming import RequestHeaders

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
