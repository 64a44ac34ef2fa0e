"""A request's headers, indexed once.

Every call reads a dozen headers (content type and length, ``Origin``, ``Referer``,
``Sec-Fetch-Site``, the token, ``HX-Request``, ``Accept``, cookies …), some several times.
Starlette's ``Headers`` scans and decodes the whole list on each lookup; this one builds
a dict of the decoded values once and answers from it, with the same results: ASGI
servers send header names in lower case, and a name sent twice keeps both values, in
order. The session middleware makes one and the pipeline reuses it (``of``) only if the
request's headers are still exactly the ones it indexed: a middleware between them may
replace the list or change it in place, and then the pipeline indexes it afresh.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

__all__ = ["RequestHeaders", "path_below"]

_SCOPE_KEY = "bastion.headers"


class RequestHeaders(Headers):
    """Starlette's ``Headers``, answering ``get``, ``getlist``, ``[]`` and ``in`` from an
    index built when it is made."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        index: dict[str, list[str]] = {}
        for key, value in self._list:
            index.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
        self._index = index
        self._snapshot = tuple(self._list)

    @classmethod
    def of(cls, scope: Scope) -> RequestHeaders:
        """The index made earlier in this request (``keep``), if the scope still holds the
        very headers it indexed, unchanged; else a new one."""
        made: RequestHeaders | None = scope.get(_SCOPE_KEY)
        if (
            made is not None
            and scope.get("headers") is made._list
            and tuple(made._list) == made._snapshot
        ):
            return made
        return cls(scope)

    def keep(self, scope: Scope) -> None:
        """Leave this index in the scope for ``of`` later in the same request."""
        scope[_SCOPE_KEY] = self

    def getlist(self, key: str) -> list[str]:
        return list(self._index.get(key.lower(), ()))

    def __getitem__(self, key: str) -> str:
        values = self._index.get(key.lower())
        if not values:
            raise KeyError(key)
        return values[0]

    def get(self, key: str, default: Any = None) -> Any:
        values = self._index.get(key.lower())
        return values[0] if values else default

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._index


def path_below(scope: Scope, prefix: str) -> str:
    """The path below bastion's prefix, whether mounted with Starlette or served
    directly; ``""`` for a path outside the prefix (answered 404)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if root.endswith(prefix):  # mounted: the mount point consumed the prefix
        return path
    if path.startswith(prefix + "/"):  # served on its own
        return path[len(prefix) :]
    return ""
