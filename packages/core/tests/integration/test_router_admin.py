"""Run-time administration of a router: what the proxy's reload and management API use."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from apikeyrouter import (
    ApiKeyRouter,
    ModelNotFoundError,
    NoKeyAvailableError,
    OpenAIAdapter,
    RetryPolicy,
)
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
)
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.infrastructure.transport.base import HttpResponse
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def make_router(provider: SimulatedProvider) -> ApiKeyRouter:
    router = ApiKeyRouter()
    await router.register_provider(
        "openai", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    return router


async def test_unregister_provider_stops_routing_to_it() -> None:
    provider = SimulatedProvider([SimKeyConfig(key="sk-test-admin-0001", label="a")])
    router = await make_router(provider)
    await router.register_key("sk-test-admin-0001", "openai")
    await router.route(dict(BODY))
    assert await router.unregister_provider("openai") is True
    assert await router.unregister_provider("openai") is False
    with pytest.raises(ModelNotFoundError):
        await router.route(dict(BODY))
    assert provider.key_stats("a").received == 1


async def test_configure_changes_retry_circuit_and_objective() -> None:
    router = await make_router(SimulatedProvider())
    router.configure(
        retry_policy=RetryPolicy(max_attempts=1),
        circuit_policy=CircuitPolicy(failure_threshold=9),
        objective="latency",
    )
    assert router.failures.retry.max_attempts == 1
    assert router.failures.circuit.failure_threshold == 9
    assert router.engine.default_objective.value == "latency"


async def test_model_groups_can_be_removed() -> None:
    router = await make_router(SimulatedProvider())
    router.add_model_group("fast", ["openai/gpt-4o-mini"])
    assert "fast" in router.servable_models()
    assert router.remove_model_group("fast") is True
    assert router.remove_model_group("fast") is False
    assert "fast" not in router.servable_models()


async def test_a_failed_request_carries_its_attempts() -> None:
    provider = SimulatedProvider([SimKeyConfig(key="sk-test-admin-0002", label="busy")])
    provider.inject_fault("busy", "status_429", count=-1, retry_after_s=5)
    router = await make_router(provider)
    key = await router.register_key("sk-test-admin-0002", "openai")
    with pytest.raises(NoKeyAvailableError) as caught:
        await router.route(dict(BODY))
    assert [(a.key_id, a.outcome) for a in caught.value.attempt_records] == [
        (key.id, "rate_limited")
    ]


async def test_update_can_lift_a_model_restriction() -> None:
    router = await make_router(SimulatedProvider())
    key = await router.register_key("sk-test-admin-0003", "openai", models=["gpt-4o"])
    await router.keys.update(key.id, weight=2)
    assert key.models == frozenset({"gpt-4o"})  # omitted: unchanged
    await router.keys.update(key.id, models=None)
    assert key.models is None


async def test_a_removed_key_takes_its_runtime_state_with_it() -> None:
    provider = SimulatedProvider(
        [SimKeyConfig(key="sk-test-admin-0003", label="a"), SimKeyConfig(key="sk-test-admin-0004")]
    )
    router = await make_router(provider)
    await router.register_provider(
        "other", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    revoked = await router.register_key("sk-test-admin-0003", "openai")
    deleted = await router.register_key("sk-test-admin-0004", "openai")
    for _ in range(4):
        await router.route(dict(BODY))
    for key in (revoked, deleted):
        assert router.stats(key.id).served > 0
        assert key.id in router.quota._keys  # the quota view this test expects to go
    # Moved to another provider by another process: same key, same runtime state.
    moved = deleted.model_copy(update={"provider_id": "other"})
    router.sync.apply_key(moved)
    assert list(router.keys.keys_for_provider("other")) == [deleted]
    assert router.stats(deleted.id).served > 0

    await router.keys.revoke(revoked.id)  # revoked here
    router.keys.forget(deleted.id)  # deleted by another process
    for key in (revoked, deleted):
        assert router.stats(key.id).served == 0  # a fresh, empty default
        assert key.id not in router.quota._keys
        assert key.id not in router._ctx.stats
    await router.close()


class HeldTransport(ASGITransport):
    """Holds every request until ``release`` is set, so a test can act while it is in flight."""

    def __init__(self, provider: SimulatedProvider) -> None:
        super().__init__(provider)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        self.entered.set()
        await self.release.wait()
        return await super().request(method, url, headers, body, timeout)


async def test_a_request_in_flight_when_its_key_is_revoked_still_completes() -> None:
    provider = SimulatedProvider([SimKeyConfig(key="sk-test-admin-0005", label="a")])
    transport = HeldTransport(provider)
    router = ApiKeyRouter()
    await router.register_provider("openai", OpenAIAdapter("http://sim/v1", transport=transport))
    key = await router.register_key("sk-test-admin-0005", "openai")
    in_flight = asyncio.create_task(router.route(dict(BODY)))
    await transport.entered.wait()
    await router.keys.revoke(key.id)  # e.g. a config reload replacing the key
    transport.release.set()
    response = await in_flight
    assert response.key_used == key.id
    assert key.id not in router._ctx.stats  # the late bookkeeping did not bring it back
    await router.close()


class RevokingStore(InMemoryStateStore):
    """Revokes the key it has just reserved, once: as if a config reload removed it while the
    reservation was on its way back from a shared store."""

    def __init__(self) -> None:
        super().__init__()
        self.router: ApiKeyRouter | None = None
        self.revoked: list[str] = []

    async def reserve(
        self, requests: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        reserved = await super().reserve(requests, now)
        if isinstance(reserved, Reservation) and not self.revoked and self.router is not None:
            self.revoked.append(reserved.key_id)
            await self.router.keys.revoke(reserved.key_id)
        return reserved


async def test_a_key_revoked_while_its_reservation_returns_gives_way_to_another() -> None:
    secrets = ["sk-test-admin-0006", "sk-test-admin-0007"]
    provider = SimulatedProvider([SimKeyConfig(key=s, label=s[-1]) for s in secrets])
    store = RevokingStore()
    router = ApiKeyRouter(store)
    store.router = router
    await router.register_provider(
        "openai", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    keys = [await router.register_key(s, "openai") for s in secrets]
    response = await router.route(dict(BODY))
    (revoked,) = store.revoked
    assert response.key_used != revoked
    assert response.key_used in {k.id for k in keys}
    assert revoked not in router._ctx.stats  # no bookkeeping brought it back
    await router.close()
