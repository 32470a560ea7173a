"""Shared fixtures: a simulated provider over real HTTP and a router pointed at it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from apikeyrouter import ApiKeyRouter, OpenAIAdapter, RetryPolicy
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.testing import SimulatedProvider, SimulatorServer, run_simulator_in_thread


class FakeClock:
    """Wall-clock time that tests move by hand (cooldowns, circuit timers)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SimEnv:
    provider: SimulatedProvider
    server: SimulatorServer

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture
def sim() -> Iterator[SimEnv]:
    provider = SimulatedProvider(seed=1)
    with run_simulator_in_thread(provider) as server:
        yield SimEnv(provider, server)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def router(sim: SimEnv, clock: FakeClock) -> AsyncIterator[ApiKeyRouter]:
    instance = ApiKeyRouter(
        clock=clock,
        retry_policy=RetryPolicy(
            max_attempts=5,
            deadline_seconds=10.0,
            attempt_timeout_seconds=2.0,
            backoff_base_seconds=0.0,
        ),
        circuit_policy=CircuitPolicy(failure_threshold=2, open_seconds=30.0),
    )
    await instance.register_provider("openai", OpenAIAdapter(sim.base_url, clock=clock))
    yield instance
    await instance.close()


def chat(text: str = "hello", **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
