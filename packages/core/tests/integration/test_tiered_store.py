"""The tiered store (Redis for hot state, MongoDB for durable records) against real servers.

* The whole state store contract suite (``tests/unit/test_memory_store.py``) runs against it,
  on the shared Redis (127.0.0.1:6379, a fresh key prefix per test, deleted by prefix
  afterwards, never flushed) and nx-27017 (a fresh database per test).
* What goes where: counters never reach MongoDB; keys, state changes and audit records reach
  both; decisions reach MongoDB through the write-behind queue.
* Warming: a Redis that lost its data gets the keys, cooldowns, audit trail and decisions back
  from MongoDB at ``initialize``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from apikeyrouter.domain.interfaces.state_store import Reservation, StateStore
from apikeyrouter.domain.models.api_key import KeyState
from apikeyrouter.infrastructure.state_store import mongo_indexes as schema
from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.infrastructure.state_store.tiered_store import TieredStateStore
from pymongo import AsyncMongoClient

from tests.integration.conftest import REDIS_URL, delete_redis_prefix
from tests.integration.mongo_server import (  # noqa: F401 (pytest fixtures, used by name)
    NxServer,
    mongo_database_fixture,
    nx_server_fixture,
)
from tests.unit import test_memory_store as contract
from tests.unit.test_memory_store import T0, decision, make_key, request_for, transition

pytestmark = [pytest.mark.redis, pytest.mark.mongo]

Raw = dict[str, Any]
TieredMaker = Callable[[], Awaitable[TieredStateStore]]


@pytest.fixture
async def make_tiered(
    nx_server: NxServer, mongo_database: str, redis_prefix: str
) -> AsyncIterator[TieredMaker]:
    """Builds initialised tiered stores on the test's prefix and database (each one a replica
    with its own clients); closes them afterwards."""
    stores: list[TieredStateStore] = []

    async def make() -> TieredStateStore:
        store = TieredStateStore(
            RedisStateStore(REDIS_URL, prefix=redis_prefix),
            MongoStateStore(nx_server.url, database=mongo_database),
        )
        stores.append(store)
        await store.initialize()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def raw_db(nx_server: NxServer, mongo_database: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[Raw] = AsyncMongoClient(nx_server.url, tz_aware=True)
    yield client[mongo_database]
    await client.close()


async def wipe_redis(prefix: str) -> None:
    """What a Redis restarted without persistence looks like: nothing under the prefix."""
    await delete_redis_prefix(prefix)


# --- the shared contract suite ----------------------------------------------------------------


class TestTieredStateStoreContract(contract.TestStateStoreContract):
    @pytest.fixture
    async def store(self, make_tiered: TieredMaker) -> StateStore:
        return await make_tiered()


# --- what goes where ----------------------------------------------------------------------------


async def test_counters_stay_hot_while_records_reach_both(
    make_tiered: TieredMaker, raw_db: Any
) -> None:
    store = await make_tiered()
    await store.put_key(make_key("k1"))
    assert isinstance(await store.reserve([request_for("k1")], T0), Reservation)
    await store.set_cooldown("other", T0 + 30)
    throttle = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "rate limited")
    assert await store.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, T0 + 30)
    await store.record_decision(decision("req_1"))
    assert await store.flush()

    assert await raw_db[schema.WINDOWS].count_documents({}) == 0
    assert await raw_db[schema.CIRCUITS].count_documents({}) == 0
    durable = store.durable
    stored = await durable.get_key("k1")
    assert stored is not None
    assert stored.state is KeyState.THROTTLED
    assert stored.cooldown_until == T0 + 30
    assert await durable.list_audit("k1") == [throttle]
    assert [d.request_id for d in await durable.recent_decisions()] == ["req_1"]
    assert store.decisions_written == 1
    assert store.decisions_dropped == 0


async def test_a_diverged_durable_copy_follows_the_hot_store(make_tiered: TieredMaker) -> None:
    store = await make_tiered()
    await store.put_key(make_key("k1"))
    # MongoDB missed a change (written while it was away, say): its copy says disabled.
    await store.durable.put_key(make_key("k1", state=KeyState.DISABLED))
    throttle = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "rate limited")
    assert await store.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, T0 + 5)
    stored = await store.durable.get_key("k1")
    assert stored is not None
    assert stored.state is KeyState.THROTTLED
    assert await store.durable.list_audit("k1") == [throttle]


async def test_a_refused_state_change_writes_nothing_durable(make_tiered: TieredMaker) -> None:
    store = await make_tiered()
    await store.put_key(make_key("k1"))
    wrong = transition("k1", KeyState.THROTTLED, KeyState.AVAILABLE, "not throttled")
    assert not await store.compare_and_set_state("k1", KeyState.THROTTLED, wrong)
    assert await store.durable.list_audit() == []


async def test_warming_refills_a_wiped_redis_from_mongodb(
    make_tiered: TieredMaker, redis_prefix: str
) -> None:
    first = await make_tiered()
    await first.put_key(make_key("k1"))
    await first.put_key(make_key("k2", "anthropic"))
    throttle = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "rate limited")
    far = 4_102_444_800.0  # a cooldown still running whatever the wall clock says
    assert await first.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, far)
    await first.record_decision(decision("req_1"))
    assert await first.flush()

    await wipe_redis(redis_prefix)
    assert await first.list_keys() == []

    second = await make_tiered()  # a replica starting after the Redis restart
    assert sorted(k.id for k in await second.list_keys()) == ["k1", "k2"]
    warmed = await second.get_key("k1")
    assert warmed is not None
    assert warmed.state is KeyState.THROTTLED
    assert await second.get_cooldown("k1", T0) == far
    assert await second.list_audit("k1") == [throttle]
    assert [d.request_id for d in await second.recent_decisions()] == ["req_1"]
    # Warming twice changes nothing (no duplicated audit records).
    assert await second.warm() == {
        "keys_to_hot": 0,
        "keys_to_durable": 0,
        "audit": 0,
        "decisions": 0,
    }


async def test_keys_only_in_redis_are_copied_to_mongodb(
    make_tiered: TieredMaker, redis_prefix: str
) -> None:
    store = await make_tiered()
    await store.hot.put_key(make_key("hot-only"))
    assert await store.durable.get_key("hot-only") is None
    counts = await store.warm()
    assert counts["keys_to_durable"] == 1
    assert await store.durable.get_key("hot-only") is not None


async def test_ledger_policies_and_budgets_are_mongodb_s(make_tiered: TieredMaker) -> None:
    store = await make_tiered()
    await store.record_usage(
        key_id="k1",
        provider_id="openai",
        model="gpt-4o",
        client_id="web",
        day="2026-11-29",
        requests=2,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.25,
    )
    (total,) = await store.usage_summary(group_by=())
    assert total.requests == 2
    assert total.cost_usd == pytest.approx(0.25)
    assert await store.load_policies() == []
    assert await store.load_budgets() == []


async def test_change_events_come_from_the_hot_store(make_tiered: TieredMaker) -> None:
    store = await make_tiered()
    hot = store.hot
    assert isinstance(hot, RedisStateStore)
    assert store.instance_id == hot.instance_id
    events = store.subscribe_events()
    try:
        first = await anext(events)
    finally:
        await events.aclose()
    assert first == {"type": "resync"}
