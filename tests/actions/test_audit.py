"""``bastion audit MODULE:ATTR``: the inventory of an app's actions and its violations.

The CLI runs as CI runs it, in a subprocess: on the quickstart (clean) and on
tests/fixtures/bad_app.py (every violation). ``inventory()`` is also tested in-process
on small apps, one kind of field at a time.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NewType

import pytest
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    HttpUrl,
    PlainValidator,
    SecretStr,
    StringConstraints,
    ValidationError,
    constr,
    field_validator,
    with_config,
)
from pydantic_core import core_schema
from typing_extensions import TypedDict

from bastion import (
    Bastion,
    Bound,
    ConfigurationError,
    MemoryStore,
    Upload,
    authenticated,
    public,
    require,
)
from bastion.actions.audit import ActionReport, FieldReport, inventory
from bastion.actions.registry import action_ids
from bastion.app import AUDITING, AuditRun

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BAD_APP = ROOT / "tests" / "fixtures" / "bad_app.py"
BAD = "tests.fixtures.bad_app:bastion"
SCRIPT = Path(sys.executable).with_name("bastion")
QUICKSTART_KEY = "audit-quickstart-key-0123456789-abcdefghijklmnopqrstuvwxyz"
BAD_KEY = "bad-app-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
"""The key tests/fixtures/bad_app.py is built with."""

FORBID = ConfigDict(extra="forbid")
HEADER = re.compile(r"(?P<name>\S+)  \[(?P<id>[^\]]+)\]")
SUMMARY = re.compile(
    r"(?P<actions>\d+) actions, (?P<violations>\d+) violations, (?P<warnings>\d+) warnings"
)
ACCEPTS = "accepts    application/json, application/x-www-form-urlencoded"
LIMITS = "limits     body 1048576 B, timeout 30 s"
REPORT_KEYS = {
    "name",
    "id",
    "policy",
    "rate",
    "content_types",
    "timeout",
    "max_body_bytes",
    "max_file_bytes",
    "bound_arguments",
    "idempotent",
    "tokens",
    "step_up",
    "fields",
    "check",
    "max_files",
    "fragment",
    "violations",
    "warnings",
    "findings",
}
FORM_TYPES = ["application/json", "application/x-www-form-urlencoded"]
SHARED = (
    "WARNING    B012 shared-rate-limit: public action without a rate limit of its own (60/minute)"
)
"""The quickstart's greet, boom and count run on the app's default_rate: a warning."""


# --- running the CLI ---------------------------------------------------------------------


def environment(**values: str) -> dict[str, str]:
    """The test process's environment without any bastion or quickstart setting, plus
    ``values``: what the audited app sees is only what the test says."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BASTION_") and k != "QUICKSTART_PASSWORD"
    }
    env.update(values)
    return env


def audit(
    *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "audit", *args],
        cwd=cwd,
        env=dict(env) if env is not None else environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def quickstart_env(data_dir: Path) -> dict[str, str]:
    return environment(
        QUICKSTART_PASSWORD="audit-test-password",
        BASTION_SECRET_KEY=QUICKSTART_KEY,
        BASTION_ALLOWED_ORIGINS="http://127.0.0.1",
        BASTION_DATA_DIR=str(data_dir),
    )


@dataclasses.dataclass
class Block:
    id: str
    lines: list[str]

    @property
    def violations(self) -> list[str]:
        """The messages of the VIOLATION lines, without their rule (``B001 name: ``)."""
        return [unruled(line) for line in self.lines if "VIOLATION" in line]


RULED = re.compile(r"(?:VIOLATION|WARNING)  +B\d{3} [a-z-]+: ")


def unruled(line: str) -> str:
    """A finding's line without its label and rule: the bare message."""
    return RULED.sub("", line.strip(), count=1)


def parse(output: str) -> tuple[dict[str, Block], tuple[int, int]]:
    """The text report as ``{action: Block}`` (its lines, unindented) and the summary."""
    blocks: dict[str, Block] = {}
    current: Block | None = None
    summary: tuple[int, int] | None = None
    for line in output.splitlines():
        if not line:
            current = None
        elif line.startswith("  "):
            assert current is not None, line
            current.lines.append(line[2:])
        elif found := HEADER.fullmatch(line):
            assert found["name"] not in blocks, line
            current = blocks[found["name"]] = Block(found["id"], [])
        else:
            counted = SUMMARY.fullmatch(line)
            assert counted is not None, line
            assert summary is None, "two summary lines"
            summary = (int(counted["actions"]), int(counted["violations"]))
    assert summary is not None, "no summary line"
    assert output.endswith(
        f"{summary[0]} actions, {summary[1]} violations, {counted['warnings']} warnings\n"
    )
    return blocks, summary


def expected_ids(key: str, names: Sequence[str]) -> dict[str, str]:
    """The IDs an app with ``key`` gives ``names``, computed in this process."""
    keys = Bastion(secret_key=key, store=MemoryStore()).keys.all("action-id")
    return {name: action_ids(name, keys)[0] for name in names}


# --- the quickstart: clean ---------------------------------------------------------------

QUICKSTART_ACTIONS: dict[str, list[str]] = {
    "greet": [
        "policy     public",
        "rate       60/minute",
        ACCEPTS,
        LIMITS,
        "bound      none",
        "field      name: str (min_length=1, max_length=50)",
        SHARED,
    ],
    "boom": [
        "policy     public",
        "rate       60/minute",
        ACCEPTS,
        LIMITS,
        "bound      none",
        SHARED,
    ],
    "count": [
        "policy     public",
        "rate       60/minute",
        ACCEPTS,
        LIMITS,
        "bound      none",
        SHARED,
    ],
    "login": [
        "policy     public",
        "rate       20/minute",
        ACCEPTS,
        LIMITS,
        "bound      none",
        "field      email: str (min_length=3, max_length=254)",
        "field      password: SecretStr (min_length=1, max_length=1024)",
    ],
    "logout": ["policy     authenticated", "rate       none", ACCEPTS, LIMITS, "bound      none"],
    "whoami": ["policy     authenticated", "rate       none", ACCEPTS, LIMITS, "bound      none"],
    "publish": [
        "policy     require(roles=['admin', 'author'])",
        "rate       none",
        ACCEPTS,
        LIMITS,
        "bound      none",
        "field      title: str (min_length=1, max_length=100)",
    ],
    "stats": [
        "policy     require('stats:read')",
        "rate       none",
        ACCEPTS,
        LIMITS,
        "bound      none",
    ],
}
"""Every line of each action's block, in registration order."""


@pytest.fixture(scope="module")
def quickstart_text(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    data = tmp_path_factory.mktemp("audit-quickstart-text")
    return audit("quickstart:bastion", cwd=EXAMPLES, env=quickstart_env(data))


@pytest.fixture(scope="module")
def quickstart_json(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    data = tmp_path_factory.mktemp("audit-quickstart-json")
    return audit("quickstart:bastion", "--json", cwd=EXAMPLES, env=quickstart_env(data))


def test_quickstart_passes(quickstart_text: subprocess.CompletedProcess[str]) -> None:
    """The quickstart audits clean: exit 0, nothing on stderr, "8 actions, 0 violations,
    3 warnings" (greet, boom and count share the default rate: B012)."""
    assert (quickstart_text.returncode, quickstart_text.stderr) == (0, "")
    assert quickstart_text.stdout.endswith("\n8 actions, 0 violations, 3 warnings\n")
    assert "VIOLATION" not in quickstart_text.stdout


def test_quickstart_lists_every_action_in_full(
    quickstart_text: subprocess.CompletedProcess[str],
) -> None:
    """All 8 actions, in registration order, each with its policy, rate, content types,
    limits, bound arguments and every input field with its bounds — and nothing else."""
    blocks, summary = parse(quickstart_text.stdout)
    assert summary == (8, 0)
    assert list(blocks) == list(QUICKSTART_ACTIONS)
    for name, lines in QUICKSTART_ACTIONS.items():
        assert blocks[name].lines == lines, name


def test_quickstart_ids_are_the_served_ids(
    quickstart_text: subprocess.CompletedProcess[str],
) -> None:
    """The IDs printed are the ones an app with the same key computes in this process."""
    blocks, _ = parse(quickstart_text.stdout)
    ids = expected_ids(QUICKSTART_KEY, list(QUICKSTART_ACTIONS))
    assert {name: block.id for name, block in blocks.items()} == ids
    assert len(set(ids.values())) == len(ids)


def test_quickstart_json_has_the_same_data(
    quickstart_text: subprocess.CompletedProcess[str],
    quickstart_json: subprocess.CompletedProcess[str],
) -> None:
    """--json: exit 0 and one object per action with the same names, IDs, policies,
    rates, content types, limits and fields (with their bounds) as the text."""
    assert (quickstart_json.returncode, quickstart_json.stderr) == (0, "")
    reports = json.loads(quickstart_json.stdout)["actions"]
    assert [r["name"] for r in reports] == list(QUICKSTART_ACTIONS)
    blocks, _ = parse(quickstart_text.stdout)
    ids = expected_ids(QUICKSTART_KEY, list(QUICKSTART_ACTIONS))
    by_name = {r["name"]: r for r in reports}
    for r in reports:
        assert set(r) == REPORT_KEYS
        assert r["id"] == ids[r["name"]] == blocks[r["name"]].id
        assert r["content_types"] == FORM_TYPES
        assert (r["timeout"], r["max_body_bytes"], r["max_file_bytes"]) == (30.0, 1048576, None)
        assert (r["bound_arguments"], r["violations"]) == ([], [])
    assert {n: r["policy"] for n, r in by_name.items()} == {
        "greet": "public",
        "boom": "public",
        "count": "public",
        "login": "public",
        "logout": "authenticated",
        "whoami": "authenticated",
        "publish": "require(roles=['admin', 'author'])",
        "stats": "require('stats:read')",
    }
    assert {n: r["rate"] for n, r in by_name.items()} == {
        "greet": "60/minute",
        "boom": "60/minute",
        "count": "60/minute",
        "login": "20/minute",
        "logout": None,
        "whoami": None,
        "publish": None,
        "stats": None,
    }
    assert {n: r["fields"] for n, r in by_name.items()} == {
        "greet": [{"path": "name", "type": "str", "bounds": {"min_length": 1, "max_length": 50}}],
        "boom": [],
        "count": [],
        "login": [
            {"path": "email", "type": "str", "bounds": {"min_length": 3, "max_length": 254}},
            {
                "path": "password",
                "type": "SecretStr",
                "bounds": {"min_length": 1, "max_length": 1024},
            },
        ],
        "logout": [],
        "whoami": [],
        "publish": [
            {"path": "title", "type": "str", "bounds": {"min_length": 1, "max_length": 100}}
        ],
        "stats": [],
    }


# --- the bad app: every violation ----------------------------------------------------------

BAD_VIOLATIONS: dict[str, list[str]] = {
    "good": [],
    "unlimited": ["public action without a rate limit"],
    "comment": ["field 'text' (str) has no maximum length"],
    "blob": ["field 'payload' (bytes) has no maximum length"],
    "labels": [
        "field 'labels' (list[str]) has no maximum length",
        "field 'labels[]' (str) has no maximum length",
    ],
    "names": ["field 'names[]' (str) has no maximum length"],
    "customer": ["field 'address.street' (str) has no maximum length"],
    "avatar": ["accepts uploads without a declared max_file_bytes"],
    "loose": [
        "refused at registration: action 'loose': input type Loose must forbid unknown "
        'fields: add model_config = ConfigDict(extra="forbid")'
    ],
    "untyped": [
        "refused at registration: action 'untyped' returns untyped data (Any): declare a "
        "model, so only its fields leave"
    ],
    "bare": [
        "refused at registration: action 'bare' returns a bare dict: declare a model or a "
        "typed container"
    ],
    "unannotated": [
        "refused at registration: action 'unannotated' has no return annotation: declare "
        "the model it returns, or -> None"
    ],
}
"""Each action of tests/fixtures/bad_app.py, in order, and exactly what is wrong with it."""
REGISTERED = ["good", "unlimited", "comment", "blob", "labels", "names", "customer", "avatar"]
REFUSED = ["loose", "untyped", "bare", "unannotated"]
BAD_COUNT = sum(len(v) for v in BAD_VIOLATIONS.values())


@pytest.fixture(scope="module")
def bad_text() -> subprocess.CompletedProcess[str]:
    return audit(BAD)


@pytest.fixture(scope="module")
def bad_json() -> subprocess.CompletedProcess[str]:
    return audit(BAD, "--json")


def test_bad_app_fails(bad_text: subprocess.CompletedProcess[str]) -> None:
    """The bad app exits 1, reports on stdout only, and counts 12 actions, 12 violations."""
    assert (bad_text.returncode, bad_text.stderr) == (1, "")
    _, summary = parse(bad_text.stdout)
    assert summary == (len(BAD_VIOLATIONS), BAD_COUNT) == (12, 12)


def test_bad_app_names_every_violation_and_no_other(
    bad_text: subprocess.CompletedProcess[str],
) -> None:
    """One VIOLATION line per violation, under the action that commits it: each expected
    line is present and no unexpected one appears."""
    blocks, _ = parse(bad_text.stdout)
    assert list(blocks) == list(BAD_VIOLATIONS)
    assert {name: block.violations for name, block in blocks.items()} == BAD_VIOLATIONS
    lines = [unruled(line) for line in bad_text.stdout.splitlines() if "VIOLATION" in line]
    expected = [v for vs in BAD_VIOLATIONS.values() for v in vs]
    assert sorted(lines) == sorted(expected)


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("'text' (str)", "str field"),
        ("'payload' (bytes)", "bytes field"),
        ("'labels' (list[str])", "list without max_length"),
        ("'names[]' (str)", "bounded list of unbounded str"),
        ("'address.street' (str)", "unbounded str in a nested model"),
    ],
)
def test_bad_app_unbounded_field_is_named(
    bad_text: subprocess.CompletedProcess[str], field: str, kind: str
) -> None:
    """Each kind of unbounded field is named by its path and type."""
    line = f"  VIOLATION  B001 unbounded-field: field {field} has no maximum length\n"
    assert line in bad_text.stdout, kind


def test_bad_app_correct_action_is_listed_clean(
    bad_text: subprocess.CompletedProcess[str],
) -> None:
    """The one correct action is listed in full, with its bounds, and no violation."""
    blocks, _ = parse(bad_text.stdout)
    assert blocks["good"].lines == [
        "policy     public",
        "rate       5/minute",
        ACCEPTS,
        LIMITS,
        "bound      none",
        "field      title: str (min_length=1, max_length=80)",
        "field      tags: list[str] (max_length=5)",
        "field      tags[]: str (max_length=20)",
        "field      stars: int (ge=0, le=5)",
    ]


def test_bad_app_upload_action_lists_multipart_and_the_default_file_cap(
    bad_text: subprocess.CompletedProcess[str],
) -> None:
    """An action with an Upload accepts multipart and shows the file cap it runs with:
    the body cap (1 MiB), not the 10 MiB file cap no body under it could carry."""
    blocks, _ = parse(bad_text.stdout)
    assert blocks["avatar"].lines[:6] == [
        "policy     authenticated",
        "rate       none",
        "accepts    application/json, application/x-www-form-urlencoded, multipart/form-data",
        LIMITS,
        "           files 10 at most, 1048576 B each",
        "bound      none",
    ]
    assert "field      image: upload (no bounds)" in blocks["avatar"].lines


def test_bad_app_refused_actions_are_listed_unregistered(
    bad_text: subprocess.CompletedProcess[str],
) -> None:
    """A refused registration has no ID and no details: only its violation."""
    blocks, _ = parse(bad_text.stdout)
    for name in REFUSED:
        assert blocks[name].id == "not registered"
        assert [unruled(line) for line in blocks[name].lines] == BAD_VIOLATIONS[name]
        assert all(line.startswith("VIOLATION  B004 refused: ") for line in blocks[name].lines)
    ids = expected_ids(BAD_KEY, REGISTERED)
    assert {name: blocks[name].id for name in REGISTERED} == ids


def test_bad_app_json_has_the_same_data(
    bad_text: subprocess.CompletedProcess[str], bad_json: subprocess.CompletedProcess[str]
) -> None:
    """--json exits 1 too, with the same actions, IDs and violation lists as the text."""
    assert (bad_json.returncode, bad_json.stderr) == (1, "")
    reports = json.loads(bad_json.stdout)["actions"]
    assert [r["name"] for r in reports] == list(BAD_VIOLATIONS)
    assert {r["name"]: r["violations"] for r in reports} == BAD_VIOLATIONS
    blocks, _ = parse(bad_text.stdout)
    ids = expected_ids(BAD_KEY, REGISTERED)
    for r in reports:
        assert set(r) == REPORT_KEYS
        if r["name"] in REFUSED:
            assert (r["id"], r["policy"], r["rate"], r["fields"]) == (None, "?", None, [])
        else:
            assert r["id"] == ids[r["name"]] == blocks[r["name"]].id


def test_bad_app_json_details(bad_json: subprocess.CompletedProcess[str]) -> None:
    """--json gives policies, rates, content types, file caps and fields with bounds."""
    by_name = {r["name"]: r for r in json.loads(bad_json.stdout)["actions"]}
    assert {n: by_name[n]["policy"] for n in REGISTERED} == {
        "good": "public",
        "unlimited": "public",
        "comment": "authenticated",
        "blob": "require('blob:write')",
        "labels": "authenticated",
        "names": "authenticated",
        "customer": "authenticated",
        "avatar": "authenticated",
    }
    assert by_name["good"]["rate"] == "5/minute"
    assert by_name["unlimited"]["rate"] is None
    assert by_name["good"]["fields"] == [
        {"path": "title", "type": "str", "bounds": {"min_length": 1, "max_length": 80}},
        {"path": "tags", "type": "list[str]", "bounds": {"max_length": 5}},
        {"path": "tags[]", "type": "str", "bounds": {"max_length": 20}},
        {"path": "stars", "type": "int", "bounds": {"ge": 0, "le": 5}},
    ]
    assert by_name["customer"]["fields"] == [
        {"path": "name", "type": "str", "bounds": {"max_length": 50}},
        {"path": "address.street", "type": "str", "bounds": {"unbounded": True}},
        {"path": "address.city", "type": "str", "bounds": {"max_length": 50}},
    ]
    avatar = by_name["avatar"]
    assert avatar["content_types"] == [*FORM_TYPES, "multipart/form-data"]
    assert avatar["max_file_bytes"] == 1024 * 1024  # what the 1 MiB body cap lets through
    assert avatar["fields"] == [{"path": "image", "type": "upload", "bounds": {}}]
    assert all(by_name[n]["content_types"] == FORM_TYPES for n in REGISTERED if n != "avatar")


def test_console_script_prints_the_same_report(bad_text: subprocess.CompletedProcess[str]) -> None:
    """The installed `bastion` script (what `make audit` runs) reports the same as
    `python -m bastion.cli`."""
    done = subprocess.run(
        [str(SCRIPT), "audit", BAD],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (1, bad_text.stdout, "")


def test_bad_app_import_stops_at_the_first_refusal() -> None:
    """Imported normally (no audit), the bad app raises ConfigurationError at its first
    refused registration: collecting every refusal is the audit's doing."""
    with pytest.raises(ConfigurationError, match=r"^action 'loose': input type Loose must"):
        runpy.run_path(str(BAD_APP))


class LooseInput(BaseModel):
    """Allows unknown fields: refused as an action's input."""

    x: int


def test_auditing_collects_refusals_instead_of_raising(bastion: Bastion) -> None:
    """With AUDITING set, a refused registration is appended (name, reason) and the
    function is returned unregistered; once reset, the same mistake raises again."""

    async def loose(data: LooseInput) -> None: ...

    auditing = AuditRun()
    token = AUDITING.set(auditing)
    try:
        assert bastion.action(policy=public)(loose) is loose
    finally:
        AUDITING.reset(token)
    assert auditing.refused == [
        (
            "loose",
            "action 'loose': input type LooseInput must forbid unknown fields: "
            'add model_config = ConfigDict(extra="forbid")',
        )
    ]
    assert len(bastion.registry) == 0
    with pytest.raises(ConfigurationError, match="must forbid unknown fields"):
        bastion.action(policy=public)(loose)


# --- usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["tests.fixtures.bad_app", ":bastion", "tests.fixtures:"])
def test_target_that_is_not_module_attr_exits_2(target: str) -> None:
    """A target without both MODULE and ATTR is a usage error: exit 2, nothing on stdout."""
    done = audit(target)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"bastion audit: {target!r} is not MODULE:ATTR\n"


@pytest.mark.parametrize("attribute", ["SECRET", "FORBID", "no_such_attribute"])
def test_attribute_that_is_not_a_bastion_exits_2(attribute: str) -> None:
    """An attribute that is not a Bastion (or does not exist) exits 2, even with --json."""
    target = f"tests.fixtures.bad_app:{attribute}"
    for extra in ((), ("--json",)):
        done = audit(target, *extra)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == f"bastion audit: {target} is not a Bastion\n"


def test_missing_module_exits_2() -> None:
    """A target module that does not exist exits 2 with one line, not a traceback."""
    done = audit("no_such_module_for_audit:bastion")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "bastion audit: no module named 'no_such_module_for_audit'\n"


def write_app(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


def test_app_whose_own_import_fails_shows_the_traceback(tmp_path: Path) -> None:
    """A module that exists but imports something missing is the app's error, not a
    usage error: the traceback names it and the exit is 1."""
    write_app(tmp_path, "broken_app", "import no_such_dependency_for_audit\n")
    done = audit("broken_app:bastion", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert "ModuleNotFoundError: No module named 'no_such_dependency_for_audit'" in done.stderr


def test_app_that_refuses_to_start_exits_1(tmp_path: Path) -> None:
    """A Bastion that refuses its configuration (a weak key) fails the audit with the reason."""
    write_app(
        tmp_path, "weak_app", "from bastion import Bastion\nbastion = Bastion(secret_key='x')\n"
    )
    done = audit("weak_app:bastion", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("bastion audit: weak_app refuses to start: secret_key is")


def test_json_with_non_json_bounds(tmp_path: Path) -> None:
    """--json stays valid when a bound is a Decimal or a compiled pattern (as strings)."""
    write_app(
        tmp_path,
        "decimal_app",
        f"""
        import re
        from decimal import Decimal
        from pydantic import BaseModel, ConfigDict, Field
        from bastion import Bastion, MemoryStore, authenticated

        bastion = Bastion(
            secret_key={BAD_KEY!r}, allowed_origins=["https://a.example"], store=MemoryStore()
        )

        class Price(BaseModel):
            model_config = ConfigDict(extra="forbid")
            amount: Decimal = Field(ge=Decimal("0.01"), le=Decimal("1000"), max_digits=7)
            code: str = Field(max_length=8, pattern=re.compile("^[A-Z]+$"))

        @bastion.action(policy=authenticated)
        async def price(data: Price) -> None: ...
        """,
    )
    done = audit("decimal_app:bastion", "--json", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    [report] = json.loads(done.stdout)["actions"]
    assert report["fields"] == [
        {
            "path": "amount",
            "type": "Decimal",
            "bounds": {"ge": "0.01", "le": "1000", "max_digits": 7},
        },
        {"path": "code", "type": "str", "bounds": {"max_length": 8, "pattern": "^[A-Z]+$"}},
    ]
    text = audit("decimal_app:bastion", cwd=tmp_path)
    assert "field      code: str (max_length=8, pattern=^[A-Z]+$)\n" in text.stdout


# --- inventory(), in process ---------------------------------------------------------------


def report_of(bastion: Bastion, model: type[BaseModel], **options: Any) -> ActionReport:
    """The report of one action taking ``model`` (authenticated unless ``policy=``)."""

    async def handler(data: Any) -> None: ...

    handler.__annotations__ = {"data": model, "return": None}
    options.setdefault("policy", authenticated)
    bastion.action(name="handler", **options)(handler)
    [report] = inventory(bastion)
    return report


def fields_of(report: ActionReport) -> dict[str, dict[str, Any]]:
    return {f.path: f.bounds for f in report.fields}


def test_annotated_field_max_length_is_a_bound(bastion: Bastion) -> None:
    """Annotated[str, Field(max_length=..)] counts as bounded: no violation."""

    class M(BaseModel):
        model_config = FORBID
        name: Annotated[str, Field(min_length=2, max_length=30)]

    report = report_of(bastion, M)
    assert report.fields == [FieldReport("name", "str", {"min_length": 2, "max_length": 30})]
    assert report.violations == []


def test_constr_and_string_constraints_are_bounds(bastion: Bastion) -> None:
    """constr(max_length=..) and Annotated[str, StringConstraints(max_length=..)] are bounded."""

    class M(BaseModel):
        model_config = FORBID
        code: constr(max_length=4)  # type: ignore[valid-type]
        slug: Annotated[str, StringConstraints(max_length=9, pattern=r"^[a-z]+$")]

    report = report_of(bastion, M)
    assert fields_of(report) == {
        "code": {"max_length": 4},
        "slug": {"max_length": 9, "pattern": "^[a-z]+$"},
    }
    assert report.violations == []


def test_optional_str_without_max_length_is_a_violation(bastion: Bastion) -> None:
    """Optional[str] without a maximum is unbounded; with Field(max_length=..) it is not."""

    class M(BaseModel):
        model_config = FORBID
        nickname: str | None = None
        motto: str | None = Field(None, max_length=40)

    report = report_of(bastion, M)
    assert fields_of(report) == {"nickname": {"unbounded": True}, "motto": {"max_length": 40}}
    assert report.violations == ["field 'nickname' (str) has no maximum length"]


def test_dict_without_max_length_flags_the_dict_its_keys_and_values(bastion: Bastion) -> None:
    """dict[str, str] unbounded: the mapping, its keys and its values are each named."""

    class M(BaseModel):
        model_config = FORBID
        headers: dict[str, str]

    report = report_of(bastion, M)
    assert report.violations == [
        "field 'headers' (dict[str, str]) has no maximum length",
        "field 'headers{key}' (str) has no maximum length",
        "field 'headers{}' (str) has no maximum length",
    ]


def test_secretstr_with_max_length_counts_as_bounded(bastion: Bastion) -> None:
    """SecretStr with max_length is bounded; a bare SecretStr is not."""

    class M(BaseModel):
        model_config = FORBID
        password: SecretStr = Field(max_length=1024)
        token: SecretStr

    report = report_of(bastion, M)
    assert fields_of(report) == {"password": {"max_length": 1024}, "token": {"unbounded": True}}
    assert report.violations == ["field 'token' (SecretStr) has no maximum length"]


def test_upload_with_declared_max_file_bytes_has_no_violation(bastion: Bastion) -> None:
    """An Upload whose action declares max_file_bytes is clean, accepts multipart and
    reports that cap."""

    class M(BaseModel):
        model_config = FORBID
        photo: Upload

    report = report_of(bastion, M, max_file_bytes=2048)
    assert report.violations == []
    assert report.max_file_bytes == 2048
    assert report.content_types == [*FORM_TYPES, "multipart/form-data"]
    assert report.fields == [FieldReport("photo", "upload", {})]


def test_upload_without_declared_max_file_bytes_is_a_violation(bastion: Bastion) -> None:
    """A list of uploads whose action names no max_file_bytes is flagged once."""

    class M(BaseModel):
        model_config = FORBID
        photos: list[Upload] = Field(max_length=3)

    report = report_of(bastion, M)
    assert report.violations == ["accepts uploads without a declared max_file_bytes"]
    assert report.fields == [
        FieldReport("photos", "list[upload]", {"max_length": 3}),
        FieldReport("photos[]", "upload", {}),
    ]


def test_action_without_uploads_reports_no_file_cap(bastion: Bastion) -> None:
    """Without an Upload field, no multipart and no file cap, even if max_file_bytes is set."""

    class M(BaseModel):
        model_config = FORBID
        n: int

    report = report_of(bastion, M, max_file_bytes=2048)
    assert (report.content_types, report.max_file_bytes) == (FORM_TYPES, None)


@pytest.mark.parametrize(
    ("options", "rate", "violations"),
    [
        ({"policy": public}, "60/minute", []),
        ({"policy": public, "rate": "5 per 15 minutes"}, "5/15 minutes", []),
        ({"policy": public, "rate": None}, None, ["public action without a rate limit"]),
        ({"policy": authenticated}, None, []),
        ({"policy": require("x"), "rate": "100/hour"}, "100/hour", []),
    ],
)
def test_rate_limits(
    bastion: Bastion, options: dict[str, Any], rate: str | None, violations: list[str]
) -> None:
    """Public actions get the default rate; only a public action without one is flagged."""

    class M(BaseModel):
        model_config = FORBID

    report = report_of(bastion, M, **options)
    assert (report.rate, report.violations) == (rate, violations)


def test_action_attributes_are_reported(bastion: Bastion) -> None:
    """Name, ID, policy, timeout and body cap are the registered action's."""

    class M(BaseModel):
        model_config = FORBID

    report = report_of(bastion, M, policy=require("a", roles={"r"}), timeout=2.5, max_body_bytes=99)
    assert report.name == "handler"
    assert report.id == bastion.registry.get("handler").id
    assert report.policy == "require('a', roles=['r'])"
    assert (report.timeout, report.max_body_bytes) == (2.5, 99)


class PostRef(BaseModel):
    model_config = FORBID
    post_id: int
    version: int


def test_bound_arguments_are_listed(bastion: Bastion) -> None:
    """The fields of an Annotated[Model, Bound] parameter are the bound arguments."""

    async def edit(ref: Annotated[PostRef, Bound]) -> None: ...

    bastion.action(policy=authenticated)(edit)
    [report] = inventory(bastion)
    assert report.bound_arguments == ["post_id", "version"]
    assert report.fields == []


def test_refusals_are_reported_after_the_registered_actions(bastion: Bastion) -> None:
    """inventory(bastion, refused) appends one unregistered report per refusal."""
    reports = inventory(bastion, [("a", "reason A"), ("b", "reason B")])
    assert [(r.name, r.id, r.policy, r.violations) for r in reports] == [
        ("a", None, "?", ["refused at registration: reason A"]),
        ("b", None, "?", ["refused at registration: reason B"]),
    ]


def test_nested_and_list_item_fields_have_paths(bastion: Bastion) -> None:
    """Nested models are walked with dotted paths, list items with []."""

    class Line(BaseModel):
        model_config = FORBID
        sku: str = Field(max_length=12)
        note: str

    class Order(BaseModel):
        model_config = FORBID
        lines: list[Line] = Field(max_length=50)

    report = report_of(bastion, Order)
    assert [f.path for f in report.fields] == ["lines", "lines[].sku", "lines[].note"]
    assert report.violations == ["field 'lines[].note' (str) has no maximum length"]


def test_abstract_sequences_and_mappings_need_a_maximum(bastion: Bastion) -> None:
    """Sequence[str] and Mapping[str, int] are collections too: unbounded, they are flagged."""

    class M(BaseModel):
        model_config = FORBID
        words: Sequence[Annotated[str, Field(max_length=5)]]
        counts: Mapping[Annotated[str, Field(max_length=5)], int] = Field(max_length=9)
        ids: set[int]

    report = report_of(bastion, M)
    assert report.violations == [
        "field 'words' (Sequence[str]) has no maximum length",
        "field 'ids' (set[int]) has no maximum length",
    ]


def test_fixed_length_tuple_is_bounded_by_its_arity(bastion: Bastion) -> None:
    """tuple[int, int] holds two items, so needs no maximum; tuple[int, ...] does."""

    class M(BaseModel):
        model_config = FORBID
        point: tuple[int, int]
        pair: tuple[str, Annotated[str, Field(max_length=3)]]
        series: tuple[int, ...]

    report = report_of(bastion, M)
    assert [f.path for f in report.fields] == [
        "point",
        "point[0]",
        "point[1]",
        "pair",
        "pair[0]",
        "pair[1]",
        "series",
        "series[]",
    ]
    assert report.violations == [
        "field 'pair[0]' (str) has no maximum length",
        "field 'series' (tuple[int, ...]) has no maximum length",
    ]


def test_recursive_model_is_listed_once(bastion: Bastion) -> None:
    """A self-referencing model does not loop: its second appearance is marked recursive."""
    report = report_of(bastion, Node)
    assert report.fields == [
        FieldReport("name", "str", {"max_length": 20}),
        FieldReport("children", "list[Node]", {"max_length": 4}),
        FieldReport("children[]", "Node", {"recursive": True}),
    ]
    assert report.violations == []


class Node(BaseModel):
    model_config = FORBID
    name: str = Field(max_length=20)
    children: list[Node] = Field(default_factory=list, max_length=4)


@with_config(FORBID)
@dataclasses.dataclass
class Card:
    holder: str = Field(max_length=40)
    memo: str = ""


@with_config(FORBID)
class Tag(TypedDict):
    label: str


class Point(NamedTuple):
    x: int
    label: str


def test_dataclass_typeddict_and_namedtuple_fields_are_walked(bastion: Bastion) -> None:
    """Fields of dataclasses, TypedDicts and NamedTuples are audited like a model's,
    with a dataclass's = Field(max_length=..) default counted; the records themselves
    are not flagged as unbounded collections."""

    class M(BaseModel):
        model_config = FORBID
        card: Card
        tag: Tag
        point: Point

    report = report_of(bastion, M)
    assert report.fields == [
        FieldReport("card.holder", "str", {"max_length": 40}),
        FieldReport("card.memo", "str", {"unbounded": True}),
        FieldReport("tag.label", "str", {"unbounded": True}),
        FieldReport("point.x", "int", {}),
        FieldReport("point.label", "str", {"unbounded": True}),
    ]
    assert report.violations == [
        "field 'card.memo' (str) has no maximum length",
        "field 'tag.label' (str) has no maximum length",
        "field 'point.label' (str) has no maximum length",
    ]


def test_any_field_is_unbounded(bastion: Bastion) -> None:
    """A field typed Any takes strings and arrays of any length: flagged."""

    class M(BaseModel):
        model_config = FORBID
        extra: Any = None

    report = report_of(bastion, M)
    assert report.violations == ["field 'extra' (Any) has no maximum length"]


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


def test_enums_literals_and_numbers_need_no_maximum(bastion: Bastion) -> None:
    """A str enum, a Literal, numbers and booleans need no maximum length; a number
    without a range is a warning (B010), a Decimal without max_digits an error (B011)."""

    class M(BaseModel):
        model_config = FORBID
        colour: Colour
        size: Literal["s", "m", "l"]
        count: int
        price: Decimal = Field(ge=0)
        ok: bool

    report = report_of(bastion, M)
    assert report.violations == ["field 'price' (Decimal) has no max_digits"]
    assert report.warnings == ["field 'count' (int) has no range (ge, le, gt or lt)"]
    assert [(f.path, f.type) for f in report.fields] == [
        ("colour", "Colour"),
        ("size", "Literal['s', 'm', 'l']"),
        ("count", "int"),
        ("price", "Decimal"),
        ("ok", "bool"),
    ]


def test_report_as_dict_is_json_ready(bastion: Bastion) -> None:
    """as_dict() gives plain data; a compiled pattern is given as its source."""

    class M(BaseModel):
        model_config = FORBID
        code: str = Field(max_length=8, pattern=re.compile("^[A-Z]+$"))

    data = report_of(bastion, M).as_dict()
    assert json.loads(json.dumps(data))["fields"] == [
        {"path": "code", "type": "str", "bounds": {"max_length": 8, "pattern": "^[A-Z]+$"}}
    ]


def test_inventory_flags_a_composed_policy_that_admits_anonymous_callers_without_a_rate() -> None:
    """`public | authenticated` lets anonymous visitors in: with rate=None it is as
    exposed as `public`, and the audit says so."""
    bastion = Bastion(secret_key=BAD_KEY, store=MemoryStore())

    @bastion.action(policy=public | authenticated, rate=None)
    async def open_door() -> None:
        return None

    [report] = inventory(bastion)
    assert report.violations == ["public action without a rate limit"]


# --- bounds as pydantic enforces them (read from its core schema) -------------------------


def accepts(model: type[BaseModel], data: dict[str, Any]) -> bool:
    """Whether pydantic takes ``data`` for ``model``: what the audit's bounds must match."""
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_constraint_a_plain_validator_replaces_is_not_a_bound(bastion: Bastion) -> None:
    """A field that looks capped but is not: a PlainValidator (or a mode="plain" field
    validator) replaces the str schema that held max_length, so pydantic takes a string of
    any length. The audit flags both fields instead of reporting max_length=10 and 5."""

    class M(BaseModel):
        model_config = FORBID
        name: Annotated[str, Field(max_length=10), PlainValidator(str)]
        code: str = Field(max_length=5)

        @field_validator("code", mode="plain")
        @classmethod
        def _code(cls, value: Any) -> str:
            return str(value)

    assert accepts(M, {"name": "x" * 100_000, "code": "y" * 100_000})
    report = report_of(bastion, M)
    assert fields_of(report) == {"name": {"unbounded": True}, "code": {"unbounded": True}}
    assert report.violations == [
        "field 'name' (str) has no maximum length",
        "field 'code' (str) has no maximum length",
    ]


@dataclasses.dataclass(frozen=True)
class Column:
    """A database column's width, written next to the type: pydantic ignores metadata it
    does not know, whatever attributes it has."""

    max_length: int


def test_foreign_metadata_with_a_max_length_is_not_a_bound(bastion: Bastion) -> None:
    """A field that looks capped but is not: Annotated[str, Column(max_length=40)] has an
    object with a max_length attribute in its metadata, which pydantic does not apply."""

    class M(BaseModel):
        model_config = FORBID
        name: Annotated[str, Column(max_length=40)]

    assert accepts(M, {"name": "x" * 100_000})
    report = report_of(bastion, M)
    assert report.fields == [FieldReport("name", "str", {"unbounded": True})]
    assert report.violations == ["field 'name' (str) has no maximum length"]


class Outside(BaseModel):
    """A model of its own config: the cap of a model that holds it does not reach it."""

    model_config = FORBID
    note: str


def test_model_str_max_length_caps_its_strings(bastion: Bastion) -> None:
    """Fields that are capped but that the audit called unbounded: str_max_length in a
    model's config caps every str it validates (a SecretStr's, a dict's keys and values)
    that has no max_length of its own, but not those of a nested model."""

    class M(BaseModel):
        model_config = ConfigDict(extra="forbid", str_max_length=200)
        name: str
        password: SecretStr
        headers: dict[str, str] = Field(max_length=5)
        short: str = Field(max_length=10)
        outside: Outside

    good = {"name": "n", "password": "p", "headers": {}, "short": "s", "outside": {"note": ""}}
    assert accepts(M, {**good, "name": "x" * 200, "password": "x" * 200})
    assert not accepts(M, {**good, "name": "x" * 201})
    assert not accepts(M, {**good, "password": "x" * 201})
    assert not accepts(M, {**good, "headers": {"k" * 201: "v"}})
    assert accepts(M, {**good, "outside": {"note": "x" * 100_000}})
    report = report_of(bastion, M)
    assert fields_of(report) == {
        "name": {"max_length": 200},
        "password": {"max_length": 200},
        "headers": {"max_length": 5},
        "headers{key}": {"max_length": 200},
        "headers{}": {"max_length": 200},
        "short": {"max_length": 10},
        "outside.note": {"unbounded": True},
    }
    assert report.violations == ["field 'outside.note' (str) has no maximum length"]


class Sku:
    """A type that validates as a str of at most 20 characters, by its own schema."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.str_schema(max_length=20)


class Blob:
    """A type that validates as a str of any length, by its own schema."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.str_schema()


UserNote = NewType("UserNote", str)


def test_a_types_own_schema_gives_its_bounds(bastion: Bastion) -> None:
    """Bounds no metadata names: a type's own core schema (Sku: max_length=20; HttpUrl:
    2083) is reported; and fields that take strings of any length but whose annotation is
    not str (a class with a bare str schema, a NewType of str), on which the audit was
    silent, are flagged."""

    class M(BaseModel):
        model_config = FORBID
        sku: Sku
        home: HttpUrl
        blob: Blob
        note: UserNote

    good = {"sku": "s", "home": "https://a.example/", "blob": "b", "note": "n"}
    assert not accepts(M, {**good, "sku": "x" * 21})
    assert accepts(M, {**good, "blob": "x" * 100_000, "note": "x" * 100_000})
    report = report_of(bastion, M)
    assert report.fields == [
        FieldReport("sku", "Sku", {"max_length": 20}),
        FieldReport("home", "HttpUrl", {"max_length": 2083}),
        FieldReport("blob", "Blob", {"unbounded": True}),
        FieldReport("note", "UserNote", {"unbounded": True}),
    ]
    assert report.violations == [
        "field 'blob' (Blob) has no maximum length",
        "field 'note' (UserNote) has no maximum length",
    ]


def test_the_tighter_of_two_checked_caps_is_reported(bastion: Bastion) -> None:
    """A cap misreported: Field(max_length=10) checks the input and the Field(max_length=50)
    after the validator checks its result. Pydantic refuses 11 characters, so the bound
    is 10, not the 50 the metadata ends with."""

    class M(BaseModel):
        model_config = FORBID
        name: Annotated[str, Field(max_length=10), AfterValidator(str.strip), Field(max_length=50)]

    assert not accepts(M, {"name": "x" * 11})
    report = report_of(bastion, M)
    assert report.fields == [FieldReport("name", "str", {"max_length": 10})]
    assert report.violations == []


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int


def test_an_idempotent_action_says_so(bastion: Bastion) -> None:
    """``idempotent=True`` is in the inventory and in the text report's own line."""
    from bastion.cli import _text

    @bastion.action(policy=public, idempotent=True)
    def order(data: Order) -> None: ...

    @bastion.action(policy=public)
    def other(data: Order) -> None: ...

    reports = {r.name: r for r in inventory(bastion)}
    assert (reports["order"].idempotent, reports["other"].idempotent) == (True, False)
    text = _text([reports["order"], reports["other"]])
    assert text.count("  once       per idempotency key (idempotent=True)") == 1
