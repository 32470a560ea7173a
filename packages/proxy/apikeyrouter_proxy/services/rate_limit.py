"""Per-client request rate limiting: a sliding window counter.

Two fixed one-minute buckets (previous and current) approximate a true sliding window: the
estimate is ``previous * (1 - elapsed_fraction) + current``. It needs O(1) memory per client
whatever the limit (a log of timestamps would need one entry per request), never lets a burst
at a bucket boundary through twice, and says exactly when the next request would fit, which
becomes the ``Retry-After`` a throttled client gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SlidingWindowLimiter:
    """At most ``limit`` requests per ``window_seconds`` (approximately, from two buckets)."""

    __slots__ = ("_clock", "_current", "_previous", "_window", "_window_start", "limit")

    def __init__(
        self,
        limit: int,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("limit must be >= 1 and window_seconds > 0")
        self.limit = limit
        self._window = window_seconds
        self._clock = clock
        self._window_start = clock()
        self._previous = 0
        self._current = 0

    def _roll(self, now: float) -> None:
        elapsed_windows = int((now - self._window_start) // self._window)
        if elapsed_windows <= 0:
            return
        self._previous = self._current if elapsed_windows == 1 else 0
        self._current = 0
        self._window_start += elapsed_windows * self._window

    def estimate(self, now: float | None = None) -> float:
        """Requests counted in the sliding window ending at ``now``."""
        now = self._clock() if now is None else now
        self._roll(now)
        fraction = (now - self._window_start) / self._window
        return self._previous * (1.0 - fraction) + self._current

    def acquire(self) -> float | None:
        """Count one request. Returns None if admitted, else the seconds until one would be."""
        now = self._clock()
        self._roll(now)
        fraction = (now - self._window_start) / self._window
        if self._previous * (1.0 - fraction) + self._current + 1 <= self.limit:
            self._current += 1
            return None
        return self._retry_after(now, fraction)

    def _retry_after(self, now: float, fraction: float) -> float:
        limit, current, previous = self.limit, self._current, self._previous
        if current + 1 <= limit and previous > 0:
            # Room appears within this bucket as the previous bucket's weight decays.
            needed = 1.0 - (limit - current - 1) / previous
            return max(0.0, (needed - fraction) * self._window)
        # Not before the next bucket; there, this bucket becomes the decaying "previous" one.
        until_next = (1.0 - fraction) * self._window
        if current <= 0:
            return until_next
        needed = max(0.0, 1.0 - (limit - 1) / current)
        return until_next + needed * self._window
