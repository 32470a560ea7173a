"""Token buckets with continuous refill, and OpenAI-style duration strings.

OpenAI describes its per-minute limits as buckets that refill continuously (a 60 RPM key gets
one request back every second, not 60 at the top of each minute), and reports
``x-ratelimit-reset-*`` as the time until the bucket is full again. Simulating exactly that is
what lets a router's header parsing and throttling logic be tested against realistic numbers.

The bucket never reads a clock itself: every call takes ``now``, so the owner can inject a fake
clock and tests can move time deterministically.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket", "format_reset"]

# Float refill arithmetic drifts by ~1e-12; without a tolerance a bucket that should hold exactly
# one token after one second could report 0.9999999 and reject a request that must fit.
_EPSILON = 1e-9


class TokenBucket:
    """A bucket of ``capacity`` units refilled at ``capacity / period_s`` units per second."""

    __slots__ = ("_rate", "_stamp", "_tokens", "capacity", "period_s")

    def __init__(self, capacity: int, now: float, period_s: float = 60.0) -> None:
        if capacity <= 0:
            raise ValueError("bucket capacity must be positive")
        if period_s <= 0:
            raise ValueError("bucket period must be positive")
        self.capacity = capacity
        self.period_s = period_s
        self._rate = capacity / period_s
        self._tokens = float(capacity)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        # A clock that steps backwards (a misused fake clock) must not drain the bucket.
        if elapsed > 0:
            self._tokens = min(float(self.capacity), self._tokens + elapsed * self._rate)
            self._stamp = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` units are available: 0 if now, ``inf`` if never."""
        self._refill(now)
        if amount > self.capacity:
            return math.inf
        missing = amount - self._tokens
        if missing <= _EPSILON:
            return 0.0
        return missing / self._rate

    def take(self, amount: float, now: float) -> None:
        """Remove ``amount`` units; callers check :meth:`wait_time` first."""
        self._refill(now)
        self._tokens = max(0.0, self._tokens - amount)

    def remaining(self, now: float) -> int:
        """Whole units available now (what ``x-ratelimit-remaining-*`` reports)."""
        self._refill(now)
        return int(self._tokens + _EPSILON)

    def time_to_full(self, now: float) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        self._refill(now)
        missing = self.capacity - self._tokens
        return 0.0 if missing <= _EPSILON else missing / self._rate

    def used(self, now: float) -> int:
        """Units currently missing from a full bucket, rounded up (the "Used N" in messages)."""
        self._refill(now)
        return math.ceil(self.capacity - self._tokens - _EPSILON)


def format_reset(seconds: float) -> str:
    """Format a duration the way OpenAI's reset headers do: ``20ms``, ``1s``, ``6m0s``, ``1m30.5s``.

    Rounded up to the millisecond so a client that waits exactly this long never arrives early.
    """
    if seconds <= 0:
        return "0s"
    total_ms = math.ceil(seconds * 1000 - _EPSILON)
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_s, ms = divmod(rest, 1000)
    secs = f"{whole_s}.{ms:03d}".rstrip("0") if ms else str(whole_s)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
