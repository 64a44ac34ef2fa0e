"""``bastion audit`` as CI runs it: from an empty environment, with rule IDs, waivers
from pyproject.toml, --format text|json|sarif, --fail-on and --output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_sarif import validate

from bastion import Bastion, MemoryStore
from bastion.actions.audit import RULES
from bastion.app import AUDITING
from bastion.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WEAK = "tests.fixtures.weak_audit_app:bastion"
HOLES: frozenset[tuple[str, str]] = frozenset(
    {
        ("B001", "unbounded"),
        ("B002", "unlimited"),
        ("B003", "uncapped_upload"),
        ("B004", "loose"),
        ("B005", "scripted"),
        ("B006", "change_password"),
        ("B007", "disagreeing_caps"),
        ("B008", "fragmented"),
        ("B009", "many_files"),
        ("B010", "counted"),
        ("B011", "priced"),
        ("B012", "shared_rate"),
    }
)
"""(rule, action): what tests/fixtures/weak_audit_app.py plants, and nothing else."""
HEADER = (
    "audit-only: throwaway secret key and origins (http://audit.invalid), "
    "as BASTION_SECRET_KEY and BASTION_ALLOWED_ORIGINS are unset"
)


def empty_env(**values: str) -> dict[str, str]:
    """What `env -i PATH=… HOME=…` leaves: nothing of bastion's, the app's or the tests'."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    env.update(values)
    return env


def audit(*args: str, cwd: Path = ROOT, **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "audit", *args],
        cwd=cwd,
        env=empty_env(**values),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def pairs(done: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    document = json.loads(done.stdout)
    return {(f["rule"], f["action"]) for r in document["actions"] for f in r["findings"]}


# --- audit-only: an empty environment --------------------------------------------------


def test_the_quickstart_audits_clean_from_an_empty_environment() -> None:
    """The quickstart too; its public actions on the default rate are warnings (B012)."""
    done = audit("quickstart:bastion", cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == HEADER
    assert done.stdout.endswith("\n8 actions, 0 violations, 3 warnings\n")


def test_the_apps_own_values_are_used_when_present(tmp_path: Path) -> None:
    """With the key and origins in the environment there is no stand-in and no header."""
    done = audit(
        "quickstart:bastion",
        cwd=EXAMPLES,
        BASTION_SECRET_KEY="audit-cli-test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        BASTION_ALLOWED_ORIGINS="https://app.example",
        BASTION_DATA_DIR=str(tmp_path),
        QUICKSTART_PASSWORD="audit-cli-password",
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert not done.stdout.startswith("audit-only")
    assert json.loads(audit("quickstart:bastion", "--json", cwd=EXAMPLES).stdout)["audit_only"] == [
        "BASTION_SECRET_KEY",
        "BASTION_ALLOWED_ORIGINS",
    ]


def test_outside_the_audit_an_empty_environment_still_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stand-ins exist only while the command line imports: Bastion() alone, with
    no key in the environment, still stops."""
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)
    monkeypatch.delenv("BASTION_ALLOWED_ORIGINS", raising=False)
    assert AUDITING.get() is None
    with pytest.raises(ConfigurationError):
        Bastion(store=MemoryStore())


# --- the rules -------------------------------------------------------------------------


def test_the_weak_app_fails_with_each_rule_at_its_action() -> None:
    """One planted hole per rule: exactly those (rule, action) pairs, exit 1."""
    done = audit(WEAK, "--format", "json")
    assert done.returncode == 1
    assert pairs(done) == HOLES
    assert {rule for rule, _ in HOLES} == {r.id for r in RULES} - {"B013"}


WEAK_MESSAGES = {
    ("B001", "unbounded"): "field 'text' (str) has no maximum length",
    ("B002", "unlimited"): "public action without a rate limit",
    ("B003", "uncapped_upload"): "accepts uploads without a declared max_file_bytes",
    ("B005", "scripted"): "accepts API tokens without scopes of its own (tokens=True)",
    ("B006", "change_password"): "looks sensitive but needs no recent log-in (recent_login)",
    ("B007", "disagreeing_caps"): "refused at registration: action 'disagreeing_caps': "
    "max_file_bytes=2097152 cannot arrive within max_body_bytes=1048576: raise "
    "max_body_bytes, or leave it out to have it follow the file cap",
    ("B008", "fragmented"): "renders an htmx fragment, but no templates are configured "
    "(bastion.templates)",
    ("B009", "many_files"): "accepts uploads without its own max_files (10)",
    ("B010", "counted"): "field 'quantity' (int) has no range (ge, le, gt or lt)",
    ("B011", "priced"): "field 'price' (Decimal) has no max_digits",
    ("B012", "shared_rate"): "public action without a rate limit of its own (60/minute)",
}


def test_each_rule_is_named_in_text_with_its_message() -> None:
    """`VIOLATION  B001 unbounded-field: …` / `WARNING    B010 …`: id, name, message."""
    done = audit(WEAK)
    names = {r.id: (r.name, r.level) for r in RULES}
    for (rule, _action), message in WEAK_MESSAGES.items():
        name, level = names[rule]
        label = "VIOLATION" if level == "error" else "WARNING  "
        assert f"  {label}  {rule} {name}: {message}\n" in done.stdout
    assert "  VIOLATION  B004 refused: refused at registration: action 'loose': " in done.stdout
    assert done.stdout.endswith("\n13 actions, 7 violations, 5 warnings\n")


def test_the_report_shows_check_files_fragment_and_numeric_bounds() -> None:
    """What an action runs with is listed, not only what is wrong with it."""
    done = audit(WEAK)
    assert "  fragment   fragments/done.html\n" in done.stdout
    assert "             files 10 at most, 1048576 B each\n" in done.stdout
    assert "  field      stars: int (ge=0, le=5)\n" in done.stdout
    assert (
        "  field      price: Decimal (ge=0, le=1000, max_digits=6, decimal_places=2)\n"
        in done.stdout
    )


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text).lstrip())


def test_a_pre_token_cap_above_the_body_cap_is_b007(tmp_path: Path) -> None:
    """The app's caps disagree: flagged on the action that keeps the app's body cap, not
    on one that lowers its own (tightening is no contradiction); check= is shown."""
    write(
        tmp_path,
        "caps_app.py",
        """
        from pydantic import BaseModel, ConfigDict
        from bastion import Bastion, Limits, MemoryStore, authenticated

        bastion = Bastion(
            secret_key="caps-app-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
            allowed_origins=["https://caps.example"],
            store=MemoryStore(),
            limits=Limits(max_body_bytes=65536, max_pre_token_bytes=131072),
        )

        def mine(ctx, data) -> bool:
            return True

        @bastion.action(policy=authenticated, check=mine)
        async def keeps() -> None: ...

        @bastion.action(policy=authenticated, max_body_bytes=4096)
        async def lowers() -> None: ...
        """,
    )
    done = audit("caps_app:bastion", "--format", "json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    reports = {r["name"]: r for r in json.loads(done.stdout)["actions"]}
    assert [(f["rule"], f["message"]) for f in reports["keeps"]["findings"]] == [
        (
            "B007",
            "max_pre_token_bytes=131072 is above max_body_bytes=65536: "
            "the pre-token cap never applies",
        )
    ]
    assert reports["lowers"]["findings"] == []
    assert reports["keeps"]["check"] == "mine"


# --- waivers ---------------------------------------------------------------------------

WAIVING = """
[tool.bastion.audit]
waive = [
    {rule = "B002", action = "unlimited", reason = "the proxy limits it"},
    {rule = "B001", action = "nowhere", reason = "an action that does not exist"},
]
"""


def test_a_waiver_marks_its_finding_and_an_unused_one_warns(tmp_path: Path) -> None:
    """WAIVED with its reason, out of the failures; the unused waiver is B013."""
    write(tmp_path, "audit.toml", WAIVING)
    done = audit(WEAK, "--config", str(tmp_path / "audit.toml"))
    assert done.returncode == 1  # the other holes still fail
    assert (
        "  WAIVED     B002 no-rate-limit: public action without a rate limit "
        "(waived: the proxy limits it)\n"
    ) in done.stdout
    assert (
        "WARNING  B013 unused-waiver: the waiver of B001 for action 'nowhere' matched no finding\n"
    ) in done.stdout
    assert done.stdout.endswith("\n13 actions, 6 violations, 6 warnings, 1 waived\n")


def test_waivers_are_found_from_the_current_directory_up(tmp_path: Path) -> None:
    """pyproject.toml two levels up is read; the waived finding fails nothing."""
    write(tmp_path, "pyproject.toml", WAIVING.replace('"nowhere"', '"ping"'))
    app = tmp_path / "src" / "app"
    app.mkdir(parents=True)
    write(
        app,
        "ping_app.py",
        """
        from bastion import Bastion, public
        bastion = Bastion()

        @bastion.action(policy=public, rate=None)
        async def unlimited() -> None: ...
        """,
    )
    done = audit("ping_app:bastion", cwd=app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("\n1 actions, 0 violations, 1 warnings, 1 waived\n")
    assert audit("ping_app:bastion", "--fail-on", "warning", cwd=app).returncode == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '{rule = "B002", action = "unlimited"}',
            "waive[0] (rule='B002', action='unlimited'): a waiver needs a reason",
        ),
        (
            '{rule = "B002", action = "unlimited", reason = "  "}',
            "waive[0] (rule='B002', action='unlimited'): a waiver needs a reason",
        ),
        (
            '{rule = "B999", reason = "x"}',
            "waive[0] (rule='B999'): 'B999' is not a rule that can be waived (B001…B012)",
        ),
        (
            '{rule = "B002", reason = "x", until = "never"}',
            "waive[0] (rule='B002', until='never'): unknown key 'until' (rule, action, reason)",
        ),
    ],
)
def test_a_waiver_it_cannot_take_exits_2_naming_the_entry(
    tmp_path: Path, entry: str, message: str
) -> None:
    """No reason, an unknown rule or key: exit 2, nothing on stdout, the entry named."""
    write(tmp_path, "audit.toml", f"[tool.bastion.audit]\nwaive = [{entry}]\n")
    done = audit(WEAK, "--config", str(tmp_path / "audit.toml"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"bastion audit: {tmp_path / 'audit.toml'} [tool.bastion.audit] ")
    assert message in done.stderr, done.stderr


# --- formats, --fail-on, --output ------------------------------------------------------


def test_sarif_validates_and_carries_rules_locations_and_suppressions(tmp_path: Path) -> None:
    """--format sarif --output FILE: a valid SARIF 2.1.0 log, every rule in the driver,
    each finding at its handler's line, a waived one as an external suppression."""
    write(tmp_path, "audit.toml", WAIVING)
    out = tmp_path / "audit.sarif"
    done = audit(
        WEAK, "--format", "sarif", "--output", str(out), "--config", str(tmp_path / "audit.toml")
    )
    assert (done.returncode, done.stdout) == (1, "")
    document = json.loads(out.read_text())
    validate(document)
    (run,) = document["runs"]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [r.id for r in RULES]
    by_pair = {
        (r["ruleId"], r["locations"][0]["logicalLocations"][0]["name"]): r for r in run["results"]
    }
    assert set(by_pair) == HOLES | {("B013", "nowhere")}
    unlimited = by_pair["B002", "unlimited"]
    assert unlimited["suppressions"] == [
        {"kind": "external", "justification": "the proxy limits it"}
    ]
    physical = unlimited["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "tests/fixtures/weak_audit_app.py"
    source = (ROOT / "tests/fixtures/weak_audit_app.py").read_text().splitlines()
    start = physical["region"]["startLine"]  # the definition's first line: its decorator
    assert source[start - 1 : start + 1] == [
        "@bastion.action(policy=public, rate=None)",
        "async def unlimited() -> None:",
    ]
    assert "suppressions" not in by_pair["B001", "unbounded"]


def test_json_alias_and_fail_on() -> None:
    """--json is --format json; --fail-on never reports and exits 0."""
    assert audit(WEAK, "--json").stdout == audit(WEAK, "--format", "json").stdout
    done = audit(WEAK, "--fail-on", "never", "--format", "json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["summary"] == {
        "actions": 13,
        "violations": 7,
        "warnings": 5,
        "waived": 0,
    }


def test_docs_list_every_rule() -> None:
    """docs/audit.md's table is RULES: id, name and level, in order."""
    text = (ROOT / "docs" / "audit.md").read_text()
    rows = re.findall(r"^\| (B\d{3}) \| ([a-z-]+) \| (error|warning) \|", text, flags=re.M)
    assert rows == [(r.id, r.name, r.level) for r in RULES]
