"""bastion.http.network: the client address from the peer and the proxies the app names, a
server's own rewrite of it seen and refused, and the host guard's patterns."""

from __future__ import annotations

import logging

import pytest
from starlette.datastructures import Headers
from starlette.types import Scope

from bastion.http.network import (
    ForwardingRefused,
    check_forwarding,
    client_address,
    host_trusted,
    parse_networks,
    rewritten_by_server,
)

LOCAL = parse_networks(["127.0.0.1/32"])


def scope(peer: tuple[str, int], *headers: tuple[str, str]) -> Scope:
    return {
        "type": "http",
        "client": peer,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


def test_the_peer_is_the_address_when_no_proxy_is_trusted() -> None:
    """X-Forwarded-For from a peer the app does not trust changes nothing."""
    assert client_address(scope(("10.1.2.3", 5123), ("X-Forwarded-For", "6.6.6.6")), ()) == (
        "10.1.2.3"
    )


def test_a_server_rewrite_is_seen_by_its_port_zero() -> None:
    """uvicorn's proxy headers replace the peer with the forwarded address and port 0: a
    real TCP peer never has port 0, so that, with the header present, is a rewrite."""
    assert rewritten_by_server(scope(("6.6.6.6", 0), ("X-Forwarded-For", "6.6.6.6")))
    assert not rewritten_by_server(scope(("6.6.6.6", 0)))
    assert not rewritten_by_server(scope(("6.6.6.6", 4000), ("X-Forwarded-For", "1.1.1.1")))


def test_a_rewrite_without_trusted_proxies_has_no_address_and_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attack: the client sent X-Forwarded-For to a server that believed it. The address
    is unknown (None) and the call is refused (400), with one CRITICAL line telling the
    operator what to run instead."""
    rewritten = scope(("203.0.113.7", 0), ("X-Forwarded-For", "203.0.113.7"))
    assert client_address(rewritten, ()) is None
    with caplog.at_level(logging.CRITICAL, logger="bastion"), pytest.raises(ForwardingRefused):
        check_forwarding(rewritten, ())
    refused = ForwardingRefused()
    assert (refused.status, refused.code) == (400, "forwarding_refused")


def test_a_rewrite_with_trusted_proxies_reads_the_chain_with_the_apps_list() -> None:
    """Where the app names its proxies, bastion reads the chain itself: the right-most hop
    that is not one of them, whatever the server picked."""
    rewritten = scope(("127.0.0.1", 0), ("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 127.0.0.1"))
    assert client_address(rewritten, LOCAL) == "198.51.100.9"
    check_forwarding(rewritten, LOCAL)  # no refusal


def test_forwarded_and_x_real_ip_are_never_read() -> None:
    """Only X-Forwarded-For, and only behind a trusted proxy: Forwarded and X-Real-IP are
    ignored even from one."""
    headers = (("Forwarded", "for=6.6.6.6"), ("X-Real-IP", "6.6.6.6"))
    assert client_address(scope(("127.0.0.1", 4000), *headers), LOCAL) == "127.0.0.1"
    assert not rewritten_by_server(scope(("6.6.6.6", 0), *headers))


def test_a_garbage_hop_gives_no_address() -> None:
    """A forwarded entry that is no IP address is no address (never the string itself)."""
    forged = scope(("127.0.0.1", 4000), ("X-Forwarded-For", "<script>"))
    assert client_address(forged, LOCAL) is None


@pytest.mark.parametrize(
    ("host", "trusted", "expected"),
    [
        (None, ("app.example",), True),  # HTTP/1.0: URLs come from the server's address
        ("app.example", ("app.example",), True),
        ("APP.example:8443", ("app.example",), True),
        ("evil.example", ("app.example",), False),
        ("[::1]:8000", ("[::1]",), True),
        ("x.app.example", ("*.app.example",), True),
        ("app.example", ("*.app.example",), False),
        ("badapp.example", ("*.app.example",), False),
        ("anything", ("*",), True),
    ],
)
def test_host_patterns(host: str | None, trusted: tuple[str, ...], expected: bool) -> None:
    headers = Headers(raw=[] if host is None else [(b"host", host.encode())])
    assert host_trusted(headers, trusted) is expected
