"""Unit tests for the bucketed sliding-window counter.

Times in the property tests are multiples of 1/16 s and bucket widths are powers of two, so all
arithmetic is exact and the properties test the counting logic, not floating-point luck.
Floating-point edge cases are covered by separate, explicit tests.
"""

from __future__ import annotations

from apikeyrouter.infrastructure.state_store.window_counter import (
    BUCKETS_PER_WINDOW,
    WindowCounter,
)
from hypothesis import given, settings
from hypothesis import strategies as st

TICK = 1.0 / 16.0

# (window_seconds, buckets): every width (window / buckets) is exactly representable.
EXACT_CONFIGS: list[tuple[float, int]] = [
    (60.0, 60),  # width 1
    (64.0, 64),  # width 1
    (1.0, 4),  # width 0.25
    (8.0, 2),  # width 4
    (16.0, 64),  # width 0.25
    (4.0, 1),  # a single bucket
]


# --- construction and used() ----------------------------------------------------------------


def test_defaults_split_window_into_sixty_buckets() -> None:
    counter = WindowCounter(60.0)
    assert counter.buckets == BUCKETS_PER_WINDOW == 60
    assert counter.width == 1.0
    assert counter.window_seconds == 60.0


def test_custom_bucket_count_sets_width() -> None:
    counter = WindowCounter(10.0, buckets=5)
    assert counter.width == 2.0


def test_empty_counter_uses_nothing() -> None:
    counter = WindowCounter(60.0)
    assert counter.used(0.0) == 0.0
    assert counter.used(1_000_000.0) == 0.0


def test_adds_in_same_and_different_buckets_are_summed() -> None:
    counter = WindowCounter(60.0)
    counter.add(10.0, 3.0)
    counter.add(10.9, 2.0)  # same bucket (10)
    counter.add(30.0, 5.0)
    assert counter.used(30.0) == 10.0


def test_usage_counts_until_its_bucket_leaves_the_window() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.5, 5.0)  # bucket 0 covers [0, 1)
    assert counter.used(0.5) == 5.0
    assert counter.used(60.5) == 5.0  # exactly one window later: still counted (conservative)
    assert counter.used(60.999) == 5.0  # over-count by at most one bucket
    assert counter.used(61.0) == 0.0  # the whole bucket is older than the window


def test_usage_is_counted_at_exactly_one_window_later() -> None:
    counter = WindowCounter(60.0)
    counter.add(12.0, 1.0)
    assert counter.used(72.0) == 1.0
    assert counter.used(73.0) == 0.0


def test_only_live_buckets_are_counted() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 1.0)
    counter.add(30.0, 2.0)
    counter.add(59.0, 4.0)
    assert counter.used(59.0) == 7.0
    assert counter.used(61.0) == 6.0  # bucket 0 gone
    assert counter.used(91.0) == 4.0  # bucket 30 gone
    assert counter.used(120.0) == 0.0


# --- add(): negative adjustments and expired buckets ------------------------------------------


def test_negative_adjustment_reduces_usage() -> None:
    counter = WindowCounter(60.0)
    counter.add(10.0, 5.0)
    counter.add(10.0, -3.0)
    assert counter.used(10.0) == 2.0


def test_negative_adjustment_never_goes_below_zero() -> None:
    counter = WindowCounter(60.0)
    counter.add(10.0, 5.0)
    counter.add(10.0, -10.0)
    assert counter.used(10.0) == 0.0
    counter.add(10.0, 4.0)
    assert counter.used(10.0) == 4.0  # the clamp did not leave a hidden debt behind


def test_negative_adjustment_only_touches_its_own_bucket() -> None:
    counter = WindowCounter(60.0)
    counter.add(10.0, 5.0)
    counter.add(20.0, 5.0)
    counter.add(10.0, -8.0)
    assert counter.used(20.0) == 5.0


def test_add_to_expired_bucket_is_dropped_when_now_is_given() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 5.0, now=200.0)
    assert counter.used(200.0) == 0.0
    assert counter.used(0.0) == 0.0  # not stored at all


def test_add_to_live_bucket_with_now_is_kept() -> None:
    counter = WindowCounter(60.0)
    counter.add(150.0, 5.0, now=200.0)  # bucket 150 >= 200 - 60
    assert counter.used(200.0) == 5.0


def test_add_to_a_slot_holding_a_newer_bucket_is_dropped() -> None:
    # 61 slots: buckets 0, 61 and 122 share slot 0.
    counter = WindowCounter(60.0)
    counter.add(122.0, 7.0)
    counter.add(0.0, 5.0)  # long expired, no ``now`` given: must not clobber bucket 122
    counter.add(61.0, 3.0)
    assert counter.used(122.0) == 7.0
    assert counter.used(181.0) == 7.0


def test_add_to_a_slot_holding_an_older_bucket_replaces_it() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 5.0)
    counter.add(61.0, 2.0)  # same slot, newer bucket: starts from zero
    assert counter.used(61.0) == 2.0
    assert counter.used(121.0) == 2.0


def test_late_adjustment_to_expired_bucket_does_not_leak_into_window() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 100.0)
    counter.add(100.0, 1.0)
    counter.add(0.0, 50.0)  # a late commit for a reservation made at t=0, no ``now`` given
    assert counter.used(100.0) == 1.0
    assert counter.used(159.0) == 1.0


# --- fits() --------------------------------------------------------------------------------


def test_fits_is_inclusive_of_the_limit() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 7.0)
    assert counter.fits(1.0, 3.0, 10.0)
    assert not counter.fits(1.0, 3.5, 10.0)
    assert counter.fits(1.0, 0.0, 7.0)
    assert not counter.fits(1.0, 0.0, 6.0)  # already over a (lowered) limit


def test_fits_again_once_usage_expires() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 10.0)
    assert not counter.fits(60.0, 1.0, 10.0)
    assert counter.fits(61.0, 1.0, 10.0)


# --- retry_at() ----------------------------------------------------------------------------


def test_retry_at_is_now_when_it_already_fits() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 3.0)
    assert counter.retry_at(5.0, 7.0, 10.0) == 5.0


def test_retry_at_is_none_when_amount_exceeds_limit() -> None:
    counter = WindowCounter(60.0)
    assert counter.retry_at(0.0, 11.0, 10.0) is None


def test_retry_at_waits_for_just_enough_buckets_to_expire() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 3.0)
    counter.add(10.0, 4.0)
    counter.add(20.0, 5.0)
    limit = 12.0
    # 3 more fit once bucket 0 is gone (end of its window: 0 + 60 + 1 bucket).
    assert counter.retry_at(30.0, 3.0, limit) == 61.0
    # 7 more need buckets 0 and 10 gone.
    assert counter.retry_at(30.0, 7.0, limit) == 71.0
    assert counter.fits(71.0, 7.0, limit)
    assert not counter.fits(70.5, 7.0, limit)
    # The whole limit needs everything gone.
    assert counter.retry_at(30.0, 12.0, limit) == 81.0


def test_retry_at_ignores_buckets_that_were_released_to_zero() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 5.0)
    counter.add(0.0, -5.0)
    counter.add(10.0, 10.0)
    assert counter.retry_at(20.0, 1.0, 10.0) == 71.0


def test_retry_at_with_usage_over_the_limit() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 8.0)
    counter.add(5.0, 8.0)  # e.g. a commit larger than the reservation
    assert counter.retry_at(10.0, 2.0, 10.0) == 61.0  # 8 left + 2 fits
    assert counter.retry_at(10.0, 3.0, 10.0) == 66.0  # 8 left + 3 does not


def test_retry_at_respects_custom_bucket_width() -> None:
    counter = WindowCounter(8.0, buckets=2)  # width 4
    counter.add(1.0, 1.0)  # bucket 0 = [0, 4)
    assert counter.retry_at(2.0, 1.0, 1.0) == 12.0
    assert not counter.fits(11.9, 1.0, 1.0)
    assert counter.fits(12.0, 1.0, 1.0)


# --- properties ----------------------------------------------------------------------------

_steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=60)),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    config=st.sampled_from(EXACT_CONFIGS),
    limit=st.integers(min_value=1, max_value=50),
    start_tick=st.integers(min_value=0, max_value=10_000),
    steps=_steps,
)
def test_admitted_usage_never_exceeds_limit_in_any_window(
    config: tuple[float, int], limit: int, start_tick: int, steps: list[tuple[int, int]]
) -> None:
    window, buckets = config
    counter = WindowCounter(window, buckets)
    tick = start_tick
    admitted: list[tuple[float, int]] = []
    for dt_ticks, amount in steps:
        tick += dt_ticks
        now = tick * TICK
        true_recent = sum(a for t, a in admitted if now - window <= t <= now)
        slack = sum(a for t, a in admitted if now - window - counter.width < t <= now)
        used = counter.used(now)
        # Conservative, and off by at most one bucket.
        assert true_recent <= used <= slack
        if counter.fits(now, amount, limit):
            counter.add(now, amount, now)
            admitted.append((now, amount))
    # Any closed window [s, s + window] can slide right until s is an admission time.
    for start, _ in admitted:
        total = sum(a for t, a in admitted if start <= t <= start + window)
        assert total <= limit


@settings(max_examples=300, deadline=None)
@given(
    config=st.sampled_from(EXACT_CONFIGS),
    limit=st.integers(min_value=1, max_value=50),
    start_tick=st.integers(min_value=0, max_value=10_000),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400),
            st.integers(min_value=-20, max_value=80),  # includes releases and overshoots
        ),
        max_size=60,
    ),
    amount_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_retry_at_returns_the_earliest_time_at_which_it_fits(
    config: tuple[float, int],
    limit: int,
    start_tick: int,
    steps: list[tuple[int, int]],
    amount_fraction: float,
) -> None:
    window, buckets = config
    counter = WindowCounter(window, buckets)
    tick = start_tick
    for dt_ticks, delta in steps:
        tick += dt_ticks
        counter.add(tick * TICK, float(delta), tick * TICK)
    now = tick * TICK
    amount = float(round(limit * amount_fraction))
    at = counter.retry_at(now, amount, limit)
    assert at is not None
    assert at >= now
    assert counter.fits(at, amount, limit)
    # And it stays fitting afterwards (usage only leaves the window).
    assert counter.fits(at + counter.width, amount, limit)
    assert counter.fits(at + window * 3, amount, limit)
    if at > now:
        # Earliest at bucket resolution: just before it, it does not fit yet.
        assert not counter.fits(at - TICK / 64, amount, limit)
        assert not counter.fits(now, amount, limit)
    assert counter.retry_at(now, limit + 1.0, float(limit)) is None


# --- floating-point edge cases (regressions) ------------------------------------------------------


def test_retry_at_fits_with_inexact_bucket_width() -> None:
    counter = WindowCounter(10.0)  # width 1/6
    at = 1.0 / 6.0  # bucket 1
    counter.add(at, 1.0)
    retry = counter.retry_at(at, 1.0, 1.0)
    assert retry is not None
    assert retry > at
    assert counter.fits(retry, 1.0, 1.0)


def test_retry_at_with_float_amounts_never_returns_a_time_that_does_not_fit() -> None:
    counter = WindowCounter(60.0)
    counter.add(0.0, 0.1)
    counter.add(1.0, 0.2)
    retry = counter.retry_at(5.0, 0.3, 0.3)
    assert retry is not None
    assert counter.fits(retry, 0.3, 0.3)
