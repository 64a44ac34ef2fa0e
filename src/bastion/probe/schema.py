"""The actions a ``bastion schema`` document lists (OpenAPI 3.1), as the probe calls them.

A crawl finds only the forms its pages render; the schema names every action. Each one the
crawl did not find is still probed, as a script calls it (``bastion.js``): JSON, the
session's token in ``X-CSRF-Token``. Its control is built from its input schema, never
with real values: ``{}`` when a property is required (422: past the guards), else one
unknown property when the schema forbids others (422 too), else none, and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .model import ProbeError

__all__ = ["UNKNOWN_PROPERTY", "SchemaAction", "actions_from_schema"]

UNKNOWN_PROPERTY: Final = "probe_unknown_property"
"""The property no input model declares: the control of a closed model without a required
property."""


@dataclass(frozen=True, slots=True)
class SchemaAction:
    name: str
    """Its ``operationId``: the action's registered name."""
    path: str
    required: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    """Its string properties (``_bound`` excluded): where 100,000 characters go."""
    closed: bool = False
    """``additionalProperties: false``: an unknown property is a 422."""

    def control(self) -> tuple[list[tuple[str, str]] | None, str]:
        """The harmless call's values (``[]`` is ``{}``), or ``None`` and why not."""
        if self.required:
            return [], ""
        if self.closed:
            return [(UNKNOWN_PROPERTY, "1")], ""
        return None, "no required property and other properties allowed: no harmless call"


def actions_from_schema(document: object) -> list[SchemaAction]:
    """Every ``POST`` operation of the document, by path; ``ProbeError`` if it is none."""
    if not isinstance(document, Mapping) or not isinstance(document.get("paths"), Mapping):
        raise ProbeError("the schema is no OpenAPI document (no 'paths'): see `bastion schema`")
    components = document.get("components")
    schemas = components.get("schemas", {}) if isinstance(components, Mapping) else {}
    found = []
    for path, item in document["paths"].items():
        operation = item.get("post") if isinstance(item, Mapping) else None
        if not isinstance(operation, Mapping) or not isinstance(path, str):
            continue
        name = str(operation.get("operationId") or path)
        body = operation.get("requestBody")
        content = body.get("content", {}) if isinstance(body, Mapping) else {}
        media = content.get("application/json") if isinstance(content, Mapping) else None
        schema = _resolve(media.get("schema") if isinstance(media, Mapping) else None, schemas)
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        text = tuple(
            str(key)
            for key, value in properties.items()
            if key != "_bound" and isinstance(value, Mapping) and value.get("type") == "string"
        )
        found.append(
            SchemaAction(
                name=name,
                path=path,
                required=tuple(map(str, required)) if isinstance(required, list) else (),
                text=text,
                closed=schema.get("additionalProperties") is False,
            )
        )
    return found


def _resolve(schema: object, schemas: object, depth: int = 0) -> Mapping[str, object]:
    """A ``$ref`` to ``#/components/schemas/X`` followed (a few levels deep at most)."""
    if not isinstance(schema, Mapping):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and depth < 8 and isinstance(schemas, Mapping):
        target = schemas.get(ref.removeprefix("#/components/schemas/"))
        return _resolve(target, schemas, depth + 1)
    return schema
