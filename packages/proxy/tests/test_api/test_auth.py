"""Client keys on ``/v1`` (with per-client limits) and the admin token on ``/api/v1``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from apikeyrouter import RequestIntent, RouterResponse
from apikeyrouter.testing import SimulatedProvider

from .conftest import KEY_A
from .support import ADMIN, chat_body, make_config, running_proxy

CLIENTS = {
    "clients": [
        {"id": "web", "key": "client-web-secret-0001"},
        {"id": "batch", "key": "client-batch-secret-02", "requests_per_minute": 2},
    ]
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_v1_is_open_without_configured_clients(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        assert (await proxy.chat()).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        (bearer("client-web-secret-0009"), "invalid_api_key"),
        ({"Authorization": "Basic Y2xpZW50LXdlYi1zZWNyZXQtMDAwMQ=="}, "missing_api_key"),
    ],
)
async def test_client_key_required_when_configured(
    sim: SimulatedProvider, headers: dict[str, str], code: str
) -> None:
    config = make_config([{"key": KEY_A}], auth=CLIENTS)
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers=headers
        )
        models = await proxy.client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == code
    assert models.status_code == 401
    assert sim.key_stats("a").received == 0


async def test_valid_client_key_is_served_and_its_id_reaches_routing(
    sim: SimulatedProvider, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apikeyrouter")  # access lines are written at INFO
    config = make_config([{"key": KEY_A}], auth=CLIENTS)
    seen: list[RequestIntent] = []
    async with running_proxy(config, sim) as proxy:
        router = proxy.runtime.router
        route = router.route

        async def spy(intent: RequestIntent, *args: Any, **kwargs: Any) -> RouterResponse:
            seen.append(intent)
            return await route(intent, *args, **kwargs)

        setattr(router, "route", spy)  # noqa: B010 - observing what the router is given
        response = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers=bearer("client-web-secret-0001")
        )
    assert response.status_code == 200
    assert [intent.client_id for intent in seen] == ["web"]
    access = [line for line in capsys.readouterr().err.splitlines() if '"event":"request"' in line]
    assert '"client_id":"web"' in access[-1]
    assert "client-web-secret" not in "\n".join(access)


async def test_per_client_rate_limit_is_enforced_in_the_proxy(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], auth=CLIENTS)
    async with running_proxy(config, sim) as proxy:
        batch = bearer("client-batch-secret-02")
        statuses = []
        for _ in range(3):
            response = await proxy.client.post(
                "/v1/chat/completions", json=chat_body(), headers=batch
            )
            statuses.append(response.status_code)
        other = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers=bearer("client-web-secret-0001")
        )
        metrics = (await proxy.client.get("/metrics")).text
    assert statuses == [200, 200, 429]
    assert response.json()["error"]["code"] == "client_rate_limit_exceeded"
    assert response.json()["error"]["type"] == "rate_limit_error"
    # The sliding-window estimate decays the last minute's count: at most two windows' wait.
    assert 60 <= int(response.headers["retry-after"]) <= 120
    assert other.status_code == 200  # limits are per client
    assert sim.key_stats("a").received == 3  # the refused request never went upstream
    assert 'apikeyrouter_proxy_client_rate_limited_total{client_id="batch"} 1.0' in metrics


async def test_admin_api_needs_the_admin_token(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        missing = await proxy.client.get("/api/v1/keys")
        wrong = await proxy.client.get("/api/v1/keys", headers=bearer("not-the-token"))
        right = await proxy.client.get("/api/v1/keys", headers=ADMIN)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_admin_token"
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_admin_token"
    assert right.status_code == 200


async def test_admin_api_is_disabled_without_a_configured_token(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], server={"admin_token": None})
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.get("/api/v1/state/summary", headers=bearer("anything"))
    assert response.status_code == 403
    assert "disabled" in response.json()["error"]["message"]


async def test_client_keys_do_not_open_the_admin_api(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], auth=CLIENTS)
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.get("/api/v1/keys", headers=bearer("client-web-secret-0001"))
    assert response.status_code == 403
