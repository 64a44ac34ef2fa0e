"""The actions in a FastAPI app's own OpenAPI document: ``bastion.include_in_openapi(app)``.

FastAPI builds its document once, in ``app.openapi()``, and keeps it in
``app.openapi_schema``; ``/openapi.json``, ``/docs`` and ``/redoc`` all read it from
there. ``include`` replaces that method with one that merges bastion's manifest into
FastAPI's document the first time it is asked for, and keeps the merged one.

Nothing here imports FastAPI: the app is only asked for its ``openapi`` method and its
``openapi_schema`` attribute, so bastion's runtime needs no FastAPI installed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from bastion.errors import ConfigurationError

__all__ = ["include", "merge"]

_SCHEMAS = "#/components/schemas/"


def include(app: Any, build: Callable[[], dict[str, Any]]) -> None:
    """Make ``app.openapi()`` return FastAPI's document with ``build()``'s merged in."""
    original = getattr(app, "openapi", None)
    if not callable(original) or not hasattr(app, "openapi_schema"):
        raise ConfigurationError(
            f"include_in_openapi: {app!r} is not a FastAPI app (it has no openapi())"
        )
    merged: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal merged
        if merged is None:
            # FastAPI's own, built (and cached by FastAPI) on first use, then ours on top.
            merged = merge(original(), build())
            app.openapi_schema = merged
        return merged

    app.openapi = openapi


def merge(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """``base`` (FastAPI's document) with the paths, component schemas, security schemes
    and tags of ``ours`` added. A component of ours named as one of base's, but not the
    same schema, is renamed ``bastion_<name>`` (with its references); the same schema
    under the same name is kept once. A path in both is a ``ConfigurationError``."""
    result = copy.deepcopy(base)
    ours = copy.deepcopy(ours)
    components = result.setdefault("components", {})
    theirs = components.setdefault("schemas", {})
    renamed: dict[str, str] = {}
    for name, schema in ours.get("components", {}).get("schemas", {}).items():
        if name in theirs and theirs[name] != schema:
            renamed[name] = _free(f"bastion_{name}", theirs)
    ours = _rename_refs(ours, renamed)
    for name, schema in ours.get("components", {}).get("schemas", {}).items():
        theirs[renamed.get(name, name)] = schema

    schemes = components.setdefault("securitySchemes", {})
    moved: dict[str, str] = {}
    for name, scheme in ours.get("components", {}).get("securitySchemes", {}).items():
        if name in schemes and schemes[name] != scheme:
            moved[name] = _free(f"bastion_{name}", schemes)
        schemes[moved.get(name, name)] = scheme

    paths = result.setdefault("paths", {})
    for path, item in ours.get("paths", {}).items():
        if path in paths:
            raise ConfigurationError(f"include_in_openapi: the app already documents {path}")
        for operation in item.values():
            operation["security"] = [
                {moved.get(name, name): scopes for name, scopes in requirement.items()}
                for requirement in operation.get("security", [])
            ]
        paths[path] = item

    tags = result.setdefault("tags", [])
    known = {tag.get("name") for tag in tags}
    tags.extend(tag for tag in ours.get("tags", []) if tag.get("name") not in known)
    if not tags:
        del result["tags"]
    return result


def _free(name: str, taken: dict[str, Any]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _rename_refs(node: Any, renamed: dict[str, str]) -> Any:
    """``node`` with every ``$ref`` to a renamed component pointed at its new name, and
    the components themselves under their new keys."""
    if not renamed:
        return node
    if isinstance(node, list):
        return [_rename_refs(item, renamed) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(_SCHEMAS):
            name = value.removeprefix(_SCHEMAS)
            out[key] = _SCHEMAS + renamed.get(name, name)
        else:
            out[key] = _rename_refs(value, renamed)
    return out
