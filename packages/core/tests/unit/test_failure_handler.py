"""Unit tests for the failure handler: what each failure means for the key and the request."""

from __future__ import annotations

import random

import pytest
from apikeyrouter.domain.components.failure_handler import (
    FailureAction,
    FailureHandler,
    RetryPolicy,
)
from apikeyrouter.domain.models.api_key import KeyState
from apikeyrouter.domain.models.outcome import (
    CALLER_FAULTS,
    FailureKind,
    ProviderFailure,
    RateLimitInfo,
)
from hypothesis import given
from hypothesis import strategies as st

NOW = 1_700_000_000.0

# The table at the top of failure_handler.py, written out independently:
# kind -> (new_state, count_for_circuit, exclude_model, retry_elsewhere, backoff)
EXPECTED: dict[FailureKind, tuple[KeyState | None, bool, bool, bool, bool]] = {
    FailureKind.RATE_LIMITED: (KeyState.THROTTLED, False, False, True, False),
    FailureKind.QUOTA_EXHAUSTED: (KeyState.EXHAUSTED, False, False, True, False),
    FailureKind.INVALID_KEY: (KeyState.INVALID, False, False, True, False),
    FailureKind.MODEL_NOT_ALLOWED: (None, False, True, True, False),
    FailureKind.PROVIDER_ERROR: (None, True, False, True, True),
    FailureKind.TIMEOUT: (None, True, False, True, True),
    FailureKind.CONNECTION: (None, True, False, True, True),
    FailureKind.BAD_REQUEST: (None, False, False, False, False),
    FailureKind.CONTEXT_TOO_LONG: (None, False, False, False, False),
    FailureKind.CONTENT_POLICY: (None, False, False, False, False),
}


def failure(
    kind: FailureKind, status: int | None = 500, rate_limit: RateLimitInfo | None = None
) -> ProviderFailure:
    return ProviderFailure(
        kind=kind,
        status=status,
        message="upstream said no",
        rate_limit=rate_limit or RateLimitInfo(),
    )


def test_every_failure_kind_has_an_expected_action() -> None:
    assert set(EXPECTED) == set(FailureKind)


def test_caller_faults_are_exactly_the_request_errors() -> None:
    assert (
        frozenset(
            {FailureKind.BAD_REQUEST, FailureKind.CONTEXT_TOO_LONG, FailureKind.CONTENT_POLICY}
        )
        == CALLER_FAULTS
    )


@pytest.mark.parametrize("kind", list(FailureKind))
def test_each_failure_kind_maps_to_its_action(kind: FailureKind) -> None:
    action = FailureHandler().decide(failure(kind, status=418), NOW)
    new_state, counts, excludes, retry_elsewhere, backoff = EXPECTED[kind]
    assert action.new_state is new_state
    assert action.count_for_circuit is counts
    assert action.exclude_model is excludes
    assert action.retry_elsewhere is retry_elsewhere
    assert action.backoff is backoff
    assert action.reason == f"{kind.value} (HTTP 418)"
    if new_state in (KeyState.THROTTLED, KeyState.EXHAUSTED):
        assert action.cooldown_until is not None
        assert action.cooldown_until > NOW
    else:
        assert action.cooldown_until is None


def test_reason_without_status() -> None:
    action = FailureHandler().decide(failure(FailureKind.TIMEOUT, status=None), NOW)
    assert action.reason == "timeout"


def test_action_defaults_retry_elsewhere() -> None:
    assert FailureAction() == FailureAction(
        new_state=None,
        cooldown_until=None,
        count_for_circuit=False,
        exclude_model=False,
        retry_elsewhere=True,
        backoff=False,
        reason="",
    )


# --- cooldowns from provider hints ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "default"),
    [(FailureKind.RATE_LIMITED, 5.0), (FailureKind.QUOTA_EXHAUSTED, 3600.0)],
)
def test_cooldown_defaults_without_a_hint(kind: FailureKind, default: float) -> None:
    action = FailureHandler().decide(failure(kind, 429), NOW)
    assert action.cooldown_until == NOW + default


def test_default_durations_come_from_the_retry_policy() -> None:
    handler = FailureHandler(
        retry=RetryPolicy(default_throttle_seconds=12.0, default_exhausted_seconds=60.0)
    )
    assert handler.decide(failure(FailureKind.RATE_LIMITED), NOW).cooldown_until == NOW + 12
    assert handler.decide(failure(FailureKind.QUOTA_EXHAUSTED), NOW).cooldown_until == NOW + 60


@pytest.mark.parametrize("kind", [FailureKind.RATE_LIMITED, FailureKind.QUOTA_EXHAUSTED])
def test_cooldown_follows_retry_after(kind: FailureKind) -> None:
    hint = RateLimitInfo(retry_after_at=NOW + 42, requests_remaining=0, requests_reset_at=NOW + 9)
    action = FailureHandler().decide(failure(kind, 429, hint), NOW)
    assert action.cooldown_until == NOW + 42  # retry-after wins over reset headers


@pytest.mark.parametrize("kind", [FailureKind.RATE_LIMITED, FailureKind.QUOTA_EXHAUSTED])
@pytest.mark.parametrize("past", [NOW, NOW - 1, 0.0])
def test_a_hint_in_the_past_falls_back_to_the_default(kind: FailureKind, past: float) -> None:
    handler = FailureHandler(
        retry=RetryPolicy(default_throttle_seconds=7.0, default_exhausted_seconds=70.0)
    )
    default = 7.0 if kind is FailureKind.RATE_LIMITED else 70.0
    action = handler.decide(failure(kind, 429, RateLimitInfo(retry_after_at=past)), NOW)
    assert action.cooldown_until == NOW + default


def test_cooldown_uses_the_exhausted_window_reset() -> None:
    hint = RateLimitInfo(
        requests_remaining=10,
        requests_reset_at=NOW + 2,
        tokens_remaining=0,
        tokens_reset_at=NOW + 30,
    )
    action = FailureHandler().decide(failure(FailureKind.RATE_LIMITED, 429, hint), NOW)
    assert action.cooldown_until == NOW + 30


# --- RateLimitInfo.earliest_reset -----------------------------------------------------------


def test_earliest_reset_none_without_information() -> None:
    assert RateLimitInfo().earliest_reset() is None
    assert RateLimitInfo(requests_remaining=0, tokens_remaining=0).earliest_reset() is None


def test_earliest_reset_prefers_retry_after() -> None:
    info = RateLimitInfo(retry_after_at=NOW + 100, requests_reset_at=NOW + 1)
    assert info.earliest_reset() == NOW + 100


def test_earliest_reset_waits_for_the_latest_exhausted_window() -> None:
    info = RateLimitInfo(
        requests_remaining=0,
        requests_reset_at=NOW + 5,
        tokens_remaining=0,
        tokens_reset_at=NOW + 20,
    )
    assert info.earliest_reset() == NOW + 20


def test_earliest_reset_ignores_windows_with_remaining_capacity() -> None:
    info = RateLimitInfo(
        requests_remaining=0,
        requests_reset_at=NOW + 50,
        tokens_remaining=5,
        tokens_reset_at=NOW + 1,
    )
    assert info.earliest_reset() == NOW + 50


def test_earliest_reset_without_exhausted_window_is_the_soonest_reset() -> None:
    info = RateLimitInfo(
        requests_remaining=3,
        requests_reset_at=NOW + 8,
        tokens_remaining=None,
        tokens_reset_at=NOW + 3,
    )
    assert info.earliest_reset() == NOW + 3
    assert RateLimitInfo(tokens_reset_at=NOW + 4).earliest_reset() == NOW + 4


def test_rate_limit_info_is_empty() -> None:
    assert RateLimitInfo().is_empty()
    assert not RateLimitInfo(requests_limit=10).is_empty()
    assert not RateLimitInfo(tokens_remaining=0).is_empty()
    assert not RateLimitInfo(retry_after_at=NOW).is_empty()


# --- backoff ---------------------------------------------------------------------------------


def _ceiling(policy: RetryPolicy, attempt: int) -> float:
    return min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2.0 ** max(0, attempt - 1))


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 10])
def test_backoff_stays_within_full_jitter_bounds(attempt: int) -> None:
    policy = RetryPolicy(backoff_base_seconds=0.05, backoff_max_seconds=1.0)
    handler = FailureHandler(retry=policy, rng=random.Random(1234))
    ceiling = _ceiling(policy, attempt)
    delays = [handler.backoff_delay(attempt) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert all(d <= 0.05 * 2 ** (attempt - 1) for d in delays)
    assert all(d <= 1.0 for d in delays)
    # Full jitter actually spreads over the range (not a constant, not always the ceiling).
    assert max(delays) > 0.9 * ceiling
    assert min(delays) < 0.1 * ceiling


def test_backoff_grows_until_capped() -> None:
    policy = RetryPolicy(backoff_base_seconds=0.1, backoff_max_seconds=0.5)
    handler = FailureHandler(retry=policy, rng=random.Random(99))
    maxima = [max(handler.backoff_delay(n) for _ in range(300)) for n in range(1, 7)]
    assert maxima[0] <= 0.1
    assert maxima[1] <= 0.2
    assert 0.2 < maxima[2] <= 0.4
    assert all(0.4 < m <= 0.5 for m in maxima[3:])


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = FailureHandler(rng=random.Random(7))
    second = FailureHandler(rng=random.Random(7))
    assert [first.backoff_delay(n) for n in range(1, 8)] == [
        second.backoff_delay(n) for n in range(1, 8)
    ]


@pytest.mark.parametrize("attempt", [0, -3])
def test_backoff_for_non_positive_attempt_uses_the_base(attempt: int) -> None:
    policy = RetryPolicy(backoff_base_seconds=0.05, backoff_max_seconds=1.0)
    handler = FailureHandler(retry=policy, rng=random.Random(5))
    assert all(0.0 <= handler.backoff_delay(attempt) <= 0.05 for _ in range(200))


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    attempt=st.integers(min_value=1, max_value=64),
    base=st.floats(min_value=0.001, max_value=2.0),
    cap=st.floats(min_value=0.001, max_value=30.0),
)
def test_backoff_never_exceeds_base_times_two_to_the_n_nor_max(
    seed: int, attempt: int, base: float, cap: float
) -> None:
    policy = RetryPolicy(backoff_base_seconds=base, backoff_max_seconds=cap)
    delay = FailureHandler(retry=policy, rng=random.Random(seed)).backoff_delay(attempt)
    assert 0.0 <= delay <= cap
    assert delay <= base * 2 ** (attempt - 1)
