"""A model without a price never slips past a dollar limit by counting as free."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from apikeyrouter import ApiKeyRouter, OpenAIAdapter
from apikeyrouter.domain.models.cost_model import Budget, ModelPrice, UnpricedSpendLimitError
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.orchestration.selector import UNPRICED_UNDER_SPEND_LIMIT
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider

KEYS = [f"sk-test-unpriced-{n}-xxxxxxxx" for n in range(2)]
UNPRICED = "house-model-7b"


def body(model: str = UNPRICED) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(
        [SimKeyConfig(key=k, label=f"k{n}") for n, k in enumerate(KEYS)],
        models=(UNPRICED, "gpt-4o-mini"),
    )


@pytest.fixture
async def router(provider: SimulatedProvider) -> AsyncIterator[ApiKeyRouter]:
    instance = ApiKeyRouter()
    await instance.register_provider(
        "openai", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    yield instance
    await instance.close()


def hard_budget(enforcement: str = "hard") -> Budget:
    return Budget(id="org", scope="global", limit_usd=5.0, period="day", enforcement=enforcement)


async def test_a_hard_budget_refuses_an_unpriced_model_without_calling_upstream(
    router: ApiKeyRouter, provider: SimulatedProvider
) -> None:
    for key in KEYS:
        await router.register_key(key, "openai")
    router.cost.add_budget(hard_budget())
    with pytest.raises(UnpricedSpendLimitError, match="pricing overrides") as caught:
        await router.route(body())
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "model_not_priced", "model")
    assert UNPRICED in error.message
    assert sum(provider.key_stats(f"k{n}").received for n in range(2)) == 0
    assert UNPRICED in router.cost.unpriced_models()
    # A priced model is still served under the same budget.
    assert (await router.route(body("gpt-4o-mini"))).cost_usd


async def test_a_key_spend_limit_skips_that_key_and_another_serves(
    router: ApiKeyRouter,
) -> None:
    limited = await router.register_key(KEYS[0], "openai", spend_per_month=20.0, weight=100.0)
    free = await router.register_key(KEYS[1], "openai")
    response = await router.route(body())
    assert response.key_used == free.id != limited.id
    assert response.decision.excluded == {UNPRICED_UNDER_SPEND_LIMIT: 1}
    assert UNPRICED_UNDER_SPEND_LIMIT in response.decision.explanation


async def test_soft_and_shadow_budgets_only_report_so_they_do_not_refuse(
    router: ApiKeyRouter,
) -> None:
    await router.register_key(KEYS[0], "openai")
    router.cost.add_budget(hard_budget("soft"))
    router.cost.add_budget(Budget(id="s2", scope="global", limit_usd=1.0, period="day",
                                  enforcement="shadow"))  # fmt: skip
    assert (await router.route(body())).cost_usd is None


async def test_a_price_of_zero_lets_the_model_through_a_hard_budget(router: ApiKeyRouter) -> None:
    await router.register_key(KEYS[0], "openai")
    router.cost.add_budget(hard_budget())
    router.cost.load_overrides({UNPRICED: ModelPrice(input=0.0, output=0.0)})
    assert (await router.route(body())).cost_usd == 0.0


async def test_a_group_falls_back_from_an_unpriced_member_to_a_priced_one(
    router: ApiKeyRouter,
) -> None:
    await router.register_key(KEYS[0], "openai")
    router.cost.add_budget(hard_budget())
    router.add_model_group("chat", [UNPRICED, "gpt-4o-mini"])
    response = await router.route(body("chat"))
    assert response.model == "gpt-4o-mini"
