"""Held requests (the ``timeout`` fault) that a shutdown can release at once.

A held request sleeps for up to ``timeout_s`` (30 s by default) so the client times out. Left
alone it would keep uvicorn's graceful shutdown waiting just as long, so every hold also waits
on a future that :meth:`HoldRegistry.release_all` resolves, from any thread, and on the client
disconnecting (nobody is left to answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from enum import Enum

from .asgi import Receive

__all__ = ["HoldOutcome", "HoldRegistry"]


class HoldOutcome(Enum):
    ELAPSED = "elapsed"  # the full hold passed: answer normally (a very slow response)
    RELEASED = "released"  # the server is shutting down
    DISCONNECTED = "disconnected"  # the client gave up


class HoldRegistry:
    """Tracks in-flight holds across event loops and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._closed = False

    @property
    def active(self) -> int:
        return len(self._waiters)

    def wait_for(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Block (a thread, not a loop) until ``count`` requests are held; False on timeout.

        Lets a test know a request is parked server-side without sleeping and hoping.
        """
        with self._changed:
            return self._changed.wait_for(lambda: len(self._waiters) >= count, timeout_s)

    def open(self) -> None:
        """Accept holds again (a server (re)started on this provider)."""
        with self._lock:
            self._closed = False

    def release_all(self) -> None:
        """End every hold now and make new ones return at once, until :meth:`open`."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
        for loop, future in waiters:
            # The loop may already be gone (its server thread ended): nothing left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    async def hold(self, seconds: float, receive: Receive) -> HoldOutcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._closed:
                return HoldOutcome.RELEASED
            self._waiters.add(entry)
            self._changed.notify_all()
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait(
                (future, disconnect), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            with self._lock:
                self._waiters.discard(entry)
            disconnect.cancel()
            future.cancel()
        if future in done:
            return HoldOutcome.RELEASED
        if disconnect in done:
            return HoldOutcome.DISCONNECTED
        return HoldOutcome.ELAPSED


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
