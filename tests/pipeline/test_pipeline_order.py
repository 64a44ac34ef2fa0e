"""One order of the stages, everywhere it is written: ``pipeline.STAGES`` (what runs), the
table in ``bastion.pipeline``'s docstring, the first line of each stage's module, and the
pipeline table of docs/security-model.md. Swap two stages in one of them and this fails."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from bastion import pipeline

REPO = Path(__file__).resolve().parents[2]
FIRST_LINE = re.compile(r"Pipeline stages? ([\d, and]+)[:,]")


def numbered() -> list[tuple[int, str, str]]:
    """(number, name, module) of every stage, from the tuple that runs."""
    return [(n, stage.name, stage.module) for n, stage in enumerate(pipeline.STAGES, 1)]


def test_the_stages_run_checks_then_the_reply_then_guard_and_audit() -> None:
    """The refusing checks first, the count of an early refusal, the release of
    dependencies whatever happened, the reply once, then the taint guard, the flash kept
    (after the guard: a flash it refused is never kept), the keeping of an idempotent
    reply (likewise) and the audit last. The checks that need no state (the CSRF token is
    bound to the cookie's session ID) come before the session is read; the rate limit
    right after it (one round trip on Redis)."""
    whens = [stage.when for stage in pipeline.STAGES]
    assert whens == ["checks"] * 15 + ["refused", "release", "reply"] + ["always"] * 4
    names = [stage.name for stage in pipeline.STAGES]
    assert names[-4:] == ["taint guard", "flash", "idempotency", "audit"]
    assert names[:7] == [
        "route",
        "origin",
        "API token",
        "form fields",
        "CSRF token",
        "session",
        "rate limit",
    ]


def test_the_docstring_table_is_the_tuple() -> None:
    doc = pipeline.__doc__ or ""
    rows = re.findall(r"^    (\d+)\s+(\S(?:.*?\S)?)\s{2,}(\w+)\s{2,}", doc, flags=re.M)
    # The docstring's narrow column names a module by its last part.
    short = [(n, name, module.rsplit(".", 1)[-1]) for n, name, module in numbered()]
    assert [(int(n), name, module) for n, name, module in rows] == short


def test_each_stage_module_names_its_stages_first() -> None:
    """A module's first line says which stage numbers it is, and they are the tuple's."""
    by_module: dict[str, list[int]] = {}
    for number, _, module in numbered():
        by_module.setdefault(module, []).append(number)
    for module, numbers in by_module.items():
        doc = importlib.import_module(f"bastion.{module}").__doc__ or ""
        found = FIRST_LINE.match(doc.split("\n", 1)[0])
        assert found is not None, (module, doc.split("\n", 1)[0])
        assert [int(n) for n in re.findall(r"\d+", found.group(1))] == numbers, module


def test_the_security_model_table_is_the_tuple() -> None:
    """docs/security-model.md's pipeline table: the same numbers, names and modules."""
    text = (REPO / "docs" / "security-model.md").read_text()
    table = text[text.index("| stage | module |") :].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d+) ([^|]+?) \| `([\w/]+)\.py`", table, flags=re.M)
    paths = [(n, name, module.replace(".", "/")) for n, name, module in numbered()]
    assert [(int(n), name, module) for n, name, module in rows] == paths
