"""``/api/v1/budgets``, ``/api/v1/state/spend`` and the quota prediction; a hard budget refusing
requests with 429 ``insufficient_quota``."""

from __future__ import annotations

import time
from typing import Any

import httpx
import httpx2
import openai
import pytest
from apikeyrouter.domain.components.token_estimator import (
    completion_allowance,
    estimate_prompt_tokens,
)
from apikeyrouter.testing import DEFAULT_MODELS, SimKeyConfig, SimulatedProvider
from apikeyrouter.utils.validation import intent_from_openai

from .conftest import KEY_A, KEY_B
from .support import ADMIN, Proxy, chat_body, make_config, running_proxy

KEYS = [{"id": "a", "key": KEY_A}, {"id": "b", "key": KEY_B}]
GLOBAL_DAY = {"scope": "global", "limit_usd": 5, "period": "day"}


def one_request_cost(proxy: Proxy, body: dict[str, Any]) -> float:
    """What the router reserves for ``body`` (its pre-call estimate)."""
    intent = intent_from_openai(body)
    estimate = proxy.runtime.router.cost.estimate(
        body["model"], estimate_prompt_tokens(intent), completion_allowance(intent), "sim"
    )
    assert estimate.usd is not None
    return estimate.usd


async def test_crud_and_status(sim: SimulatedProvider) -> None:
    config = make_config(KEYS, budgets=[{"id": "org", **GLOBAL_DAY, "enforcement": "soft"}])
    async with running_proxy(config, sim) as proxy:
        client = proxy.client
        await proxy.chat()
        listed = await client.get("/api/v1/budgets", headers=ADMIN)
        created = await client.put(
            "/api/v1/budgets/team",
            headers=ADMIN,
            json={"scope": "client", "scope_value": "team", "limit_usd": 2, "period": "month"},
        )
        replaced = await client.put(
            "/api/v1/budgets/team",
            headers=ADMIN,
            json={"id": "team", "scope": "client", "scope_value": "team", "limit_usd": 3,
                  "period": "custom", "period_seconds": 3600},
        )  # fmt: skip
        one = await client.get("/api/v1/budgets/team", headers=ADMIN)
        deleted = await client.delete("/api/v1/budgets/team", headers=ADMIN)
        missing = await client.get("/api/v1/budgets/team", headers=ADMIN)
        missing_delete = await client.delete("/api/v1/budgets/team", headers=ADMIN)
    (org,) = listed.json()
    assert org["source"] == "config"
    assert org["budget"]["enforcement"] == "soft"
    assert org["spent_usd"] > 0  # the chat above was priced and charged
    assert org["remaining_usd"] == 5 - org["spent_usd"]
    assert org["period_start"] <= time.time() < org["period_end"]
    assert org["period_end"] - org["period_start"] == 86_400
    assert org["exceeded"] is False
    assert created.status_code == 201
    assert created.json()["source"] == "api"
    assert created.json()["spent_usd"] == 0
    assert replaced.status_code == 200
    assert one.json()["budget"]["period"] == "custom"
    assert one.json()["period_end"] - one.json()["period_start"] == 3600
    assert deleted.json() == {"id": "team", "deleted": True, "source": "api"}
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "budget_not_found"
    assert missing_delete.status_code == 404


async def test_put_rejects_invalid_budgets(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        client = proxy.client
        no_value = await client.put(
            "/api/v1/budgets/b",
            headers=ADMIN,
            json={"scope": "provider", "limit_usd": 1, "period": "day"},
        )
        negative = await client.put(
            "/api/v1/budgets/b", headers=ADMIN, json={**GLOBAL_DAY, "limit_usd": -1}
        )
        extra = await client.put(
            "/api/v1/budgets/b", headers=ADMIN, json={**GLOBAL_DAY, "colour": "red"}
        )
        mismatch = await client.put(
            "/api/v1/budgets/b", headers=ADMIN, json={**GLOBAL_DAY, "id": "c"}
        )
        bad_id = await client.put("/api/v1/budgets/has:colon", headers=ADMIN, json=GLOBAL_DAY)
        listed = await client.get("/api/v1/budgets", headers=ADMIN)
    assert no_value.status_code == 422
    assert "scope_value is required" in no_value.json()["error"]["message"]
    assert negative.status_code == 422
    assert negative.json()["error"]["param"] == "limit_usd"
    assert extra.status_code == 422
    assert extra.json()["error"]["param"] == "colour"
    assert mismatch.status_code == 422
    assert bad_id.status_code == 422
    assert listed.json() == []


async def _until_refused(proxy: Proxy, body: dict[str, Any], limit: int = 60) -> httpx.Response:
    for _ in range(limit):
        response = await proxy.client.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            return response
    raise AssertionError("the budget never refused a request")


async def test_hard_budget_refuses_with_insufficient_quota(sim: SimulatedProvider) -> None:
    body = chat_body("Spend a little.", max_tokens=16)
    async with running_proxy(make_config(KEYS), sim) as proxy:
        cost = one_request_cost(proxy, body)
        put = await proxy.client.put(
            "/api/v1/budgets/tight",
            headers=ADMIN,
            json={**GLOBAL_DAY, "limit_usd": cost * 2.5, "enforcement": "hard"},
        )
        assert put.status_code == 201
        refused = await _until_refused(proxy, body)
        status = await proxy.client.get("/api/v1/budgets/tight", headers=ADMIN)
        spend = await proxy.client.get("/api/v1/state/spend", headers=ADMIN)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "budget_exceeded"
    assert "budget 'tight'" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 86_400
    assert refused.headers["x-should-retry"] == "false"
    view = status.json()
    assert view["remaining_usd"] < cost  # what is left cannot pay for one more request
    assert spend.json()["total_usd"] > 0


async def test_openai_sdk_sees_a_non_retried_rate_limit_error(sim: SimulatedProvider) -> None:
    body = chat_body("Spend a little.", max_tokens=16)
    async with running_proxy(make_config(KEYS), sim) as proxy:
        cost = one_request_cost(proxy, body)
        await proxy.client.put(
            "/api/v1/budgets/tight", headers=ADMIN, json={**GLOBAL_DAY, "limit_usd": cost * 1.5}
        )
        await _until_refused(proxy, body)
        http = openai.DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=proxy.app))
        sdk = openai.AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="unused", http_client=http, max_retries=3
        )
        before = proxy.runtime.metrics.served
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.chat.completions.create(**body)
        await sdk.close()
        # x-should-retry: false: one request, none of the SDK's three retries.
        assert proxy.runtime.metrics.served - before == 1
    assert caught.value.code == "budget_exceeded"
    assert caught.value.type == "insufficient_quota"


async def test_an_unpriced_model_under_a_hard_budget_is_a_bad_request(
    sim: SimulatedProvider,
) -> None:
    config = make_config(KEYS, budgets=[{"id": "org", **GLOBAL_DAY, "enforcement": "hard"}])
    async with running_proxy(config, sim) as proxy:
        http = openai.DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=proxy.app))
        sdk = openai.AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="unused", http_client=http, max_retries=0
        )
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(**chat_body("hi", model="house-model-7b"))
        await sdk.close()
    assert caught.value.code == "model_not_priced"
    assert caught.value.param == "model"
    assert "pricing overrides" in caught.value.message
    assert sum(sim.key_stats(label).received for label in ("a", "b")) == 0


async def test_client_budgets_from_the_config(sim: SimulatedProvider) -> None:
    clients = [
        {"id": "web", "key": "web-client-key-1", "budget_usd_per_day": 0.000001},
        {"id": "batch", "key": "batch-client-key", "budget_usd_per_month": 50},
    ]
    async with running_proxy(make_config(KEYS, auth={"clients": clients}), sim) as proxy:
        listed = await proxy.client.get("/api/v1/budgets", headers=ADMIN)
        web = await proxy.client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer web-client-key-1"},
        )
        batch = await proxy.client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer batch-client-key"},
        )
    views = {b["id"]: b for b in listed.json()}
    assert set(views) == {"client-web-day", "client-batch-month"}
    assert views["client-web-day"]["budget"]["scope"] == "client"
    assert views["client-web-day"]["budget"]["scope_value"] == "web"
    assert views["client-web-day"]["budget"]["enforcement"] == "hard"
    assert views["client-web-day"]["source"] == "config"
    assert web.status_code == 429
    assert web.json()["error"]["type"] == "insufficient_quota"
    assert "retry-after" not in web.headers  # this request alone is larger than the limit
    assert batch.status_code == 200


async def test_spend_view() -> None:
    sim = SimulatedProvider(seed=3, models=[*DEFAULT_MODELS, "house-model-7"])
    sim.add_key(SimKeyConfig(key=KEY_A, label="a"))
    sim.add_key(SimKeyConfig(key=KEY_B, label="b"))
    async with running_proxy(make_config(KEYS), sim) as proxy:
        for _ in range(3):
            assert (await proxy.chat()).status_code == 200
        unpriced = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body(), "model": "house-model-7"}
        )
        spend = await proxy.client.get("/api/v1/state/spend", headers=ADMIN)
    assert unpriced.status_code == 200
    body = spend.json()
    assert {k["key_id"] for k in body["keys"]} == {"a", "b"}
    assert sum(k["requests"] for k in body["keys"]) == 4
    assert abs(body["total_usd"] - sum(k["cost_usd"] for k in body["keys"])) < 1e-12
    assert body["total_usd"] > 0
    assert body["reconciliation"]["count"] == 3
    assert "house-model-7" in body["unpriced_models"]
    assert body["token_estimates"]["samples"] == 4
    assert body["budgets"] == []


async def test_quota_view_includes_prediction(sim: SimulatedProvider) -> None:
    keys = [{"id": "a", "key": KEY_A, "requests_per_minute": 100}]
    async with running_proxy(make_config(keys), sim) as proxy:
        for _ in range(3):
            await proxy.chat()
        quota = await proxy.client.get("/api/v1/keys/a/quota", headers=ADMIN)
        missing = await proxy.client.get("/api/v1/keys/ghost/quota", headers=ADMIN)
    body = quota.json()
    assert body["capacity"] in {"abundant", "constrained", "critical", "exhausted", "recovering"}
    assert body["confidence"] in {"exact", "estimated", "unknown"}
    prediction = body["prediction"]
    assert prediction["key_id"] == "a"
    assert prediction["rate_per_second"] >= 0
    assert {"metric", "predicted_exhaustion_at", "exhausts_before_reset", "confidence"} <= set(
        prediction
    )
    assert missing.status_code == 404
