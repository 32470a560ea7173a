"""State store contract tests, run against every store implementation.

The ``store`` fixture is parametrised: add a param (e.g. a Redis or MongoDB store factory) to run
the whole ``TestStateStoreContract`` suite against another implementation. Tests in that class
only use the ``StateStore`` interface and never rely on object identity (a remote store returns
copies). Memory-store specifics (ring buffer sizes) and bugs live below the class.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    SharedCounter,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore

T0 = 1_000.0  # an arbitrary "now"; every time in these tests is explicit

RPM = WindowLimit("requests", 60.0, 10.0)
TPM = WindowLimit("tokens", 60.0, 1_000.0)

StoreFactory = Callable[[], StateStore]


@pytest.fixture(params=[pytest.param(InMemoryStateStore, id="memory")])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    factory: StoreFactory = request.param
    instance = factory()
    yield instance
    await instance.close()


def make_key(
    key_id: str, provider_id: str = "openai", state: KeyState = KeyState.AVAILABLE
) -> APIKey:
    return APIKey(
        id=key_id,
        provider_id=provider_id,
        encrypted_material="v1:opaque",
        fingerprint="...abcd",
        state=state,
        created_at=0.0,
        state_changed_at=0.0,
    )


def transition(
    key_id: str, from_state: KeyState, to_state: KeyState, reason: str = "test", at: float = T0
) -> StateTransition:
    return StateTransition(
        key_id=key_id, from_state=from_state, to_state=to_state, reason=reason, at=at
    )


def request_for(
    key_id: str, requests: float = 1.0, tokens: float | None = None
) -> ReservationRequest:
    amounts = {"requests": requests}
    limits: tuple[WindowLimit, ...] = (RPM,)
    if tokens is not None:
        amounts["tokens"] = tokens
        limits = (RPM, TPM)
    return ReservationRequest(key_id=key_id, limits=limits, amounts=amounts)


def decision(request_id: str) -> RoutingDecision:
    return RoutingDecision(
        request_id=request_id, objective=RoutingObjective.FAIRNESS, model="gpt-4o", at=T0
    )


async def used(store: StateStore, key_id: str, limit: WindowLimit, now: float) -> float:
    (usage,) = await store.window_usage(key_id, [limit], now)
    return usage.used


class TestStateStoreContract:
    # --- keys ---------------------------------------------------------------------------------

    async def test_put_then_get_returns_the_key(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        got = await store.get_key("k1")
        assert got is not None
        assert got.id == "k1"
        assert got.provider_id == "openai"
        assert got.encrypted_material == "v1:opaque"
        assert got.state is KeyState.AVAILABLE

    async def test_get_unknown_key_is_none(self, store: StateStore) -> None:
        assert await store.get_key("missing") is None

    async def test_put_overwrites(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        await store.put_key(make_key("k1", state=KeyState.DISABLED))
        got = await store.get_key("k1")
        assert got is not None
        assert got.state is KeyState.DISABLED
        assert len(await store.list_keys()) == 1

    async def test_list_keys_all_and_by_provider(self, store: StateStore) -> None:
        await store.put_key(make_key("a1", "openai"))
        await store.put_key(make_key("a2", "openai"))
        await store.put_key(make_key("b1", "anthropic"))
        assert sorted(k.id for k in await store.list_keys()) == ["a1", "a2", "b1"]
        assert sorted(k.id for k in await store.list_keys("openai")) == ["a1", "a2"]
        assert [k.id for k in await store.list_keys("anthropic")] == ["b1"]
        assert await store.list_keys("gemini") == []

    async def test_delete_key(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        assert await store.delete_key("k1") is True
        assert await store.get_key("k1") is None
        assert await store.list_keys() == []
        assert await store.delete_key("k1") is False

    async def test_delete_key_drops_its_counters_cooldown_and_circuit(
        self, store: StateStore
    ) -> None:
        await store.put_key(make_key("k1"))
        assert isinstance(await store.reserve([request_for("k1")], T0), Reservation)
        await store.set_cooldown("k1", T0 + 100)
        for i in range(5):
            await store.record_failure("k1", T0 + i, CircuitPolicy(failure_threshold=5))
        await store.delete_key("k1")
        assert await used(store, "k1", RPM, T0) == 0.0
        assert await store.get_cooldown("k1", T0) is None
        assert (await store.circuit("k1", T0)).state is CircuitState.CLOSED

    # --- compare-and-set ------------------------------------------------------------------------

    async def test_compare_and_set_success(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        t = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "rate limited", T0)
        assert await store.compare_and_set_state("k1", KeyState.AVAILABLE, t, T0 + 30)
        got = await store.get_key("k1")
        assert got is not None
        assert got.state is KeyState.THROTTLED
        assert got.state_reason == "rate limited"
        assert got.state_changed_at == T0
        assert got.cooldown_until == T0 + 30
        assert await store.get_cooldown("k1", T0) == T0 + 30
        assert await store.list_audit("k1") == [t]

    async def test_compare_and_set_mismatch_changes_nothing(self, store: StateStore) -> None:
        await store.put_key(make_key("k1", state=KeyState.DISABLED))
        t = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED)
        assert not await store.compare_and_set_state("k1", KeyState.AVAILABLE, t, T0 + 30)
        got = await store.get_key("k1")
        assert got is not None
        assert got.state is KeyState.DISABLED
        assert got.cooldown_until is None
        assert await store.get_cooldown("k1", T0) is None
        assert await store.list_audit() == []

    async def test_compare_and_set_unknown_key_is_false(self, store: StateStore) -> None:
        t = transition("nope", KeyState.AVAILABLE, KeyState.THROTTLED)
        assert not await store.compare_and_set_state("nope", KeyState.AVAILABLE, t)
        assert await store.list_audit() == []

    async def test_compare_and_set_without_cooldown_clears_it(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        throttle = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED)
        assert await store.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, T0 + 30)
        back = transition("k1", KeyState.THROTTLED, KeyState.AVAILABLE, "recovered", T0 + 31)
        assert await store.compare_and_set_state("k1", KeyState.THROTTLED, back)
        got = await store.get_key("k1")
        assert got is not None
        assert got.state is KeyState.AVAILABLE
        assert got.cooldown_until is None
        assert await store.get_cooldown("k1", T0) is None
        assert await store.list_audit("k1") == [throttle, back]

    async def test_only_one_of_two_racing_compare_and_sets_wins(self, store: StateStore) -> None:
        await store.put_key(make_key("k1"))
        a = transition("k1", KeyState.AVAILABLE, KeyState.THROTTLED, "a")
        b = transition("k1", KeyState.AVAILABLE, KeyState.INVALID, "b")
        results = await asyncio.gather(
            store.compare_and_set_state("k1", KeyState.AVAILABLE, a),
            store.compare_and_set_state("k1", KeyState.AVAILABLE, b),
        )
        assert sorted(results) == [False, True]
        audit = await store.list_audit("k1")
        assert len(audit) == 1
        got = await store.get_key("k1")
        assert got is not None
        assert got.state is audit[0].to_state

    # --- reserve / commit / release -------------------------------------------------------------

    async def test_reserve_on_first_candidate_with_room(self, store: StateStore) -> None:
        result = await store.reserve([request_for("a", tokens=100), request_for("b")], T0)
        assert isinstance(result, Reservation)
        assert result.key_id == "a"
        assert result.amounts == {"requests": 1.0, "tokens": 100.0}
        assert result.at == T0
        assert result.limits == (RPM, TPM)
        assert await used(store, "a", RPM, T0) == 1.0
        assert await used(store, "a", TPM, T0) == 100.0
        assert await used(store, "b", RPM, T0) == 0.0

    async def test_reserve_skips_full_candidates_in_order(self, store: StateStore) -> None:
        for _ in range(10):
            assert isinstance(await store.reserve([request_for("a")], T0), Reservation)
        result = await store.reserve([request_for("a"), request_for("b"), request_for("c")], T0)
        assert isinstance(result, Reservation)
        assert result.key_id == "b"
        assert await used(store, "a", RPM, T0) == 10.0
        assert await used(store, "c", RPM, T0) == 0.0

    async def test_reserve_requires_every_limit_to_have_room(self, store: StateStore) -> None:
        assert isinstance(await store.reserve([request_for("a", tokens=950)], T0), Reservation)
        # requests have room on "a", tokens do not: "a" is skipped entirely.
        result = await store.reserve(
            [request_for("a", tokens=100), request_for("b", tokens=100)], T0
        )
        assert isinstance(result, Reservation)
        assert result.key_id == "b"
        assert await used(store, "a", RPM, T0) == 1.0  # nothing partially charged
        assert await used(store, "a", TPM, T0) == 950.0

    async def test_reserve_with_no_candidates_is_refused_without_retry(
        self, store: StateStore
    ) -> None:
        assert await store.reserve([], T0) == ReservationRefusal(None)

    async def test_refusal_retry_at_is_earliest_time_any_candidate_fits(
        self, store: StateStore
    ) -> None:
        # "a" filled at T0 + 30, "b" filled at T0: "b" frees up first.
        for _ in range(10):
            assert isinstance(await store.reserve([request_for("b")], T0), Reservation)
            assert isinstance(await store.reserve([request_for("a")], T0 + 30), Reservation)
        now = T0 + 40
        refusal = await store.reserve([request_for("a"), request_for("b")], now)
        assert isinstance(refusal, ReservationRefusal)
        assert refusal.retry_at is not None
        # Within one bucket of the exact expiry (the counter is conservative).
        assert T0 + 60 <= refusal.retry_at <= T0 + 61
        just_before = await store.reserve(
            [request_for("a"), request_for("b")], refusal.retry_at - 0.01
        )
        assert isinstance(just_before, ReservationRefusal)
        retried = await store.reserve([request_for("a"), request_for("b")], refusal.retry_at)
        assert isinstance(retried, Reservation)
        assert retried.key_id == "b"

    async def test_refusal_retry_at_uses_the_latest_blocking_limit(self, store: StateStore) -> None:
        # Requests free up at ~T0 + 60, but the tokens (charged at T0 + 20) only at ~T0 + 80.
        for _ in range(9):
            assert isinstance(await store.reserve([request_for("a")], T0), Reservation)
        assert isinstance(
            await store.reserve([request_for("a", tokens=1_000)], T0 + 20), Reservation
        )
        refusal = await store.reserve([request_for("a", tokens=10)], T0 + 30)
        assert isinstance(refusal, ReservationRefusal)
        assert refusal.retry_at is not None
        assert T0 + 80 <= refusal.retry_at <= T0 + 81
        retried = await store.reserve([request_for("a", tokens=10)], refusal.retry_at)
        assert isinstance(retried, Reservation)

    async def test_refusal_for_an_amount_above_the_limit_never_retries(
        self, store: StateStore
    ) -> None:
        refusal = await store.reserve([request_for("a", tokens=5_000)], T0)
        assert refusal == ReservationRefusal(None)

    async def test_refusal_ignores_candidates_that_can_never_fit(self, store: StateStore) -> None:
        for _ in range(10):
            assert isinstance(await store.reserve([request_for("a")], T0), Reservation)
        # Requests are full until ~T0 + 60, but 5,000 tokens exceed the 1,000 limit for ever:
        # waiting for the requests window would not help.
        refusal = await store.reserve([request_for("a", tokens=5_000)], T0 + 1)
        assert refusal == ReservationRefusal(None)
        # Another candidate that will fit later still gives its time.
        for _ in range(10):
            assert isinstance(await store.reserve([request_for("b")], T0 + 20), Reservation)
        refusal = await store.reserve(
            [request_for("a", tokens=5_000), request_for("b", tokens=10)], T0 + 21
        )
        assert isinstance(refusal, ReservationRefusal)
        assert refusal.retry_at is not None
        assert T0 + 80 <= refusal.retry_at <= T0 + 81

    async def test_commit_replaces_reserved_with_actual(self, store: StateStore) -> None:
        reservation = await store.reserve([request_for("a", tokens=400)], T0)
        assert isinstance(reservation, Reservation)
        await store.commit(reservation, {"requests": 1, "tokens": 130})
        assert await used(store, "a", TPM, T0 + 5) == 130.0
        assert await used(store, "a", RPM, T0 + 5) == 1.0

    async def test_commit_can_charge_more_than_reserved(self, store: StateStore) -> None:
        reservation = await store.reserve([request_for("a", tokens=100)], T0)
        assert isinstance(reservation, Reservation)
        await store.commit(reservation, {"tokens": 1_200})
        assert await used(store, "a", TPM, T0 + 5) == 1_200.0
        assert await used(store, "a", RPM, T0 + 5) == 1.0  # missing metric keeps the reservation

    async def test_commit_later_adjusts_the_original_window_slot(self, store: StateStore) -> None:
        reservation = await store.reserve([request_for("a", tokens=400)], T0)
        assert isinstance(reservation, Reservation)
        await store.commit(reservation, {"tokens": 100})
        # The usage expires with the reservation's slot, not one window after the commit.
        assert await used(store, "a", TPM, T0 + 59) == 100.0
        assert await used(store, "a", TPM, T0 + 62) == 0.0

    async def test_write_batch_commits_and_records_like_one_call_each(
        self, store: StateStore
    ) -> None:
        budget = WindowLimit("spend", 3600.0, 10.0)
        shared = (SharedCounter("budget:batch", budget, 2.0),)
        reservations = []
        for key_id, at in (("a", T0), ("b", T0), ("a", T0 + 1)):
            request = ReservationRequest(key_id, (RPM, TPM), {"requests": 1, "tokens": 400}, shared)
            reservation = await store.reserve([request], at)
            assert isinstance(reservation, Reservation)
            reservations.append(reservation)
        unchanged = await store.reserve([request_for("c", tokens=50)], T0)
        assert isinstance(unchanged, Reservation)
        await store.write_batch(
            [
                (reservations[0], {"requests": 1, "tokens": 100, "spend": 0.5}),
                (reservations[1], {"requests": 1, "tokens": 700, "spend": 3.0}),
                (reservations[2], {"tokens": 50}),  # spend and requests keep the estimate
                (unchanged, {"requests": 1, "tokens": 50}),  # nothing to adjust
            ],
            [decision("req_1"), decision("req_2")],
        )
        assert await used(store, "a", TPM, T0 + 2) == 150.0
        assert await used(store, "b", TPM, T0 + 2) == 700.0
        assert await used(store, "a", RPM, T0 + 2) == 2.0
        assert await used(store, "c", TPM, T0 + 2) == 50.0
        (spend,) = await store.window_usage("budget:batch", [budget], T0 + 2)
        assert spend.used == 0.5 + 3.0 + 2.0
        assert [d.request_id for d in await store.recent_decisions()] == ["req_1", "req_2"]
        await store.write_batch([], [])  # nothing to write: no call, no error

    async def test_window_usage_many_reads_each_key_as_window_usage_does(
        self, store: StateStore
    ) -> None:
        for key_id, tokens in (("a", 300), ("b", 40), ("a", 5)):
            assert isinstance(
                await store.reserve([request_for(key_id, tokens=tokens)], T0), Reservation
            )
        requests = [("a", (RPM, TPM)), ("none", ()), ("b", (TPM,)), ("unused", (RPM,))]
        many = await store.window_usage_many(requests, T0 + 1)
        assert many == [await store.window_usage(k, limits, T0 + 1) for k, limits in requests]
        assert [[w.used for w in usage] for usage in many] == [[2.0, 305.0], [], [40.0], [0.0]]
        assert await store.window_usage_many([], T0) == []

    async def test_release_gives_everything_back(self, store: StateStore) -> None:
        first = await store.reserve([request_for("a", tokens=300)], T0)
        second = await store.reserve([request_for("a", tokens=200)], T0)
        assert isinstance(first, Reservation)
        assert isinstance(second, Reservation)
        await store.release(first)
        assert await used(store, "a", TPM, T0) == 200.0
        assert await used(store, "a", RPM, T0) == 1.0
        await store.release(second)
        assert await used(store, "a", TPM, T0) == 0.0
        assert await used(store, "a", RPM, T0) == 0.0

    async def test_released_capacity_can_be_reserved_again(self, store: StateStore) -> None:
        reservations = [await store.reserve([request_for("a")], T0) for _ in range(10)]
        assert all(isinstance(r, Reservation) for r in reservations)
        assert isinstance(await store.reserve([request_for("a")], T0), ReservationRefusal)
        first = reservations[0]
        assert isinstance(first, Reservation)
        await store.release(first)
        assert isinstance(await store.reserve([request_for("a")], T0), Reservation)

    # --- shared counters (budgets) ---------------------------------------------------------------

    async def test_shared_counter_caps_across_keys(self, store: StateStore) -> None:
        budget = WindowLimit("tokens", 60.0, 250.0)
        shared = (SharedCounter("budget:global", budget, 100.0),)

        def req(key_id: str) -> ReservationRequest:
            return ReservationRequest(
                key_id, (RPM, TPM), {"requests": 1, "tokens": 100}, shared=shared
            )

        first = await store.reserve([req("a"), req("b")], T0)
        second = await store.reserve([req("b"), req("a")], T0)
        assert isinstance(first, Reservation)
        assert isinstance(second, Reservation)
        assert first.shared == shared
        assert (first.key_id, second.key_id) == ("a", "b")
        # Both keys have room, the shared budget does not (200 + 100 > 250).
        refusal = await store.reserve([req("a"), req("b"), req("c")], T0 + 1)
        assert isinstance(refusal, ReservationRefusal)
        assert refusal.retry_at is not None
        assert T0 + 60 <= refusal.retry_at <= T0 + 61
        (usage,) = await store.window_usage("budget:global", [budget], T0 + 1)
        assert usage.used == 200.0
        assert await used(store, "c", RPM, T0 + 1) == 0.0  # nothing charged on refusal

    async def test_shared_counter_follows_commit_and_release(self, store: StateStore) -> None:
        budget = WindowLimit("spend", 3600.0, 10.0)
        request = ReservationRequest(
            "a",
            (RPM,),
            {"requests": 1},
            shared=(SharedCounter("budget:client-x", budget, 2.0),),
        )
        reservation = await store.reserve([request], T0)
        assert isinstance(reservation, Reservation)
        (usage,) = await store.window_usage("budget:client-x", [budget], T0)
        assert usage.used == 2.0
        await store.commit(reservation, {"requests": 1, "spend": 0.5})
        (usage,) = await store.window_usage("budget:client-x", [budget], T0)
        assert usage.used == 0.5
        other = await store.reserve([request], T0)
        assert isinstance(other, Reservation)
        await store.release(other)
        (usage,) = await store.window_usage("budget:client-x", [budget], T0)
        assert usage.used == 0.5
        assert await used(store, "a", RPM, T0) == 1.0

    async def test_refused_candidate_charges_no_shared_counter(self, store: StateStore) -> None:
        budget = WindowLimit("requests", 60.0, 100.0)
        shared = (SharedCounter("budget:provider", budget, 1.0),)
        for _ in range(10):
            assert isinstance(await store.reserve([request_for("a")], T0), Reservation)
        result = await store.reserve(
            [
                ReservationRequest("a", (RPM,), {"requests": 1}, shared=shared),
                ReservationRequest("b", (RPM,), {"requests": 1}, shared=shared),
            ],
            T0,
        )
        assert isinstance(result, Reservation)
        assert result.key_id == "b"
        (usage,) = await store.window_usage("budget:provider", [budget], T0)
        assert usage.used == 1.0

    async def test_window_usage_reports_limits_and_reset(self, store: StateStore) -> None:
        assert isinstance(await store.reserve([request_for("a", tokens=250)], T0), Reservation)
        requests, tokens = await store.window_usage("a", [RPM, TPM], T0 + 1)
        assert (requests.metric, requests.window_seconds, requests.limit) == (
            "requests",
            60.0,
            10.0,
        )
        assert requests.used == 1.0
        assert tokens.used == 250.0
        assert tokens.remaining == 750.0
        assert tokens.resets_at is not None
        assert T0 + 60 <= tokens.resets_at <= T0 + 61
        (empty,) = await store.window_usage("fresh", [RPM], T0)
        assert empty.used == 0.0
        assert empty.resets_at is None

    async def test_concurrent_reservations_never_overshoot(self, store: StateStore) -> None:
        key_ids = [f"k{i}" for i in range(5)]
        rng = random.Random(7)
        orders = [rng.sample(key_ids, len(key_ids)) for _ in range(200)]

        async def one(order: list[str]) -> Reservation | ReservationRefusal:
            return await store.reserve([request_for(k) for k in order], T0)

        results = await asyncio.gather(*(one(order) for order in orders))
        granted = [r for r in results if isinstance(r, Reservation)]
        assert len(granted) == 50
        per_key = {k: sum(1 for r in granted if r.key_id == k) for k in key_ids}
        assert per_key == dict.fromkeys(key_ids, 10)
        for key_id in key_ids:
            assert await used(store, key_id, RPM, T0) == 10.0
        refusals = [r for r in results if isinstance(r, ReservationRefusal)]
        assert len(refusals) == 150
        assert all(r.retry_at is not None and r.retry_at > T0 for r in refusals)

    # --- cooldowns ------------------------------------------------------------------------------

    async def test_cooldown_set_and_expire(self, store: StateStore) -> None:
        assert await store.get_cooldown("a", T0) is None
        await store.set_cooldown("a", T0 + 10)
        assert await store.get_cooldown("a", T0) == T0 + 10
        assert await store.get_cooldown("a", T0 + 9.99) == T0 + 10
        assert await store.get_cooldown("a", T0 + 10) is None  # expiry is exclusive
        assert await store.get_cooldown("a", T0 + 11) is None

    async def test_cooldown_max_wins(self, store: StateStore) -> None:
        await store.set_cooldown("a", T0 + 10)
        await store.set_cooldown("a", T0 + 5)  # shorter: ignored
        assert await store.get_cooldown("a", T0) == T0 + 10
        await store.set_cooldown("a", T0 + 20)  # longer: wins
        assert await store.get_cooldown("a", T0) == T0 + 20

    async def test_cooldowns_are_per_key(self, store: StateStore) -> None:
        await store.set_cooldown("a", T0 + 10)
        assert await store.get_cooldown("b", T0) is None

    # --- circuit breaker ------------------------------------------------------------------------

    async def test_circuit_starts_closed(self, store: StateStore) -> None:
        snap = await store.circuit("a", T0)
        assert snap.state is CircuitState.CLOSED
        assert snap.consecutive_failures == 0
        assert snap.open_until is None
        assert not await store.try_acquire_probe("a", T0)

    async def test_circuit_opens_after_threshold_failures(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=3, open_seconds=30.0)
        first = await store.record_failure("a", T0, policy)
        second = await store.record_failure("a", T0 + 1, policy)
        assert (first.state, first.consecutive_failures) == (CircuitState.CLOSED, 1)
        assert (second.state, second.consecutive_failures) == (CircuitState.CLOSED, 2)
        third = await store.record_failure("a", T0 + 2, policy)
        assert third.state is CircuitState.OPEN
        assert third.consecutive_failures == 3
        assert third.open_until == T0 + 32
        assert (await store.circuit("a", T0 + 31.9)).state is CircuitState.OPEN
        assert not await store.try_acquire_probe("a", T0 + 10)

    async def test_success_resets_consecutive_failures(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=3, open_seconds=30.0)
        await store.record_failure("a", T0, policy)
        await store.record_failure("a", T0 + 1, policy)
        snap = await store.record_success("a", T0 + 2)
        assert (snap.state, snap.consecutive_failures) == (CircuitState.CLOSED, 0)
        await store.record_failure("a", T0 + 3, policy)
        snap = await store.record_failure("a", T0 + 4, policy)
        assert snap.state is CircuitState.CLOSED

    async def test_circuit_goes_half_open_after_open_seconds(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=1, open_seconds=30.0)
        await store.record_failure("a", T0, policy)
        assert (await store.circuit("a", T0 + 29.99)).state is CircuitState.OPEN
        snap = await store.circuit("a", T0 + 30)
        assert snap.state is CircuitState.HALF_OPEN
        assert not snap.probe_in_flight

    async def test_circuits_reads_many_keys_as_circuit_does(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=1, open_seconds=30.0)
        await store.record_failure("open", T0, policy)
        await store.record_failure("half", T0 - 40, policy)
        await store.record_failure("one", T0, CircuitPolicy(failure_threshold=3))
        ids = ["open", "none", "half", "one"]
        many = await store.circuits(ids, T0 + 1)
        assert many == [await store.circuit(key_id, T0 + 1) for key_id in ids]
        assert [c.state for c in many] == [
            CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.CLOSED
        ]  # fmt: skip
        assert await store.circuits([], T0) == []

    async def test_half_open_grants_exactly_one_probe(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=1, open_seconds=30.0)
        await store.record_failure("a", T0, policy)
        now = T0 + 30
        grants = await asyncio.gather(*(store.try_acquire_probe("a", now) for _ in range(20)))
        assert sum(grants) == 1
        assert (await store.circuit("a", now)).probe_in_flight
        assert not await store.try_acquire_probe("a", now + 1)

    async def test_probe_success_closes_the_circuit(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=2, open_seconds=30.0)
        await store.record_failure("a", T0, policy)
        await store.record_failure("a", T0, policy)
        assert await store.try_acquire_probe("a", T0 + 30)
        snap = await store.record_success("a", T0 + 31)
        assert snap.state is CircuitState.CLOSED
        assert snap.consecutive_failures == 0
        assert snap.open_until is None
        assert not snap.probe_in_flight
        assert not await store.try_acquire_probe("a", T0 + 32)

    async def test_probe_failure_reopens_the_circuit(self, store: StateStore) -> None:
        policy = CircuitPolicy(failure_threshold=3, open_seconds=30.0)
        for _ in range(3):
            await store.record_failure("a", T0, policy)
        assert await store.try_acquire_probe("a", T0 + 30)
        snap = await store.record_failure("a", T0 + 31, policy)
        assert snap.state is CircuitState.OPEN
        assert snap.open_until == T0 + 61
        assert not snap.probe_in_flight
        assert not await store.try_acquire_probe("a", T0 + 60)
        # The next half-open period grants a fresh probe.
        assert (await store.circuit("a", T0 + 61)).state is CircuitState.HALF_OPEN
        assert await store.try_acquire_probe("a", T0 + 61)

    async def test_a_single_failure_in_half_open_reopens_regardless_of_threshold(
        self, store: StateStore
    ) -> None:
        await store.record_failure("a", T0, CircuitPolicy(failure_threshold=1, open_seconds=10))
        assert (await store.circuit("a", T0 + 10)).state is CircuitState.HALF_OPEN
        lenient = CircuitPolicy(failure_threshold=100, open_seconds=10.0)
        snap = await store.record_failure("a", T0 + 10, lenient)
        assert snap.state is CircuitState.OPEN
        assert snap.open_until == T0 + 20

    async def test_failures_while_closed_count_towards_the_threshold_again_after_recovery(
        self, store: StateStore
    ) -> None:
        policy = CircuitPolicy(failure_threshold=3, open_seconds=10.0)
        for _ in range(3):
            await store.record_failure("a", T0, policy)
        assert await store.try_acquire_probe("a", T0 + 10)
        await store.record_success("a", T0 + 10)
        for _ in range(2):
            snap = await store.record_failure("a", T0 + 11, policy)
        assert snap.state is CircuitState.CLOSED
        assert snap.consecutive_failures == 2
        snap = await store.record_failure("a", T0 + 12, policy)
        assert snap.state is CircuitState.OPEN
        assert snap.open_until == T0 + 22

    async def test_circuits_are_per_key(self, store: StateStore) -> None:
        await store.record_failure("a", T0, CircuitPolicy(failure_threshold=1))
        assert (await store.circuit("a", T0)).state is CircuitState.OPEN
        assert (await store.circuit("b", T0)).state is CircuitState.CLOSED

    # --- audit and decisions --------------------------------------------------------------------

    async def test_audit_filtering_and_limit(self, store: StateStore) -> None:
        records = [
            transition(
                "a" if i % 2 == 0 else "b", KeyState.AVAILABLE, KeyState.DISABLED, f"r{i}", T0 + i
            )
            for i in range(10)
        ]
        for record in records:
            await store.append_audit(record)
        assert await store.list_audit() == records
        assert await store.list_audit("a") == records[0::2]
        assert await store.list_audit("b") == records[1::2]
        assert await store.list_audit("c") == []
        # The limit keeps the most recent records, oldest first.
        assert await store.list_audit(limit=3) == records[-3:]
        assert await store.list_audit("a", limit=2) == [records[6], records[8]]
        assert await store.list_audit(limit=100) == records

    async def test_decisions_are_returned_most_recent_last(self, store: StateStore) -> None:
        for i in range(5):
            await store.record_decision(decision(f"req_{i}"))
        recent = await store.recent_decisions(limit=2)
        assert [d.request_id for d in recent] == ["req_3", "req_4"]
        everything = await store.recent_decisions()
        assert [d.request_id for d in everything] == [f"req_{i}" for i in range(5)]

    async def test_ping(self, store: StateStore) -> None:
        assert await store.ping() is True


# --- memory-store specifics ---------------------------------------------------------------------


async def test_memory_decisions_ring_keeps_only_the_newest() -> None:
    store = InMemoryStateStore(decision_limit=3)
    for i in range(5):
        await store.record_decision(decision(f"req_{i}"))
    assert [d.request_id for d in await store.recent_decisions()] == ["req_2", "req_3", "req_4"]


async def test_memory_audit_ring_keeps_only_the_newest() -> None:
    store = InMemoryStateStore(audit_limit=4)
    records = [transition("a", KeyState.AVAILABLE, KeyState.DISABLED, f"r{i}") for i in range(6)]
    for record in records:
        await store.append_audit(record)
    assert await store.list_audit() == records[-4:]


# --- bugs ---------------------------------------------------------------------------------------


async def test_memory_list_audit_limit_zero_returns_nothing() -> None:
    store = InMemoryStateStore()
    await store.append_audit(transition("a", KeyState.AVAILABLE, KeyState.DISABLED))
    assert await store.list_audit(limit=0) == []


async def test_memory_recent_decisions_limit_zero_returns_nothing() -> None:
    store = InMemoryStateStore()
    await store.record_decision(decision("req_0"))
    assert await store.recent_decisions(limit=0) == []
