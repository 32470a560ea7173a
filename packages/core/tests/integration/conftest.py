"""Shared fixtures: a simulated provider over real HTTP, a router pointed at it, and Redis
key prefixes of a test's own (the server is shared with other runs: nothing here flushes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from apikeyrouter import ApiKeyRouter, OpenAIAdapter, RetryPolicy
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.infrastructure.state_store.redis_codec import glob_escape
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.testing import SimulatedProvider, SimulatorServer, run_simulator_in_thread
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.fake_clock import FakeClock

REDIS_URL = "redis://127.0.0.1:6379/0"


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


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards (SCAN + DEL, no FLUSH)."""
    prefix = f"akr-test-{uuid.uuid4().hex}:"
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await admin.ping()
    except (RedisError, OSError) as exc:
        await admin.aclose()
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc!r}). These integration tests need a "
            "running Redis server; start one (CI provides it) or deselect with -m 'not redis'.",
            pytrace=False,
        )
    await admin.aclose()
    yield prefix
    await delete_redis_prefix(prefix)


async def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN + DEL: the server is shared, never flushed)."""
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = [k async for k in admin.scan_iter(match=glob_escape(prefix) + "*", count=1000)]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


@pytest.fixture
async def make_redis(redis_prefix: str) -> AsyncIterator[Callable[..., RedisStateStore]]:
    """Builds Redis stores (each with its own client, like a replica) under the test prefix."""
    stores: list[RedisStateStore] = []

    def make(**kwargs: Any) -> RedisStateStore:
        store = RedisStateStore(REDIS_URL, prefix=redis_prefix, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
