"""Decision records written off the request path: nothing lost on flush, bounded queue."""

from __future__ import annotations

from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.orchestration.decision_log import BackgroundDecisionLog


def decision(n: int) -> RoutingDecision:
    return RoutingDecision(request_id=f"req_{n}", objective=RoutingObjective.QUOTA, model="m")


async def test_submitted_decisions_are_all_stored_after_flush() -> None:
    store = InMemoryStateStore()
    log = BackgroundDecisionLog(store, get_logger())
    for n in range(25):
        log.submit(decision(n))
    await log.flush()
    stored = await store.recent_decisions(limit=100)
    assert [d.request_id for d in stored] == [f"req_{n}" for n in range(25)]
    assert (log.written, log.dropped) == (25, 0)


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    store = InMemoryStateStore()
    log = BackgroundDecisionLog(store, get_logger(), capacity=3)
    for n in range(5):  # no await in between: the drain task has not run yet
        log.submit(decision(n))
    assert log.dropped == 2
    await log.flush()
    assert len(await store.recent_decisions(limit=100)) == 3


async def test_a_failing_store_never_breaks_routing() -> None:
    class Broken(InMemoryStateStore):
        async def record_decision(self, decision: RoutingDecision) -> None:
            raise ConnectionError("store down")

    log = BackgroundDecisionLog(Broken(), get_logger())
    log.submit(decision(1))
    await log.flush()
    assert (log.written, log.dropped) == (0, 1)
