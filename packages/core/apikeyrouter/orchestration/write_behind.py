"""Request bookkeeping written to a shared store off the request path, in batches.

A request on a shared store needs one round trip before its upstream call: the reservation,
which must be atomic across replicas. What follows the answer does not need to hold the answer
back: replacing the reservation's estimate with the provider's count (the commit) and the
decision record. Written inline they were two more round trips per request; here they queue,
and a background task writes whatever has gathered in one ``StateStore.write_batch`` (one
pipelined round trip on Redis), so under load many requests share one write.

What that changes, and why it is safe:

* For the few milliseconds until the batch lands, the store's windows hold the reservation's
  estimate instead of the actual count. The estimate is the upper bound (full
  ``max_tokens``, every prompt token at the uncached price) in all but rare cases, so other
  replicas see the conservative figure meanwhile. Reads that must be exact (quota and budget
  reports, tests) call :meth:`flush` first.
* A commit is never dropped for lack of room: when the queue is full, :meth:`commit` says so
  and the caller writes it inline. Decision records (history, not state) are dropped and
  counted instead.
* A batch the store refuses is logged; its commits stay at their estimates (conservative).
  The resilient store journals them through an outage and replays them, as it does for
  inline commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from apikeyrouter.domain.interfaces.state_store import FinishedCommit, Reservation, StateStore
from apikeyrouter.domain.models.routing_decision import RoutingDecision

#: Run after a commit is in the store (the soft-budget check reads the window it changed).
AfterCommit = Callable[[], Awaitable[None]]

#: Items per write_batch call: bounds one round trip's size and its time in the store.
BATCH_LIMIT = 256


class WriteBehind:
    def __init__(self, store: StateStore, log: Any, capacity: int = 10_000) -> None:
        self._store = store
        self._log = log
        self._capacity = capacity
        #: Each commit with what runs once it is written: a batch runs its own callbacks.
        self._commits: list[tuple[FinishedCommit, AfterCommit | None]] = []
        self._decisions: list[RoutingDecision] = []
        self._task: asyncio.Task[None] | None = None
        self.decisions_written = 0
        self.decisions_dropped = 0
        self.commits_written = 0
        self.commits_failed = 0
        self.batches = 0

    def commit(
        self, reservation: Reservation, actual: dict[str, float], after: AfterCommit | None = None
    ) -> bool:
        """Queue a commit (and what to run once it is written); False when the queue is full
        and the caller must write it itself."""
        if len(self._commits) >= self._capacity:
            return False
        self._commits.append(((reservation, actual), after))
        self._wake()
        return True

    def decision(self, decision: RoutingDecision) -> None:
        if len(self._decisions) >= self._capacity:
            self.decisions_dropped += 1
            return
        self._decisions.append(decision)
        self._wake()

    @property
    def pending(self) -> int:
        return len(self._commits) + len(self._decisions)

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._commits or self._decisions:
            queued = self._commits[:BATCH_LIMIT]
            decisions = self._decisions[:BATCH_LIMIT]
            del self._commits[: len(queued)]
            del self._decisions[: len(decisions)]
            await self._write([commit for commit, _ in queued], decisions)
            for callback in (after for _, after in queued if after is not None):
                try:
                    await callback()
                except Exception as exc:  # a budget check must never take routing down
                    self._log.warning("after_commit_failed", error=type(exc).__name__)

    async def _write(self, commits: list[FinishedCommit], decisions: list[RoutingDecision]) -> None:
        self.batches += 1
        try:
            await self._store.write_batch(commits, decisions)
        except Exception as exc:  # bookkeeping must never take routing down
            self.commits_failed += len(commits)
            self.decisions_dropped += len(decisions)
            self._log.warning(
                "store_writes_failed",
                error=type(exc).__name__,
                commits=len(commits),
                decisions=len(decisions),
            )
            return
        self.commits_written += len(commits)
        self.decisions_written += len(decisions)

    async def flush(self) -> None:
        """Write everything queued (before an exact read, at shutdown, in tests)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
        await self._drain()
