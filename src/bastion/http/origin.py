"""Pipeline stage 2: where the call comes from, judged before any state is touched.

In this order:

1. ``Sec-Fetch-Site`` present and not ``same-origin`` → 403. Browsers set it and
   pages cannot forge it, so a cross-site or same-site (sibling sub-domain) call
   stops here.
2. ``Origin`` present → it must equal one of ``allowed_origins`` exactly (scheme,
   host and port). ``null`` (sandboxed frames, some redirects) and anything malformed
   are 403, never a 500 and never "missing".
3. No ``Origin`` but a ``Referer`` → the Referer's origin must be allowed.
4. Neither → allowed here; the CSRF token (stage 5) is still required (a script's call
   may bring an API token, stage 3, instead).

``Host`` and ``X-Forwarded-*`` decide nothing: origins are compared with the
configured list, never with what the request says it was sent to.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection
from typing import Final, NoReturn
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from bastion import events
from bastion.errors import Forbidden
from bastion.messages import CATALOG

__all__ = ["CrossOrigin", "check", "parse_origin"]


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOSTNAME: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_ORIGIN: Final = re.compile(
    r"(https?)://(\[[0-9a-fA-F:.]+\]|[^/:?#@\[\]\s]+)(?::(\d{1,5}))?", re.IGNORECASE
)


class CrossOrigin(Forbidden):
    code = "cross_origin"
    message = CATALOG["cross_origin"]


@functools.lru_cache(maxsize=1024)
def parse_origin(value: str) -> str | None:
    """``scheme://host:port`` with the port made explicit, or ``None`` if malformed.

    Only the exact form browsers send is accepted: no path, no trailing slash, no
    user info, no query; an http(s) scheme; a host name or IP literal in ASCII.
    """
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme, host, port_text = match.groups()
    scheme, host = scheme.lower(), host.lower()
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    elif not _HOSTNAME.fullmatch(host):
        return None
    port = int(port_text) if port_text is not None else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return f"{scheme}://{host}:{port}"


def check(headers: Headers, allowed: Collection[str], action: str) -> None:
    """Refuse (403) a call whose browser-set headers say it came from elsewhere."""
    fetch_site = headers.getlist("sec-fetch-site")
    if fetch_site and fetch_site != ["same-origin"]:
        _refuse(action, "sec-fetch-site", fetch_site[0])
    origins = headers.getlist("origin")
    if origins:
        if len(origins) > 1:
            _refuse(action, "origin", "repeated")
        if parse_origin(origins[0]) not in allowed:
            _refuse(action, "origin", "null" if origins[0] == "null" else "not allowed")
        return
    referers = headers.getlist("referer")
    if referers and (len(referers) > 1 or _referer_origin(referers[0]) not in allowed):
        _refuse(action, "referer", "not allowed")


def _referer_origin(referer: str) -> str | None:
    try:
        parts = urlsplit(referer)
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return parse_origin(f"{parts.scheme}://{parts.netloc}")


def _refuse(action: str, header: str, reason: str) -> NoReturn:
    # The reason is bastion's own word for it, never the header's value.
    events.refused(
        "refused %s: %s %s",
        action,
        header,
        reason,
        event="origin_refused",
        action=action,
        header=header,
        stage="origin",
        code=CrossOrigin.code,
    )
    raise CrossOrigin()
