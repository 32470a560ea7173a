"""Fixtures for in-process API tests: a simulated provider with a few well-known keys."""

from __future__ import annotations

import pytest
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider

KEY_A = "sk-test-alpha-000000000000000001"
KEY_B = "sk-test-bravo-000000000000000002"
KEY_BAD = "sk-test-revoked-0000000000000003"


@pytest.fixture
def sim() -> SimulatedProvider:
    provider = SimulatedProvider(seed=3)
    provider.add_key(SimKeyConfig(key=KEY_A, label="a"))
    provider.add_key(SimKeyConfig(key=KEY_B, label="b"))
    provider.add_key(SimKeyConfig(key=KEY_BAD, label="bad", invalid=True))
    return provider
