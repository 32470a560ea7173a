"""On Redis, a routed request makes one round trip; its bookkeeping follows in shared batches.

* ``RedisStateStore.write_batch`` sends every commit and decision of a batch in one pipelined
  round trip, and recovers from a script the server lost without applying anything twice.
* A router on Redis touches the store once on each request's path (the reservation); the
  commit and the decision record reach Redis in the background, and after ``flush`` the
  windows hold exactly what inline commits would have left.
* Reading every key's quota or circuit (a metrics scrape, a health view) is one pipelined
  round trip, not one per key.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from apikeyrouter import ApiKeyRouter, OpenAIAdapter
from apikeyrouter.domain.interfaces.state_store import (
    Reservation,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.infrastructure.state_store import redis_scripts
from apikeyrouter.infrastructure.state_store.redis_scripts import LuaScript, run_pipelined
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.testing import SimKeyConfig
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from tests.integration.conftest import REDIS_URL, SimEnv, chat
from tests.unit.test_memory_store import RPM, T0, TPM, decision

pytestmark = pytest.mark.redis

RedisMaker = Callable[..., RedisStateStore]


def count_sends(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the writes redis-py puts on the wire: one per command, one per pipeline."""
    sends: Counter[str] = Counter()
    plain = Connection.send_packed_command

    async def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        sends["round trips"] += 1
        await plain(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    return sends


async def test_a_batch_of_commits_and_decisions_is_one_round_trip(
    make_redis: RedisMaker, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_redis()
    await store.prepare()
    reservations = []
    for n in range(5):
        request = ReservationRequest(f"k{n}", (RPM, TPM), {"requests": 1, "tokens": 400})
        reservation = await store.reserve([request], T0)
        assert isinstance(reservation, Reservation)
        reservations.append(reservation)
    sends = count_sends(monkeypatch)
    await store.write_batch(
        [(r, {"requests": 1, "tokens": 100}) for r in reservations],
        [decision(f"req_{n}") for n in range(5)],
    )
    assert sends["round trips"] == 1
    monkeypatch.undo()
    for n in range(5):
        (usage,) = await store.window_usage(f"k{n}", [TPM], T0 + 1)
        assert usage.used == 100.0
    stored = await store.recent_decisions()
    assert [d.request_id for d in stored] == [f"req_{n}" for n in range(5)]
    assert stored[0].explanation == decision("req_0").explanation  # recomputed when read
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        raw = await client.lrange(f"{redis_prefix}decisions", 0, -1)
    finally:
        await client.aclose()
    assert len(raw) == 5
    assert all('"explanation"' not in entry for entry in raw)  # not stored: derived


async def test_a_script_the_server_lost_runs_again_and_nothing_twice(redis_prefix: str) -> None:
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        # Scripts the server cannot have cached: their first EVALSHA gets NOSCRIPT.
        incr = "return redis.call('INCR', KEYS[1])"
        cached = LuaScript(f"-- {uuid.uuid4().hex}\n{incr}")
        lost = LuaScript(f"-- {uuid.uuid4().hex}\n{incr}")
        await client.script_load(cached.source)
        keys = [f"{redis_prefix}a", f"{redis_prefix}b", f"{redis_prefix}c"]
        await run_pipelined(
            client,
            [(cached, [keys[0]], []), (lost, [keys[1]], []), (cached, [keys[2]], [])],
        )
        assert await client.mget(keys) == ["1", "1", "1"]
        assert await client.script_exists(lost.sha) == [True]
        failing = LuaScript(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply('refused')")
        await client.script_load(failing.source)
        with pytest.raises(Exception, match="refused"):
            await run_pipelined(client, [(failing, [], []), (cached, [keys[0]], [])])
        assert await client.get(keys[0]) == "2"  # the other call still applied, once
    finally:
        await client.aclose()


class CallsByTask(RedisStateStore):
    """Counts the contract calls made from each asyncio task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[asyncio.Task[Any] | None, Counter[str]] = {}


def _counted(name: str) -> Callable[..., Awaitable[Any]]:
    plain = getattr(RedisStateStore, name)

    async def method(self: CallsByTask, *args: Any, **kwargs: Any) -> Any:
        self.calls.setdefault(asyncio.current_task(), Counter())[name] += 1
        return await plain(self, *args, **kwargs)

    return method


for _name in sorted({*StateStore.__abstractmethods__, "write_batch"}):
    setattr(CallsByTask, _name, _counted(_name))


async def test_a_routed_request_waits_for_one_store_call_and_ends_up_exact(
    sim: SimEnv, redis_prefix: str
) -> None:
    store = CallsByTask(REDIS_URL, prefix=redis_prefix)
    router = ApiKeyRouter(store)
    try:
        sim.provider.add_key(SimKeyConfig(key="sk-test-writebehind00001", label="wb"))
        await router.register_provider("openai", OpenAIAdapter(sim.base_url))
        key = await router.register_key("sk-test-writebehind00001", "openai")
        this_task = asyncio.current_task()
        store.calls.clear()
        responses = [await router.route(chat(f"request {n}", max_tokens=8)) for n in range(6)]
        assert store.calls[this_task] == Counter({"reserve": 6})  # nothing else on the path
        await router.flush()
        background = Counter[str]()
        for task, calls in store.calls.items():
            if task is not this_task:
                background += calls
        assert background["write_batch"] >= 1
        assert set(background) == {"write_batch"}
        assert len(await router.recent_decisions(10)) == 6
        # The windows hold what the provider counted: exactly what inline commits leave.
        charged = sum(r.usage.prompt_tokens + max(r.usage.completion_tokens, 8) for r in responses)
        tokens = WindowLimit("tokens", 60.0, 1.0)
        (usage,) = await store.window_usage(key.id, [tokens], time.time())
        assert usage.used == charged
    finally:
        await router.close()


async def test_the_scripts_list_covers_the_batch_scripts() -> None:
    assert redis_scripts.ADJUST in redis_scripts.ALL_SCRIPTS
    assert redis_scripts.APPEND_CAPPED in redis_scripts.ALL_SCRIPTS


async def test_every_keys_quota_and_circuit_is_one_round_trip_each(
    make_redis: RedisMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_redis()
    await store.prepare()
    router = ApiKeyRouter(store, write_behind=False)
    await router.register_provider("openai", OpenAIAdapter("http://unused.invalid/v1"))
    keys = [
        await router.register_key(f"sk-test-bulk-{n}-xxxxxxxx", "openai", requests_per_minute=50)
        for n in range(12)
    ]
    for n, key in enumerate(keys[:5]):
        limit = router.quota.effective_windows(key)[0]
        await store.charge(key.id, limit, float(n + 1), time.time())
    sends = count_sends(monkeypatch)
    together = await router.quota_states()
    assert sends["round trips"] == 1
    circuits = await store.circuits([key.id for key in keys], time.time())
    assert sends["round trips"] == 2
    monkeypatch.undo()
    assert {c.state.value for c in circuits} == {"closed"}
    one_by_one = [await router.quota_state(key.id) for key in keys]
    assert [q.windows for q in together] == [q.windows for q in one_by_one]
    assert [q.windows[0].used for q in together[:6]] == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]
    await router.close()
