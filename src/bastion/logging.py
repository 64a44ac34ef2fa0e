"""Access-log lines that name the action: ``ActionNameFilter`` for ``uvicorn.access``.

An action's URL is ``{prefix}/{opaque ID}``: uvicorn's access line says
``"POST /_actions/gsKheSY_… HTTP/1.1" 200``, which nobody reading the log can place.
The filter looks the ID up in the app's registry and adds the action's *name* after the
path::

    127.0.0.1:50312 - "POST /_actions/gsKheSY_… [action create_post] HTTP/1.1" 200

and sets ``record.action`` for a structured formatter. The record keeps uvicorn's five
arguments (its ``AccessFormatter`` unpacks exactly five), the line what it had; an ID
that names no action is left as it came (its text is the client's, not a name). ::

    logging.getLogger("uvicorn.access").addFilter(ActionNameFilter(bastion))
"""

from __future__ import annotations

import logging
from typing import Protocol

from bastion.actions.registry import Registry
from bastion.config import Config

__all__ = ["ActionNameFilter"]


class _App(Protocol):
    """What the filter reads of a ``Bastion``: its registry and its prefix."""

    @property
    def registry(self) -> Registry: ...

    @property
    def config(self) -> Config: ...


class ActionNameFilter(logging.Filter):
    """Add the action's name to each ``uvicorn.access`` record of an action call."""

    def __init__(self, bastion: _App) -> None:
        super().__init__()
        self._registry = bastion.registry
        self._prefix = bastion.config.prefix

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access args: (client, method, path with query, HTTP version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            name = self._name(args[2])
            if name is not None:
                record.action = name
                record.args = (*args[:2], f"{args[2]} [action {name}]", *args[3:])
        return True  # a filter that only adds: every line is still logged

    def _name(self, path_and_query: str) -> str | None:
        path = path_and_query.partition("?")[0]
        # Under a mount or a root_path, the prefix is the last part before the ID.
        head, _, action_id = path.rpartition("/")
        if not action_id or not head.endswith(self._prefix):
            return None
        spec = self._registry.by_id(action_id)
        return spec.name if spec is not None else None
