"""Commits and decision records written off the request path, in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from apikeyrouter.domain.interfaces.state_store import (
    FinishedCommit,
    Reservation,
    WindowLimit,
)
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.orchestration.write_behind import BATCH_LIMIT, WriteBehind

TOKENS = WindowLimit("tokens", 60.0, 1_000_000)


def decision(n: int) -> RoutingDecision:
    return RoutingDecision(request_id=f"req_{n}", objective=RoutingObjective.QUOTA, model="m")


class CountingStore(InMemoryStateStore):
    """Records each write_batch call's sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    async def write_batch(
        self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
    ) -> None:
        self.batches.append((len(commits), len(decisions)))
        await super().write_batch(commits, decisions)


async def reserved(store: InMemoryStateStore, key_id: str, tokens: float) -> Reservation:
    from apikeyrouter.domain.interfaces.state_store import ReservationRequest

    got = await store.reserve([ReservationRequest(key_id, (TOKENS,), {"tokens": tokens})], 0.0)
    assert isinstance(got, Reservation)
    return got


async def tokens_used(store: InMemoryStateStore, key_id: str) -> float:
    (usage,) = await store.window_usage(key_id, [TOKENS], 1.0)
    return usage.used


async def test_requests_finishing_together_share_one_write() -> None:
    store = CountingStore()
    writer = WriteBehind(store, get_logger())
    reservations = [await reserved(store, f"k{n}", 100.0) for n in range(20)]
    for n, reservation in enumerate(reservations):  # no await in between: one batch
        assert writer.commit(reservation, {"tokens": 40.0})
        writer.decision(decision(n))
    assert writer.pending == 40
    await writer.flush()
    assert store.batches == [(20, 20)]
    assert [await tokens_used(store, f"k{n}") for n in range(20)] == [40.0] * 20
    stored = await store.recent_decisions(limit=100)
    assert [d.request_id for d in stored] == [f"req_{n}" for n in range(20)]
    assert (writer.commits_written, writer.decisions_written, writer.batches) == (20, 20, 1)


async def test_a_large_backlog_is_written_in_bounded_batches() -> None:
    store = CountingStore()
    writer = WriteBehind(store, get_logger())
    for n in range(BATCH_LIMIT + 10):
        writer.decision(decision(n))
    await writer.flush()
    assert store.batches == [(0, BATCH_LIMIT), (0, 10)]
    assert len(await store.recent_decisions(limit=1000)) == BATCH_LIMIT + 10


async def test_a_callback_runs_once_its_commit_is_in_the_store() -> None:
    store = CountingStore()
    writer = WriteBehind(store, get_logger())
    reservation = await reserved(store, "k", 100.0)
    seen: list[float] = []

    async def after() -> None:
        seen.append(await tokens_used(store, "k"))

    writer.commit(reservation, {"tokens": 30.0}, after)
    await writer.flush()
    assert seen == [30.0]


async def test_a_full_queue_refuses_commits_and_drops_decisions_never_blocking() -> None:
    store = InMemoryStateStore()
    writer = WriteBehind(store, get_logger(), capacity=3)
    reservation = await reserved(store, "k", 10.0)
    assert [writer.commit(reservation, {"tokens": 1.0}) for _ in range(4)] == [
        True,
        True,
        True,
        False,  # the caller writes this one itself: a commit is never lost
    ]
    for n in range(5):
        writer.decision(decision(n))
    assert writer.decisions_dropped == 2
    await writer.flush()
    assert len(await store.recent_decisions(limit=100)) == 3


async def test_a_failing_store_never_breaks_routing_and_is_counted() -> None:
    class Broken(InMemoryStateStore):
        async def write_batch(
            self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
        ) -> None:
            raise ConnectionError("store down")

    store = Broken()
    writer = WriteBehind(store, get_logger())
    writer.commit(await reserved(store, "k", 10.0), {"tokens": 1.0})
    writer.decision(decision(1))
    await writer.flush()
    assert (writer.commits_failed, writer.decisions_dropped) == (1, 1)
    assert await tokens_used(store, "k") == 10.0  # the estimate stands: the safe side


async def test_items_queued_while_a_batch_is_written_go_in_the_next() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(CountingStore):
        async def write_batch(
            self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
        ) -> None:
            entered.set()
            await release.wait()
            await super().write_batch(commits, decisions)

    store = Slow()
    writer = WriteBehind(store, get_logger())
    reservation = await reserved(store, "k", 10.0)
    order: list[str] = []

    async def first() -> None:
        order.append("first")

    async def second() -> None:
        order.append("second")

    writer.commit(reservation, {"tokens": 5.0}, first)
    await entered.wait()  # the drain task has taken the first commit and waits in the store
    writer.commit(reservation, {"tokens": 5.0}, second)
    release.set()
    await writer.flush()
    assert store.batches == [(1, 0), (1, 0)]
    assert order == ["first", "second"]


async def test_callbacks_run_with_their_own_batch_when_a_backlog_remains() -> None:
    store = CountingStore()
    writer = WriteBehind(store, get_logger())
    reservation = await reserved(store, "k", 10.0)
    seen_after_batches: list[int] = []

    async def first() -> None:
        seen_after_batches.append(len(store.batches))

    writer.commit(reservation, {"tokens": 1.0}, first)
    for _ in range(BATCH_LIMIT):  # more than one batch's worth behind it
        writer.commit(reservation, {"tokens": 1.0})
    await writer.flush()
    assert store.batches == [(BATCH_LIMIT, 0), (1, 0)]
    assert seen_after_batches == [1]  # right after its own batch, not after the backlog
