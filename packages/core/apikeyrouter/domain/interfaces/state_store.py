"""The state store contract: atomic operations, never get-modify-save.

Every implementation (memory, Redis, MongoDB) passes the same contract test suite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.quota_state import WindowUsage
from apikeyrouter.domain.models.routing_decision import RoutingDecision

#: A window with no known limit: counted (so a limit learned later starts from real usage)
#: but never blocking. Finite, so every store can encode it.
UNLIMITED = 1e18


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """A limit on one metric over a sliding window, e.g. 10,000 tokens per 60 s."""

    metric: str  # "requests" | "tokens" | "spend"
    window_seconds: float
    limit: float


@dataclass(frozen=True, slots=True)
class SharedCounter:
    """A counter not owned by one key (a budget: global, per provider, model or client).

    It is checked and charged in the same atomic step as the key's own windows.
    """

    counter_id: str
    limit: WindowLimit
    amount: float


# ReservationRequest and Reservation are built on every request and never changed after:
# plain slotted dataclasses, because a frozen one costs three times as much to construct.


@dataclass(slots=True)
class ReservationRequest:
    """Reserve ``amounts`` on ``key_id`` if every one of ``limits`` (and every shared counter)
    still has room."""

    key_id: str
    limits: tuple[WindowLimit, ...]
    amounts: dict[str, float]  # metric -> amount, e.g. {"requests": 1, "tokens": 800}
    shared: tuple[SharedCounter, ...] = ()


#: (counter id, window, amount to add): how a commit or release changes each counter.
CounterDelta = tuple[str, WindowLimit, float]


@dataclass(slots=True)
class Reservation:
    key_id: str
    amounts: dict[str, float]
    at: float  # when it was charged; commit/release adjust the same window slot
    limits: tuple[WindowLimit, ...]
    shared: tuple[SharedCounter, ...] = ()

    def commit_deltas(self, actual: dict[str, float]) -> list[CounterDelta]:
        """What replacing the reserved amounts with ``actual`` adds to each counter (every
        store applies these; metrics missing from ``actual`` keep their reservation)."""
        deltas: list[CounterDelta] = []
        for limit in self.limits:
            reserved = self.amounts.get(limit.metric, 0.0)
            if delta := actual.get(limit.metric, reserved) - reserved:
                deltas.append((self.key_id, limit, delta))
        for shared in self.shared:
            if delta := actual.get(shared.limit.metric, shared.amount) - shared.amount:
                deltas.append((shared.counter_id, shared.limit, delta))
        return deltas

    def release_deltas(self) -> list[CounterDelta]:
        """What giving the whole reservation back adds to each counter."""
        deltas: list[CounterDelta] = [
            (self.key_id, limit, -amount)
            for limit in self.limits
            if (amount := self.amounts.get(limit.metric, 0.0))
        ]
        deltas.extend((s.counter_id, s.limit, -s.amount) for s in self.shared if s.amount)
        return deltas


#: A reservation and the actual amounts that replace it (``StateStore.commit``'s arguments).
FinishedCommit = tuple[Reservation, dict[str, float]]


@dataclass(frozen=True, slots=True)
class ReservationRefusal:
    """No candidate had room. ``retry_at`` is the earliest time one of them will."""

    retry_at: float | None


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    failure_threshold: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    state: CircuitState
    consecutive_failures: int
    open_until: float | None
    probe_in_flight: bool = False


class StateStore(ABC):
    """Where keys, counters, cooldowns, circuits and audit live."""

    # --- keys -------------------------------------------------------------------------------
    @abstractmethod
    async def put_key(self, key: APIKey) -> None: ...

    @abstractmethod
    async def get_key(self, key_id: str) -> APIKey | None: ...

    @abstractmethod
    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]: ...

    @abstractmethod
    async def delete_key(self, key_id: str) -> bool: ...

    @abstractmethod
    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        """Move ``key_id`` from ``expected`` to ``transition.to_state`` and append the audit
        record, atomically; return False (changing nothing) if the key is not in ``expected``."""

    # --- usage windows ----------------------------------------------------------------------
    @abstractmethod
    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        """Try candidates in order; reserve on the first whose every limit has room."""

    @abstractmethod
    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        """Replace the reserved amounts with the actual ones (in the same window slot).

        Shared counters are adjusted by the same metric's actual amount."""

    @abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose request consumed nothing upstream."""

    @abstractmethod
    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        """Add usage seen elsewhere (the provider counted more than we sent) to a window."""

    @abstractmethod
    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        """Usage of a key's windows, or of a shared counter when ``key_id`` is its id."""

    async def window_usage_many(
        self, requests: Sequence[tuple[str, Sequence[WindowLimit]]], now: float
    ) -> list[list[WindowUsage]]:
        """:meth:`window_usage` for many keys, in order, in one read where the store can
        (Redis: one pipelined round trip), so a dashboard over thousands of keys does not cost
        thousands of round trips. By default one call per key."""
        return [await self.window_usage(key_id, limits, now) for key_id, limits in requests]

    # --- cooldowns and circuits -------------------------------------------------------------
    @abstractmethod
    async def set_cooldown(self, key_id: str, until: float) -> None: ...

    @abstractmethod
    async def get_cooldown(self, key_id: str, now: float) -> float | None: ...

    @abstractmethod
    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot: ...

    @abstractmethod
    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot: ...

    @abstractmethod
    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot: ...

    async def circuits(self, key_ids: Sequence[str], now: float) -> list[CircuitSnapshot]:
        """:meth:`circuit` for many keys, in order, in one read where the store can (Redis:
        one pipelined round trip); by default one call per key."""
        return [await self.circuit(key_id, now) for key_id in key_ids]

    @abstractmethod
    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        """In half-open state, let exactly one caller probe the key."""

    # --- audit and decisions ----------------------------------------------------------------
    @abstractmethod
    async def append_audit(self, transition: StateTransition) -> None: ...

    @abstractmethod
    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]: ...

    @abstractmethod
    async def record_decision(self, decision: RoutingDecision) -> None: ...

    @abstractmethod
    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]: ...

    async def write_batch(
        self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
    ) -> None:
        """Apply finished requests' commits and record their decisions in one write where
        the store can (Redis: one pipelined round trip for the lot). The router's write-behind
        queue calls this off the request path; by default it is one call per item, in order."""
        for reservation, actual in commits:
            await self.commit(reservation, actual)
        for decision in decisions:
            await self.record_decision(decision)

    # --- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> bool:
        return True

    async def prepare(self) -> None:
        """Get ready to serve after (re)connecting, so the first calls are not the slow ones
        (the Redis store loads its scripts: a restarted server has none). Raises when the
        store is unreachable; by default there is nothing to do."""
        return

    async def close(self) -> None:
        return None
