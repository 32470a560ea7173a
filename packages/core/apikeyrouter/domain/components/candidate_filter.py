"""Which keys may take a request right now, and why the others may not."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from apikeyrouter.domain.components.routing_engine import Candidate
from apikeyrouter.domain.interfaces.state_store import CircuitSnapshot, CircuitState
from apikeyrouter.domain.models.api_key import ROUTABLE_STATES, SELF_HEALING_STATES, APIKey


@dataclass(slots=True)
class CandidateSet:
    candidates: list[Candidate] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    considered: int = 0
    earliest_ready_at: float | None = None  # when the first excluded key comes back

    def exclude(self, reason: str, ready_at: float | None = None) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1
        if ready_at is not None and (
            self.earliest_ready_at is None or ready_at < self.earliest_ready_at
        ):
            self.earliest_ready_at = ready_at


def collect_candidates(
    keys: Iterable[APIKey],
    model: str,
    now: float,
    circuits: Mapping[str, CircuitSnapshot],
    skip: set[str] | frozenset[str] = frozenset(),
) -> CandidateSet:
    """One pass over the keys: cheap attribute checks only, no I/O."""
    result = CandidateSet()
    for key in keys:
        result.considered += 1
        state = key.state
        cooldown = key.cooldown_until
        if state not in ROUTABLE_STATES:
            if state in SELF_HEALING_STATES and cooldown is not None:
                if cooldown > now:
                    result.exclude(state.value, cooldown)
                    continue
            else:
                result.exclude(state.value)
                continue
        elif cooldown is not None and cooldown > now:
            result.exclude("cooling_down", cooldown)
            continue
        if not key.serves_model(model):
            result.exclude("model_not_served")
            continue
        circuit = circuits.get(key.id)
        circuit_state = CircuitState.CLOSED
        if circuit is not None and circuit.state is not CircuitState.CLOSED:
            if circuit.open_until is not None and circuit.open_until > now:
                result.exclude("circuit_open", circuit.open_until)
                continue
            circuit_state = CircuitState.HALF_OPEN
        if key.id in skip:  # checked last, so a tried key that is now cooling down says so
            result.exclude("already_tried")
            continue
        result.candidates.append(Candidate(key, circuit_state))
    return result
