"""How much of each limit a key has used, and what that means for routing."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class CapacityState(StrEnum):
    ABUNDANT = "abundant"
    CONSTRAINED = "constrained"
    CRITICAL = "critical"
    EXHAUSTED = "exhausted"
    RECOVERING = "recovering"


class Confidence(StrEnum):
    EXACT = "exact"  # from the provider's rate-limit headers
    ESTIMATED = "estimated"  # from our own counters
    UNKNOWN = "unknown"  # no limit known


class WindowUsage(BaseModel):
    """One limit window: e.g. tokens per minute."""

    metric: str  # "requests" | "tokens" | "spend"
    window_seconds: float
    limit: float
    used: float
    reserved: float = 0.0
    resets_at: float | None = None
    confidence: Confidence = Confidence.ESTIMATED

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used - self.reserved)

    @property
    def utilization(self) -> float:
        return 1.0 if self.limit <= 0 else min(1.0, (self.used + self.reserved) / self.limit)


class QuotaState(BaseModel):
    key_id: str
    capacity: CapacityState = CapacityState.ABUNDANT
    confidence: Confidence = Confidence.UNKNOWN
    windows: list[WindowUsage] = Field(default_factory=list)
    in_flight: int = 0
    cooldown_until: float | None = None

    @property
    def headroom(self) -> float:
        """Fraction left in the tightest window (1.0 when nothing is limited)."""
        if not self.windows:
            return 1.0
        return min(1.0 - w.utilization for w in self.windows)


class ExhaustionPrediction(BaseModel):
    """When a key is expected to run out of its tightest window, at the current pace."""

    key_id: str
    metric: str | None = None  # the window that runs out first
    window_seconds: float | None = None
    remaining: float | None = None
    rate_per_second: float = 0.0  # smoothed consumption of that metric
    predicted_exhaustion_at: float | None = None  # None: not at this pace
    resets_at: float | None = None
    exhausts_before_reset: bool = False
    confidence: Confidence = Confidence.UNKNOWN
