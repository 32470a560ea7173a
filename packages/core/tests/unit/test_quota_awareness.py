"""Quota awareness: learned limits, header reconciliation, capacity states, prediction."""

from __future__ import annotations

import pytest
from apikeyrouter.domain.components.quota_awareness_engine import (
    MINUTE,
    QuotaAwarenessEngine,
    TokenEstimateStats,
)
from apikeyrouter.domain.interfaces.state_store import UNLIMITED, ReservationRequest, WindowLimit
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits, KeyState
from apikeyrouter.domain.models.outcome import RateLimitInfo
from apikeyrouter.domain.models.quota_state import CapacityState, Confidence
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from hypothesis import given
from hypothesis import strategies as st

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_key(**limits: int) -> APIKey:
    return APIKey(id="key_q", provider_id="p", encrypted_material="x", limits=KeyLimits(**limits))


def window(engine: QuotaAwarenessEngine, key: APIKey, metric: str) -> WindowLimit:
    return next(
        w
        for w in engine.effective_windows(key)
        if w.metric == metric and w.window_seconds == MINUTE
    )


def test_unconfigured_keys_are_counted_but_unlimited() -> None:
    engine = QuotaAwarenessEngine(InMemoryStateStore(), Clock())
    key = make_key()
    windows = engine.effective_windows(key)
    assert {(w.metric, w.window_seconds, w.limit) for w in windows} == {
        ("requests", MINUTE, UNLIMITED),
        ("tokens", MINUTE, UNLIMITED),
    }
    assert engine.capacity(key) == (CapacityState.ABUNDANT, Confidence.UNKNOWN)
    assert engine.headroom(key) == 1.0


async def test_configured_limits_win_over_learned_ones() -> None:
    clock = Clock()
    engine = QuotaAwarenessEngine(InMemoryStateStore(), clock)
    key = make_key(requests_per_minute=10, tokens_per_day=1000)
    assert window(engine, key, "requests").limit == 10
    await engine.observe(key, RateLimitInfo(requests_limit=500, tokens_limit=9000), T0)
    assert window(engine, key, "requests").limit == 10  # configured stays
    assert window(engine, key, "tokens").limit == 9000  # per-minute tokens learned
    assert any(
        w.window_seconds == 86_400 and w.limit == 1000 for w in engine.effective_windows(key)
    )


async def test_limits_learned_from_headers_are_enforced_by_reservations() -> None:
    clock = Clock()
    store = InMemoryStateStore()
    engine = QuotaAwarenessEngine(store, clock)
    key = make_key()
    await engine.observe(
        key,
        RateLimitInfo(requests_limit=3, requests_remaining=3, requests_reset_at=T0 + 1),
        T0,
    )
    granted = 0
    for _ in range(5):
        request = ReservationRequest(key.id, engine.effective_windows(key), {"requests": 1})
        result = await store.reserve([request], T0)
        granted += hasattr(result, "key_id")
    assert granted == 3


async def test_usage_the_provider_saw_elsewhere_is_charged_to_our_window() -> None:
    clock = Clock()
    store = InMemoryStateStore()
    engine = QuotaAwarenessEngine(store, clock)
    key = make_key(requests_per_minute=100)
    engine.charged(key, {"requests": 2}, T0)
    await store.charge(key.id, window(engine, key, "requests"), 2, T0)
    # The provider says 30 of 100 are used: 28 came from someone else sharing the key.
    await engine.observe(
        key,
        RateLimitInfo(requests_limit=100, requests_remaining=70, requests_reset_at=T0 + 20),
        T0,
    )
    usage = await store.window_usage(key.id, [window(engine, key, "requests")], T0)
    assert usage[0].used == pytest.approx(30)
    assert engine.capacity(key, T0) == (CapacityState.ABUNDANT, Confidence.EXACT)


async def test_provider_reporting_less_than_we_sent_changes_nothing() -> None:
    store = InMemoryStateStore()
    engine = QuotaAwarenessEngine(store, Clock())
    key = make_key(requests_per_minute=100)
    engine.charged(key, {"requests": 10}, T0)
    await store.charge(key.id, window(engine, key, "requests"), 10, T0)
    await engine.observe(key, RateLimitInfo(requests_limit=100, requests_remaining=95), T0)
    usage = await store.window_usage(key.id, [window(engine, key, "requests")], T0)
    assert usage[0].used == pytest.approx(10)


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (0, CapacityState.ABUNDANT),
        (49, CapacityState.ABUNDANT),
        (50, CapacityState.CONSTRAINED),
        (79, CapacityState.CONSTRAINED),
        (80, CapacityState.CRITICAL),
        (99, CapacityState.CRITICAL),
        (100, CapacityState.EXHAUSTED),
    ],
)
def test_capacity_state_follows_the_tightest_window(used: int, expected: CapacityState) -> None:
    engine = QuotaAwarenessEngine(InMemoryStateStore(), Clock())
    key = make_key(requests_per_minute=1000, tokens_per_minute=100)
    engine.charged(key, {"requests": 1, "tokens": used}, T0)
    assert engine.capacity(key, T0) == (expected, Confidence.ESTIMATED)


def test_capacity_of_throttled_and_recovering_keys() -> None:
    clock = Clock()
    engine = QuotaAwarenessEngine(InMemoryStateStore(), clock)
    key = make_key(requests_per_minute=10)
    key.state = KeyState.THROTTLED
    key.cooldown_until = T0 + 5
    assert engine.capacity(key)[0] is CapacityState.EXHAUSTED
    clock.now = T0 + 6
    assert engine.capacity(key)[0] is CapacityState.RECOVERING


async def test_header_snapshot_plus_what_we_sent_since() -> None:
    clock = Clock()
    engine = QuotaAwarenessEngine(InMemoryStateStore(), clock)
    key = make_key()
    await engine.observe(
        key,
        RateLimitInfo(requests_limit=100, requests_remaining=40, requests_reset_at=T0 + 30),
        T0,
    )
    engine.charged(key, {"requests": 10}, T0 + 1)
    clock.now = T0 + 1
    # 60 used per the provider, plus 10 sent since: 70% -> constrained, exact.
    assert engine.capacity(key) == (CapacityState.CONSTRAINED, Confidence.EXACT)
    assert engine.headroom(key) == pytest.approx(0.3)
    clock.now = T0 + 31  # the provider's snapshot has expired: our own counters only
    assert engine.capacity(key)[1] is Confidence.ESTIMATED


def test_prediction_flags_a_key_that_runs_dry_before_its_window_frees() -> None:
    clock = Clock()
    engine = QuotaAwarenessEngine(InMemoryStateStore(), clock)
    hot = make_key(requests_per_minute=100)
    for second in range(20):  # 2 requests a second for 20 s: 40 used, pace ~2/s
        clock.now = T0 + second
        engine.charged(hot, {"requests": 2}, clock.now)
        engine.consumed(hot, 2, 0, clock.now)
    prediction = engine.predict_exhaustion(hot)
    assert prediction.metric == "requests"
    assert prediction.remaining == pytest.approx(60)
    assert prediction.rate_per_second > 0.5
    assert prediction.predicted_exhaustion_at is not None
    assert prediction.predicted_exhaustion_at > clock.now
    assert prediction.exhausts_before_reset
    # The same usage spread over an idle key is not flagged, and ranks higher on headroom.
    idle = make_key(requests_per_minute=100)
    idle = idle.model_copy(update={"id": "key_idle"})
    engine.charged(idle, {"requests": 40}, T0)
    assert not engine.predict_exhaustion(idle).exhausts_before_reset
    assert engine.headroom(idle) > engine.headroom(hot)


@given(
    slow=st.floats(min_value=0.1, max_value=5.0),
    factor=st.floats(min_value=1.01, max_value=10.0),
    used=st.integers(min_value=0, max_value=90),
)
def test_faster_consumption_never_predicts_later_exhaustion(
    slow: float, factor: float, used: int
) -> None:
    def predicted(rate: float) -> float:
        engine = QuotaAwarenessEngine(InMemoryStateStore(), lambda: T0)
        key = make_key(requests_per_minute=100)
        engine.charged(key, {"requests": used}, T0)
        engine.consumed(key, rate, 0, T0)
        at = engine.predict_exhaustion(key).predicted_exhaustion_at
        assert at is not None
        return at

    assert predicted(slow * factor) <= predicted(slow)


def test_token_estimate_statistics() -> None:
    stats = TokenEstimateStats()
    stats.record(110, 100)
    stats.record(90, 100)
    stats.record(5, 0)  # no actual count: ignored
    summary = stats.summary()
    assert summary["samples"] == 2
    assert summary["mean_rel_error"] == pytest.approx(0.1)
    assert summary["mean_signed_rel_error"] == pytest.approx(0.0)
    assert summary["max_rel_error"] == pytest.approx(0.1)


async def test_with_the_in_memory_store_the_engine_reads_its_counters_instead_of_copying() -> None:
    store = InMemoryStateStore()
    engine = QuotaAwarenessEngine(store, Clock(), store_counters=store.window_counter)
    key = make_key(requests_per_minute=10)
    request = ReservationRequest(key.id, engine.effective_windows(key), {"requests": 4})
    reserved = await store.reserve([request], T0)
    engine.charged(key, {"requests": 4}, T0)  # the store counted it: no second count
    assert hasattr(reserved, "key_id")
    assert engine.headroom(key) == pytest.approx(0.6)
    state = await engine.quota_state(key)
    assert [w.used for w in state.windows if w.metric == "requests"] == [4]
    # Revoking the key drops the store's counters; a key re-added under the same id starts
    # from the store's new (empty) ones, not from a stale copy.
    await store.delete_key(key.id)
    fresh = make_key(requests_per_minute=10)
    await store.charge(fresh.id, window(engine, fresh, "requests"), 1, T0)
    engine.charged(fresh, {"requests": 1}, T0)
    assert engine.headroom(fresh) == pytest.approx(0.9)


async def test_the_router_shares_the_in_memory_stores_counters() -> None:
    from apikeyrouter import ApiKeyRouter

    router = ApiKeyRouter()
    assert isinstance(router.store, InMemoryStateStore)
    assert router.quota._store_counters is not None  # one copy of the windows, not two
    await router.close()
