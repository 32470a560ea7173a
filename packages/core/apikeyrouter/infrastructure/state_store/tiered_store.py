"""Redis for hot state, MongoDB for durable records: one :class:`StateStore` over two backends.

Every request touches usage windows, cooldowns and circuits; Redis answers those in one round
trip per operation (server-side scripts), which MongoDB's compare-and-swap cannot match. What
must outlive a Redis flush or restart (keys, the audit trail, routing decisions, and the usage
ledger, policies and budgets that only MongoDB keeps) is written to MongoDB as well. So:

* **hot only**: reservations, commits, releases, charges, window usage, cooldowns, circuits.
  A Redis that loses its data loses at most the current windows and cooldowns, which the
  router relearns from the providers' answers.
* **both, write-through**: key puts and deletes, key state changes (compare-and-set on the hot
  store decides; the durable copy follows, also by compare-and-set, falling back to copying the
  hot document when the two diverged), audit records. The caller waits for both writes: these
  are management and state-change operations, not the per-request path.
* **both, write-behind**: routing decisions (one per request). The hot store records each at
  once; the durable copy is queued (bounded, ``decision_queue_size``) and inserted in batches by
  a background task, so MongoDB's latency never lands on a request. A full queue drops the
  durable copy (``decisions_dropped`` counts them); the hot store still has it.
* **reads** come from the hot store (keys, audit, decisions), which also carries the change
  events replicas follow.
* **durable only**: the usage ledger, policies and budgets (delegated to the MongoDB store).

:meth:`initialize` applies MongoDB's migrations, then warms the hot store: keys MongoDB has
and Redis lacks are copied in (with their cooldowns), keys only Redis has are copied to MongoDB,
and an empty hot audit trail or decision list gets the most recent durable records back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from datetime import date
from typing import Any

from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    FinishedCommit,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.domain.models.quota_state import WindowUsage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.mongo_codec import LedgerField, UsageTotals
from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore
from apikeyrouter.infrastructure.state_store.resilient_store import is_unavailable_error

__all__ = ["TieredStateStore"]

_log = get_logger("apikeyrouter.state_store.tiered")


def _event_source(store: StateStore) -> Any | None:
    """The object publishing change events: the hot store, or the primary it wraps."""
    for candidate in (store, getattr(store, "primary", None)):
        if candidate is not None and callable(getattr(candidate, "subscribe_events", None)):
            return candidate
    return None


class TieredStateStore(StateStore):
    """Hot state on ``hot`` (a Redis store), durable records on ``durable`` (a MongoDB store).

    Both stores are owned: :meth:`close` closes them. See the module docstring for what goes
    where and why.
    """

    #: Decisions inserted into MongoDB per round trip by the write-behind task.
    decision_batch_size = 500

    def __init__(
        self,
        hot: StateStore,
        durable: MongoStateStore,
        *,
        decision_queue_size: int = 10_000,
        warm_audit_limit: int = 1_000,
        warm_decision_limit: int = 200,
    ) -> None:
        if decision_queue_size < 1:
            raise ValueError("decision_queue_size must be at least 1")
        self._hot = hot
        self._durable = durable
        self._warm_audit_limit = warm_audit_limit
        self._warm_decision_limit = warm_decision_limit
        self._decisions: asyncio.Queue[RoutingDecision] = asyncio.Queue(decision_queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        #: Durable decision copies dropped because the queue was full, or failed to insert.
        self.decisions_dropped = 0
        #: Durable decision copies written.
        self.decisions_written = 0

    @property
    def hot(self) -> StateStore:
        return self._hot

    @property
    def durable(self) -> MongoStateStore:
        return self._durable

    # --- change events (from the hot store) -------------------------------------------------
    @property
    def instance_id(self) -> str | None:
        """The hot store's ``instance_id``, stamped on the change events it publishes."""
        value = getattr(_event_source(self._hot), "instance_id", None)
        return value if isinstance(value, str) else None

    def subscribe_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """The hot store's change events (replicas follow each other through Redis)."""
        source = _event_source(self._hot)
        if source is None:
            raise TypeError(f"{type(self._hot).__name__} publishes no change events")
        events: AsyncGenerator[dict[str, Any], None] = source.subscribe_events()
        return events

    # --- lifecycle --------------------------------------------------------------------------
    async def initialize(self) -> list[int]:
        """Migrate MongoDB, then warm the hot store from it; returns the migrations applied.

        MongoDB must answer (its schema is the durable truth). Warming is best effort: with
        Redis away at start, an outage wrapper around this store decides how to serve (fail
        open or closed) and writes this process's keys back when Redis returns."""
        applied = await self._durable.initialize()
        try:
            await self.warm()
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            _log.warning("tiered_store_warm_skipped", error=type(exc).__name__)
        return applied

    async def warm(self) -> dict[str, int]:
        """Reconcile the two stores' keys and refill an empty hot audit trail and decision list
        from MongoDB (after a Redis restart without persistence, say). Idempotent."""
        hot, durable = self._hot, self._durable
        hot_keys = {key.id: key for key in await hot.list_keys()}
        durable_keys = {key.id: key for key in await durable.list_keys()}
        counts = {"keys_to_hot": 0, "keys_to_durable": 0, "audit": 0, "decisions": 0}
        for key_id, key in durable_keys.items():
            if key_id not in hot_keys:
                await hot.put_key(key)
                if key.cooldown_until is not None:
                    await hot.set_cooldown(key_id, key.cooldown_until)
                counts["keys_to_hot"] += 1
        for key_id, key in hot_keys.items():
            if key_id not in durable_keys:
                await durable.put_key(key)
                counts["keys_to_durable"] += 1
        if self._warm_audit_limit > 0 and not await hot.list_audit(limit=1):
            for transition in await durable.list_audit(limit=self._warm_audit_limit):
                await hot.append_audit(transition)
                counts["audit"] += 1
        if self._warm_decision_limit > 0 and not await hot.recent_decisions(limit=1):
            for decision in await durable.recent_decisions(limit=self._warm_decision_limit):
                await hot.record_decision(decision)
                counts["decisions"] += 1
        if any(counts.values()):
            _log.info("tiered_store_warmed", **counts)
        return counts

    async def ping(self) -> bool:
        hot, durable = await asyncio.gather(self._hot.ping(), self._durable.ping())
        return hot and durable

    async def prepare(self) -> None:
        await asyncio.gather(self._hot.prepare(), self._durable.prepare())

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait (up to ``timeout``) until every queued decision reached MongoDB."""
        if self._writer is None or self._writer.done():
            return self._decisions.empty()
        try:
            async with asyncio.timeout(timeout):
                await self._decisions.join()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closed = True
        await self.flush()
        task, self._writer = self._writer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self._decisions.empty():
            _log.warning("tiered_store_decisions_unwritten", count=self._decisions.qsize())
        try:
            await self._hot.close()
        finally:
            await self._durable.close()

    # --- keys -------------------------------------------------------------------------------
    async def put_key(self, key: APIKey) -> None:
        await self._hot.put_key(key)
        await self._durable.put_key(key)

    async def get_key(self, key_id: str) -> APIKey | None:
        return await self._hot.get_key(key_id)

    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        return await self._hot.list_keys(provider_id)

    async def delete_key(self, key_id: str) -> bool:
        hot = await self._hot.delete_key(key_id)
        durable = await self._durable.delete_key(key_id)
        return hot or durable

    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        if not await self._hot.compare_and_set_state(key_id, expected, transition, cooldown_until):
            return False
        # The hot store decided; the durable copy follows (its own audit record included).
        if not await self._durable.compare_and_set_state(
            key_id, expected, transition, cooldown_until
        ):
            # MongoDB's copy diverged (a write it missed): copy the hot document over it.
            current = await self._hot.get_key(key_id)
            if current is not None:
                await self._durable.put_key(current)
            await self._durable.append_audit(transition)
        return True

    # --- usage windows, cooldowns, circuits: hot only ---------------------------------------
    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        return await self._hot.reserve(candidates, now)

    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        await self._hot.commit(reservation, actual)

    async def release(self, reservation: Reservation) -> None:
        await self._hot.release(reservation)

    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        await self._hot.charge(key_id, limit, amount, now)

    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        return await self._hot.window_usage(key_id, limits, now)

    async def window_usage_many(
        self, requests: Sequence[tuple[str, Sequence[WindowLimit]]], now: float
    ) -> list[list[WindowUsage]]:
        return await self._hot.window_usage_many(requests, now)

    async def set_cooldown(self, key_id: str, until: float) -> None:
        await self._hot.set_cooldown(key_id, until)

    async def get_cooldown(self, key_id: str, now: float) -> float | None:
        return await self._hot.get_cooldown(key_id, now)

    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot:
        return await self._hot.record_success(key_id, now)

    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot:
        return await self._hot.record_failure(key_id, now, policy)

    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot:
        return await self._hot.circuit(key_id, now)

    async def circuits(self, key_ids: Sequence[str], now: float) -> list[CircuitSnapshot]:
        return await self._hot.circuits(key_ids, now)

    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        return await self._hot.try_acquire_probe(key_id, now)

    # --- audit and decisions ----------------------------------------------------------------
    async def append_audit(self, transition: StateTransition) -> None:
        await self._hot.append_audit(transition)
        await self._durable.append_audit(transition)

    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]:
        return await self._hot.list_audit(key_id, limit)

    async def record_decision(self, decision: RoutingDecision) -> None:
        await self._hot.record_decision(decision)
        self._queue_durable(decision)

    async def write_batch(
        self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
    ) -> None:
        await self._hot.write_batch(commits, decisions)
        for decision in decisions:
            self._queue_durable(decision)

    def _queue_durable(self, decision: RoutingDecision) -> None:
        if self._closed:
            self.decisions_dropped += 1
            return
        try:
            self._decisions.put_nowait(decision)
        except asyncio.QueueFull:
            self.decisions_dropped += 1
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_decisions(), name="tiered-store-decisions"
            )

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        return await self._hot.recent_decisions(limit)

    async def _write_decisions(self) -> None:
        """Drain the queue into MongoDB in batches; a failed batch is counted and dropped (the
        hot store has those decisions; they are diagnostics, not accounting)."""
        queue = self._decisions
        while True:
            batch = [await queue.get()]
            while len(batch) < self.decision_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._durable.record_decisions(batch)
                self.decisions_written += len(batch)
            except Exception as exc:
                self.decisions_dropped += len(batch)
                _log.warning(
                    "tiered_store_decisions_failed", count=len(batch), error=type(exc).__name__
                )
            finally:
                for _ in batch:
                    queue.task_done()

    # --- durable only: usage ledger, policies, budgets --------------------------------------
    async def record_usage(
        self,
        *,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        day: str | date,
        requests: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        await self._durable.record_usage(
            key_id=key_id,
            provider_id=provider_id,
            model=model,
            client_id=client_id,
            day=day,
            requests=requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
        )

    async def usage_summary(
        self,
        *,
        start_day: str | date | None = None,
        end_day: str | date | None = None,
        key_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
        client_id: str | None = None,
        group_by: Sequence[LedgerField] = ("key_id",),
    ) -> list[UsageTotals]:
        return await self._durable.usage_summary(
            start_day=start_day,
            end_day=end_day,
            key_id=key_id,
            provider_id=provider_id,
            model=model,
            client_id=client_id,
            group_by=group_by,
        )

    async def save_policies(self, policies: Sequence[Policy]) -> int:
        return await self._durable.save_policies(policies)

    async def load_policies(self) -> list[Policy]:
        return await self._durable.load_policies()

    async def save_budget(self, budget: Budget) -> None:
        await self._durable.save_budget(budget)

    async def delete_budget(self, budget_id: str) -> bool:
        return await self._durable.delete_budget(budget_id)

    async def load_budgets(self) -> list[Budget]:
        return await self._durable.load_budgets()
