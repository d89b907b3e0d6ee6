"""The final stage's ``client``, shared by test_stage_batched and test_hostile_bodies (a test
module that defines its own ``client``, as several here do, uses its own)."""

from __future__ import annotations

import pytest


@pytest.fixture
def client(start_stage):
    """The final stage, small model, default settings, ready; a server exception raises."""
    with start_stage() as c:
        yield c
