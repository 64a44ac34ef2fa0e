"""Shared fixtures: a fresh Bastion per test, mounted on a Starlette app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import services
import summary
from starlette.applications import Starlette

from bastion import Bastion
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

# tests/apps/ holds apps written as their users would write them, each a project of its
# own: an app's tests run in a process of their own (tests/apps/test_expenses.py), since
# they put the app's settings in the environment (BASTION_STORE, BASTION_SECRET_KEY…)
# before importing it and, collected here, would set them for every other test too.
# (Here, not in a conftest.py of tests/apps: the test modules import this one as
# `conftest`, and a second module of that name would take its place.)
collect_ignore = ["apps/expenses"]

SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER_SECRET = "another-secret-key-9876543210-ZYXWVUTSRQPONMLKJIHGFEDCBA"


ORIGIN = "http://127.0.0.1"
"""Where ActionClient says its calls come from."""


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every Bastion built in a test allows the test client's origin and keeps its
    default SQLite store in the test's own directory, as the environment would say."""
    monkeypatch.setenv("BASTION_ALLOWED_ORIGINS", ORIGIN)
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)


@pytest.fixture
def bastion() -> Bastion:
    return Bastion(secret_key=SECRET, store=MemoryStore())


def mounted(bastion: Bastion) -> Starlette:
    """A bare Starlette app with the actions mounted, as a user's app would have them."""
    app = Starlette()
    bastion.mount(app)
    return app


@pytest.fixture
def client(bastion: Bastion) -> Iterator[ActionClient]:
    """A client over the app; register actions on ``bastion`` before the first call."""
    with ActionClient(mounted(bastion), bastion) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis of the tests: ``REDIS_URL`` (CI), else a throwaway redis-server for the
    whole run, else the test is skipped with that reason (see tests/services.py)."""
    with services.redis_for_tests(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis Cluster of the tests (``redis+cluster://…``): ``REDIS_CLUSTER_URL``, else
    a throwaway three-master cluster for the whole run, else the test is skipped with that
    reason (see tests/services.py). Tests that stop a node start a cluster of their own."""
    with services.redis_cluster_for_tests(tmp_path_factory.mktemp("redis-cluster")) as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    """The count of distinct test functions (tests/summary.py), once per run."""
    summary.register(config)
