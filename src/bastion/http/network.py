"""Who is on the other end: the client's address, and the host names this app answers to.

The client address keys rate limits and log-in throttles, so the client must never choose
it. Bastion decides it from the connection's own peer and the proxies the app names
(``trusted_proxies``): behind one of them, the right-most ``X-Forwarded-For`` entry that is
not itself a trusted proxy (entries further left are the client's to write). ``Forwarded``
and ``X-Real-IP`` are never read.

A server may have rewritten the address already: uvicorn's ``--proxy-headers`` (on by
default, trusting 127.0.0.1) replaces the peer with an ``X-Forwarded-For`` entry and port
0, so a client talking straight to a server on loopback picks its own address. Bastion
sees that (port 0 and the header) and, when the app named no proxy, refuses the call
rather than count it under a made-up address; serve with ``--no-proxy-headers`` and let
``trusted_proxies`` decide. Where the app did name proxies, bastion reads the chain itself.

Host names: when ``trusted_hosts`` is set (by default, the hosts of ``allowed_origins``),
a request with any other ``Host`` is refused before the app runs, so that nothing the app
builds from it (Starlette's redirect to a trailing slash, say) can point at another site.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Sequence

from starlette.datastructures import Headers
from starlette.types import Scope

from bastion.config import Config
from bastion.errors import ActionError, ConfigurationError
from bastion.http.origin import parse_origin
from bastion.messages import CATALOG

__all__ = [
    "ForwardingRefused",
    "Network",
    "Networks",
    "check_forwarding",
    "client_address",
    "host_trusted",
    "is_https",
    "is_loopback",
    "origins_for",
    "parse_networks",
    "refuse_debug_off_loopback",
    "rewritten_by_server",
]

logger = logging.getLogger("bastion")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]

_warned: set[str] = set()


class ForwardingRefused(ActionError):
    """The server took the client address from a header bastion was not told to trust."""

    status = 400
    code = "forwarding_refused"
    message = CATALOG["forwarding_refused"]


def parse_networks(values: Sequence[str], name: str = "trusted_proxies") -> Networks:
    """Addresses or CIDR networks; ``name`` (the argument, or the environment variable
    they came from) is what an error names."""
    if isinstance(values, str):
        raise ConfigurationError(f"{name} must be a list of networks, not one string")
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def rewritten_by_server(scope: Scope) -> bool:
    """Whether the server replaced the peer with a forwarded address: it then keeps no
    port (uvicorn's proxy headers set 0), which a real TCP peer never has."""
    client = scope.get("client")
    if not client or client[1] != 0:
        return False
    return any(key == b"x-forwarded-for" for key, _ in scope["headers"])


def client_address(scope: Scope, trusted: Networks) -> str | None:
    """The caller's address (see the module's docstring); ``None`` when unknown, as for a
    call whose address the server rewrote without the app trusting any proxy."""
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if rewritten_by_server(scope):
        if not trusted:
            return None
        # The server believed its peer was a proxy; the chain is read with the app's list.
        return _from_chain(scope, trusted, peer)
    if not trusted or not _in_networks(peer, trusted):
        return peer
    return _from_chain(scope, trusted, peer)


def check_forwarding(scope: Scope, trusted: Networks) -> None:
    """Refuse (400) a call whose address the server took from ``X-Forwarded-For`` when the
    app named no proxy: counting it would let the client choose its own address."""
    if trusted or not rewritten_by_server(scope):
        return
    if "forwarding" not in _warned:
        _warned.add("forwarding")
        logger.critical(
            "bastion: the server took the client address from X-Forwarded-For, but "
            "trusted_proxies names no proxy, so calls carrying that header are refused. "
            "Serve with uvicorn --no-proxy-headers (bastion reads X-Forwarded-For itself), "
            "and name your proxies in trusted_proxies"
        )
    raise ForwardingRefused()


def _from_chain(scope: Scope, trusted: Networks, peer: str | None) -> str | None:
    """The right-most hop that is not a trusted proxy (``None`` if it is no address);
    ``peer`` when every hop is trusted."""
    forwarded = ",".join(
        value.decode("latin-1") for key, value in scope["headers"] if key == b"x-forwarded-for"
    )
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in_networks(hop, trusted):
            return hop if _is_ip(hop) else None
    return peer


def host_trusted(headers: Headers, trusted: tuple[str, ...]) -> bool:
    """Whether the ``Host`` header names a trusted host: an exact name (any port),
    ``*.example.com`` for its subdomains, or ``*`` for any. Without one (HTTP/1.0),
    Starlette builds URLs from the server's own address, which no client chooses; two
    are refused."""
    hosts = headers.getlist("host")
    if not hosts:
        return True
    if len(hosts) != 1:
        return False
    host = hosts[0].lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    for pattern in trusted:
        if pattern == "*" or pattern in (host, name):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in_networks(address: str | None, networks: Networks) -> bool:
    if address is None or not _is_ip(address):
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)


def is_https(config: Config, scope: Scope) -> bool:
    """Configuration first; else the connection's own scheme (never a header)."""
    if config.https is not None:
        return config.https
    return bool(scope.get("scheme") == "https")


def origins_for(config: Config, scope: Scope) -> Collection[str]:
    """The origins calls may come from. Debug mode without a list: the loopback origin
    being served (both its IP and ``localhost`` spellings)."""
    if config.allowed_origins or not config.debug:
        return config.allowed_origins
    host, port = (*(scope.get("server") or ()), None, None)[:2]
    scheme = "https" if is_https(config, scope) else "http"
    names = {str(host), "localhost", "127.0.0.1"} if is_loopback(host) else set()
    found = (
        parse_origin(f"{scheme}://{name}:{port}" if port else f"{scheme}://{name}")
        for name in names
    )
    return frozenset(o for o in found if o is not None)


def refuse_debug_off_loopback(scope: Scope, checked: set[tuple[object, ...]]) -> None:
    """Debug replies name exception types and messages: served on any address but
    loopback, every request is refused (``ConfigurationError``, logged CRITICAL). Each
    listening address is checked once (``checked`` remembers the loopback ones)."""
    server = tuple(scope.get("server") or ())
    if server in checked:
        return
    host = server[0] if server else None
    if not is_loopback(host):
        logger.critical("bastion: debug mode refused: the server listens on %r", host)
        raise ConfigurationError(
            f"debug=True is only allowed on a loopback address, not on {host!r}"
        )
    checked.add(server)


def is_loopback(host: object) -> bool:
    if host == "localhost":
        return True
    try:
        return isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
