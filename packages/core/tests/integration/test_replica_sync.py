"""Two replicas on one Redis behave as one router: what one learns, the other skips.

Each replica is an ``ApiKeyRouter`` with its own ``RedisStateStore`` (own connection pool) on
the shared Redis at 127.0.0.1:6379 under a per-test prefix (deleted afterwards), both pointed
at one simulated provider over HTTP, each following the store's change events with
``StoreEventSync``. Replica B's store counts its calls, to prove the hot path never reads keys
from the store: propagation is pushed, not polled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from apikeyrouter import ApiKeyRouter, KeyState, OpenAIAdapter, RetryPolicy
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy, StateStore
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.infrastructure.state_store.resilient_store import ResilientStateStore
from apikeyrouter.orchestration.sync import StoreEventSync
from apikeyrouter.testing import SimKeyConfig
from apikeyrouter.utils.encryption import generate_master_key

from .conftest import REDIS_URL, SimEnv, chat

pytestmark = pytest.mark.redis

PROPAGATION_DEADLINE = 1.0  # the promise: every replica skips the key within a second
MASTER_KEY = generate_master_key()  # replicas share the master key, as in production


class CountingRedisStore(RedisStateStore):
    """A Redis store that counts every contract call it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()


def _counted(name: str) -> Callable[..., Awaitable[Any]]:
    plain = getattr(RedisStateStore, name)

    async def method(self: CountingRedisStore, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        return await plain(self, *args, **kwargs)

    return method


for _name in sorted(StateStore.__abstractmethods__):  # every contract operation
    setattr(CountingRedisStore, _name, _counted(_name))


@dataclass
class Replica:
    router: ApiKeyRouter
    redis: CountingRedisStore
    sync: StoreEventSync

    def state_of(self, key_id: str) -> KeyState | None:
        key = self.router.keys.find(key_id)
        return None if key is None else key.state


@pytest.fixture(params=["plain", "resilient"])
async def replicas(
    request: pytest.FixtureRequest, sim: SimEnv, redis_prefix: str
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replica A on a plain Redis store; replica B on a plain one or inside the wrapper."""
    made: list[Replica] = []
    for name in ("a", "b"):
        redis = CountingRedisStore(REDIS_URL, prefix=redis_prefix)
        store: StateStore = redis
        if name == "b" and request.param == "resilient":
            store = ResilientStateStore(redis, op_timeout_seconds=2.0)
        router = ApiKeyRouter(
            store,
            master_key=MASTER_KEY,
            retry_policy=RetryPolicy(
                max_attempts=5,
                deadline_seconds=10.0,
                attempt_timeout_seconds=2.0,
                backoff_base_seconds=0.0,
            ),
            circuit_policy=CircuitPolicy(failure_threshold=2, open_seconds=30.0),
        )
        await router.register_provider("openai", OpenAIAdapter(sim.base_url))
        made.append(Replica(router, redis, StoreEventSync(router._ctx)))
    try:
        yield made[0], made[1]
    finally:
        for replica in made:
            await replica.sync.stop()
            await replica.router.close()


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` (every 5 ms) until true; fail after ``timeout``. Returns the wait."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def start_both(a: Replica, b: Replica) -> None:
    assert await a.sync.start(ready_timeout=5.0)
    assert await b.sync.start(ready_timeout=5.0)


async def route_until(replica: Replica, done: Callable[[], bool], attempts: int = 10) -> None:
    for _ in range(attempts):
        await replica.router.route(chat())
        if done():
            return
    pytest.fail("the replica never met the injected failure")


async def test_keys_registered_or_revoked_on_one_replica_reach_the_other(
    sim: SimEnv, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    sim.provider.add_key(SimKeyConfig(key="sk-test-first0000001", label="first"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-later0000002", label="later"))
    first = await a.router.register_key("sk-test-first0000001", "openai", weight=2.0)
    await start_both(a, b)  # B's first load finds the key registered before it subscribed
    loaded = b.router.keys.find(first.id)
    assert loaded is not None
    assert loaded is not first  # B's own object, decoded from the store
    assert (loaded.weight, loaded.fingerprint) == (2.0, first.fingerprint)

    later = await a.router.register_key("sk-test-later0000002", "openai")
    await eventually(
        lambda: b.router.keys.find(later.id) is not None, PROPAGATION_DEADLINE, "put reaches B"
    )
    served = {(await b.router.route(chat())).key_used for _ in range(4)}
    assert served == {first.id, later.id}  # B decrypts both with the shared master key
    assert sim.provider.key_stats("later").served >= 1

    await a.router.keys.update(first.id, weight=5.0, tags=["eu"])
    await eventually(lambda: loaded.weight == 5.0, PROPAGATION_DEADLINE, "update reaches B")
    assert loaded.tags == frozenset({"eu"})
    assert b.router.keys.find(first.id) is loaded  # updated in place

    await a.router.keys.revoke(later.id)
    await eventually(
        lambda: b.router.keys.find(later.id) is None, PROPAGATION_DEADLINE, "revocation"
    )
    received = sim.provider.key_stats("later").received
    for _ in range(5):
        assert (await b.router.route(chat())).key_used == first.id
    assert sim.provider.key_stats("later").received == received


async def test_a_key_invalidated_on_one_replica_is_skipped_by_the_other_within_a_second(
    sim: SimEnv, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    sim.provider.add_key(SimKeyConfig(key="sk-test-doomed000001", label="doomed"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-good00000002", label="good"))
    doomed = await a.router.register_key("sk-test-doomed000001", "openai")
    good = await a.router.register_key("sk-test-good00000002", "openai")
    await start_both(a, b)
    for _ in range(4):  # B uses both keys while they work
        await b.router.route(chat())
    assert sim.provider.key_stats("doomed").served >= 1
    doomed_on_b = b.router.keys.get(doomed.id)

    sim.provider.inject_fault("doomed", "status_401", count=-1)  # the key gets revoked upstream
    await route_until(a, lambda: a.state_of(doomed.id) is KeyState.INVALID)
    waited = await eventually(
        lambda: b.state_of(doomed.id) is KeyState.INVALID,
        PROPAGATION_DEADLINE,
        "B marks the key invalid",
    )
    assert waited < PROPAGATION_DEADLINE
    assert b.router.keys.get(doomed.id) is doomed_on_b  # in place: leases keep valid refs
    assert doomed_on_b.state_reason == a.router.keys.get(doomed.id).state_reason

    received = sim.provider.key_stats("doomed").received
    b.redis.calls.clear()
    for _ in range(10):
        response = await b.router.route(chat())
        assert response.key_used == good.id
        assert [attempt.key_id for attempt in response.attempts] == [good.id]
    assert sim.provider.key_stats("doomed").received == received  # B never tried it again
    # The hot path reserved once per request and read no key, cooldown or circuit.
    assert b.redis.calls["reserve"] == 10
    for read in ("get_key", "list_keys", "get_cooldown", "circuit", "window_usage"):
        assert b.redis.calls[read] == 0, read


async def test_a_key_throttled_on_one_replica_cools_down_on_the_other(
    sim: SimEnv, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    sim.provider.add_key(SimKeyConfig(key="sk-test-busy00000001", label="busy"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-free00000002", label="free"))
    busy = await a.router.register_key("sk-test-busy00000001", "openai")
    free = await a.router.register_key("sk-test-free00000002", "openai")
    await start_both(a, b)

    sim.provider.inject_fault("busy", "status_429", count=-1, retry_after_s=30)
    await route_until(a, lambda: a.state_of(busy.id) is KeyState.THROTTLED)
    until = a.router.keys.get(busy.id).cooldown_until
    assert until is not None
    assert until > time.time() + 20
    await eventually(
        lambda: b.state_of(busy.id) is KeyState.THROTTLED,
        PROPAGATION_DEADLINE,
        "B marks the key throttled",
    )
    assert b.router.keys.get(busy.id).cooldown_until == until

    received = sim.provider.key_stats("busy").received
    b.redis.calls.clear()
    for _ in range(10):
        assert (await b.router.route(chat())).key_used == free.id
    assert sim.provider.key_stats("busy").received == received
    assert b.redis.calls["get_key"] == 0
    assert b.redis.calls["get_cooldown"] == 0

    # A longer cooldown set on A (a repeated 429 on an already throttled key) reaches B too.
    await a.router.store.set_cooldown(busy.id, until + 60)
    await eventually(
        lambda: b.router.keys.get(busy.id).cooldown_until == until + 60,
        PROPAGATION_DEADLINE,
        "cooldown extension reaches B",
    )


async def test_own_events_are_skipped_and_a_resync_reloads_everything(
    sim: SimEnv, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    sim.provider.add_key(SimKeyConfig(key="sk-test-solo00000001", label="solo"))
    await start_both(a, b)
    solo = await a.router.register_key("sk-test-solo00000001", "openai")
    await eventually(
        lambda: b.router.keys.find(solo.id) is not None, PROPAGATION_DEADLINE, "put reaches B"
    )
    assert a.sync.events_skipped >= 1  # A saw its own put and left its index alone
    assert a.router.keys.get(solo.id) is solo
    # Events missed while disconnected are covered by the reload a resync triggers: here a
    # key deleted behind B's back (straight in Redis) disappears from B's index.
    await a.redis.delete_key(solo.id)
    await eventually(
        lambda: b.router.keys.find(solo.id) is None, PROPAGATION_DEADLINE, "delete reaches B"
    )
    reloads = b.sync.reloads
    await b.sync.handle({"type": "resync"})
    assert b.sync.reloads == reloads + 1
    assert b.sync.errors == 0
