"""Per-key runtime statistics that steer routing: load, latency, reliability.

Kept in process memory and updated on every call; cheap by design (slots, plain floats).
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_ALPHA = 0.2
SUCCESS_ALPHA = 0.1


@dataclass(slots=True)
class KeyStats:
    served: float = 0.0  # requests routed here (fairness counter)
    in_flight: int = 0
    latency_ms: float | None = None  # exponentially smoothed
    success_rate: float = 1.0  # exponentially smoothed, optimistic prior
    last_used_at: float = 0.0

    def record_latency(self, latency_ms: float) -> None:
        if self.latency_ms is None:
            self.latency_ms = latency_ms
        else:
            self.latency_ms += LATENCY_ALPHA * (latency_ms - self.latency_ms)

    def record_result(self, success: bool) -> None:
        self.success_rate += SUCCESS_ALPHA * ((1.0 if success else 0.0) - self.success_rate)

    def record_success(self, latency_ms: float, now: float) -> None:
        """A served request leaves flight: one call per request on the hot path."""
        self.in_flight -= 1
        self.served += 1
        self.last_used_at = now
        self.record_latency(latency_ms)
        self.record_result(True)
