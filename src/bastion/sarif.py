"""Findings as a SARIF 2.1.0 log, the format code-scanning services read.

``log(tool, version, rules, results)`` answers one log (a plain dict, ready for
``json.dumps``) with one run: the tool's driver with its rules, then the results, each
pointing at its rule by id and by index. ``bastion audit --format sarif`` and
``bastion probe --format sarif`` both write through it; tests/test_sarif.py holds the
output to the official schema (OASIS, errata 01).

A leaf: it knows nothing of actions or requests, only rules and results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SCHEMA_URI", "Level", "Result", "Rule", "log"]

SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

Level = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a tool checks: one entry of the driver's ``rules``."""

    id: str
    """A stable code (``"B001"``): what waivers and code scanning key on."""
    name: str
    """A readable name (``"unbounded-field"``)."""
    short: str
    """One line: why a finding of this rule matters."""
    level: Level = "error"
    """The level of a result that does not set its own."""
    help_uri: str | None = None
    """Where the rule is documented, if anywhere."""


@dataclass(frozen=True, slots=True)
class Result:
    """One finding of a rule."""

    rule_id: str
    """The id of one of the rules handed to ``log``."""
    message: str
    level: Level | None = None
    """``None``: the rule's level."""
    uri: str | None = None
    """A source file (a relative posix path) or a URL the finding is about."""
    line: int | None = None
    """The line in ``uri`` (1-based); ignored without ``uri``."""
    logical: str | None = None
    """A name in the program (an action's): a logical location."""
    waived: str | None = None
    """The reason it was waived: the result is kept, with an external suppression."""
    properties: Mapping[str, object] = field(default_factory=dict)
    """Anything else, as the result's property bag (JSON values)."""


def _rule(rule: Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.short},
        "defaultConfiguration": {"level": rule.level},
    }
    if rule.help_uri is not None:
        entry["helpUri"] = rule.help_uri
    return entry


def _result(result: Result, index: int, rule: Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ruleId": result.rule_id,
        "ruleIndex": index,
        "level": result.level or rule.level,
        "message": {"text": result.message},
    }
    location: dict[str, Any] = {}
    if result.uri is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": result.uri}}
        if result.line is not None and result.line >= 1:
            physical["region"] = {"startLine": result.line}
        location["physicalLocation"] = physical
    if result.logical is not None:
        location["logicalLocations"] = [{"name": result.logical}]
    if location:
        entry["locations"] = [location]
    if result.waived is not None:
        entry["suppressions"] = [{"kind": "external", "justification": result.waived}]
    if result.properties:
        entry["properties"] = dict(result.properties)
    return entry


def log(
    tool: str,
    version: str,
    rules: Sequence[Rule],
    results: Sequence[Result],
    *,
    information_uri: str | None = None,
) -> dict[str, Any]:
    """A SARIF 2.1.0 log of one run of ``tool``.

    Raises ``ValueError`` for a result whose rule is not among ``rules``, or for two
    rules with one id: either would make a log that points nowhere.
    """
    index: dict[str, int] = {}
    for position, rule in enumerate(rules):
        if rule.id in index:
            raise ValueError(f"two rules have the id {rule.id!r}")
        index[rule.id] = position
    entries = []
    for result in results:
        if result.rule_id not in index:
            raise ValueError(f"result of unknown rule {result.rule_id!r}")
        position = index[result.rule_id]
        entries.append(_result(result, position, rules[position]))
    driver: dict[str, Any] = {"name": tool, "version": version}
    if information_uri is not None:
        driver["informationUri"] = information_uri
    driver["rules"] = [_rule(rule) for rule in rules]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": entries}],
    }
