"""Where the probe may go: loopback only unless a host is named, and one origin."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from .model import ProbeError


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 — as written in the URL, never resolved."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme, 0)
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, base: str) -> bool:
    return origin_of(url) == origin_of(base) and origin_of(url)[0] in ("http", "https")


def check_target(url: str, allow_hosts: Sequence[str] = ()) -> str:
    """The origin to send as ``Origin`` (``scheme://host[:port]``); ``ProbeError`` for a
    URL the probe must not touch."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError(f"{url!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ProbeError(f"{url!r} has an invalid port") from None
    host = parts.hostname
    allowed = {h.lower().rstrip(".") for h in allow_hosts}
    if not is_loopback(host) and host.lower().rstrip(".") not in allowed:
        raise ProbeError(
            f"refusing to probe {host}: only loopback hosts (localhost, 127.0.0.0/8, ::1) "
            f"are probed unless --allow-host {host} names it"
        )
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"
