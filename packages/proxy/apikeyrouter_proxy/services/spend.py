"""Budget status and spend, read from the state store.

A budget's spend lives in the store (``budget:{id}:{period}`` counters, charged by the same
atomic reservation as the keys), so every replica sharing the store reports the same figure.
Reads are one ``window_usage`` call per budget, made only when someone asks (management API),
never on the request path, after the router's write-behind queue is flushed so the figure
includes every finished request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from apikeyrouter import ApiKeyRouter
from apikeyrouter.domain.models.cost_model import Budget, BudgetStatus


@dataclass(frozen=True, slots=True)
class BudgetReading:
    status: BudgetStatus
    reserved_usd: float


async def budget_reading(
    router: ApiKeyRouter, budget: Budget, now: float | None = None
) -> BudgetReading:
    at = time.time() if now is None else now
    await router.flush()  # finished requests' commits still queued for a shared store
    counter = router.cost.budget_counter(budget, at)
    (usage,) = await router.store.window_usage(counter.counter_id, [counter.limit], at)
    status = router.cost.budget_status(budget, usage.used, at)
    if usage.reserved:
        # In-flight estimates count against the budget too: a hard budget refuses on them.
        remaining = max(0.0, budget.limit_usd - usage.used - usage.reserved)
        status = status.model_copy(update={"remaining_usd": remaining})
    return BudgetReading(status, usage.reserved)


async def budget_readings(router: ApiKeyRouter, now: float | None = None) -> list[BudgetReading]:
    at = time.time() if now is None else now
    return [await budget_reading(router, budget, at) for budget in router.cost.budgets()]
