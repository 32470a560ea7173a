"""Bucketed sliding-window counter.

A window of length W is split into N buckets; usage counts while any part of its bucket is still
inside the window. That over-counts by at most one bucket (W/N), which is the safe direction: a
key never exceeds its limit in any sliding window, so it also never trips a provider's token
bucket of the same size. The Redis store implements the same arithmetic in Lua.
"""

from __future__ import annotations

import math

from apikeyrouter.domain.interfaces.state_store import WindowLimit
from apikeyrouter.domain.models.quota_state import Confidence, WindowUsage
from apikeyrouter.domain.models.trusted import trusted

BUCKETS_PER_WINDOW = 60
_ESTIMATED = Confidence.ESTIMATED


class WindowCounter:
    __slots__ = ("_amounts", "_indexes", "_newest", "_size", "buckets", "width", "window_seconds")

    def __init__(self, window_seconds: float, buckets: int = BUCKETS_PER_WINDOW) -> None:
        self.window_seconds = window_seconds
        self.buckets = buckets
        self.width = window_seconds / buckets
        self._size = size = buckets + 1
        self._indexes: list[int] = [-1] * size
        self._amounts: list[float] = [0.0] * size
        #: The newest bucket ever written: a window whose buckets have all expired (or a key
        #: idle for a whole window, the common case in a large pool) is read without a scan.
        self._newest = -1

    def _index(self, at: float) -> int:
        return math.floor(at / self.width)

    def used(self, now: float) -> float:
        oldest = self._index(now) - self.buckets
        if self._newest < oldest:
            return 0.0
        total = 0.0
        for idx, amount in zip(self._indexes, self._amounts, strict=True):
            if idx >= oldest:
                total += amount
        return total

    def add(self, at: float, amount: float, now: float | None = None) -> None:
        """Add ``amount`` to the bucket of time ``at`` (dropped if that bucket has expired)."""
        # Runs several times per request: the index arithmetic of ``_index`` is inlined.
        width = self.width
        idx = math.floor(at / width)
        if now is not None and idx < math.floor(now / width) - self.buckets:
            return
        slot = idx % self._size
        indexes, amounts = self._indexes, self._amounts
        held = indexes[slot]
        if held != idx:
            if held > idx:
                return  # the slot already holds a newer bucket: ``at`` is long expired
            indexes[slot] = idx
            amounts[slot] = 0.0
            if idx > self._newest:
                self._newest = idx
        total = amounts[slot] + amount
        amounts[slot] = total if total > 0.0 else 0.0

    def used_and_reset(self, now: float, limit: float) -> tuple[float, float | None]:
        """What the window holds at ``now``, and when it can take a whole ``limit`` again
        (None while it holds nothing)."""
        used = self.used(now)
        return used, (self._retry_at(now, used, limit, limit) if used else None)

    def fits(self, now: float, amount: float, limit: float) -> bool:
        return self.used(now) + amount <= limit

    def retry_at(self, now: float, amount: float, limit: float) -> float | None:
        """Earliest time at which ``amount`` more would fit, or None if it never can."""
        if amount > limit:
            return None
        return self._retry_at(now, self.used(now), amount, limit)

    def _retry_at(self, now: float, used: float, amount: float, limit: float) -> float | None:
        """:meth:`retry_at` given what the window holds at ``now`` (``used(now)``), for an
        ``amount`` no larger than ``limit``."""
        if used + amount <= limit:
            return now
        oldest = self._index(now) - self.buckets
        live = sorted(
            (idx, amt)
            for idx, amt in zip(self._indexes, self._amounts, strict=True)
            if idx >= oldest and amt > 0
        )
        for idx, amt in live:
            used -= amt
            if used + amount <= limit:
                return self._expiry(idx)
        # Float rounding can leave a sliver after every live bucket is gone: by the time the
        # newest one expires, the window is empty.
        return self._expiry(live[-1][0]) if live else now

    def _expiry(self, idx: int) -> float:
        """First time at which bucket ``idx`` no longer counts (robust to float rounding)."""
        at = (idx + self.buckets + 1) * self.width
        while self._index(at) <= idx + self.buckets:
            at = math.nextafter(at, math.inf)
        return at


def window_usage(counter: WindowCounter, limit: WindowLimit, now: float) -> WindowUsage:
    """A store's answer for one window, from the counter that holds it (built without
    validation: a metrics scrape reads every window of every key)."""
    used, resets_at = counter.used_and_reset(now, limit.limit)
    return trusted(
        WindowUsage,
        metric=limit.metric,
        window_seconds=limit.window_seconds,
        limit=limit.limit,
        used=used,
        reserved=0.0,
        resets_at=resets_at,
        confidence=_ESTIMATED,
    )
