"""A clock tests move by hand: the router, the stores and the simulator all take a clock
callable, so cooldowns, windows and circuit timers can be driven without sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """Seconds since the epoch, starting at ``start`` (default: now) and moving only when
    :meth:`advance` is called."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
