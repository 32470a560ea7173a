"""The per-client sliding window counter, on a hand-driven clock."""

from __future__ import annotations

import pytest
from apikeyrouter_proxy.middleware.error_handler import retry_after_value
from apikeyrouter_proxy.services.rate_limit import SlidingWindowLimiter
from hypothesis import given
from hypothesis import strategies as st


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_says_when() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(3, 60.0, clock)
    assert [limiter.acquire() for _ in range(3)] == [None, None, None]
    wait = limiter.acquire()
    assert wait is not None
    clock.now += wait
    assert limiter.acquire() is None  # exactly when it said


def test_previous_window_decays() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(10, 60.0, clock)
    for _ in range(10):
        assert limiter.acquire() is None
    clock.now += 60.0  # next window: the 10 count fully, decaying as it goes
    assert limiter.acquire() is not None
    clock.now += 30.0  # half-way: estimate 5, room for 5 more
    assert [limiter.acquire() for _ in range(5)] == [None] * 5
    assert limiter.acquire() is not None


def test_long_idle_forgets_everything() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(2, 60.0, clock)
    limiter.acquire()
    limiter.acquire()
    clock.now += 600.0
    assert limiter.estimate() == 0.0
    assert limiter.acquire() is None


@given(st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=60))
def test_never_admits_more_than_the_limit_in_any_window_boundary(gaps: list[float]) -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(5, 60.0, clock)
    for gap in gaps:
        clock.now += gap
        limiter.acquire()
        assert limiter.estimate() <= 5.0 + 1e-9


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0.0, max_value=59.9))
def test_retry_after_is_accurate(limit: int, offset: float) -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(limit, 60.0, clock)
    clock.now += offset
    while (wait := limiter.acquire()) is None:
        pass
    clock.now += wait + 1e-6
    assert limiter.acquire() is None


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, b"1"), (0.2, b"1"), (1.0, b"1"), (59.01, b"60")]
)
def test_retry_after_rounds_up_to_whole_seconds(seconds: float, header: bytes) -> None:
    assert retry_after_value(seconds) == header


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="limit"):
        SlidingWindowLimiter(0)
