"""Which keys may take a request right now, and why the others may not.

This loop runs over a provider's keys on every request, so it is written for speed: identity
comparisons on enum members (no hashing), one attribute read per field, no calls.

A large pool is not scanned whole: once ``limit`` routable keys are found the scan stops, and
the next request starts where this one stopped, so every key keeps being visited in turn and
the work per request stays bounded however many keys a provider has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from apikeyrouter.domain.components.routing_engine import Candidate
from apikeyrouter.domain.interfaces.state_store import CircuitSnapshot, CircuitState
from apikeyrouter.domain.models.api_key import APIKey, KeyState

_AVAILABLE = KeyState.AVAILABLE
_RECOVERING = KeyState.RECOVERING
_THROTTLED = KeyState.THROTTLED
_EXHAUSTED = KeyState.EXHAUSTED
_CLOSED = CircuitState.CLOSED
_HALF_OPEN = CircuitState.HALF_OPEN


@dataclass(slots=True)
class CandidateSet:
    candidates: list[Candidate] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    considered: int = 0
    earliest_ready_at: float | None = None  # when the first excluded key comes back
    #: Keys in the pools scanned; more than ``considered`` when a scan stopped at its limit.
    pool: int = 0
    #: Where the next scan of each truncated pool starts (provider id: position).
    resume_at: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """Whether some keys were not looked at (their pool was larger than the scan limit)."""
        return self.considered < self.pool

    def exclude(self, reason: str, ready_at: float | None = None) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1
        if ready_at is not None and (
            self.earliest_ready_at is None or ready_at < self.earliest_ready_at
        ):
            self.earliest_ready_at = ready_at

    def merge(self, other: CandidateSet) -> None:
        self.candidates.extend(other.candidates)
        self.considered += other.considered
        self.pool += other.pool
        self.resume_at.update(other.resume_at)
        for reason, count in other.excluded.items():
            self.excluded[reason] = self.excluded.get(reason, 0) + count
        ready = other.earliest_ready_at
        if ready is not None and (self.earliest_ready_at is None or ready < self.earliest_ready_at):
            self.earliest_ready_at = ready


_CHUNK = 64  # keys copied out of a pool at a time by a rotating scan


def _rotated(keys: Sequence[APIKey], start: int) -> Iterator[APIKey]:
    """Every key once, beginning at ``start`` and wrapping round, copying a chunk at a time
    (not the whole pool: a scan usually stops after a few chunks)."""
    size = len(keys)
    for begin in range(start, start + size, _CHUNK):
        end = min(begin + _CHUNK, start + size)
        if end <= size:
            yield from keys[begin:end]
        elif begin >= size:
            yield from keys[begin - size : end - size]
        else:
            yield from keys[begin:]
            yield from keys[: end - size]


def collect_candidates(
    keys: Sequence[APIKey],
    model: str,
    now: float,
    circuits: Mapping[str, CircuitSnapshot],
    skip: set[str] | frozenset[str] = frozenset(),
    allows: Callable[[APIKey], bool] | None = None,
    *,
    limit: int | None = None,
    start: int = 0,
    pool_id: str = "",
) -> CandidateSet:
    """One pass over the keys: cheap attribute checks only, no I/O.

    Routable: available or recovering with no cooldown pending; throttled or exhausted once
    their cooldown has passed. ``circuits`` only needs entries for keys that have failed;
    ``allows`` is the policy's key filter (None when the policy restricts nothing).

    ``limit``: stop once this many routable keys are found, in a pool larger than that, scanning
    from ``start``; the result's ``resume_at[pool_id]`` says where the next scan should begin.
    A pool no larger than ``limit`` is always scanned whole, in order, from its first key.
    """
    result = CandidateSet()
    candidates = result.candidates
    append = candidates.append
    size = len(keys)
    result.pool = size
    stop_at = limit if limit is not None and size > limit else 0
    bounded = stop_at > 0
    considered = 0
    for key in _rotated(keys, start % size) if bounded else keys:
        considered += 1
        state = key.state
        cooldown = key.cooldown_until
        if state is _AVAILABLE or state is _RECOVERING:
            if cooldown is not None and cooldown > now:
                result.exclude("cooling_down", cooldown)
                continue
        elif state is _THROTTLED or state is _EXHAUSTED:
            if cooldown is None or cooldown > now:
                result.exclude(state.value, cooldown)
                continue
        else:
            result.exclude(state.value)
            continue
        if (key.models is not None and model not in key.models) or (
            key.excluded_models and model in key.excluded_models
        ):
            result.exclude("model_not_served")
            continue
        if allows is not None and not allows(key):
            result.exclude("policy")
            continue
        circuit_state = _CLOSED
        if circuits:
            circuit = circuits.get(key.id)
            if circuit is not None and circuit.state is not _CLOSED:
                if circuit.open_until is not None and circuit.open_until > now:
                    result.exclude("circuit_open", circuit.open_until)
                    continue
                circuit_state = _HALF_OPEN
        if skip and key.id in skip:  # checked last: a tried key now cooling down says so
            result.exclude("already_tried")
            continue
        append(Candidate(key, circuit_state))
        if bounded and len(candidates) >= stop_at:
            break
    result.considered = considered
    if bounded:
        result.resume_at[pool_id] = (start + considered) % size
    return result
