"""Routing decisions written to the store off the request path.

A decision record is history, not state: no request needs it to be stored before the answer
goes back. With a shared store, writing it inline is one more round trip per request, so it goes
to a bounded queue that a background task drains. A full queue drops the record and counts it
rather than slow requests down; close() flushes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.routing_decision import RoutingDecision


class BackgroundDecisionLog:
    def __init__(self, store: StateStore, log: Any, capacity: int = 10_000) -> None:
        self._store = store
        self._log = log
        self._queue: asyncio.Queue[RoutingDecision] = asyncio.Queue(maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def submit(self, decision: RoutingDecision) -> None:
        try:
            self._queue.put_nowait(decision)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while not self._queue.empty():
            decision = self._queue.get_nowait()
            try:
                await self._store.record_decision(decision)
                self.written += 1
            except Exception as exc:  # history must never take routing down
                self.dropped += 1
                self._log.warning("decision_not_recorded", error=type(exc).__name__)

    async def flush(self) -> None:
        """Write everything queued (at shutdown, or for a test that reads the history)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
        await self._drain()
