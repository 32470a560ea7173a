"""Canary: a planted key must never appear in a response, a log line or a metric.

The proxy runs at DEBUG with the router's own events on (the most talkative it gets), serves
with the canary key, sees it fail upstream, has it rotated to a second canary, and answers
every kind of request and error; then every byte it produced is searched.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from apikeyrouter.testing import SimKeyConfig, SimulatorServer

from .conftest import ADMIN_TOKEN, CLIENT_KEY, base_config, start_proxy

CANARY = "sk-CANARY-7f3a9c1e5b2d4a6f8e0c"
CANARY_ROTATED = "sk-CANARY-rotated-1b2c3d4e5f60"
CANARY_CLIENT = "client-CANARY-secret-99"


def test_canary_key_never_leaks(simulator: SimulatorServer, tmp_path: Path) -> None:
    sim = simulator.provider
    sim.add_key(SimKeyConfig(key=CANARY, label="canary"))
    sim.add_key(SimKeyConfig(key=CANARY_ROTATED, label="canary-rotated"))
    config = base_config(
        simulator.base_url,
        logging={"level": "DEBUG", "router_events": True},
        auth={
            "clients": [
                {"id": "e2e", "key": "${E2E_CLIENT_KEY}"},
                {"id": "canary-client", "key": CANARY_CLIENT},
            ]
        },
    )
    config["providers"].append(
        {
            "id": "canary-provider",
            "base_url": simulator.base_url,
            "models": ["gpt-4o-mini-canary"],
            "model_map": {"gpt-4o-mini-canary": "gpt-4o-mini"},
            "keys": [{"id": "canary", "key": CANARY, "requests_per_minute": 1000}],
        }
    )
    proxy = start_proxy(tmp_path, config)
    seen: list[str] = []
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def record(response: httpx.Response) -> httpx.Response:
        seen.append(response.text)
        seen.extend(f"{name}: {value}" for name, value in response.headers.items())
        return response

    chat = {"model": "gpt-4o-mini-canary", "messages": [{"role": "user", "content": "hi"}]}
    try:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as client:
            assert record(client.post("/v1/chat/completions", json=chat)).status_code == 200
            record(client.post("/v1/chat/completions", json={**chat, "stream": True}))
            record(client.post("/v1/embeddings", json={"model": "gpt-4o-mini-canary", "input": 1}))
            record(client.post("/v1/chat/completions", content=b"{broken"))
            record(client.post("/v1/chat/completions", json={**chat, "model": "missing"}))
            record(client.get("/v1/models"))
            record(
                client.post(
                    "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {CANARY}"}
                )
            )
            record(
                client.post(
                    "/v1/chat/completions",
                    json=chat,
                    headers={"Authorization": f"Bearer {CANARY_CLIENT}"},
                )
            )
            # The key is revoked upstream: the upstream's 401 mentions (a masked) key.
            sim.inject_fault("canary", "status_401", count=-1)
            record(client.post("/v1/chat/completions", json=chat))
            for path in (
                "/api/v1/keys",
                "/api/v1/keys/canary",
                "/api/v1/keys/canary/quota",
                "/api/v1/providers",
                "/api/v1/providers/canary-provider/health",
                "/api/v1/state/summary",
                "/api/v1/state/decisions?limit=100",
                "/api/v1/state/audit?limit=100",
            ):
                assert record(client.get(path, headers=admin)).status_code == 200
            rotated = client.post(
                "/api/v1/keys/canary/rotate", json={"key": CANARY_ROTATED}, headers=admin
            )
            assert record(rotated).status_code == 200
            assert record(client.post("/v1/chat/completions", json=chat)).status_code == 200
            record(client.patch("/api/v1/keys/canary", json={"weight": "x"}, headers=admin))
            record(
                client.post(
                    "/api/v1/keys", json={"provider_id": "nope", "key": CANARY}, headers=admin
                )
            )
            record(
                client.post(
                    "/api/v1/keys",
                    json={"provider_id": "main", "key": CANARY, "id": "bad id!"},
                    headers=admin,
                )
            )
            record(client.get("/api/v1/keys", headers={"Authorization": f"Bearer {CANARY}"}))
            record(client.get("/openapi.json"))
            metrics = record(client.get("/metrics"))
            assert 'key_id="canary"' in metrics.text  # the key is in the metrics, by id
    finally:
        proxy.stop()
    output = proxy.output()
    assert '"event": "routed"' in output or '"event":"routed"' in output  # logs were on
    assert "canary" in output  # and mention the key by id
    everything = "\n".join(seen) + "\n" + output
    for secret in (CANARY, CANARY_ROTATED, CANARY_CLIENT, "7f3a9c1e5b2d", "1b2c3d4e5f60"):
        assert secret not in everything, f"{secret!r} leaked"
