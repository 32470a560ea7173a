"""In-memory state store: the default, with no dependencies.

Atomicity comes from asyncio: no method awaits between reading and writing, so each call is
one indivisible step for every other coroutine in the process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from apikeyrouter.domain.interfaces.state_store import (
    UNLIMITED,
    CircuitPolicy,
    CircuitSnapshot,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.quota_state import WindowUsage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.state_store.window_counter import WindowCounter, window_usage


class _Circuit:
    __slots__ = ("failures", "open_until", "probe_in_flight", "state")

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.open_until: float | None = None
        self.probe_in_flight = False

    def refresh(self, now: float) -> None:
        if (
            self.state is CircuitState.OPEN
            and self.open_until is not None
            and now >= self.open_until
        ):
            self.state = CircuitState.HALF_OPEN
            self.probe_in_flight = False

    def snapshot(self) -> CircuitSnapshot:
        return CircuitSnapshot(self.state, self.failures, self.open_until, self.probe_in_flight)


class InMemoryStateStore(StateStore):
    def __init__(self, audit_limit: int = 10_000, decision_limit: int = 1_000) -> None:
        self._keys: dict[str, APIKey] = {}
        self._windows: dict[tuple[str, str, float], WindowCounter] = {}
        self._cooldowns: dict[str, float] = {}
        self._circuits: dict[str, _Circuit] = {}
        self._audit: deque[StateTransition] = deque(maxlen=audit_limit)
        self._decisions: deque[RoutingDecision] = deque(maxlen=decision_limit)

    # --- keys -------------------------------------------------------------------------------
    async def put_key(self, key: APIKey) -> None:
        self._keys[key.id] = key

    async def get_key(self, key_id: str) -> APIKey | None:
        return self._keys.get(key_id)

    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        if provider_id is None:
            return list(self._keys.values())
        return [k for k in self._keys.values() if k.provider_id == provider_id]

    async def delete_key(self, key_id: str) -> bool:
        self._cooldowns.pop(key_id, None)
        self._circuits.pop(key_id, None)
        for window_id in [w for w in self._windows if w[0] == key_id]:
            del self._windows[window_id]
        return self._keys.pop(key_id, None) is not None

    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        key = self._keys.get(key_id)
        if key is None or key.state is not expected:
            return False
        key.state = transition.to_state
        key.state_reason = transition.reason
        key.state_changed_at = transition.at
        key.cooldown_until = cooldown_until
        if cooldown_until is None:
            self._cooldowns.pop(key_id, None)
        else:
            self._cooldowns[key_id] = cooldown_until
        self._audit.append(transition)
        return True

    # --- usage windows ----------------------------------------------------------------------
    def window_counter(self, key_id: str, limit: WindowLimit) -> WindowCounter:
        """The live counter of one window (of a key or a shared counter), created on first use.
        Readers outside the store only read it: changes go through reserve, commit, release
        and charge."""
        window_id = (key_id, limit.metric, limit.window_seconds)
        counter = self._windows.get(window_id)
        if counter is None:
            counter = WindowCounter(limit.window_seconds)
            self._windows[window_id] = counter
        return counter

    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        earliest: float | None = None
        for candidate in candidates:
            checks = [
                (self.window_counter(candidate.key_id, limit), limit.limit, amount)
                for limit in candidate.limits
                if (amount := candidate.amounts.get(limit.metric, 0.0))
            ]
            checks.extend(
                (
                    self.window_counter(shared.counter_id, shared.limit),
                    shared.limit.limit,
                    shared.amount,
                )
                for shared in candidate.shared
            )
            blocked = False
            never = False
            blocked_until = now
            for counter, limit_value, amount in checks:
                if limit_value < UNLIMITED and not counter.fits(now, amount, limit_value):
                    blocked = True
                    at = counter.retry_at(now, amount, limit_value)
                    if at is None:
                        never = True
                    else:
                        blocked_until = max(blocked_until, at)
            if not blocked:
                for counter, _, amount in checks:
                    counter.add(now, amount)
                return Reservation(
                    candidate.key_id,
                    dict(candidate.amounts),
                    now,
                    candidate.limits,
                    candidate.shared,
                )
            if not never:
                earliest = blocked_until if earliest is None else min(earliest, blocked_until)
        return ReservationRefusal(earliest)

    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        for counter_id, limit, delta in reservation.commit_deltas(actual):
            self.window_counter(counter_id, limit).add(reservation.at, delta)

    async def release(self, reservation: Reservation) -> None:
        for counter_id, limit, delta in reservation.release_deltas():
            self.window_counter(counter_id, limit).add(reservation.at, delta)

    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        self.window_counter(key_id, limit).add(now, amount)

    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        return [window_usage(self.window_counter(key_id, limit), limit, now) for limit in limits]

    # --- cooldowns and circuits -------------------------------------------------------------
    async def set_cooldown(self, key_id: str, until: float) -> None:
        current = self._cooldowns.get(key_id)
        if current is None or until > current:
            self._cooldowns[key_id] = until

    async def get_cooldown(self, key_id: str, now: float) -> float | None:
        until = self._cooldowns.get(key_id)
        if until is None or until <= now:
            return None
        return until

    def _circuit(self, key_id: str, now: float) -> _Circuit:
        circuit = self._circuits.get(key_id)
        if circuit is None:
            circuit = _Circuit()
            self._circuits[key_id] = circuit
        circuit.refresh(now)
        return circuit

    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot:
        circuit = self._circuit(key_id, now)
        circuit.state = CircuitState.CLOSED
        circuit.failures = 0
        circuit.open_until = None
        circuit.probe_in_flight = False
        return circuit.snapshot()

    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot:
        circuit = self._circuit(key_id, now)
        circuit.failures += 1
        if circuit.state is CircuitState.HALF_OPEN or circuit.failures >= policy.failure_threshold:
            circuit.state = CircuitState.OPEN
            circuit.open_until = now + policy.open_seconds
            circuit.probe_in_flight = False
        return circuit.snapshot()

    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot:
        return self._circuit(key_id, now).snapshot()

    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        circuit = self._circuit(key_id, now)
        if circuit.state is not CircuitState.HALF_OPEN or circuit.probe_in_flight:
            return False
        circuit.probe_in_flight = True
        return True

    # --- audit and decisions ----------------------------------------------------------------
    async def append_audit(self, transition: StateTransition) -> None:
        self._audit.append(transition)

    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]:
        if limit <= 0:
            return []
        items = [t for t in self._audit if key_id is None or t.key_id == key_id]
        return items[-limit:]

    async def record_decision(self, decision: RoutingDecision) -> None:
        self._decisions.append(decision)

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        return list(self._decisions)[-limit:] if limit > 0 else []
