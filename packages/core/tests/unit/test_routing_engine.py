"""Unit tests for candidate filtering and ranking (scoring, tie-breaks, explanations)."""

from __future__ import annotations

import pytest
from apikeyrouter.domain.components.candidate_filter import CandidateSet, collect_candidates
from apikeyrouter.domain.components.routing_engine import (
    Candidate,
    Ranking,
    RoutingEngine,
    explain,
)
from apikeyrouter.domain.interfaces.state_store import CircuitSnapshot, CircuitState
from apikeyrouter.domain.models.api_key import APIKey, KeyState
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.domain.models.routing_decision import RoutingDecision

NOW = 10_000.0
MODEL = "gpt-4o"


def make_key(
    key_id: str,
    *,
    weight: float = 1.0,
    state: KeyState = KeyState.AVAILABLE,
    cooldown_until: float | None = None,
    models: frozenset[str] | None = None,
    excluded_models: frozenset[str] = frozenset(),
    provider_id: str = "openai",
) -> APIKey:
    return APIKey(
        id=key_id,
        provider_id=provider_id,
        encrypted_material="v1:opaque",
        weight=weight,
        state=state,
        cooldown_until=cooldown_until,
        models=models,
        excluded_models=excluded_models,
        created_at=0.0,
        state_changed_at=0.0,
    )


def cands(*keys: APIKey) -> list[Candidate]:
    return [Candidate(k) for k in keys]


def ids(ranking: Ranking) -> list[str]:
    return [c.key.id for c in ranking.ordered]


# --- fairness -----------------------------------------------------------------------------


def test_fairness_prefers_least_weighted_load() -> None:
    a, b, c = make_key("a"), make_key("b", weight=2.0), make_key("c", weight=4.0)
    stats = {"a": KeyStats(served=10), "b": KeyStats(served=10), "c": KeyStats(served=40)}
    engine = RoutingEngine(explained_n=3)
    ranking = engine.rank(cands(a, b, c), stats, MODEL, RoutingObjective.FAIRNESS)
    # loads: a = 10, b = 5, c = 10 (c ties with a; a was registered first)
    assert ids(ranking) == ["b", "a", "c"]
    assert [s.components["weighted_load"] for s in ranking.scores] == [5.0, 10.0, 10.0]
    assert [s.score for s in ranking.scores] == [-5.0, -10.0, -10.0]


def test_fairness_counts_in_flight_requests() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(served=5), "b": KeyStats(served=2, in_flight=4)}
    ranking = RoutingEngine().rank(cands(a, b), stats, MODEL, RoutingObjective.FAIRNESS)
    assert ids(ranking) == ["a", "b"]
    assert ranking.scores[1].components["weighted_load"] == 6.0


def test_fairness_spreads_by_weight_over_many_picks() -> None:
    heavy, light = make_key("heavy", weight=3.0), make_key("light", weight=1.0)
    stats = {"heavy": KeyStats(), "light": KeyStats()}
    engine = RoutingEngine()
    for _ in range(400):
        chosen = engine.rank(cands(heavy, light), stats, MODEL).ordered[0].key.id
        stats[chosen].served += 1
    assert stats["heavy"].served == 300
    assert stats["light"].served == 100


def test_default_objective_is_used_and_can_be_overridden() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(served=1, latency_ms=10.0), "b": KeyStats(served=0, latency_ms=500.0)}
    assert ids(RoutingEngine().rank(cands(a, b), stats, MODEL)) == ["b", "a"]
    latency_engine = RoutingEngine(default_objective=RoutingObjective.LATENCY)
    assert ids(latency_engine.rank(cands(a, b), stats, MODEL)) == ["a", "b"]
    assert ids(latency_engine.rank(cands(a, b), stats, MODEL, RoutingObjective.FAIRNESS)) == [
        "b",
        "a",
    ]


def test_missing_stats_count_as_unused() -> None:
    a, b = make_key("a"), make_key("b")
    ranking = RoutingEngine().rank(cands(a, b), {"a": KeyStats(served=3)}, MODEL)
    assert ids(ranking) == ["b", "a"]


# --- reliability ---------------------------------------------------------------------------


def test_reliability_prefers_higher_success_rate() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(success_rate=0.9, served=0), "b": KeyStats(success_rate=0.99, served=50)}
    ranking = RoutingEngine().rank(cands(a, b), stats, MODEL, RoutingObjective.RELIABILITY)
    assert ids(ranking) == ["b", "a"]
    assert ranking.scores[0].components["success_rate"] == 0.99


def test_reliability_penalises_half_open_circuits() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(success_rate=0.9), "b": KeyStats(success_rate=0.99)}
    candidates = [Candidate(a), Candidate(b, CircuitState.HALF_OPEN)]
    ranking = RoutingEngine().rank(candidates, stats, MODEL, RoutingObjective.RELIABILITY)
    assert ids(ranking) == ["a", "b"]
    assert ranking.scores[1].score == pytest.approx(0.495)
    assert ranking.scores[1].components["half_open"] == 1.0
    assert "half_open" not in ranking.scores[0].components


def test_reliability_breaks_equal_success_rates_by_load() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(success_rate=0.95, served=9), "b": KeyStats(success_rate=0.95, served=3)}
    ranking = RoutingEngine().rank(cands(a, b), stats, MODEL, RoutingObjective.RELIABILITY)
    assert ids(ranking) == ["b", "a"]


def test_key_stats_smoothing_feeds_reliability() -> None:
    flaky = KeyStats()
    for _ in range(5):
        flaky.record_result(False)
    steady = KeyStats()
    steady.record_result(True)
    assert flaky.success_rate < 1.0 == steady.success_rate
    a, b = make_key("a"), make_key("b")
    ranking = RoutingEngine().rank(
        cands(a, b), {"a": flaky, "b": steady}, MODEL, RoutingObjective.RELIABILITY
    )
    assert ids(ranking) == ["b", "a"]


# --- latency -------------------------------------------------------------------------------


def test_latency_prefers_fastest_and_explores_unknown_first() -> None:
    slow, fast, new = make_key("slow"), make_key("fast"), make_key("new")
    stats = {"slow": KeyStats(latency_ms=800.0), "fast": KeyStats(latency_ms=120.0)}
    ranking = RoutingEngine().rank(cands(slow, fast, new), stats, MODEL, RoutingObjective.LATENCY)
    assert ids(ranking) == ["new", "fast", "slow"]
    assert ranking.scores[1].components["latency_ms"] == 120.0


def test_latency_uses_the_smoothed_value() -> None:
    a, b = make_key("a"), make_key("b")
    sa, sb = KeyStats(), KeyStats()
    sa.record_latency(100.0)
    sa.record_latency(600.0)  # 100 + 0.2 * 500 = 200
    sb.record_latency(150.0)
    assert sa.latency_ms == pytest.approx(200.0)
    ranking = RoutingEngine().rank(cands(a, b), {"a": sa, "b": sb}, MODEL, RoutingObjective.LATENCY)
    assert ids(ranking) == ["b", "a"]


# --- cost ----------------------------------------------------------------------------------


def test_cost_prefers_cheapest_and_ranks_unknown_prices_last() -> None:
    prices = {"pricey": 15.0, "cheap": 0.6, "unknown": None, "mid": 2.5}
    seen: list[tuple[str, str]] = []

    def price(key: APIKey, model: str) -> float | None:
        seen.append((key.id, model))
        return prices[key.id]

    keys = [make_key(k) for k in prices]
    stats = {"unknown": KeyStats(), "cheap": KeyStats(served=1_000)}
    engine = RoutingEngine(price_lookup=price, explained_n=4)
    ranking = engine.rank(cands(*keys), stats, MODEL, RoutingObjective.COST)
    assert ids(ranking) == ["cheap", "mid", "pricey", "unknown"]
    assert ranking.scores[0].components["price_per_mtok"] == 0.6
    assert ranking.scores[-1].components["price_unknown"] == 1.0
    assert set(seen) == {(k, MODEL) for k in prices}  # asked per key, for this model


def test_cost_with_equal_prices_falls_back_to_load() -> None:
    a, b = make_key("a"), make_key("b")
    engine = RoutingEngine(price_lookup=lambda key, model: 1.0)
    stats = {"a": KeyStats(served=5), "b": KeyStats(served=1)}
    assert ids(engine.rank(cands(a, b), stats, MODEL, RoutingObjective.COST)) == ["b", "a"]


def test_cost_without_price_lookup_treats_every_price_as_unknown() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(served=5), "b": KeyStats(served=1)}
    ranking = RoutingEngine().rank(cands(a, b), stats, MODEL, RoutingObjective.COST)
    assert ids(ranking) == ["b", "a"]
    assert all(s.components["price_unknown"] == 1.0 for s in ranking.scores)


def test_set_lookups_replaces_only_what_is_given() -> None:
    a, b = make_key("a"), make_key("b")
    engine = RoutingEngine(
        price_lookup=lambda key, model: {"a": 1.0, "b": 2.0}[key.id],
        headroom_lookup=lambda key: {"a": 0.1, "b": 0.9}[key.id],
    )
    engine.set_lookups(price_lookup=lambda key, model: {"a": 2.0, "b": 1.0}[key.id])
    assert ids(engine.rank(cands(a, b), {}, MODEL, RoutingObjective.COST)) == ["b", "a"]
    engine.set_lookups()
    assert ids(engine.rank(cands(a, b), {}, MODEL, RoutingObjective.QUOTA)) == ["b", "a"]


# --- quota ---------------------------------------------------------------------------------


def test_quota_prefers_most_headroom() -> None:
    headroom = {"a": 0.2, "b": 0.9, "c": 0.5}
    engine = RoutingEngine(headroom_lookup=lambda key: headroom[key.id], explained_n=3)
    keys = [make_key(k) for k in headroom]
    ranking = engine.rank(cands(*keys), {}, MODEL, RoutingObjective.QUOTA)
    assert ids(ranking) == ["b", "c", "a"]
    assert [s.components["headroom"] for s in ranking.scores] == [0.9, 0.5, 0.2]


def test_quota_penalises_half_open_circuits() -> None:
    headroom = {"a": 0.2, "b": 0.9, "c": 0.5}
    engine = RoutingEngine(headroom_lookup=lambda key: headroom[key.id])
    a, b, c = (make_key(k) for k in headroom)
    candidates = [Candidate(a), Candidate(b, CircuitState.HALF_OPEN), Candidate(c)]
    ranking = engine.rank(candidates, {}, MODEL, RoutingObjective.QUOTA)
    assert ids(ranking) == ["c", "b", "a"]  # b: 0.9 * 0.5 = 0.45


def test_quota_without_lookup_falls_back_to_load() -> None:
    a, b = make_key("a"), make_key("b")
    stats = {"a": KeyStats(served=2), "b": KeyStats(served=1)}
    ranking = RoutingEngine().rank(cands(a, b), stats, MODEL, RoutingObjective.QUOTA)
    assert ids(ranking) == ["b", "a"]
    assert ranking.scores[0].components["headroom"] == 1.0


# --- tie-breaks and truncation --------------------------------------------------------------


@pytest.mark.parametrize("objective", list(RoutingObjective))
def test_ties_go_to_least_recently_used_then_registration_order(
    objective: RoutingObjective,
) -> None:
    keys = [make_key(k) for k in ("a", "b", "c", "d")]
    stats = {
        "a": KeyStats(last_used_at=50.0),
        "b": KeyStats(last_used_at=10.0),
        "c": KeyStats(last_used_at=10.0),
        "d": KeyStats(last_used_at=0.0),
    }
    engine = RoutingEngine()
    first = engine.rank(cands(*keys), stats, MODEL, objective)
    assert ids(first) == ["d", "b", "c", "a"]
    assert ids(engine.rank(cands(*keys), stats, MODEL, objective)) == ids(first)
    # Registration order decides only between the equal b and c.
    reversed_ = engine.rank(cands(*reversed(keys)), stats, MODEL, objective)
    assert ids(reversed_) == ["d", "c", "b", "a"]


def test_top_n_truncates_ten_thousand_keys() -> None:
    n = 10_000
    keys = [make_key(f"k{i:05d}") for i in range(n)]
    # A permutation of loads: key i has served (i * 7919) % n, all distinct.
    stats = {k.id: KeyStats(served=float((i * 7919) % n)) for i, k in enumerate(keys)}
    engine = RoutingEngine(top_n=8, explained_n=3)
    ranking = engine.rank(cands(*keys), stats, MODEL)
    expected = sorted(stats, key=lambda key_id: stats[key_id].served)[:8]
    assert ids(ranking) == expected
    # Only the best few carry their score breakdown into the decision record.
    assert [s.key_id for s in ranking.scores] == expected[:3]
    assert [s.components["weighted_load"] for s in ranking.scores] == list(range(3))
    scores = [s.score for s in ranking.scores]
    assert scores == sorted(scores, reverse=True)


def test_top_n_larger_than_candidates_returns_all() -> None:
    keys = [make_key(k) for k in "abc"]
    ranking = RoutingEngine(top_n=50).rank(cands(*keys), {}, MODEL)
    assert ids(ranking) == ["a", "b", "c"]
    # The decision records the chosen key and the runner-up: the two its explanation names.
    assert [s.key_id for s in ranking.scores] == ["a", "b"]


def test_empty_candidates_rank_to_nothing() -> None:
    ranking = RoutingEngine().rank([], {}, MODEL)
    assert ranking.ordered == []
    assert ranking.scores == []


def test_scores_carry_provider_and_are_rounded() -> None:
    a = make_key("a", weight=3.0, provider_id="anthropic")
    ranking = RoutingEngine().rank(cands(a), {"a": KeyStats(served=1)}, MODEL)
    (score,) = ranking.scores
    assert score.provider_id == "anthropic"
    assert score.score == -0.333333
    assert score.components == {"weighted_load": 0.333333}


# --- explanations ---------------------------------------------------------------------------


def test_explanation_mentions_choice_objective_runner_up_and_exclusions() -> None:
    headroom = {"key_alpha": 0.8, "key_beta": 0.3}
    engine = RoutingEngine(headroom_lookup=lambda key: headroom[key.id])
    keys = [make_key(k) for k in headroom]
    ranking = engine.rank(cands(*keys), {}, MODEL, RoutingObjective.QUOTA)
    decision = RoutingDecision(
        request_id="req_1",
        objective=RoutingObjective.QUOTA,
        model=MODEL,
        chosen_key_id=ranking.ordered[0].key.id,
        provider_id="openai",
        candidates=ranking.scores,
        considered=5,
        excluded={"throttled": 2, "circuit_open": 1},
        attempt=2,
        at=NOW,
    )
    text = explain(decision)
    assert "key_alpha" in text
    assert "openai" in text
    assert MODEL in text
    assert "quota" in text
    assert "headroom=0.8" in text
    assert "key_beta" in text  # the runner-up
    assert "throttled: 2" in text
    assert "circuit_open: 1" in text
    assert "attempt 2" in text
    assert "5" in text
    assert "\n" not in text


def test_explanation_on_first_attempt_does_not_mention_attempts() -> None:
    decision = RoutingDecision(
        request_id="req_1",
        objective=RoutingObjective.FAIRNESS,
        model=MODEL,
        chosen_key_id="only",
        provider_id="openai",
        considered=1,
        at=NOW,
    )
    text = explain(decision)
    assert "only" in text
    assert "fairness" in text
    assert "attempt" not in text
    assert "excluded" not in text


def test_explanation_when_nothing_could_serve() -> None:
    decision = RoutingDecision(
        request_id="req_1",
        objective=RoutingObjective.COST,
        model=MODEL,
        considered=4,
        excluded={"disabled": 1, "throttled": 3},
        at=NOW,
    )
    text = explain(decision)
    assert text.startswith("no key could serve")
    assert MODEL in text
    assert "4" in text
    assert "disabled: 1" in text
    assert "throttled: 3" in text


# --- candidate filtering -------------------------------------------------------------------


def collect(
    *keys: APIKey,
    circuits: dict[str, CircuitSnapshot] | None = None,
    skip: frozenset[str] = frozenset(),
    model: str = MODEL,
) -> CandidateSet:
    return collect_candidates(keys, model, NOW, circuits or {}, skip)


def candidate_ids(result: CandidateSet) -> list[str]:
    return [c.key.id for c in result.candidates]


@pytest.mark.parametrize("state", [KeyState.AVAILABLE, KeyState.RECOVERING])
def test_routable_states_are_candidates(state: KeyState) -> None:
    result = collect(make_key("a", state=state))
    assert candidate_ids(result) == ["a"]
    assert result.candidates[0].circuit is CircuitState.CLOSED
    assert result.excluded == {}
    assert result.considered == 1
    assert result.earliest_ready_at is None


@pytest.mark.parametrize("state", [KeyState.THROTTLED, KeyState.EXHAUSTED])
def test_self_healing_states_wait_for_their_cooldown(state: KeyState) -> None:
    cooling = make_key("cooling", state=state, cooldown_until=NOW + 30)
    at_edge = make_key("edge", state=state, cooldown_until=NOW)
    healed = make_key("healed", state=state, cooldown_until=NOW - 1)
    result = collect(cooling, at_edge, healed)
    assert candidate_ids(result) == ["edge", "healed"]
    assert result.excluded == {state.value: 1}
    assert result.earliest_ready_at == NOW + 30


@pytest.mark.parametrize("state", [KeyState.THROTTLED, KeyState.EXHAUSTED])
def test_self_healing_state_without_cooldown_is_excluded_with_no_ready_time(
    state: KeyState,
) -> None:
    result = collect(make_key("a", state=state))
    assert result.candidates == []
    assert result.excluded == {state.value: 1}
    assert result.earliest_ready_at is None


@pytest.mark.parametrize("state", [KeyState.DISABLED, KeyState.INVALID])
@pytest.mark.parametrize("cooldown", [None, NOW - 100, NOW + 100])
def test_disabled_and_invalid_are_never_candidates(state: KeyState, cooldown: float | None) -> None:
    result = collect(make_key("a", state=state, cooldown_until=cooldown))
    assert result.candidates == []
    assert result.excluded == {state.value: 1}
    assert result.earliest_ready_at is None  # they do not come back on their own


def test_routable_key_in_cooldown_is_excluded_until_it_ends() -> None:
    result = collect(
        make_key("a", cooldown_until=NOW + 5),
        make_key("b", state=KeyState.RECOVERING, cooldown_until=NOW + 2),
        make_key("c", cooldown_until=NOW - 5),
    )
    assert candidate_ids(result) == ["c"]
    assert result.excluded == {"cooling_down": 2}
    assert result.earliest_ready_at == NOW + 2


def test_model_not_served_or_excluded() -> None:
    result = collect(
        make_key("any"),
        make_key("listed", models=frozenset({MODEL})),
        make_key("other", models=frozenset({"claude-3"})),
        make_key("banned", excluded_models=frozenset({MODEL})),
        make_key("banned-other", excluded_models=frozenset({"o1"})),
    )
    assert candidate_ids(result) == ["any", "listed", "banned-other"]
    assert result.excluded == {"model_not_served": 2}
    assert result.earliest_ready_at is None


def test_open_circuit_excluded_until_open_period_ends() -> None:
    circuits = {
        "open": CircuitSnapshot(CircuitState.OPEN, 5, NOW + 20),
        "expired": CircuitSnapshot(CircuitState.OPEN, 5, NOW - 1),
        "half": CircuitSnapshot(CircuitState.HALF_OPEN, 5, NOW - 10, probe_in_flight=False),
        "closed": CircuitSnapshot(CircuitState.CLOSED, 2, None),
    }
    keys = [make_key(k) for k in ("open", "expired", "half", "closed", "unknown")]
    result = collect(*keys, circuits=circuits)
    assert candidate_ids(result) == ["expired", "half", "closed", "unknown"]
    by_id = {c.key.id: c.circuit for c in result.candidates}
    assert by_id == {
        "expired": CircuitState.HALF_OPEN,
        "half": CircuitState.HALF_OPEN,
        "closed": CircuitState.CLOSED,
        "unknown": CircuitState.CLOSED,
    }
    assert result.excluded == {"circuit_open": 1}
    assert result.earliest_ready_at == NOW + 20


def test_skip_set_excludes_already_tried_keys() -> None:
    result = collect(
        make_key("a"),
        make_key("b"),
        make_key("c"),
        skip=frozenset({"a", "c"}),
    )
    assert candidate_ids(result) == ["b"]
    assert result.excluded == {"already_tried": 2}
    assert result.considered == 3
    assert result.earliest_ready_at is None


def test_a_tried_key_that_is_now_unavailable_reports_the_real_reason() -> None:
    result = collect(
        make_key("throttled", state=KeyState.THROTTLED, cooldown_until=NOW + 30),
        make_key("disabled", state=KeyState.DISABLED),
        make_key("tried"),
        skip=frozenset({"throttled", "disabled", "tried"}),
    )
    assert result.candidates == []
    assert result.excluded == {"throttled": 1, "disabled": 1, "already_tried": 1}
    assert result.earliest_ready_at == NOW + 30


def test_reason_precedence_state_before_model_before_circuit() -> None:
    circuits = {k: CircuitSnapshot(CircuitState.OPEN, 5, NOW + 99) for k in ("a", "b", "c")}
    result = collect(
        make_key("a", state=KeyState.DISABLED, models=frozenset({"x"})),
        make_key("b", cooldown_until=NOW + 1, models=frozenset({"x"})),
        make_key("c", models=frozenset({"x"})),
        circuits=circuits,
    )
    assert result.excluded == {"disabled": 1, "cooling_down": 1, "model_not_served": 1}


def test_earliest_ready_at_is_the_minimum_over_all_reasons() -> None:
    circuits = {"open": CircuitSnapshot(CircuitState.OPEN, 5, NOW + 7)}
    result = collect(
        make_key("throttled", state=KeyState.THROTTLED, cooldown_until=NOW + 60),
        make_key("exhausted", state=KeyState.EXHAUSTED, cooldown_until=NOW + 3600),
        make_key("cooling", cooldown_until=NOW + 9),
        make_key("open"),
        make_key("ok"),
        circuits=circuits,
    )
    assert candidate_ids(result) == ["ok"]
    assert result.considered == 5
    assert sum(result.excluded.values()) == 4
    assert result.earliest_ready_at == NOW + 7


def test_candidates_keep_input_order() -> None:
    keys = [make_key(f"k{i}") for i in (3, 1, 2)]
    assert candidate_ids(collect(*keys)) == ["k3", "k1", "k2"]


def test_candidate_set_exclude_tracks_minimum() -> None:
    result = CandidateSet()
    result.exclude("x", NOW + 10)
    result.exclude("x")
    result.exclude("y", NOW + 5)
    result.exclude("y", NOW + 8)
    assert result.excluded == {"x": 2, "y": 2}
    assert result.earliest_ready_at == NOW + 5


def test_candidate_set_merge_combines_counts_and_ready_times() -> None:
    first = collect(make_key("a"), make_key("t", state=KeyState.THROTTLED, cooldown_until=NOW + 9))
    second = collect(
        make_key("b"),
        make_key("t2", state=KeyState.THROTTLED, cooldown_until=NOW + 4),
        make_key("d", state=KeyState.DISABLED),
    )
    first.merge(second)
    assert candidate_ids(first) == ["a", "b"]
    assert first.considered == 5
    assert first.excluded == {"throttled": 2, "disabled": 1}
    assert first.earliest_ready_at == NOW + 4
    later = collect(make_key("t3", state=KeyState.EXHAUSTED, cooldown_until=NOW + 99))
    first.merge(later)
    assert first.earliest_ready_at == NOW + 4
    assert first.excluded["exhausted"] == 1


def test_explanation_is_derived_from_the_fields_and_survives_a_round_trip() -> None:
    decision = RoutingDecision(
        request_id="req_1",
        objective=RoutingObjective.QUOTA,
        model=MODEL,
        chosen_key_id="k2",
        provider_id="openai",
        considered=2,
        attempt=2,
        notes=["failed over from k1 (rate_limited)", "serving openai/m2 as fallback"],
        at=NOW,
    )
    text = decision.explanation
    assert text.endswith("; failed over from k1 (rate_limited); serving openai/m2 as fallback")
    dumped = decision.model_dump(mode="json")
    assert dumped["explanation"] == text  # stored and served with the record
    assert RoutingDecision.model_validate(dumped).explanation == text
    decision.chosen_key_id = None  # a field change shows in the next reading
    assert decision.explanation.startswith("no key could serve")
