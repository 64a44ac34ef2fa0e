"""Browser fixtures: the quickstart served by uvicorn as `make quickstart` serves it, a
hostile site beside it, and Debian's Chromium driven by Playwright (tests/e2e/chromium.py;
the demo board's browser tests, in examples/board/tests/e2e, use it too).

The quickstart answers at http://127.0.0.1:P; the hostile site at http://localhost:P2, a
different site (another host, another port) on the same machine, so every request from
its pages to the quickstart is cross-site as far as the browser is concerned. Only
loopback addresses are ever contacted.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO

import pytest
from playwright.sync_api import Browser, BrowserContext
from services import free_port

from .chromium import EXPECT_TIMEOUT, launch, screenshot_dir

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0  # seconds for a server to answer its first request

# --- reading the quickstart page ----------------------------------------------------------


@dataclass
class Form:
    """One action form of the page: where it posts and its hidden fields."""

    action: str
    hidden: dict[str, str] = field(default_factory=dict)


class _SectionForms(HTMLParser):
    """Collects the form of each `<section id=NAME>`: its action and its hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, Form] = {}
        self._section: str | None = None
        self._form: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "section":
            self._section = attributes.get("id")
        elif tag == "form" and self._section is not None:
            self._form = Form(action=attributes.get("action", ""))
            self.forms[self._section] = self._form
        elif tag == "input" and self._form is not None and attributes.get("type") == "hidden":
            self._form.hidden[attributes.get("name", "")] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
            self._form = None
        elif tag == "form":
            self._form = None


# Loopback only, and never through a proxy that the environment might name.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` as a script outside the browser would: status and text, no cookies."""
    try:
        with _opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """A server in a child process, logging to a file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until_up(self, path: str = "/") -> None:
        """Poll ``path`` until it answers 200; fail with the server's log otherwise."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{self.url} exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if fetch(self.url + path, timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"{self.url} did not answer in {START_TIMEOUT} s:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def start(command: list[str], url: str, log_path: Path, env: dict[str, str]) -> Server:
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    return Server(url=url, process=process, log_path=log_path, log=log)


@dataclass
class Quickstart:
    """examples/quickstart.py served by uvicorn at ``url`` (http://127.0.0.1:P)."""

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def statuses(self, method: str, path: str) -> list[int]:
        """The statuses the server answered to ``method path``, from uvicorn's access log:
        what the server did even where the browser hides the reply from the page."""
        line = re.compile(rf'"{re.escape(method)} {re.escape(path)} HTTP/[0-9.]+" ([0-9]{{3}})')
        return [int(status) for status in line.findall(self.server.log_text())]

    def forms(self) -> dict[str, Form]:
        """The page's forms by section, as a script outside the browser gets them: a fresh
        page, so its hidden `_csrf` belongs to a session of its own, not to the browser's."""
        status, html = fetch(self.url + "/")
        assert status == 200
        parser = _SectionForms()
        parser.feed(html)
        return parser.forms


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    """The quickstart exactly as a reader serves it: uvicorn, a random key, the origin it is
    served at as its only allowed origin, its session store in a fresh directory."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("quickstart")
    data_dir = tmp / "data"
    data_dir.mkdir()
    env = {
        **os.environ,
        "BASTION_SECRET_KEY": secrets.token_hex(32),
        "BASTION_ALLOWED_ORIGINS": url,
        "BASTION_DATA_DIR": str(data_dir),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(REPO / "examples"),
        "quickstart:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = start(command, url, tmp / "uvicorn.log", env)
    try:
        server.wait_until_up("/")
        yield Quickstart(server)
    finally:
        server.stop()


@dataclass
class HostileSite:
    """Static pages served from ``root`` at ``origin`` (http://localhost:P2)."""

    origin: str
    root: Path

    def page(self, name: str, html: str) -> str:
        """Publish ``html`` as ``/name`` and return its URL."""
        (self.root / name).write_text(html)
        return f"{self.origin}/{name}"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileSite]:
    """An attacker's site: another host name and port than the quickstart's, so another
    site. Python's own static file server, listening on loopback only."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("hostile")
    root = tmp / "www"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>hostile</title>")
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(root),
    ]
    server = start(command, f"http://127.0.0.1:{port}", tmp / "http.server.log", dict(os.environ))
    try:
        server.wait_until_up("/index.html")
        yield HostileSite(origin=f"http://localhost:{port}", root=root)
    finally:
        server.stop()


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launch() as chromium:
        yield chromium


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile (no cookies) with JavaScript on, for one test."""
    browser_context = browser.new_context()
    browser_context.set_default_timeout(EXPECT_TIMEOUT)
    try:
        yield browser_context
    finally:
        browser_context.close()


@pytest.fixture
def no_js_context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile with JavaScript off: pages behave as plain HTML forms."""
    browser_context = browser.new_context(java_script_enabled=False)
    browser_context.set_default_timeout(EXPECT_TIMEOUT)
    try:
        yield browser_context
    finally:
        browser_context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """build/screenshots/, where the tests leave what the browser showed."""
    return screenshot_dir()
