"""The MongoDB state store against a real wire-compatible server (nx-27017, started by the tests).

* The whole state store contract suite (``tests/unit/test_memory_store.py``) runs against it.
* A seeded random sequence of reserve/commit/release/charge/time steps drives the memory and the
  MongoDB store together and demands identical results.
* Replicas: several store instances (own clients) and several OS processes share one database;
  no limit, per key or shared, is ever overshot, and nothing is refused while there is room.
* Durability, raw documents free of key material, schema migrations and master key rotation.

The server is started once per session on a free port (``mongo_server.py``); each test gets its
own database, dropped afterwards. A server that cannot start fails the tests; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    SharedCounter,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits, KeyState, KeyUsage
from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.infrastructure.state_store import mongo_indexes as schema
from apikeyrouter.infrastructure.state_store import mongo_store
from apikeyrouter.infrastructure.state_store.key_rotation import rotate_master_key
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.mongo_codec import new_rev
from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore
from apikeyrouter.utils.encryption import KeyEncryptor, generate_master_key
from apikeyrouter.utils.exceptions import ConfigurationError
from bson import json_util
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from tests.integration.mongo_server import (  # noqa: F401 (pytest fixtures, used by name)
    NxServer,
    mongo_database_fixture,
    nx_server_fixture,
)
from tests.integration.store_equivalence import (
    assert_matches_memory_store,
    assert_replicas_never_overshoot,
)
from tests.unit import test_memory_store as contract

T0 = contract.T0
REPO = Path(__file__).resolve().parents[4]

StoreMaker = Callable[..., Awaitable[MongoStateStore]]
Raw = dict[str, Any]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def make_mongo(nx_server: NxServer, mongo_database: str) -> AsyncIterator[StoreMaker]:
    """Builds initialised stores on the test's database, each with its own client (a replica)."""
    stores: list[MongoStateStore] = []

    async def make(**kwargs: Any) -> MongoStateStore:
        store = MongoStateStore(nx_server.url, database=mongo_database, **kwargs)
        stores.append(store)
        await store.initialize()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def raw_db(nx_server: NxServer, mongo_database: str) -> AsyncIterator[Any]:
    """The test's database through a plain client: what an operator (or an attacker) sees."""
    client: AsyncMongoClient[Raw] = AsyncMongoClient(nx_server.url, tz_aware=True)
    yield client[mongo_database]
    await client.close()


# --- the shared contract suite, against MongoDB ---------------------------------------------------


class TestMongoStateStoreContract(contract.TestStateStoreContract):
    @pytest.fixture
    async def store(self, make_mongo: StoreMaker) -> StateStore:
        return await make_mongo()


# --- helpers --------------------------------------------------------------------------------------


def full_key(key_id: str, provider_id: str = "openai", material: str | None = None) -> APIKey:
    return APIKey(
        id=key_id,
        provider_id=provider_id,
        encrypted_material=material or "v1:bm9uY2U=:Y2lwaGVydGV4dA==",
        fingerprint="...wxyz",
        limits=KeyLimits(requests_per_minute=60, tokens_per_minute=90_000, spend_per_month=12.5),
        weight=2.5,
        tags=frozenset({"prod", "eu"}),
        metadata={"team": "search", "a.b": {"$n": [1, 2.5, None, 2**70]}},
        models=frozenset({"gpt-4o", "gpt-4o-mini"}),
        excluded_models=frozenset({"o1"}),
        usage=KeyUsage(requests=3, prompt_tokens=17, cost_usd=0.1 + 0.2, last_used_at=T0 + 0.1),
        state_reason="imported",
        created_at=T0 - 1 / 3,
        state_changed_at=time.time() + 1 / 7,
    )


def dump(key: APIKey | None) -> dict[str, Any] | None:
    if key is None:
        return None
    return {**key.model_dump(), "encrypted_material": key.encrypted_material}


def policies() -> list[Policy]:
    return [
        Policy.model_validate(
            {"name": "default", "scope": "default", "objective": RoutingObjective.FAIRNESS}
        ),
        Policy.model_validate(
            {
                "name": "team-a",
                "scope": "client:team-a",
                "budgets": ["team-a-monthly"],
                "fallback": ["gpt-4o-mini", {"model": "claude-3-5-haiku", "provider": "x"}],
                "retry": {"max_attempts": 3, "deadline_seconds": 12.5},
                "client_limits": {"requests_per_minute": 30},
                "deny_tags": ["a.b", "$weird"],
            }
        ),
    ]


def budgets() -> list[Budget]:
    return [
        Budget(id="global-day", scope="global", limit_usd=10.0 / 3, period="day"),
        Budget(
            id="team-a-monthly",
            scope="client",
            scope_value="team-a",
            limit_usd=250.0,
            period="month",
            enforcement="soft",
        ),
    ]


def has_index(info: dict[str, Any], fields: list[str], ttl: int | None = None) -> bool:
    """By fields, not name or direction: nx-27017 reports its own names, all ascending."""
    return any(
        [name for name, _ in spec["key"]] == fields
        and (ttl is None or spec.get("expireAfterSeconds") == ttl)
        for spec in info.values()
    )


async def all_documents(db: Any) -> dict[str, list[Raw]]:
    return {
        name: [raw async for raw in db[name].find({})]
        for name in sorted(await db.list_collection_names())
    }


# --- extra contract tests (MongoDB specifics of the shared behaviour) -----------------------------


async def test_key_round_trips_every_field(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    key = full_key("k1")
    await store.put_key(key)
    assert dump(await store.get_key("k1")) == dump(key)
    (listed,) = await store.list_keys("openai")
    assert dump(listed) == dump(key)


async def test_listing_keeps_first_insertion_order(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    for key_id, provider in [("k1", "a"), ("k2", "b"), ("k3", "a"), ("k4", "b")]:
        await store.put_key(full_key(key_id, provider))
    await store.put_key(full_key("k3", "b"))  # moves provider, keeps its place
    await store.delete_key("k2")
    await store.put_key(full_key("k2", "b"))  # deleted then re-added: goes last
    assert [k.id for k in await store.list_keys()] == ["k1", "k3", "k4", "k2"]
    assert [k.id for k in await store.list_keys("a")] == ["k1"]
    assert [k.id for k in await store.list_keys("b")] == ["k3", "k4", "k2"]


async def test_a_cooldown_for_an_unregistered_id_is_not_a_key(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    await store.set_cooldown("ghost", T0 + 5)
    assert await store.get_key("ghost") is None
    assert await store.list_keys() == []
    t = contract.transition("ghost", KeyState.AVAILABLE, KeyState.THROTTLED)
    assert not await store.compare_and_set_state("ghost", KeyState.AVAILABLE, t)
    await store.put_key(contract.make_key("ghost"))  # registering it keeps the cooldown
    assert await store.get_cooldown("ghost", T0) == T0 + 5
    assert [k.id for k in await store.list_keys()] == ["ghost"]


async def test_plaintext_material_is_refused(make_mongo: StoreMaker, raw_db: Any) -> None:
    store = await make_mongo()
    secret = "sk-proj-" + secrets.token_urlsafe(24)
    with pytest.raises(ValueError, match="not KeyEncryptor ciphertext") as caught:
        await store.put_key(APIKey(id="k1", provider_id="openai", encrypted_material=secret))
    assert secret not in str(caught.value)
    assert await raw_db["keys"].count_documents({}) == 0


async def test_audit_is_capped_and_decisions_expire(make_mongo: StoreMaker, raw_db: Any) -> None:
    store = await make_mongo(audit_limit=5, decision_ttl_seconds=120)
    records = [
        contract.transition(f"k{i % 3}", KeyState.AVAILABLE, KeyState.DISABLED, f"r{i}", T0 + i)
        for i in range(9)
    ]
    for record in records:
        await store.append_audit(record)
    assert await store.list_audit() == records[-5:]
    assert await store.list_audit("k0") == [records[6]]
    assert await store.list_audit("k1", limit=1) == [records[7]]
    assert await store.list_audit("k0", limit=-1) == []
    await store.record_decision(contract.decision("req_1"))
    (raw,) = [d async for d in raw_db["decisions"].find({})]
    assert 100 < (raw["expire_at"] - datetime.now(UTC)).total_seconds() <= 120
    assert has_index(await raw_db["decisions"].index_information(), ["expire_at"], ttl=0)


async def test_commit_after_the_window_moved_on_changes_nothing(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    old = await store.reserve([contract.request_for("a", tokens=100)], T0)
    assert isinstance(old, Reservation)
    assert isinstance(
        await store.reserve([contract.request_for("a", tokens=10)], T0 + 70), Reservation
    )
    await store.commit(old, {"tokens": 900})
    await store.release(old)
    assert await contract.used(store, "a", contract.TPM, T0 + 70) == 10.0
    assert await contract.used(store, "a", contract.RPM, T0 + 70) == 1.0


async def test_ping_is_false_when_the_server_is_unreachable() -> None:
    store = MongoStateStore("mongodb://127.0.0.1:1", server_selection_timeout_ms=200)
    try:
        assert await store.ping() is False
    finally:
        await store.close()


# --- the memory store and the MongoDB store agree, step by step -----------------------------------


@pytest.mark.parametrize("seed", range(3))
async def test_random_sequences_match_the_memory_store(seed: int, make_mongo: StoreMaker) -> None:
    await assert_matches_memory_store(await make_mongo(), seed, steps=250)


# --- replicas -------------------------------------------------------------------------------------

RPM10 = (WindowLimit("requests", 60.0, 10.0),)


async def test_replicas_never_overshoot_a_key_limit_together(make_mongo: StoreMaker) -> None:
    await assert_replicas_never_overshoot([await make_mongo() for _ in range(4)], T0)


async def test_a_hard_shared_budget_admits_exactly_its_limit(make_mongo: StoreMaker) -> None:
    replicas = [await make_mongo() for _ in range(4)]
    key_ids = [f"k{i}" for i in range(5)]
    budget = WindowLimit("requests", 3_600.0, 10.0)
    shared = (SharedCounter("budget:global", budget, 1.0),)
    roomy = (WindowLimit("requests", 60.0, 1_000.0),)
    rng = random.Random(5)

    async def one(i: int) -> Reservation | ReservationRefusal:
        order = rng.sample(key_ids, len(key_ids))
        candidates = [ReservationRequest(k, roomy, {"requests": 1}, shared) for k in order]
        return await replicas[i % 4].reserve(candidates, T0)

    results = await asyncio.gather(*(one(i) for i in range(100)))
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(granted) == 10
    (usage,) = await replicas[1].window_usage("budget:global", [budget], T0)
    assert usage.used == 10.0
    per_key = [await contract.used(replicas[2], k, roomy[0], T0) for k in key_ids]
    assert sum(per_key) == 10.0  # every rolled-back key charge was taken back out


async def test_keys_and_a_budget_together_waste_no_capacity(make_mongo: StoreMaker) -> None:
    """Five keys of 10/min behind a budget of 30: both limits hold, and no request is refused
    while both still had room (a half-applied reservation of another replica is waited for,
    not mistaken for a full counter)."""
    replicas = [await make_mongo() for _ in range(4)]
    key_ids = [f"k{i}" for i in range(5)]
    budget = WindowLimit("requests", 3_600.0, 30.0)
    shared = (SharedCounter("budget:team", budget, 1.0),)
    rng = random.Random(3)

    async def one(i: int) -> Reservation | ReservationRefusal:
        order = rng.sample(key_ids, len(key_ids))
        candidates = [ReservationRequest(k, RPM10, {"requests": 1}, shared) for k in order]
        return await replicas[i % 4].reserve(candidates, T0)

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = Counter(r.key_id for r in results if isinstance(r, Reservation))
    assert sum(granted.values()) == 30
    assert max(granted.values()) <= 10
    (usage,) = await replicas[0].window_usage("budget:team", [budget], T0)
    assert usage.used == 30.0
    for key_id in key_ids:
        assert await contract.used(replicas[3], key_id, RPM10[0], T0) == granted[key_id]


WORKER = """
import asyncio, json, random, sys
from apikeyrouter.domain.interfaces.state_store import (
    Reservation, ReservationRequest, SharedCounter, WindowLimit)
from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore

async def main(url, database, seed):
    store = MongoStateStore(url, database=database)
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(4)]
    rpm = (WindowLimit("requests", 60.0, 10.0),)
    shared = (SharedCounter("budget:procs", WindowLimit("requests", 3600.0, 25.0), 1.0),)
    async def one():
        order = rng.sample(keys, len(keys))
        return await store.reserve(
            [ReservationRequest(k, rpm, {"requests": 1}, shared) for k in order], 1000.0)
    assert await store.ping()
    print("ready", flush=True)
    sys.stdin.readline()  # every worker starts at once: the test's "go"
    results = await asyncio.gather(*(one() for _ in range(40)))
    await store.close()
    print(json.dumps([r.key_id for r in results if isinstance(r, Reservation)]))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_processes_never_overshoot_together(
    make_mongo: StoreMaker, nx_server: NxServer, mongo_database: str
) -> None:
    store = await make_mongo()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            nx_server.url,
            mongo_database,
            str(seed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in range(3)
    ]
    for worker in workers:  # imported and connected
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 60)
        assert line == b"ready\n", (line, worker.returncode)
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
    await asyncio.gather(*(w.stdin.drain() for w in workers if w.stdin is not None))
    granted: Counter[str] = Counter()
    for worker in workers:
        out, err = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == 0, err.decode()
        granted.update(json.loads(out))
    assert sum(granted.values()) == 25
    assert max(granted.values()) <= 10
    budget = WindowLimit("requests", 3_600.0, 25.0)
    (usage,) = await store.window_usage("budget:procs", [budget], T0)
    assert usage.used == 25.0


# --- the multi-document protocol, step by step ----------------------------------------------------


async def test_a_failed_swap_rolls_back_the_documents_already_written(
    make_mongo: StoreMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = await make_mongo(), await make_mongo()
    budget = WindowLimit("spend", 3_600.0, 1.0)
    request = ReservationRequest(
        "k1", RPM10, {"requests": 1}, (SharedCounter("z-budget", budget, 0.25),)
    )
    real_swap = mongo_store._swap
    order: list[str] = []

    async def racing_swap(collection: Any, expected_rev: int | None, doc: Raw) -> bool:
        order.append(doc["_id"])
        if order == ["k1", "z-budget"]:
            # Another replica charges the budget between our read and our swap of it.
            await other.charge("z-budget", budget, 0.25, T0)
        return await real_swap(collection, expected_rev, doc)

    monkeypatch.setattr(mongo_store, "_swap", racing_swap)
    result = await store.reserve([request], T0)
    assert isinstance(result, Reservation)
    # Id order, the key first; our budget swap loses to the other replica's charge, the key is
    # rolled back (to its pre-image, no swap needed) and the whole reservation retried.
    assert order == ["k1", "z-budget", "z-budget", "k1", "z-budget"]
    monkeypatch.undo()
    # The first attempt's key charge was rolled back; the retry charged it once.
    assert await contract.used(store, "k1", RPM10[0], T0) == 1.0
    (usage,) = await store.window_usage("z-budget", [budget], T0)
    assert usage.used == 0.5


async def test_an_unsettled_marker_delays_a_refusal_until_it_expires(
    make_mongo: StoreMaker, raw_db: Any
) -> None:
    store = await make_mongo(settle_seconds=0.3)
    for _ in range(10):
        assert isinstance(await store.reserve([contract.request_for("a")], T0), Reservation)
    # A replica died half-way through a reservation on "a": its marker is still live.
    deadline = time.time() + 0.4
    await raw_db["windows"].update_one(
        {"_id": "a"}, {"$set": {"p": {"dead0writer": deadline}, "rev": new_rev()}}
    )
    started = time.monotonic()
    refusal = await store.reserve([contract.request_for("a")], T0)
    waited = time.monotonic() - started
    assert isinstance(refusal, ReservationRefusal)
    assert refusal.retry_at == T0 + 61
    assert 0.2 < waited < 5.0  # looked again until the marker expired, then refused
    # An expired marker is dropped by the next write and never delays anyone again.
    await store.charge("a", contract.RPM, -1.0, T0)
    raw = await raw_db["windows"].find_one({"_id": "a"})
    assert raw["p"] == {}


async def test_contention_that_never_ends_raises_instead_of_hanging(
    make_mongo: StoreMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_mongo(contention_timeout_seconds=0.2)

    async def always_lose(collection: Any, expected_rev: int | None, doc: Raw) -> bool:
        return False

    monkeypatch.setattr(mongo_store, "_swap", always_lose)
    with pytest.raises(mongo_store.StoreContentionError):
        await store.reserve([contract.request_for("a")], T0)
    monkeypatch.undo()
    assert await contract.used(store, "a", contract.RPM, T0) == 0.0


async def test_circuit_probe_race_across_replicas(make_mongo: StoreMaker) -> None:
    replicas = [await make_mongo() for _ in range(3)]
    await replicas[0].record_failure("a", T0, CircuitPolicy(failure_threshold=1))
    grants = await asyncio.gather(
        *(replicas[i % 3].try_acquire_probe("a", T0 + 30) for i in range(30))
    )
    assert sum(grants) == 1
    assert (await replicas[2].circuit("a", T0 + 30)).probe_in_flight


# --- durable records ------------------------------------------------------------------------------


async def test_everything_survives_a_new_store_instance(
    nx_server: NxServer, mongo_database: str
) -> None:
    encryptor = KeyEncryptor(generate_master_key())
    key = full_key("k1", material=encryptor.encrypt("sk-live-0123456789abcdef", "k1"))
    throttle = contract.transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "429", T0)
    first = MongoStateStore(nx_server.url, database=mongo_database)
    assert await first.initialize() == [1, 2]
    await first.put_key(key)
    await first.put_key(full_key("k2", "anthropic"))
    assert await first.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, T0 + 30)
    manual = contract.transition("k2", KeyState.AVAILABLE, KeyState.DISABLED, "operator", T0 + 1)
    await first.append_audit(manual)
    assert await first.save_policies(policies()) == 1
    for budget in budgets():
        await first.save_budget(budget)
    day = date(2026, 11, 29)
    for cost in (0.1, 0.2):
        await first.record_usage(
            key_id="k1",
            provider_id="openai",
            model="gpt-4o",
            client_id="team-a",
            day=day,
            requests=1,
            prompt_tokens=100,
            completion_tokens=20,
            cost_usd=cost,
        )
    await first.record_decision(contract.decision("req_1"))
    await first.set_cooldown("k2", T0 + 45.125)
    await first.record_failure("k2", T0, CircuitPolicy(failure_threshold=1, open_seconds=30))
    reservation = await first.reserve([contract.request_for("k1", tokens=300)], T0)
    assert isinstance(reservation, Reservation)
    await first.commit(reservation, {"tokens": 120})
    await first.close()

    second = MongoStateStore(nx_server.url, database=mongo_database)
    try:
        assert await second.initialize() == []  # nothing left to migrate
        stored = await second.get_key("k1")
        assert stored is not None
        assert encryptor.decrypt(stored.encrypted_material, "k1") == "sk-live-0123456789abcdef"
        expected = key.model_copy(
            update={
                "state": KeyState.THROTTLED,
                "state_reason": "429",
                "state_changed_at": T0,
                "cooldown_until": T0 + 30,
            }
        )
        assert dump(stored) == dump(expected)
        assert [k.id for k in await second.list_keys()] == ["k1", "k2"]
        assert await second.list_audit() == [throttle, manual]
        assert await second.load_policies() == policies()
        assert await second.load_budgets() == budgets()
        (totals,) = await second.usage_summary(group_by=("key_id", "client_id", "day"))
        assert totals.model_dump() == {
            "key_id": "k1",
            "provider_id": None,
            "model": None,
            "client_id": "team-a",
            "day": "2026-11-29",
            "requests": 2,
            "prompt_tokens": 200,
            "completion_tokens": 40,
            "cost_usd": 0.3,
        }
        assert [d.request_id for d in await second.recent_decisions()] == ["req_1"]
        assert await second.get_cooldown("k1", T0) == T0 + 30
        assert await second.get_cooldown("k2", T0) == T0 + 45.125
        assert (await second.circuit("k2", T0 + 1)).state is CircuitState.OPEN
        assert await contract.used(second, "k1", contract.TPM, T0 + 1) == 120.0
    finally:
        await second.close()


async def test_usage_ledger_sums_per_group_and_filters(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    rows = [
        ("k1", "gpt-4o", "team-a", "2026-11-28", 0.5),
        ("k1", "gpt-4o", "team-a", "2026-11-29", 0.25),
        ("k1", "gpt-4o-mini", None, "2026-11-29", 0.125),
        ("k2", "gpt-4o", "team-b", "2026-11-30", 1.0),
    ]
    await asyncio.gather(
        *(
            store.record_usage(
                key_id=k,
                provider_id="openai",
                model=m,
                client_id=c,
                day=d,
                requests=1,
                prompt_tokens=10,
                completion_tokens=5,
                cost_usd=cost,
            )
            for k, m, c, d, cost in rows * 3  # concurrent adds to the same rows
        )
    )
    by_key = await store.usage_summary()
    assert [(t.key_id, t.requests, t.cost_usd) for t in by_key] == [
        ("k1", 9, 2.625),
        ("k2", 3, 3.0),
    ]
    window = await store.usage_summary(
        start_day="2026-11-29", end_day=date(2026, 11, 29), group_by=("model", "client_id")
    )
    assert [(t.model, t.client_id, t.prompt_tokens) for t in window] == [
        ("gpt-4o", "team-a", 30),
        ("gpt-4o-mini", None, 30),
    ]
    (total,) = await store.usage_summary(client_id="team-b", group_by=())
    assert (total.requests, total.completion_tokens, total.cost_usd) == (3, 15, 3.0)
    with pytest.raises(ValueError):
        await store.usage_summary(group_by=("tenant",))  # type: ignore[arg-type]


async def test_policies_are_saved_as_revisions_and_budgets_as_records(
    make_mongo: StoreMaker,
) -> None:
    store = await make_mongo()
    assert await store.load_policies() == []
    assert await store.save_policies(policies()) == 1
    assert await store.save_policies(policies()[:1]) == 2
    assert await store.load_policies() == policies()[:1]
    with pytest.raises(ValidationError):
        await store.save_policies([policies()[0], policies()[0]])
    revisions = await asyncio.gather(*(store.save_policies(policies()) for _ in range(5)))
    assert sorted(revisions) == [3, 4, 5, 6, 7]

    first, second = budgets()
    await store.save_budget(first)
    await store.save_budget(second)
    changed = first.model_copy(update={"limit_usd": 99.5})
    await store.save_budget(changed)  # an update keeps its place
    assert await store.load_budgets() == [changed, second]
    assert await store.delete_budget(first.id) is True
    assert await store.delete_budget(first.id) is False
    assert await store.load_budgets() == [second]


async def test_an_interrupted_state_change_still_reaches_the_audit_trail(
    make_mongo: StoreMaker, raw_db: Any
) -> None:
    store = await make_mongo()
    await store.put_key(contract.make_key("k1"))
    move = contract.transition("k1", KeyState.AVAILABLE, KeyState.INVALID, "401", T0 + 0.1)
    # What compare_and_set_state writes in its one atomic step, as if the process then died.
    entry = {"_id": "audit0crash", "seq": time.time_ns(), **move.model_dump(mode="json")}
    await raw_db["keys"].update_one(
        {"_id": "k1"}, {"$set": {"state": "invalid", "outbox.audit0crash": entry}}
    )
    assert await store.list_audit() == []
    restarted = await make_mongo()  # initialize() delivers the outbox
    assert await restarted.list_audit("k1") == [move]
    raw = await raw_db["keys"].find_one({"_id": "k1"})
    assert raw["outbox"] == {}
    assert await restarted.recover_outboxes() == 0  # and only once


# --- security at rest -----------------------------------------------------------------------------


async def test_raw_documents_contain_no_key_material(
    make_mongo: StoreMaker, raw_db: Any, nx_server: NxServer, mongo_database: str
) -> None:
    store = await make_mongo()
    encryptor = KeyEncryptor(generate_master_key())
    canary = "sk-" + secrets.token_urlsafe(40)
    key = APIKey(
        id="kc1",
        provider_id="openai",
        encrypted_material=encryptor.encrypt(canary, "kc1"),
        fingerprint="..." + canary[-4:],
        metadata={"note": "canary key"},
    )
    await store.put_key(key)
    move = contract.transition("kc1", KeyState.AVAILABLE, KeyState.THROTTLED, "429", T0)
    assert await store.compare_and_set_state("kc1", KeyState.AVAILABLE, move, T0 + 5)
    assert isinstance(await store.reserve([contract.request_for("kc1")], T0), Reservation)
    await store.record_failure("kc1", T0, CircuitPolicy())
    await store.record_decision(contract.decision("req_canary"))
    await store.record_usage(
        key_id="kc1",
        provider_id="openai",
        model="gpt-4o",
        client_id=None,
        day="2026-11-29",
        requests=1,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=0.01,
    )
    stored = await store.get_key("kc1")
    assert stored is not None
    assert encryptor.decrypt(stored.encrypted_material, "kc1") == canary

    documents = await all_documents(raw_db)
    for name in ("keys", "audit", "windows", "decisions", "usage_ledger", "circuits"):
        assert documents[name], name
    pieces = {canary[i : i + 8] for i in range(len(canary) - 7)}
    for collection, docs in documents.items():
        for raw in docs:
            text = json_util.dumps(raw)
            assert canary not in text, collection
            leaked = [piece for piece in pieces if piece in text]
            assert not leaked, f"{collection} document holds part of the secret"
    # The files the server writes hold no plaintext either.
    for path in nx_server.data_dir.glob(f"{mongo_database}.db*"):
        data = path.read_bytes()
        assert not [piece for piece in pieces if piece.encode() in data], path.name


# --- schema migrations ----------------------------------------------------------------------------


async def test_migrations_bring_a_fresh_database_to_the_latest_version(raw_db: Any) -> None:
    assert await schema.schema_version(raw_db) == 0
    applied = await schema.migrate(raw_db)
    assert [m.version for m in applied] == [1, 2] == [m.version for m in schema.MIGRATIONS]
    assert await schema.schema_version(raw_db) == schema.LATEST_VERSION
    assert [r["version"] for r in await schema.schema_history(raw_db)] == [1, 2]
    assert set(schema.COLLECTIONS) <= set(await raw_db.list_collection_names())
    assert has_index(await raw_db["windows"].index_information(), ["exp"], ttl=0)
    assert has_index(await raw_db["audit"].index_information(), ["key_id", "seq"])
    assert await schema.migrate(raw_db) == []  # running again applies nothing
    assert [r["version"] for r in await schema.schema_history(raw_db)] == [1, 2]


async def test_v2_backfills_decisions_stored_before_it(raw_db: Any) -> None:
    assert [m.version for m in await schema.migrate(raw_db, target=1)] == [1]
    at = float(int(time.time()) - 3_600)
    legacy = {"seq": 1, "at": at, "request_id": "req_old", "json": "{}"}
    await raw_db["decisions"].insert_one(legacy)
    assert [m.version for m in await schema.migrate(raw_db)] == [2]
    raw = await raw_db["decisions"].find_one({"request_id": "req_old"})
    assert raw["expire_at"] == datetime.fromtimestamp(at + 7 * 86_400, tz=UTC)
    assert has_index(await raw_db["decisions"].index_information(), ["expire_at"], ttl=0)


async def test_a_newer_schema_is_refused(make_mongo: StoreMaker, raw_db: Any) -> None:
    await make_mongo()
    await raw_db["meta"].update_one({"_id": "schema"}, {"$set": {"version": 99}})
    with pytest.raises(ConfigurationError, match="newer than this apikeyrouter"):
        await make_mongo()


def load_script(name: str) -> Any:
    """A script under ``scripts/`` as a module, to run its CLI in-process (a subprocess would
    spend seconds importing the package again)."""
    spec = importlib.util.spec_from_file_location(f"akr_script_{name}", REPO / "scripts" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_migrate_db_cli(
    nx_server: NxServer, mongo_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = load_script("migrate_db.py")
    assert await cli.run(nx_server.url, mongo_database, status_only=True) == 0
    status = capsys.readouterr().out
    assert f"database {mongo_database}: schema version 0 (latest 2)" in status
    assert "pending v1: create collections and indexes" in status
    assert await cli.run(nx_server.url, mongo_database, status_only=False) == 0
    applied = capsys.readouterr().out
    assert "applied v1: create collections and indexes\n" in applied
    assert "applied v2: decisions expire" in applied
    assert "schema version now 2" in applied
    assert await cli.run(nx_server.url, mongo_database, status_only=False) == 0
    again = capsys.readouterr().out
    assert "nothing to apply" in again
    assert "  applied v1: create collections and indexes at " in again
    unreachable = cli.run("mongodb://127.0.0.1:1", "x", status_only=True, timeout_ms=200)
    assert await unreachable == 1
    assert "error:" in capsys.readouterr().err


# --- master key rotation --------------------------------------------------------------------------


async def test_rotation_re_encrypts_every_key_for_the_new_master_key_only(
    make_mongo: StoreMaker, raw_db: Any
) -> None:
    store = await make_mongo()
    old, new = KeyEncryptor(generate_master_key()), KeyEncryptor(generate_master_key())
    secrets_by_id = {f"k{i}": f"sk-test-{i}-{secrets.token_hex(12)}" for i in range(5)}
    for key_id, secret in secrets_by_id.items():
        await store.put_key(full_key(key_id, material=old.encrypt(secret, key_id)))
    before = {raw["_id"]: raw["encrypted_material"] async for raw in raw_db["keys"].find({})}

    dry = await rotate_master_key(store, old, new, dry_run=True)
    assert (dry.total, dry.rotated, dry.ok) == (5, 5, True)
    assert {raw["_id"]: raw["encrypted_material"] async for raw in raw_db["keys"].find({})} == (
        before
    )

    report = await rotate_master_key(store, old, new)
    assert (report.total, report.rotated, report.already_rotated, report.ok) == (5, 5, 0, True)
    after = {raw["_id"]: raw["encrypted_material"] async for raw in raw_db["keys"].find({})}
    for key_id, secret in secrets_by_id.items():
        assert after[key_id] != before[key_id]
        assert new.decrypt(after[key_id], key_id) == secret
        with pytest.raises(ConfigurationError):
            old.decrypt(after[key_id], key_id)

    again = await rotate_master_key(store, old, new)
    assert (again.rotated, again.already_rotated) == (0, 5)
    # A stale writer cannot put back an old ciphertext over a rotated one.
    assert not await store.swap_key_material("k0", before["k0"], old.encrypt("x", "k0"))


async def test_rotation_reports_keys_it_cannot_decrypt(make_mongo: StoreMaker) -> None:
    store = await make_mongo()
    old, new, other = (KeyEncryptor(generate_master_key()) for _ in range(3))
    await store.put_key(full_key("good", material=old.encrypt("sk-good", "good")))
    await store.put_key(full_key("alien", material=other.encrypt("sk-alien", "alien")))
    report = await rotate_master_key(store, old, new)
    assert (report.rotated, report.failed, report.ok) == (1, ["alien"], False)
    alien = await store.get_key("alien")
    assert alien is not None
    assert other.decrypt(alien.encrypted_material, "alien") == "sk-alien"  # left untouched


async def test_rotation_works_on_any_store_through_the_contract() -> None:
    store = InMemoryStateStore()
    old, new = KeyEncryptor(generate_master_key()), KeyEncryptor(generate_master_key())
    for i in range(3):
        await store.put_key(full_key(f"k{i}", material=old.encrypt(f"sk-{i}", f"k{i}")))
    report = await rotate_master_key(store, old, new)
    assert (report.rotated, report.ok) == (3, True)
    for key in await store.list_keys():
        assert new.decrypt(key.encrypted_material, key.id) == f"sk-{key.id[1:]}"


async def test_rotate_master_key_cli(
    make_mongo: StoreMaker,
    nx_server: NxServer,
    mongo_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = await make_mongo()
    old_key, new_key = generate_master_key(), generate_master_key()
    old = KeyEncryptor(old_key)
    for i in range(3):
        await store.put_key(full_key(f"k{i}", material=old.encrypt(f"sk-{i}", f"k{i}")))
    monkeypatch.setenv("APIKEYROUTER_MASTER_KEY", old_key)
    monkeypatch.setenv("APIKEYROUTER_NEW_MASTER_KEY", new_key)
    cli = load_script("rotate_master_key.py")
    argv = ["--url", nx_server.url, "--database", mongo_database]
    assert await cli.run(cli._parser().parse_args([*argv, "--dry-run"])) == 0
    assert "would re-encrypt 3 of 3 keys" in capsys.readouterr().out
    assert await cli.run(cli._parser().parse_args(argv)) == 0
    captured = capsys.readouterr()
    assert "re-encrypted 3 of 3 keys; 0 already on the new master key" in captured.out
    for secret in (old_key, new_key):
        assert secret not in captured.out + captured.err
    new = KeyEncryptor(new_key)
    for key in await store.list_keys():
        assert new.decrypt(key.encrypted_material, key.id) == f"sk-{key.id[1:]}"
    monkeypatch.delenv("APIKEYROUTER_NEW_MASTER_KEY")
    assert await cli.run(cli._parser().parse_args(argv)) == 2
    assert "APIKEYROUTER_NEW_MASTER_KEY" in capsys.readouterr().err
