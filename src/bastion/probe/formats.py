"""The exit status for CI, by the level of the rules (``model.RULES``) of failed cases.

The SARIF log is written by ``bastion.cli`` through ``bastion.sarif`` (a sibling leaf the
probe does not import): one rule per entry of ``RULES``, one result per failed case.
"""

from __future__ import annotations

from typing import Literal

from .model import Report, rule_for

__all__ = ["FailOn", "exit_status"]

FailOn = Literal["error", "warning", "never"]


def exit_status(report: Report, fail_on: FailOn) -> int:
    """1 when a failed case is at least as severe as ``fail_on``, else 0."""
    if fail_on == "never":
        return 0
    levels = {rule_for(r.case)[2] for r in report.results if r.status == "FAIL"}
    if fail_on == "warning":
        return 1 if levels else 0
    return 1 if "error" in levels else 0
