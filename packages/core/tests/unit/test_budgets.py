"""Budgets: validation, scope matching, calendar periods, counters, soft/shadow events, and hard
budgets holding under 100 concurrent reservations against the real in-memory store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from apikeyrouter.domain.components.cost_controller import (
    HARD_LIMIT_TOLERANCE_USD,
    NON_BLOCKING_LIMIT_USD,
    CostController,
)
from apikeyrouter.domain.interfaces.state_store import (
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    SharedCounter,
)
from apikeyrouter.domain.models.cost_model import (
    Budget,
    BudgetExceededError,
    ModelPrice,
    period_bounds,
    period_index,
)
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.utils.exceptions import ApiKeyRouterError, NoKeyAvailableError
from pydantic import ValidationError


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


NOW = ts(2026, 11, 29, 12, 0, 0)
PRICES = {
    "gpt-4o": ModelPrice(input=2.5, output=10.0, cached_input=1.25),
    "claude-sonnet-4": ModelPrice(input=3.0, output=15.0, aliases=("claude-sonnet-4-0",)),
    "tiny": ModelPrice(input=1.0, output=2.0),
}


def budget(**overrides: Any) -> Budget:
    fields: dict[str, Any] = {
        "id": "b1",
        "scope": "global",
        "limit_usd": 10.0,
        "period": "day",
        "enforcement": "hard",
    }
    fields.update(overrides)
    return Budget(**fields)


@pytest.fixture
def controller() -> CostController:
    return CostController(PRICES, clock=lambda: NOW)


# --- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"scope": "provider"}, "scope_value is required"),
        ({"scope_value": "openai"}, "must be empty for a global"),
        ({"period": "custom"}, "period_seconds is required"),
        ({"period_seconds": 3600}, "only allowed with period 'custom'"),
        ({"limit_usd": 0}, "greater than 0"),
        ({"limit_usd": float("inf")}, "finite"),
        ({"id": "has:colon"}, "pattern"),
        ({"enforcement": "strict"}, "enforcement"),
        ({"scope": "tenant", "scope_value": "x"}, "scope"),
        ({"limit": 5}, "Extra inputs"),
        ({"period": "custom", "period_seconds": 10}, "greater than or equal to 60"),
    ],
)
def test_budget_validation(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        budget(**fields)


# --- scope matching ----------------------------------------------------------------------------
def test_budgets_for_matches_every_scope(controller: CostController) -> None:
    budgets = [
        budget(id="all"),
        budget(id="prov", scope="provider", scope_value="openai-main"),
        budget(id="other-prov", scope="provider", scope_value="anthropic"),
        budget(id="key", scope="key", scope_value="key_1"),
        budget(id="model", scope="model", scope_value="gpt-4o"),
        budget(id="client", scope="client", scope_value="team-a"),
        budget(id="client-b", scope="client", scope_value="team-b"),
    ]
    for b in budgets:
        controller.add_budget(b)
    found = controller.budgets_for(
        provider_id="openai-main", key_id="key_1", model="gpt-4o-2024-08-06", client_id="team-a"
    )
    assert [b.id for b in found] == ["all", "prov", "key", "model", "client"]
    assert [b.id for b in controller.budgets_for()] == ["all"]
    assert [b.id for b in controller.budgets_for(client_id="team-b")] == ["all", "client-b"]


def test_model_budget_on_an_alias_covers_dated_names(controller: CostController) -> None:
    controller.add_budget(budget(id="sonnet", scope="model", scope_value="claude-sonnet-4-0"))
    assert [b.id for b in controller.budgets_for(model="claude-sonnet-4-20250514")] == ["sonnet"]
    assert [b.id for b in controller.budgets_for(model="claude-sonnet-4-0")] == ["sonnet"]
    assert controller.budgets_for(model="gpt-4o") == []


def test_add_replaces_and_remove_deletes(controller: CostController) -> None:
    controller.add_budget(budget(id="x", limit_usd=5))
    controller.add_budget(budget(id="x", limit_usd=7))
    assert [b.limit_usd for b in controller.budgets()] == [7]
    assert controller.remove_budget("x") is True
    assert controller.remove_budget("x") is False
    assert controller.budgets_for() == []


# --- periods -----------------------------------------------------------------------------------
def test_day_period() -> None:
    b = budget(period="day")
    assert period_index(b, NOW) == "2026-11-29"
    assert period_bounds(b, NOW) == (ts(2026, 11, 29), ts(2026, 11, 30))
    assert period_index(b, ts(2026, 11, 29, 23, 59, 59)) == "2026-11-29"
    assert period_index(b, ts(2026, 11, 30)) == "2026-11-30"


def test_month_period_and_rollover() -> None:
    b = budget(period="month")
    assert period_index(b, NOW) == "2026-11"
    assert period_bounds(b, NOW) == (ts(2026, 11, 1), ts(2026, 12, 1))
    assert period_index(b, ts(2026, 11, 30, 23, 59, 59)) == "2026-11"
    assert period_index(b, ts(2026, 12, 1)) == "2026-12"


def test_december_to_january() -> None:
    b = budget(period="month")
    late = ts(2026, 12, 31, 23, 59, 59)
    assert period_index(b, late) == "2026-12"
    assert period_bounds(b, late) == (ts(2026, 12, 1), ts(2027, 1, 1))
    assert period_index(b, ts(2027, 1, 1)) == "2027-01"
    day = budget(period="day")
    assert period_bounds(day, late) == (ts(2026, 12, 31), ts(2027, 1, 1))


def test_leap_february() -> None:
    start, end = period_bounds(budget(period="month"), ts(2028, 2, 15))
    assert end - start == 29 * 86_400


def test_custom_period_is_epoch_aligned() -> None:
    b = budget(period="custom", period_seconds=3_600)
    assert period_index(b, 7_199.0) == "1"
    assert period_bounds(b, 7_199.0) == (3_600.0, 7_200.0)
    assert period_index(b, 7_200.0) == "2"


# --- counters ----------------------------------------------------------------------------------
def test_counter_ids_and_limits(controller: CostController) -> None:
    hard = budget(id="h", limit_usd=2.0, period="month")
    soft = budget(id="s", enforcement="soft", period="day")
    shadow = budget(id="sh", enforcement="shadow", period="custom", period_seconds=600)
    counters = controller.shared_counters([hard, soft, shadow], 0.25, NOW)
    assert [c.counter_id for c in counters] == [
        "budget:h:2026-11",
        "budget:s:2026-11-29",
        f"budget:sh:{int(NOW // 600)}",
    ]
    assert all(c.amount == 0.25 and c.limit.metric == "spend" for c in counters)
    assert counters[0].limit.limit == 2.0 + HARD_LIMIT_TOLERANCE_USD
    assert counters[0].limit.window_seconds == 32 * 86_400
    assert counters[1].limit.limit == NON_BLOCKING_LIMIT_USD
    assert counters[1].limit.window_seconds == 86_400
    assert counters[2].limit.limit == NON_BLOCKING_LIMIT_USD
    assert counters[2].limit.window_seconds == 600
    # the clock is used when no time is given
    assert controller.shared_counters([soft], 0.0) == (
        SharedCounter("budget:s:2026-11-29", counters[1].limit, 0.0),
    )


@pytest.mark.parametrize("amount", [-0.01, float("nan"), float("inf")])
def test_shared_counters_reject_bad_amounts(controller: CostController, amount: float) -> None:
    with pytest.raises(ValueError, match="usd amount"):
        controller.shared_counters([budget()], amount, NOW)


def test_budget_status(controller: CostController) -> None:
    status = controller.budget_status(budget(limit_usd=10.0), 4.0)
    assert status.remaining_usd == 6.0
    assert not status.exceeded
    assert status.period_index == "2026-11-29"
    assert (status.period_start, status.period_end) == (ts(2026, 11, 29), ts(2026, 11, 30))
    assert controller.budget_status(budget(limit_usd=10.0), 10.0).exceeded
    assert controller.budget_status(budget(limit_usd=10.0), 12.0).remaining_usd == 0.0
    assert controller.period_bounds(budget()) == (ts(2026, 11, 29), ts(2026, 11, 30))


# --- hard-budget errors ------------------------------------------------------------------------
def test_check_hard(controller: CostController) -> None:
    b = budget(limit_usd=1.0)
    assert controller.check_hard(b, 0.5, 0.5) is None
    error = controller.check_hard(b, 0.75, 0.5)
    assert isinstance(error, BudgetExceededError)
    assert error.retry_after == pytest.approx(12 * 3_600)
    assert error.budget_id == "b1"
    assert error.spent_usd == 0.75
    assert error.status == 429
    assert error.code == "budget_exceeded"
    body = error.to_openai_error()["error"]
    assert body["type"] == "insufficient_quota"
    assert "b1" in body["message"]
    assert isinstance(error, ApiKeyRouterError)
    assert not isinstance(error, NoKeyAvailableError)
    never = controller.check_hard(b, 0.0, 2.0)
    assert never is not None
    assert never.retry_after is None
    assert controller.check_hard(budget(enforcement="soft"), 99, 1) is None


def test_blocking_budget_error_picks_the_longest_wait(controller: CostController) -> None:
    day = budget(id="day", limit_usd=1.0, period="day")
    month = budget(id="month", limit_usd=1.0, period="month")
    fine = budget(id="fine", limit_usd=100.0)
    spent = {"day": 1.0, "month": 1.0, "fine": 0.0}
    error = controller.blocking_budget_error([day, fine, month], spent, 0.1)
    assert error is not None
    assert error.budget_id == "month"
    assert error.retry_after == pytest.approx(ts(2026, 12, 1) - NOW)
    assert controller.blocking_budget_error([fine], spent, 0.1) is None
    never = controller.blocking_budget_error([month, day], {}, 5.0)
    assert never is not None
    assert never.retry_after is None


# --- soft and shadow events --------------------------------------------------------------------
def test_check_soft_fires_once_per_period(controller: CostController) -> None:
    soft = budget(id="soft", enforcement="soft", limit_usd=1.0)
    assert controller.check_soft(soft, 0.5) is None
    event = controller.check_soft(soft, 1.0)
    assert event is not None
    assert event.kind == "soft_budget_exceeded"
    assert event.period_index == "2026-11-29"
    assert "soft" in event.message
    assert controller.check_soft(soft, 2.0) is None  # already reported this period
    tomorrow = ts(2026, 11, 30, 1)
    assert controller.check_soft(soft, 0.1, tomorrow) is None
    assert controller.check_soft(soft, 1.5, tomorrow) is not None
    assert controller.check_soft(budget(enforcement="hard"), 50.0) is None


def test_soft_budget_events(controller: CostController) -> None:
    controller.add_budget(budget(id="a", enforcement="shadow", limit_usd=1.0))
    controller.add_budget(budget(id="b", enforcement="soft", limit_usd=5.0))
    events = controller.soft_budget_events({"a": 3.0, "b": 1.0, "unknown": 9.0})
    assert [(e.budget_id, e.kind) for e in events] == [("a", "shadow_budget_exceeded")]


# --- concurrency against the real in-memory store ----------------------------------------------
async def _reserve_all(
    store: InMemoryStateStore,
    counters: tuple[SharedCounter, ...],
    n: int,
    now: float,
) -> list[Reservation | ReservationRefusal]:
    async def one(i: int) -> Reservation | ReservationRefusal:
        await asyncio.sleep(0)  # let the tasks interleave before they reach the store
        request = ReservationRequest(f"key_{i % 3}", (), {"requests": 1}, shared=counters)
        return await store.reserve([request], now)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def _spent(store: InMemoryStateStore, counter: SharedCounter, now: float) -> float:
    return (await store.window_usage(counter.counter_id, [counter.limit], now))[0].used


async def test_hard_budget_admits_exactly_what_fits(controller: CostController) -> None:
    estimate = controller.estimate("tiny", 1_000, 500)  # $0.002: not exact in binary
    assert estimate.usd == pytest.approx(0.002)
    hard = budget(id="hard", limit_usd=10 * estimate.reserve_usd)
    shadow = budget(id="shadow", enforcement="shadow", limit_usd=0.001)
    controller.add_budget(hard)
    controller.add_budget(shadow)
    store = InMemoryStateStore()
    counters = controller.shared_counters(controller.budgets_for(), estimate.reserve_usd, NOW)

    results = await _reserve_all(store, counters, 100, NOW)

    granted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, ReservationRefusal)]
    assert len(granted) == 10
    assert len(refused) == 90
    # A refusal charged nothing: the shadow counter saw exactly the ten granted requests.
    hard_counter, shadow_counter = counters
    assert await _spent(store, hard_counter, NOW) == pytest.approx(10 * estimate.reserve_usd)
    assert await _spent(store, shadow_counter, NOW) == pytest.approx(10 * estimate.reserve_usd)
    # The router explains the refusal from the spend it reads back.
    spent = {"hard": await _spent(store, hard_counter, NOW)}
    error = controller.blocking_budget_error([hard], spent, estimate.reserve_usd, NOW)
    assert error is not None
    assert error.retry_after == pytest.approx(12 * 3_600)


async def test_shadow_budget_never_blocks_but_counts(controller: CostController) -> None:
    shadow = budget(id="shadow", enforcement="shadow", limit_usd=0.01)
    counters = controller.shared_counters([shadow], 0.002, NOW)
    store = InMemoryStateStore()

    results = await _reserve_all(store, counters, 100, NOW)

    assert all(isinstance(r, Reservation) for r in results)
    spent = await _spent(store, counters[0], NOW)
    assert spent == pytest.approx(0.2)
    event = controller.check_soft(shadow, spent, NOW)
    assert event is not None
    assert event.kind == "shadow_budget_exceeded"


async def test_commit_and_release_correct_the_budget(controller: CostController) -> None:
    hard = budget(id="hard", limit_usd=1.0)
    soft = budget(id="soft", enforcement="soft", limit_usd=0.5)
    store = InMemoryStateStore()
    counters = controller.shared_counters([hard, soft], 0.4, NOW)
    request = ReservationRequest("key_1", (), {"requests": 1}, shared=counters)

    first = await store.reserve([request], NOW)
    second = await store.reserve([request], NOW)
    assert isinstance(first, Reservation)
    assert isinstance(second, Reservation)
    assert isinstance(await store.reserve([request], NOW), ReservationRefusal)  # 1.2 > 1.0

    await store.commit(first, {"requests": 1, "spend": 0.1})  # the call cost less
    await store.release(second)  # nothing was spent upstream
    assert await _spent(store, counters[0], NOW) == pytest.approx(0.1)
    assert await _spent(store, counters[1], NOW) == pytest.approx(0.1)
    assert isinstance(await store.reserve([request], NOW), Reservation)


async def test_a_new_period_starts_from_zero(controller: CostController) -> None:
    hard = budget(id="hard", limit_usd=1.0)
    store = InMemoryStateStore()
    today = controller.shared_counters([hard], 1.0, NOW)
    request = ReservationRequest("key_1", (), {}, shared=today)
    assert isinstance(await store.reserve([request], NOW), Reservation)
    assert isinstance(await store.reserve([request], NOW), ReservationRefusal)

    tomorrow_at = ts(2026, 11, 30, 0, 0, 1)
    tomorrow = controller.shared_counters([hard], 1.0, tomorrow_at)
    assert tomorrow[0].counter_id != today[0].counter_id
    request = ReservationRequest("key_1", (), {}, shared=tomorrow)
    assert isinstance(await store.reserve([request], tomorrow_at), Reservation)
