"""Routing a large pool: bounded work per request, every key used in turn, and nothing refused
that some key outside the part scanned could serve."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from apikeyrouter import ApiKeyRouter, OpenAIAdapter
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider
from apikeyrouter.utils.exceptions import NoKeyAvailableError

POOL = 40
SECRETS = [f"sk-test-pool-{n:03d}-xxxxxxxx" for n in range(POOL)]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
async def router() -> AsyncIterator[ApiKeyRouter]:
    provider = SimulatedProvider([SimKeyConfig(key=s, label=f"k{s[13:16]}") for s in SECRETS])
    instance = ApiKeyRouter(clock=lambda: 1_000_000.0, scan_limit=4)
    await instance.register_provider(
        "openai", OpenAIAdapter("http://sim/v1", transport=ASGITransport(provider))
    )
    yield instance
    await instance.close()


async def test_turns_over_a_large_pool_use_every_key_once_per_round(router: ApiKeyRouter) -> None:
    router.engine.default_objective = RoutingObjective.FAIRNESS
    keys = [await router.register_key(secret, "openai") for secret in SECRETS]
    used = Counter([(await router.route(BODY)).key_used for _ in range(2 * POOL)])
    assert used == Counter({key.id: 2 for key in keys})


async def test_a_decision_over_part_of_a_pool_says_how_much_it_looked_at(
    router: ApiKeyRouter,
) -> None:
    for secret in SECRETS:
        await router.register_key(secret, "openai")
    decision = (await router.route(BODY)).decision
    assert decision.considered == 4
    assert "looked at 4 of 40 keys" in decision.explanation
    router.scan_limit = None
    whole = (await router.route(BODY)).decision
    assert whole.considered == POOL
    assert "looked at" not in whole.explanation


async def test_when_the_part_scanned_is_full_the_rest_of_the_pool_is_tried(
    router: ApiKeyRouter,
) -> None:
    keys = [await router.register_key(s, "openai", requests_per_minute=1) for s in SECRETS]
    router.scan_limit = None  # fill every key but the last, in order
    for _ in range(POOL - 1):
        await router.route(BODY)
    router.scan_limit = 2
    # The bounded scan starts at the first keys, all full: only the whole pool finds the last.
    assert (await router.route(BODY)).key_used == keys[-1].id
    with pytest.raises(NoKeyAvailableError) as refused:
        await router.route(BODY)
    assert refused.value.reasons.get("no_quota_room")


@pytest.mark.parametrize("bad", [0, -3, True])
def test_a_scan_limit_must_be_a_positive_integer(bad: int) -> None:
    with pytest.raises(ValueError, match="scan_limit"):
        ApiKeyRouter(scan_limit=bad)
