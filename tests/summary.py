"""Beside pytest's count of cases, how many distinct test functions ran: a parametrised
test is one function however many cases it has.

A plugin of its own, registered by tests/conftest.py and by the demo board's
examples/board/tests/conftest.py (``register``), so that the line is written once
whichever of the two a run loads.
"""

from __future__ import annotations

import sys

import pytest

__all__ = ["register"]


def register(config: pytest.Config) -> None:
    """This module as a plugin of the run, unless a conftest registered it already."""
    plugin = sys.modules[__name__]
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "distinct-functions")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reports = [
        report
        for outcome in ("passed", "failed", "skipped", "xfailed", "xpassed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") == "call" or outcome == "skipped"
    ]
    cases = {report.nodeid for report in reports}
    functions = {nodeid.split("[", 1)[0] for nodeid in cases}
    if cases:
        terminalreporter.write_line(
            f"{len(functions)} distinct test functions ran, {len(cases)} cases in all"
        )
