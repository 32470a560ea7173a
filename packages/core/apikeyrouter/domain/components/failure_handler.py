"""What to do about a failed upstream call, by what the failure means.

| failure            | key becomes                          | request                  |
|--------------------|--------------------------------------|--------------------------|
| rate limited       | throttled until retry-after / reset  | next key at once         |
| quota exhausted    | exhausted until reset or an operator | next key                 |
| invalid key        | invalid (never auto-retried)         | next key                 |
| model not allowed  | excluded for that model              | next key                 |
| provider error,    | circuit breaker counts a failure     | next key, with backoff   |
| timeout, connection|                                      |                          |
| bad request etc.   | unchanged                            | returned to the caller   |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.domain.models.api_key import KeyState
from apikeyrouter.domain.models.outcome import CALLER_FAULTS, FailureKind, ProviderFailure


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request tries before giving up."""

    max_attempts: int = 4  # upstream calls per request, first try included
    deadline_seconds: float = 60.0  # whole request, failovers included
    attempt_timeout_seconds: float = 30.0  # one upstream call
    backoff_base_seconds: float = 0.05
    backoff_max_seconds: float = 1.0
    default_throttle_seconds: float = 5.0  # 429 without any reset hint
    default_exhausted_seconds: float = 3600.0  # insufficient_quota without a reset hint
    max_wait_for_reset_seconds: float = 0.0  # all keys cooling down: wait up to this, or fail


@dataclass(frozen=True, slots=True)
class FailureAction:
    """The handler's verdict on one failure."""

    new_state: KeyState | None = None
    cooldown_until: float | None = None
    count_for_circuit: bool = False
    exclude_model: bool = False
    retry_elsewhere: bool = True
    backoff: bool = False
    reason: str = ""


@dataclass(slots=True)
class FailureHandler:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    rng: random.Random = field(default_factory=random.Random)

    def decide(self, failure: ProviderFailure, now: float) -> FailureAction:
        kind = failure.kind
        detail = f"{kind.value} (HTTP {failure.status})" if failure.status else kind.value
        if kind in CALLER_FAULTS:
            return FailureAction(retry_elsewhere=False, reason=detail)
        if kind is FailureKind.RATE_LIMITED:
            until = failure.rate_limit.earliest_reset(now)
            if until is None or until <= now:
                until = now + self.retry.default_throttle_seconds
            return FailureAction(KeyState.THROTTLED, cooldown_until=until, reason=detail)
        if kind is FailureKind.QUOTA_EXHAUSTED:
            until = failure.rate_limit.earliest_reset(now)
            if until is None or until <= now:
                until = now + self.retry.default_exhausted_seconds
            return FailureAction(KeyState.EXHAUSTED, cooldown_until=until, reason=detail)
        if kind is FailureKind.INVALID_KEY:
            return FailureAction(KeyState.INVALID, reason=detail)
        if kind is FailureKind.MODEL_NOT_ALLOWED:
            return FailureAction(exclude_model=True, reason=detail)
        # provider error, timeout, connection: the key or provider is unhealthy
        return FailureAction(count_for_circuit=True, backoff=True, reason=detail)

    def backoff_delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        ceiling = min(
            self.retry.backoff_max_seconds,
            self.retry.backoff_base_seconds * (2 ** max(0, attempt - 1)),
        )
        return self.rng.uniform(0.0, ceiling)
