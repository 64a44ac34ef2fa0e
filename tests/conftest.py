"""Shared fixtures: a fresh Bastion per test, mounted on a Starlette app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette

from bastion import Bastion
from bastion.testing import ActionClient

SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER_SECRET = "another-secret-key-9876543210-ZYXWVUTSRQPONMLKJIHGFEDCBA"


@pytest.fixture
def bastion() -> Bastion:
    return Bastion(secret_key=SECRET)


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
