"""docs/ci.md's GitHub Actions workflow and GitLab CI job, run as far as they run here.

Each snippet is read from the page (YAML, parsed), and what a runner would execute is
executed against the quickstart: the workflow's ``run:`` steps with its ``env`` and each
step's own (a secret substituted), the job's ``script:`` lines in one shell with its
``variables``. Left out, and only these: the hosted actions (``uses:``), GitLab's image
and artifacts, and the ``pip install`` lines (this is the project's environment, where
bastion is installed). Both snippets must end with exit 0 and two SARIF 2.1.0 logs that
validate, the probe's having signed in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sarif import validate

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "ci.md"
BIN = Path(sys.executable).parent
PASSWORD = "quickstart-password-for-the-ci-doc"

HOSTED = {"actions/checkout", "actions/setup-python", "github/codeql-action/upload-sarif"}
"""GitHub's own actions: what a hosted runner brings, not something to run here."""

QUICKSTART = {
    "APP": "quickstart",
    "LOGIN_PATH": "/",
    "PROBE_USER": "author@quickstart.example",
}
"""The snippets' env block, for the quickstart instead of the page's ``app``."""


def _snippets() -> dict[str, dict[str, Any]]:
    """The page's YAML blocks, by the file each names in its first line."""
    found: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), flags=re.S):
        name = block.splitlines()[0].removeprefix("# ").strip()
        found[name] = yaml.safe_load(block)
    return found


def _environment(tmp_path: Path) -> dict[str, str]:
    """A clean environment: PATH with the project's bastion and uvicorn first, and what the
    quickstart reads (its accounts' password, a data directory of its own)."""
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "QUICKSTART_PASSWORD": PASSWORD,
        "BASTION_DATA_DIR": str(tmp_path / "data"),
    }


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A runner's default shell: bash, stopping at the first failing command.
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _work(tmp_path: Path) -> Path:
    """A checkout of the app: the quickstart and its templates, as the job would see it."""
    work = tmp_path / "work"
    work.mkdir()
    for item in ("quickstart.py", "templates"):
        (work / item).symlink_to(REPO / "examples" / item)
    return work


def _check_logs(work: Path) -> None:
    audit = json.loads((work / "audit.sarif").read_text())
    probe = json.loads((work / "probe.sarif").read_text())
    for log in (audit, probe):
        validate(log)
    assert audit["runs"][0]["tool"]["driver"]["name"] == "bastion audit"
    assert probe["runs"][0]["tool"]["driver"]["name"] == "bastion probe"
    # No finding left: the quickstart passes both, so each run's results are all waived
    # or absent, never an error.
    for log in (audit, probe):
        assert [r for r in log["runs"][0]["results"] if r.get("level") == "error"] == []


def test_the_github_workflow_runs(tmp_path: Path) -> None:
    workflow = _snippets()[".github/workflows/bastion.yml"]
    work = _work(tmp_path)
    env = {**_environment(tmp_path), **workflow["env"], **QUICKSTART}
    skipped: list[str] = []
    ran: list[str] = []
    for step in workflow["jobs"]["bastion"]["steps"]:
        if "uses" in step:
            assert step["uses"].split("@")[0] in HOSTED, step
            skipped.append(step["uses"].split("@")[0])
            continue
        if step["run"].startswith("pip install"):
            skipped.append(step["name"])
            continue
        step_env = {
            name: PASSWORD if "secrets.PROBE_PASSWORD" in value else value
            for name, value in step.get("env", {}).items()
        }
        result = _run(step["run"], work, {**env, **step_env})
        assert result.returncode == 0, (step["name"], result.stdout[-2000:], result.stderr[-2000:])
        ran.append(step["name"])
    assert ran == ["Audit every action", "Probe the running app, anonymous and signed in"]
    assert skipped == [
        "actions/checkout",
        "actions/setup-python",
        "Install",
        "github/codeql-action/upload-sarif",
    ]
    _check_logs(work)


def test_the_gitlab_job_runs(tmp_path: Path) -> None:
    job = _snippets()[".gitlab-ci.yml"]["bastion"]
    work = _work(tmp_path)
    lines = [line for line in job["script"] if not line.startswith("pip install")]
    assert len(lines) == len(job["script"]) - 1
    env = {**_environment(tmp_path), **job["variables"], **QUICKSTART}
    env["PROBE_PASSWORD"] = PASSWORD  # the masked CI/CD variable
    result = _run("\n".join(lines), work, env)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    _check_logs(work)
    assert set(job["artifacts"]["paths"]) <= {p.name for p in work.iterdir()}


@pytest.mark.parametrize("snippet", [".github/workflows/bastion.yml", ".gitlab-ci.yml"])
def test_a_hole_turns_the_job_red(tmp_path: Path, snippet: str) -> None:
    """The same steps on an app with a planted hole (an action with an unbounded field and
    no rate limit): the audit step fails the job, exit 1, before anything is served."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "holey.py").write_text(
        "from pydantic import BaseModel, ConfigDict\n"
        "from starlette.applications import Starlette\n"
        "from bastion import Bastion, public\n"
        "bastion = Bastion(default_rate=None)\n"
        "class Note(BaseModel):\n"
        "    model_config = ConfigDict(extra='forbid')\n"
        "    text: str\n"
        "@bastion.action(policy=public)\n"
        "def note(data: Note) -> Note:\n"
        "    return data\n"
        "app = Starlette()\n"
        "bastion.mount(app)\n"
    )
    parsed = _snippets()[snippet]
    if snippet == ".gitlab-ci.yml":
        script = parsed["bastion"]["script"][1]
    else:
        steps = parsed["jobs"]["bastion"]["steps"]
        [script] = [s["run"] for s in steps if "Audit" in s.get("name", "")]
    result = _run(script, work, {**_environment(tmp_path), "APP": "holey"})
    assert result.returncode == 1, (result.stdout[-2000:], result.stderr[-2000:])
    found = json.loads((work / "audit.sarif").read_text())
    validate(found)
    rules = {r["ruleId"] for r in found["runs"][0]["results"] if r.get("level") == "error"}
    assert rules == {"B001", "B002"}  # the unbounded field, the public action unlimited
