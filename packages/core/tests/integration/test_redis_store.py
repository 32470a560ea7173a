"""The Redis state store against a real Redis (127.0.0.1:6379, shared with other test runs).

* The whole state store contract suite (``tests/unit/test_memory_store.py``) runs against Redis.
* Extra contract tests (full round trip, listing order, audit/decision caps) run against both
  stores side by side.
* A seeded random sequence of reserve/commit/release/time steps drives the memory and the Redis
  store together and demands bit-identical results.
* Replicas: several store instances, each with its own connection pool, share one Redis.

Every test uses its own key prefix and deletes its keys afterwards; nothing here flushes the
database. Redis being unreachable fails the tests loudly: CI provides it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from apikeyrouter.domain.interfaces.state_store import (
    Reservation,
    ReservationRefusal,
    StateStore,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits, KeyState, KeyUsage
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.redis_codec import glob_escape
from apikeyrouter.infrastructure.state_store.redis_scripts import LuaScript
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from redis.asyncio import BlockingConnectionPool, Redis

from tests.integration.conftest import REDIS_URL
from tests.integration.store_equivalence import (
    assert_matches_memory_store,
    assert_replicas_never_overshoot,
)
from tests.unit import test_memory_store as contract

pytestmark = pytest.mark.redis

T0 = contract.T0
EVENT_TIMEOUT = 5.0

StoreMaker = Callable[..., StateStore]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def make_store(
    request: pytest.FixtureRequest, make_redis: Callable[..., RedisStateStore]
) -> StoreMaker:
    if request.param == "memory":
        return InMemoryStateStore
    return make_redis


# --- the shared contract suite, against Redis ------------------------------------------------


class TestRedisStateStoreContract(contract.TestStateStoreContract):
    @pytest.fixture(params=["own-client", "bytes-client"])
    async def store(
        self, request: pytest.FixtureRequest, make_redis: Callable[..., RedisStateStore]
    ) -> AsyncIterator[StateStore]:
        """The store's own client, and a caller-supplied one that returns ``bytes``."""
        if request.param == "own-client":
            yield make_redis()
            return
        pool = BlockingConnectionPool.from_url(REDIS_URL, max_connections=16)
        client: Redis = Redis.from_pool(pool)
        try:
            yield make_redis(client=client)
        finally:
            await client.aclose()


# --- extra contract tests, both stores ---------------------------------------------------------


def full_key(key_id: str, provider_id: str = "openai") -> APIKey:
    return APIKey(
        id=key_id,
        provider_id=provider_id,
        encrypted_material="v1:bm9uY2U=:Y2lwaGVydGV4dA==",
        fingerprint="...wxyz",
        limits=KeyLimits(requests_per_minute=60, tokens_per_minute=90_000, spend_per_month=12.5),
        weight=2.5,
        tags=frozenset({"prod", "eu"}),
        metadata={"team": "search", "nested": {"n": [1, 2.5, None]}},
        models=frozenset({"gpt-4o", "gpt-4o-mini"}),
        excluded_models=frozenset({"o1"}),
        usage=KeyUsage(requests=3, prompt_tokens=17, cost_usd=0.1 + 0.2, last_used_at=T0 + 0.1),
        state_reason="imported",
        created_at=T0 - 1 / 3,
        state_changed_at=T0 + 1 / 7,
    )


def dump(key: APIKey | None) -> dict[str, Any] | None:
    if key is None:
        return None
    return {**key.model_dump(), "encrypted_material": key.encrypted_material}


async def test_key_round_trips_every_field(make_store: StoreMaker) -> None:
    store = make_store()
    key = full_key("k1")
    await store.put_key(key)
    assert dump(await store.get_key("k1")) == dump(key)
    (listed,) = await store.list_keys("openai")
    assert dump(listed) == dump(key)


async def test_listing_keeps_first_insertion_order(make_store: StoreMaker) -> None:
    store = make_store()
    for key_id, provider in [("k1", "a"), ("k2", "b"), ("k3", "a"), ("k4", "b")]:
        await store.put_key(full_key(key_id, provider))
    await store.put_key(full_key("k3", "b"))  # moves provider, keeps its place
    await store.delete_key("k2")
    await store.put_key(full_key("k2", "b"))  # deleted then re-added: goes last
    assert [k.id for k in await store.list_keys()] == ["k1", "k3", "k4", "k2"]
    assert [k.id for k in await store.list_keys("a")] == ["k1"]
    assert [k.id for k in await store.list_keys("b")] == ["k3", "k4", "k2"]


async def test_audit_and_decisions_are_capped(make_store: StoreMaker) -> None:
    store = make_store(audit_limit=5, decision_limit=3)
    records = [
        contract.transition(f"k{i % 3}", KeyState.AVAILABLE, KeyState.DISABLED, f"r{i}", T0 + i)
        for i in range(9)
    ]
    for record in records:
        await store.append_audit(record)
    assert await store.list_audit() == records[-5:]
    assert await store.list_audit("k0") == [records[6]]
    assert await store.list_audit("k1", limit=1) == [records[7]]
    assert await store.list_audit(limit=0) == []
    assert await store.list_audit("k0", limit=-1) == []
    for i in range(7):
        await store.record_decision(contract.decision(f"req_{i}"))
    assert [d.request_id for d in await store.recent_decisions()] == ["req_4", "req_5", "req_6"]
    assert [d.request_id for d in await store.recent_decisions(1)] == ["req_6"]
    assert await store.recent_decisions(0) == []


async def test_compare_and_set_audit_is_capped_too(make_store: StoreMaker) -> None:
    store = make_store(audit_limit=2)
    await store.put_key(contract.make_key("k1"))
    states = [KeyState.AVAILABLE, KeyState.THROTTLED] * 2 + [KeyState.AVAILABLE]
    moves = [
        contract.transition("k1", a, b, f"m{i}", T0 + i)
        for i, (a, b) in enumerate(itertools.pairwise(states))
    ]
    for move in moves:
        assert await store.compare_and_set_state("k1", move.from_state, move, T0 + 100)
    assert await store.list_audit("k1") == moves[-2:]


async def test_commit_after_the_window_moved_on_changes_nothing(make_store: StoreMaker) -> None:
    store = make_store()
    old = await store.reserve([contract.request_for("a", tokens=100)], T0)
    assert isinstance(old, Reservation)
    assert isinstance(
        await store.reserve([contract.request_for("a", tokens=10)], T0 + 70), Reservation
    )
    await store.commit(old, {"tokens": 900})
    await store.release(old)
    assert await contract.used(store, "a", contract.TPM, T0 + 70) == 10.0
    assert await contract.used(store, "a", contract.RPM, T0 + 70) == 1.0


async def test_charge_adds_outside_usage_to_the_current_bucket(make_store: StoreMaker) -> None:
    store = make_store()
    await store.charge("a", contract.TPM, 300.0, T0)
    await store.charge("a", contract.TPM, 0.0, T0 + 1)
    assert await contract.used(store, "a", contract.TPM, T0 + 30) == 300.0
    await store.charge("a", contract.TPM, 500.0, T0 + 30)
    refusal = await store.reserve([contract.request_for("a", tokens=300)], T0 + 30)
    assert isinstance(refusal, ReservationRefusal)
    assert refusal.retry_at is not None
    assert T0 + 60 <= refusal.retry_at <= T0 + 61  # the T0 charge expires first
    await store.charge("a", contract.TPM, -10_000.0, T0 + 30)  # never below zero
    assert await contract.used(store, "a", contract.TPM, T0 + 30) == 300.0
    assert await contract.used(store, "a", contract.TPM, T0 + 62) == 0.0


# --- the memory store and the Redis store agree, step by step ----------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_random_sequences_match_the_memory_store(
    seed: int, make_redis: Callable[..., RedisStateStore]
) -> None:
    await assert_matches_memory_store(make_redis(), seed, steps=300)


# --- replicas ---------------------------------------------------------------------------------


async def test_replicas_never_overshoot_a_limit_together(
    make_redis: Callable[..., RedisStateStore],
) -> None:
    await assert_replicas_never_overshoot([make_redis() for _ in range(4)], T0)


async def next_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(events), EVENT_TIMEOUT)


async def test_state_changes_reach_other_replicas(
    make_redis: Callable[..., RedisStateStore],
) -> None:
    listener, writer = make_redis(), make_redis()
    events = listener.subscribe_events()
    try:
        assert await next_event(events) == {"type": "resync"}  # subscribed from here on
        await writer.put_key(contract.make_key("k1", "openai"))
        put = await next_event(events)
        assert put["type"] == "put"
        assert (put["key_id"], put["provider_id"]) == ("k1", "openai")

        throttle = contract.transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "429", T0)
        assert not await writer.compare_and_set_state("k1", KeyState.DISABLED, throttle)
        assert await writer.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, T0 + 30)
        state = await next_event(events)  # the failed CAS published nothing
        assert state["type"] == "state"
        assert state["key_id"] == "k1"
        assert (state["from_state"], state["state"]) == ("available", "throttled")
        assert state["cooldown_until"] == T0 + 30
        assert state["origin"] == writer.instance_id != listener.instance_id

        await writer.set_cooldown("k1", T0 + 10)  # shorter than the current one: no event
        await writer.set_cooldown("k1", T0 + 45)
        cooldown = await next_event(events)
        assert (cooldown["type"], cooldown["cooldown_until"]) == ("cooldown", T0 + 45)

        await writer.delete_key("k1")
        assert (await next_event(events))["type"] == "delete"
    finally:
        await events.aclose()


async def test_listener_callback_skips_garbage_and_survives_its_own_errors(
    make_redis: Callable[..., RedisStateStore], redis_prefix: str
) -> None:
    listener, writer = make_redis(), make_redis()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    subscribed = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "resync":
            subscribed.set()
        elif event.get("key_id") == "boom":
            raise RuntimeError("a buggy callback")
        else:
            await received.put(event)

    listener.start_listener(on_event)
    with pytest.raises(RuntimeError):
        listener.start_listener(on_event)
    await asyncio.wait_for(subscribed.wait(), EVENT_TIMEOUT)
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await admin.publish(listener.channel, "not json")
        await admin.publish(listener.channel, '["no", "type"]')
    finally:
        await admin.aclose()
    await writer.set_cooldown("boom", T0)
    await writer.set_cooldown("k2", T0)
    event = await asyncio.wait_for(received.get(), EVENT_TIMEOUT)
    assert (event["type"], event["key_id"]) == ("cooldown", "k2")
    await listener.stop_listener()
    await listener.stop_listener()  # idempotent


async def test_listener_resyncs_after_its_connection_is_killed(redis_prefix: str) -> None:
    name = f"akr-test-listener-{uuid.uuid4().hex[:12]}"
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True, client_name=name)
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    listener = RedisStateStore(prefix=redis_prefix, client=client)
    writer = RedisStateStore(prefix=redis_prefix)
    events = listener.subscribe_events()
    try:
        assert await next_event(events) == {"type": "resync"}
        ours = [c for c in await admin.client_list() if c.get("name") == name]
        assert ours
        for connection in ours:
            await admin.client_kill_filter(_id=connection["id"])
        # Whether redis-py reconnects inside get_message or the store's loop does, the
        # consumer learns that it may have missed events, then sees new ones again.
        assert await next_event(events) == {"type": "resync"}
        await writer.set_cooldown("k1", T0)
        assert (await next_event(events))["type"] == "cooldown"
    finally:
        await events.aclose()
        await listener.close()
        await writer.close()
        await client.aclose()
        await admin.aclose()


# --- Redis specifics --------------------------------------------------------------------------


async def test_window_hashes_expire_and_stale_buckets_are_pruned(
    make_redis: Callable[..., RedisStateStore], redis_prefix: str
) -> None:
    store = make_redis()
    request = contract.request_for("a")
    for offset in (0.0, 10.0, 20.0):
        assert isinstance(await store.reserve([request], T0 + offset), Reservation)
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        (window,) = [k async for k in admin.scan_iter(match=glob_escape(redis_prefix) + "w:*")]
        assert await admin.hlen(window) == 3
        assert 0 < await admin.pttl(window) <= 61_000  # one window plus one bucket
        assert isinstance(await store.reserve([request], T0 + 75), Reservation)
        assert await admin.hlen(window) == 2  # the T0 bucket left the window and was pruned
    finally:
        await admin.aclose()


async def test_cooldown_keys_expire_by_the_server_clock_only_when_real(
    make_redis: Callable[..., RedisStateStore], redis_prefix: str
) -> None:
    store = make_redis(cooldown_grace_seconds=60)
    await store.set_cooldown("real", time.time() + 30)
    await store.set_cooldown("fake", T0 + 30)  # a fake clock far in the past: keep, no TTL
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert 60_000 < await admin.pttl(f"{redis_prefix}cooldown:real") <= 90_000
        assert await admin.pttl(f"{redis_prefix}cooldown:fake") == -1
    finally:
        await admin.aclose()
    assert await store.get_cooldown("fake", T0) == T0 + 30


async def test_decisions_expire(
    make_redis: Callable[..., RedisStateStore], redis_prefix: str
) -> None:
    store = make_redis(decision_ttl_seconds=120)
    await store.record_decision(contract.decision("req_1"))
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert 0 < await admin.ttl(f"{redis_prefix}decisions") <= 120
    finally:
        await admin.aclose()


async def test_key_material_is_stored_as_given_ciphertext(
    make_redis: Callable[..., RedisStateStore], redis_prefix: str
) -> None:
    store = make_redis()
    await store.put_key(full_key("k1"))
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        stored = await admin.hgetall(f"{redis_prefix}key:k1")
    finally:
        await admin.aclose()
    # Its own field, so rotation can swap it in a script without touching the document.
    assert stored["encrypted_material"] == "v1:bm9uY2U=:Y2lwaGVydGV4dA=="
    assert "encrypted_material" not in stored["doc"]
    plaintext = full_key("k2").model_copy(update={"encrypted_material": "sk-live-0123456789"})
    with pytest.raises(ValueError, match="not KeyEncryptor ciphertext"):
        await store.put_key(plaintext)
    assert await store.get_key("k2") is None


async def test_scripts_reload_after_noscript(redis_prefix: str) -> None:
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        # A source the server cannot have cached: the first EVALSHA gets NOSCRIPT.
        script = LuaScript(f"-- {uuid.uuid4().hex}\nreturn ARGV[1] .. KEYS[1]")
        assert await client.script_exists(script.sha) == [False]
        assert await script(client, [f"{redis_prefix}x"], ["v:"]) == f"v:{redis_prefix}x"
        assert await client.script_exists(script.sha) == [True]
    finally:
        await client.aclose()


async def test_ping_is_false_when_redis_is_unreachable() -> None:
    store = RedisStateStore("redis://127.0.0.1:1/0")
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_a_supplied_client_is_not_closed(redis_prefix: str) -> None:
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStateStore(prefix=redis_prefix, client=client)
    await store.close()
    try:
        assert await client.ping()
    finally:
        await client.aclose()
