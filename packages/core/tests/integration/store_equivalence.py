"""A shared store must agree with the in-memory store step by step, bit for bit.

A seeded random sequence of reservations (with and without a shared budget counter), commits
(one at a time, or in a write-behind batch), releases, outside charges and clock jumps drives
both stores; after every step each window must read the same. Used by the Redis and MongoDB
store tests, as is the check that replicas racing for the same keys never overshoot a limit.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from apikeyrouter.domain.interfaces.state_store import (
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    SharedCounter,
    StateStore,
    WindowLimit,
)
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore


def random_limits(rng: random.Random) -> tuple[WindowLimit, ...]:
    return (
        WindowLimit("requests", 60.0, float(rng.randint(2, 6))),
        # A bucket width (13/60 s) that is not a binary fraction: exercises float rounding.
        WindowLimit("requests", 13.0, float(rng.randint(1, 3))),
        WindowLimit("tokens", 60.0, float(rng.choice([500, 1_000]))),
        WindowLimit("tokens", 3_600.0, 4_000.0),
        WindowLimit("spend", 3_600.0, 0.75),
    )


async def assert_matches_memory_store(store: StateStore, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    memory = InMemoryStateStore()
    key_ids = ["k0", "k1", "k2"]
    limits = {k: random_limits(rng) for k in key_ids}
    budget = WindowLimit("spend", 3_600.0, 1.25)
    now = 1_700_000_000.0 + rng.random() * 100
    pending: list[Reservation] = []
    outcomes: Counter[str] = Counter()

    for _ in range(steps):
        op = rng.random()
        if op < 0.5:
            tokens = rng.choice([0, rng.randint(1, 400), rng.randint(1, 400), 1_500])
            spend = rng.uniform(0.0, 0.2)
            shared = (SharedCounter("budget", budget, spend),) if rng.random() < 0.5 else ()
            candidates = [
                ReservationRequest(
                    k, limits[k], {"requests": 1, "tokens": tokens, "spend": spend}, shared
                )
                for k in rng.sample(key_ids, rng.randint(1, 3))
            ]
            expected = await memory.reserve(candidates, now)
            assert await store.reserve(candidates, now) == expected
            outcomes[type(expected).__name__] += 1
            if isinstance(expected, Reservation):
                pending.append(expected)
        elif op < 0.7 and pending:
            batch = []
            for _ in range(min(len(pending), rng.choice([1, 1, 2, 3]))):
                reservation = pending.pop(rng.randrange(len(pending)))
                actual: dict[str, float] = {"tokens": float(rng.randint(0, 600))}
                if rng.random() < 0.7:
                    actual["spend"] = rng.uniform(0.0, 0.3)
                await memory.commit(reservation, actual)
                batch.append((reservation, actual))
            if len(batch) == 1 and rng.random() < 0.5:
                await store.commit(*batch[0])
            else:  # what the write-behind queue sends
                await store.write_batch(batch, [])
        elif op < 0.8 and pending:
            reservation = pending.pop(rng.randrange(len(pending)))
            await memory.release(reservation)
            await store.release(reservation)
        elif op < 0.87:  # the provider reports usage we did not reserve (or less)
            key_id = rng.choice(key_ids)
            limit = rng.choice(limits[key_id])
            amount = rng.choice([1.0, 150.0, rng.uniform(-0.1, 0.3), -50.0])
            await memory.charge(key_id, limit, amount, now)
            await store.charge(key_id, limit, amount, now)
        else:
            now += rng.choice([0.1, 0.25, 0.9, 3.0, 11.5, 29.0, 61.0, 400.0, 3_700.0])
        for key_id in key_ids:
            assert await store.window_usage(key_id, limits[key_id], now) == (
                await memory.window_usage(key_id, limits[key_id], now)
            )
        assert await store.window_usage("budget", [budget], now) == (
            await memory.window_usage("budget", [budget], now)
        )
    # The sequence exercised both outcomes, not just one.
    assert outcomes["Reservation"] > 20
    assert outcomes["ReservationRefusal"] > 20


async def assert_replicas_never_overshoot(replicas: list[StateStore], t0: float) -> None:
    """Four replicas race 200 reservations for five keys of 10 requests a minute: exactly 10
    each are granted, and every refusal says when the window frees up."""
    key_ids = [f"k{i}" for i in range(5)]
    limit = (WindowLimit("requests", 60.0, 10.0),)
    rng = random.Random(11)

    async def one(i: int) -> Reservation | ReservationRefusal:
        order = rng.sample(key_ids, len(key_ids))
        candidates = [ReservationRequest(k, limit, {"requests": 1}) for k in order]
        return await replicas[i % len(replicas)].reserve(candidates, t0)

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = Counter(r.key_id for r in results if isinstance(r, Reservation))
    assert sum(granted.values()) == 50
    assert granted == dict.fromkeys(key_ids, 10)
    refusals = [r for r in results if isinstance(r, ReservationRefusal)]
    assert {r.retry_at for r in refusals} == {t0 + 61}  # bucket width 1 s, all charged at t0
    for key_id in key_ids:
        (usage,) = await replicas[0].window_usage(key_id, limit, t0)
        assert usage.used == 10.0
