"""Budgets, policies and model fallback through ApiKeyRouter (simulator in process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from apikeyrouter import ApiKeyRouter, NoKeyAvailableError, OpenAIAdapter
from apikeyrouter.domain.components.policy_loader import parse_policies
from apikeyrouter.domain.components.token_estimator import (
    completion_allowance,
    estimate_prompt_tokens,
)
from apikeyrouter.domain.models.cost_model import Budget, BudgetEvent, BudgetExceededError
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider
from apikeyrouter.utils.validation import intent_from_openai

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Budget test request."}],
    "max_tokens": 16,
}


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(
        [SimKeyConfig(key=f"sk-test-budget-{n}-xxxxxxxx", label=f"k{n}") for n in range(3)]
    )


@pytest.fixture
async def router(provider: SimulatedProvider) -> AsyncIterator[ApiKeyRouter]:
    instance = ApiKeyRouter()
    await instance.register_provider(
        "openai", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    for n in range(3):
        await instance.register_key(f"sk-test-budget-{n}-xxxxxxxx", "openai", tags={f"t{n}"})
    yield instance
    await instance.close()


def one_request_cost(router: ApiKeyRouter) -> float:
    intent = intent_from_openai(dict(BODY))
    estimate = router.cost.estimate(
        "gpt-4o-mini", estimate_prompt_tokens(intent), completion_allowance(intent), "openai"
    )
    assert estimate.usd is not None
    return estimate.usd


async def test_hard_budget_holds_under_100_concurrent_requests(router: ApiKeyRouter) -> None:
    cost = one_request_cost(router)
    router.cost.add_budget(
        Budget(id="ten", scope="global", limit_usd=cost * 10.5, period="day", enforcement="hard")
    )
    results = await asyncio.gather(
        *(router.route(dict(BODY)) for _ in range(100)), return_exceptions=True
    )
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(served) == 10
    assert len(refused) == 90
    assert all(r.budget_id == "ten" and r.retry_after is not None for r in refused)
    assert refused[0].status == 429
    assert refused[0].to_openai_error()["error"]["code"] == "budget_exceeded"


async def test_soft_budget_warns_and_shadow_budget_only_counts(router: ApiKeyRouter) -> None:
    cost = one_request_cost(router)
    router.cost.add_budget(
        Budget(id="soft", scope="model", scope_value="gpt-4o-mini", limit_usd=cost * 2,
               period="month", enforcement="soft")
    )  # fmt: skip
    router.cost.add_budget(
        Budget(id="shadow", scope="provider", scope_value="openai", limit_usd=cost * 3,
               period="day", enforcement="shadow")
    )  # fmt: skip
    events: list[BudgetEvent] = []
    router.on_budget_event(events.append)
    for _ in range(6):
        await router.route(dict(BODY))  # nothing is refused
    assert sorted(e.budget_id for e in events) == ["shadow", "soft"]  # once per period each


async def test_policy_denies_tagged_keys_and_sets_objective(router: ApiKeyRouter) -> None:
    router.policies.replace_all(
        parse_policies(
            """
            policies:
              - name: no-t0
                scope: global
                deny_tags: [t0]
              - name: team-a
                scope: client:team-a
                objective: latency
            """
        )
    )
    keys = {k.id: k for k in router.keys.list_keys()}
    t0 = next(k for k in keys.values() if "t0" in k.tags)
    for _ in range(6):
        response = await router.route(dict(BODY))
        assert response.key_used != t0.id
        assert response.decision.objective.value == "quota"
        assert response.decision.excluded.get("policy") == 1
    team = await router.route(intent_from_openai(dict(BODY), client_id="team-a"))
    assert team.decision.objective.value == "latency"


async def test_fallback_chain_serves_another_model(
    router: ApiKeyRouter, provider: SimulatedProvider
) -> None:
    router.policies.replace_all(
        parse_policies(
            """
            policies:
              - name: fallback
                scope: global
                models: [gpt-4o]
                fallback: [gpt-4o-mini]
            """
        )
    )
    for key in router.keys.list_keys():  # no key may serve gpt-4o any more
        await router.keys.exclude_model(key.id, "gpt-4o")
    response = await router.route(dict(BODY) | {"model": "gpt-4o"})
    assert response.model == "gpt-4o-mini"
    assert "fallback" in response.decision.explanation


async def test_client_limit_from_policy(router: ApiKeyRouter) -> None:
    router.policies.replace_all(
        parse_policies(
            '{"policies": [{"name": "slow-client", "scope": "client:bot",'
            ' "client_limits": {"requests_per_minute": 3}}]}'
        )
    )
    for _ in range(3):
        await router.route(intent_from_openai(dict(BODY), client_id="bot"))
    with pytest.raises(NoKeyAvailableError) as caught:
        await router.route(intent_from_openai(dict(BODY), client_id="bot"))
    assert caught.value.code == "client_rate_limited"
    assert caught.value.retry_after is not None
    await router.route(intent_from_openai(dict(BODY), client_id="other"))  # others unaffected


async def test_model_group_orders_members(router: ApiKeyRouter) -> None:
    router.add_model_group("fast", ["openai/gpt-4o-mini", "openai/gpt-4o"])
    response = await router.route(dict(BODY) | {"model": "fast"})
    assert response.model == "gpt-4o-mini"
    assert "fast" in router.servable_models()
