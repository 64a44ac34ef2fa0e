"""The settings first (the app reads them when it is imported), then one client per test.

Every ``ActionClient`` is a visitor of its own, with an address no other client has, so
each test starts inside every rate limit without resetting any.
"""

import os
import tempfile
from collections.abc import Iterator

import pytest

os.environ["BASTION_SECRET_KEY"] = "test-only-key-0123456789-abcdefghijklmnopqrstuvwxyz"
os.environ["BASTION_ALLOWED_ORIGINS"] = "http://127.0.0.1"  # where ActionClient calls from
os.environ["BASTION_STORE"] = "memory://"
os.environ["EXPENSES_DATABASE_URL"] = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/expenses.db"
os.environ["EXPENSES_APPROVER"] = "olivia"
os.environ["EXPENSES_APPROVER_PASSWORD"] = "olivia approves 2024"

from app import app, bastion

from bastion.testing import ActionClient, fast_passwords


@pytest.fixture(autouse=True)
def _fast_passwords() -> Iterator[None]:
    with fast_passwords():
        yield


@pytest.fixture
def client() -> Iterator[ActionClient]:
    with ActionClient(app, bastion) as client:
        yield client
