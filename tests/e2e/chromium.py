"""Debian's Chromium driven by Playwright: for bastion's browser tests (tests/e2e) and the
demo board's (examples/board/tests/e2e). ``make browser`` installs it; Playwright never
downloads a browser here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

__all__ = ["CHROMIUM", "EXPECT_TIMEOUT", "SCREENSHOTS", "launch", "screenshot_dir"]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium calls home at start-up, and this
# machine refuses every address but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

EXPECT_TIMEOUT = 5_000  # milliseconds for a page to show what a test expects


@contextmanager
def launch() -> Iterator[Browser]:
    """One headless Chromium, closed when the block ends."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot_dir() -> Path:
    """build/screenshots/, where the tests leave what the browser showed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
