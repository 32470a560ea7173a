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
from apikeyrouter.domain.models.routing_decision import CandidateScore, explain

__all__ = ["Candidate", "Ranking", "RoutingEngine", "explain"]

#: USD per 1M tokens (blended) for a key serving a model, or None when unknown.
PriceLookup = Callable[[APIKey, str], float | None]
#: Fraction of quota left in a key's tightest window (1.0 when nothing is limited).
HeadroomLookup = Callable[[APIKey], float]
#: A candidate's score for one objective (higher is better): key, its stats, half-open or not.
Scorer = Callable[[APIKey, KeyStats, bool], float]

# Enum members as module constants: reading ``Enum.MEMBER`` through the class costs several
# times a global lookup on Python 3.11, and these are compared on every request.
_QUOTA = RoutingObjective.QUOTA
_RELIABILITY = RoutingObjective.RELIABILITY
_LATENCY = RoutingObjective.LATENCY
_COST = RoutingObjective.COST
_HALF_OPEN = CircuitState.HALF_OPEN

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
        top_n: int = 4,
        explained_n: int = 2,
    ) -> None:
        self.default_objective = default_objective
        self._price = price_lookup
        self._headroom = headroom_lookup
        self.top_n = top_n  # candidates offered to the reservation, best first
        # Candidates whose scores the decision records: by default the chosen key and the
        # runner-up, the two its explanation names.
        self.explained_n = explained_n
        self._scorers = self._model_free_scorers()

    def set_lookups(
        self, price_lookup: PriceLookup | None = None, headroom_lookup: HeadroomLookup | None = None
    ) -> None:
        if price_lookup is not None:
            self._price = price_lookup
        if headroom_lookup is not None:
            self._headroom = headroom_lookup
        self._scorers = self._model_free_scorers()

    def _model_free_scorers(
        self,
    ) -> dict[RoutingObjective, Callable[[APIKey, KeyStats, bool], float]]:
        """Scorers built once: every objective but cost scores the same for any model."""
        return {
            objective: self._scorer(objective, "")
            for objective in RoutingObjective
            if objective is not RoutingObjective.COST
        }

    def _scorer(self, objective: RoutingObjective, model: str) -> Scorer:
        """A scoring function for the objective: higher is better. Called once per candidate,
        so it does arithmetic only; the explanatory numbers are computed for the top few."""
        if objective is RoutingObjective.FAIRNESS:
            return lambda key, st, half: -(st.served + st.in_flight) / key.weight
        if objective is RoutingObjective.RELIABILITY:
            return lambda key, st, half: (
                st.success_rate * (0.5 if half else 1.0)
                - 0.001 * (st.served + st.in_flight) / key.weight
            )
        if objective is RoutingObjective.LATENCY:
            return lambda key, st, half: (
                -(st.latency_ms if st.latency_ms is not None else _UNKNOWN_LATENCY_MS)
                - 0.001 * (st.served + st.in_flight) / key.weight
            )
        if objective is RoutingObjective.COST:
            price_of = self._price

            def cost_score(key: APIKey, st: KeyStats, half: bool) -> float:
                price = price_of(key, model) if price_of is not None else None
                load = (st.served + st.in_flight) / key.weight
                # Unknown prices rank after every known one; load breaks ties.
                return -1e12 - load if price is None else -price - 1e-6 * load

            return cost_score
        headroom_of = self._headroom
        return lambda key, st, half: (
            (headroom_of(key) if headroom_of is not None else 1.0) * (0.5 if half else 1.0)
            - 0.001 * (st.served + st.in_flight) / key.weight
        )

    def components(
        self, objective: RoutingObjective, candidate: Candidate, stats: KeyStats, model: str
    ) -> dict[str, float]:
        """The numbers behind a candidate's score, for the decision record (rounded to six
        places, as the score is)."""
        key = candidate.key
        parts = {"weighted_load": round(_load(stats, key.weight), 6)}
        if objective is _QUOTA:  # the default objective first
            headroom = self._headroom(key) if self._headroom is not None else 1.0
            parts["headroom"] = round(headroom, 6)
        elif objective is _RELIABILITY:
            parts["success_rate"] = round(stats.success_rate, 6)
        elif objective is _LATENCY:
            latency = stats.latency_ms if stats.latency_ms is not None else _UNKNOWN_LATENCY_MS
            parts["latency_ms"] = round(latency, 6)
        elif objective is _COST:
            price = self._price(key, model) if self._price is not None else None
            if price is None:
                parts["price_unknown"] = 1.0
            else:
                parts["price_per_mtok"] = round(price, 6)
        if candidate.circuit is _HALF_OPEN:
            parts["half_open"] = 1.0
        return parts

    def rank(
        self,
        candidates: Sequence[Candidate],
        stats: Mapping[str, KeyStats],
        model: str,
        objective: RoutingObjective | None = None,
    ) -> Ranking:
        chosen_objective = objective or self.default_objective
        score = self._scorers.get(chosen_objective) or self._scorer(chosen_objective, model)
        half_open = _HALF_OPEN
        get_stats = stats.get
        # Ties go to the key used longest ago, then to registration order: deterministic. The
        # position is unique, so tuples never compare as far as the candidate and its stats.
        scored = [
            (score(c.key, st, c.circuit is half_open), -st.last_used_at, -position, c, st)
            for position, c in enumerate(candidates)
            for st in (get_stats(c.key.id, _EMPTY_STATS),)
        ]
        best = heapq.nlargest(self.top_n, scored)
        return Ranking(
            ordered=[item[3] for item in best],
            scores=[
                CandidateScore(
                    item[3].key.id,
                    item[3].key.provider_id,
                    round(item[0], 6),
                    self.components(chosen_objective, item[3], item[4], model),
                )
                for item in best[: self.explained_n]
            ],
        )
