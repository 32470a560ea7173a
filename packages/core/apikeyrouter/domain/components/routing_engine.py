"""Ranks candidate keys for an objective and explains the choice.

Pure logic: it sees keys, their runtime stats and (optionally) prices and quota headroom, and
returns the best few candidates in order with their scores. The router then reserves capacity on
the first of them that still has room.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from apikeyrouter.domain.interfaces.state_store import CircuitState
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.domain.models.routing_decision import CandidateScore, RoutingDecision

#: USD per 1M tokens (blended) for a key serving a model, or None when unknown.
PriceLookup = Callable[[APIKey, str], float | None]
#: Fraction of quota left in a key's tightest window (1.0 when nothing is limited).
HeadroomLookup = Callable[[APIKey], float]

_EMPTY_STATS = KeyStats()
_UNKNOWN_LATENCY_MS = 0.0  # untried keys look fast, so they get explored


@dataclass(slots=True)
class Candidate:
    key: APIKey
    circuit: CircuitState = CircuitState.CLOSED


@dataclass(slots=True)
class Ranking:
    ordered: list[Candidate]
    scores: list[CandidateScore]


def _load(stats: KeyStats, weight: float) -> float:
    return (stats.served + stats.in_flight) / weight


class RoutingEngine:
    def __init__(
        self,
        default_objective: RoutingObjective = RoutingObjective.FAIRNESS,
        price_lookup: PriceLookup | None = None,
        headroom_lookup: HeadroomLookup | None = None,
        top_n: int = 8,
    ) -> None:
        self.default_objective = default_objective
        self._price = price_lookup
        self._headroom = headroom_lookup
        self.top_n = top_n

    def set_lookups(
        self, price_lookup: PriceLookup | None = None, headroom_lookup: HeadroomLookup | None = None
    ) -> None:
        if price_lookup is not None:
            self._price = price_lookup
        if headroom_lookup is not None:
            self._headroom = headroom_lookup

    def _components(
        self,
        objective: RoutingObjective,
        candidate: Candidate,
        stats: KeyStats,
        model: str,
    ) -> tuple[float, dict[str, float]]:
        """Score (higher is better) and the numbers behind it."""
        key = candidate.key
        load = _load(stats, key.weight)
        half_open_penalty = 0.5 if candidate.circuit is CircuitState.HALF_OPEN else 1.0
        if objective is RoutingObjective.FAIRNESS:
            score = -load
            parts = {"weighted_load": load}
        elif objective is RoutingObjective.RELIABILITY:
            score = stats.success_rate * half_open_penalty - 0.001 * load
            parts = {"success_rate": stats.success_rate, "weighted_load": load}
        elif objective is RoutingObjective.LATENCY:
            latency = stats.latency_ms if stats.latency_ms is not None else _UNKNOWN_LATENCY_MS
            score = -latency - 0.001 * load
            parts = {"latency_ms": latency, "weighted_load": load}
        elif objective is RoutingObjective.COST:
            price = self._price(key, model) if self._price is not None else None
            if price is None:  # unknown prices rank after every known one
                score = -1e12 - load
                parts = {"price_unknown": 1.0, "weighted_load": load}
            else:
                score = -price - 1e-6 * load
                parts = {"price_per_mtok": price, "weighted_load": load}
        else:  # QUOTA: most headroom first, load as the tie-break
            headroom = self._headroom(key) if self._headroom is not None else 1.0
            score = headroom * half_open_penalty - 0.001 * load
            parts = {"headroom": headroom, "weighted_load": load}
        if candidate.circuit is CircuitState.HALF_OPEN:
            parts["half_open"] = 1.0
        return score, parts

    def rank(
        self,
        candidates: Sequence[Candidate],
        stats: Mapping[str, KeyStats],
        model: str,
        objective: RoutingObjective | None = None,
    ) -> Ranking:
        chosen_objective = objective or self.default_objective
        scored: list[tuple[float, float, int, Candidate, dict[str, float]]] = []
        for position, candidate in enumerate(candidates):
            key_stats = stats.get(candidate.key.id, _EMPTY_STATS)
            score, parts = self._components(chosen_objective, candidate, key_stats, model)
            # Ties go to the key used longest ago, then to registration order: deterministic.
            scored.append((score, -key_stats.last_used_at, -position, candidate, parts))
        best = heapq.nlargest(self.top_n, scored, key=lambda item: item[:3])
        return Ranking(
            ordered=[item[3] for item in best],
            scores=[
                CandidateScore(
                    key_id=item[3].key.id,
                    provider_id=item[3].key.provider_id,
                    score=round(item[0], 6),
                    components={k: round(v, 6) for k, v in item[4].items()},
                )
                for item in best
            ],
        )


def explain(decision: RoutingDecision) -> str:
    """One line a human can read: what was chosen, by which objective, and why."""
    if decision.chosen_key_id is None:
        excluded = ", ".join(f"{reason}: {count}" for reason, count in decision.excluded.items())
        return f"no key could serve {decision.model}: {decision.considered} considered" + (
            f" ({excluded})" if excluded else ""
        )
    chosen = next((c for c in decision.candidates if c.key_id == decision.chosen_key_id), None)
    reason = ""
    if chosen is not None:
        parts = ", ".join(f"{k}={v:g}" for k, v in chosen.components.items())
        reason = f" ({parts})"
        runner_up = next(
            (c for c in decision.candidates if c.key_id != decision.chosen_key_id), None
        )
        if runner_up is not None:
            reason += f", next best {runner_up.key_id} scored {runner_up.score:g}"
    excluded_text = ""
    if decision.excluded:
        excluded_text = "; excluded " + ", ".join(
            f"{reason_}: {count}" for reason_, count in sorted(decision.excluded.items())
        )
    attempt = f"attempt {decision.attempt}: " if decision.attempt > 1 else ""
    return (
        f"{attempt}chose {decision.chosen_key_id} ({decision.provider_id}) for {decision.model} "
        f"by {decision.objective.value}{reason}; "
        f"{decision.considered} key(s) considered{excluded_text}"
    )
