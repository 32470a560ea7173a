"""Stop the proxy, start a new process on the same MongoDB database: nothing is forgotten.

The proxy runs with ``store.kind: mongo`` on nx-27017 (a MongoDB wire-compatible server the core's
``mongo_server.py`` starts on a free port; a fresh database for the test). Through the first
process: a key is added with the management API (a canary secret that exists nowhere else),
its state is changed twice (audit trail), requests are routed on it (spend, usage ledger,
decisions), streaming included. The process is stopped the way an orchestrator stops it
(SIGTERM). A second process on the same database must then have:

* the same keys under the same ids, the API key and both config keys (one with an explicit id,
  one with an id derived from the master key), none duplicated, the config ones adopted as
  they were rather than registered again;
* the audit trail, the spend and request windows, the routing decisions, and a usage ledger
  whose rows match, token for token, what the simulated provider counted;
* the policy and the budget created through the management API (and the budget's spend);
* the canary key still usable (decrypted with the same master key).

And the raw documents, read with plain pymongo the way an operator (or an attacker with a
backup) would, contain neither the canary secret nor any 8-character piece of it.

The same runs with ``store.kind: redis+mongo`` (the tiered store), with the Redis prefix wiped
between the two processes, as a Redis restarted without persistence would be: the keys, audit
trail and decisions come back from MongoDB. The usage windows are Redis's alone, so they
start again from zero (the ledger still has every request); run Redis with persistence where
spend limits must survive a Redis restart.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikeyrouter.infrastructure.state_store import mongo_indexes as schema
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, run_simulator_in_thread
from bson import json_util
from tests.integration.mongo_server import (  # noqa: F401 (pytest fixtures, used by name)
    NxServer,
    mongo_database_fixture,
    nx_server_fixture,
)

from .conftest import CLIENT_KEY, ProxyProcess, start_proxy
from .store_support import (
    ADMIN,
    SHARED_REDIS_URL,
    STORE_ENV,
    delete_prefix,
    redis_dump,
    redis_prefix,  # noqa: F401 (a fixture, used by name)
    wait_ready,
)

pytestmark = [pytest.mark.mongo, pytest.mark.timeout(180)]

# Random after "sk-": no piece of a secret may coincide with an id or a field name.
CANARY = "sk-" + secrets.token_hex(20)
CONFIG_SECRETS = {
    "DUR_KEY_EXPLICIT": "sk-" + secrets.token_hex(16),
    "DUR_KEY_DERIVED": "sk-" + secrets.token_hex(16),
}
ROUTED = 5  # non-streaming requests on the canary key, plus one streamed
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
GPT4O_INPUT, GPT4O_OUTPUT = 2.50, 10.00  # USD per 1M tokens (the library's price table)


@dataclass
class Simulated:
    provider: SimulatedProvider
    base_url: str


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulated]:
    provider = SimulatedProvider(seed=3)
    provider.add_key(SimKeyConfig(key=CANARY, label="canary"))
    provider.add_key(SimKeyConfig(key=CONFIG_SECRETS["DUR_KEY_EXPLICIT"], label="explicit"))
    provider.add_key(SimKeyConfig(key=CONFIG_SECRETS["DUR_KEY_DERIVED"], label="derived"))
    with run_simulator_in_thread(provider) as server:
        yield Simulated(provider, server.base_url)


def durable_config(
    sim_url: str, mongo_url: str, database: str, prefix: str | None = None
) -> dict[str, Any]:
    store: dict[str, Any] = {
        "kind": "mongo",
        "mongo": {"url": mongo_url, "database": database},
        "usage_ledger": {"flush_seconds": 0.2},
    }
    if prefix is not None:
        store["kind"] = "redis+mongo"
        store["redis"] = {"url": SHARED_REDIS_URL, "prefix": prefix}
    return {
        "server": {"admin_token": "${E2E_ADMIN_TOKEN}", "watch_config": False},
        "auth": {"clients": [{"id": "e2e", "key": "${E2E_CLIENT_KEY}"}]},
        "routing": {"backoff_base_seconds": 0},
        "store": store,
        "providers": [
            {
                "id": "main",
                "base_url": sim_url,
                "models": ["gpt-4o-mini"],
                "keys": [
                    {"id": "explicit", "key": "${DUR_KEY_EXPLICIT}", "requests_per_day": 500},
                    {"key": "${DUR_KEY_DERIVED}"},
                ],
            },
            {"id": "vault", "base_url": sim_url, "models": ["gpt-4o"]},  # keys: via the API
        ],
    }


def api(proxy: ProxyProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, proxy.url + path, headers=ADMIN, timeout=10.0, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def chat(proxy: ProxyProcess, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "remember me"}], **extra}
    response = httpx.post(
        proxy.url + "/v1/chat/completions", json=body, headers=CLIENT, timeout=15.0
    )
    assert response.status_code == 200, response.text
    return response


def windows(proxy: ProxyProcess, key_id: str) -> dict[str, float]:
    quota = api(proxy, "GET", f"/api/v1/keys/{key_id}/quota")
    return {w["metric"]: w["used"] for w in quota["windows"]}


def raw_documents(nx_server: NxServer, database: str) -> dict[str, str]:
    """Every document of every collection, as MongoDB extended JSON text, per collection."""
    client = nx_server.client()
    try:
        db = client[database]
        return {
            name: json_util.dumps(list(db[name].find({}))) for name in db.list_collection_names()
        }
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["mongo", "redis+mongo"])
def test_a_new_process_remembers_everything(
    kind: str,
    sim: Simulated,
    nx_server: NxServer,
    mongo_database: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    sim.provider.reset(stats_only=True)
    prefix: str | None = request.getfixturevalue("redis_prefix") if kind != "mongo" else None
    config = durable_config(sim.base_url, nx_server.url, mongo_database, prefix)
    env = {**STORE_ENV, **CONFIG_SECRETS}
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()

    # --- the first process: add, change, route --------------------------------------------
    first = start_proxy(first_dir, config, env)
    try:
        wait_ready(first)
        created = api(
            first,
            "POST",
            "/api/v1/keys",
            json={
                "provider_id": "vault",
                "key": CANARY,
                "id": "canary",
                "requests_per_day": 1000,
                "spend_per_month": 50.0,
                "tags": ["durable"],
                "metadata": {"team": "search"},
            },
        )
        assert created["fingerprint"].endswith(CANARY[-4:])
        api(
            first,
            "PUT",
            "/api/v1/budgets/vault-month",
            json={"scope": "key", "scope_value": "canary", "limit_usd": 10.0, "period": "month"},
        )
        api(
            first,
            "PUT",
            "/api/v1/policies/durable-global",
            json={"scope": "global", "description": "kept", "budgets": ["vault-month"]},
        )
        api(first, "PATCH", "/api/v1/keys/canary", json={"state": "disabled", "reason": "review"})
        api(first, "PATCH", "/api/v1/keys/canary", json={"state": "available", "reason": "ok"})
        request_ids = []
        for n in range(ROUTED):
            response = chat(first, "gpt-4o", max_tokens=20 + n)
            assert response.headers["x-apikeyrouter-key-id"] == "canary"
            request_ids.append(response.headers["x-request-id"])
        streamed = chat(first, "gpt-4o", stream=True)
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert streamed.headers["x-apikeyrouter-key-id"] == "canary"
        chat(first, "gpt-4o-mini")
        before_keys = sorted(k["id"] for k in api(first, "GET", "/api/v1/keys"))
        before_audit = api(first, "GET", "/api/v1/state/audit", params={"key_id": "canary"})
        before_windows = windows(first, "canary")
    finally:
        first.stop()  # SIGTERM: a graceful shutdown flushes the ledger
    # uvicorn re-raises SIGTERM after its graceful shutdown; what matters is that it ran.
    assert "Application shutdown complete" in first.output(), first.output()[-3000:]

    canary_stats = sim.provider.key_stats("canary")
    assert canary_stats.served == ROUTED + 1
    expected_cost = (
        canary_stats.prompt_tokens * GPT4O_INPUT + canary_stats.completion_tokens * GPT4O_OUTPUT
    ) / 1_000_000
    assert before_windows["requests"] == ROUTED + 1
    assert before_windows["spend"] == pytest.approx(expected_cost, rel=1e-6)

    # --- at rest: no key material, not even a piece of it ---------------------------------
    documents = raw_documents(nx_server, mongo_database)
    assert {schema.KEYS, schema.AUDIT, schema.USAGE_LEDGER, schema.DECISIONS} <= set(documents)
    everything = "\n".join(documents.values())
    if prefix is not None:
        redis_values = redis_dump(prefix)
        assert ":key:canary" in redis_values  # the key is there, in its encrypted form
        everything += "\n" + redis_values
    for secret in (CANARY, *CONFIG_SECRETS.values()):
        pieces = [secret[i : i + 8] for i in range(len(secret) - 7)]
        leaked = [piece for piece in pieces if piece in everything]
        assert not leaked, f"key material at rest: {len(leaked)} 8-character pieces"

    # --- the ledger, straight from the database --------------------------------------------
    client = nx_server.client()
    try:
        rows = list(client[mongo_database][schema.USAGE_LEDGER].find({"key_id": "canary"}))
    finally:
        client.close()
    assert sum(r["requests"] for r in rows) == ROUTED + 1
    assert sum(r["prompt_tokens"] for r in rows) == canary_stats.prompt_tokens
    assert sum(r["completion_tokens"] for r in rows) == canary_stats.completion_tokens
    assert {(r["provider_id"], r["model"], r["client_id"]) for r in rows} == {
        ("vault", "gpt-4o", "e2e")
    }
    assert sum(r["cost_nanos"] for r in rows) / 1e9 == pytest.approx(expected_cost, rel=1e-6)

    # --- the second process, same database -------------------------------------------------
    if prefix is not None:
        assert delete_prefix(prefix) > 0  # Redis restarted without persistence: empty
    second = start_proxy(second_dir, config, env)
    try:
        wait_ready(second)
        keys = api(second, "GET", "/api/v1/keys")
        assert sorted(k["id"] for k in keys) == before_keys
        assert len(keys) == 3  # two config keys and the API key, none twice
        by_id = {k["id"]: k for k in keys}
        canary = by_id["canary"]
        assert canary["source"] == "api"
        assert canary["state"] == "available"
        assert canary["fingerprint"] == created["fingerprint"]
        assert canary["limits"]["spend_per_month"] == 50.0
        assert canary["tags"] == ["durable"]
        assert canary["metadata"] == {"team": "search"}
        assert by_id["explicit"]["limits"]["requests_per_day"] == 500

        changes = api(second, "GET", "/api/v1/state/summary")["config"]["last_changes"]
        config_ids = sorted(k for k in before_keys if k != "canary")
        assert sorted(changes.get("keys_adopted", [])) == config_ids
        assert not changes.get("keys_added")

        audit = api(second, "GET", "/api/v1/state/audit", params={"key_id": "canary"})
        assert audit == before_audit
        assert [(t["to_state"], t["reason"]) for t in audit][-2:] == [
            ("disabled", "review"),
            ("available", "ok"),
        ]
        if prefix is None:
            assert windows(second, "canary") == pytest.approx(before_windows)
        else:  # the windows were Redis's alone
            assert windows(second, "canary") == {"requests": 0.0, "spend": 0.0}
        decided = {d["request_id"] for d in api(second, "GET", "/api/v1/state/decisions")}
        assert set(request_ids) <= decided

        again = chat(second, "gpt-4o")  # the stored ciphertext still opens
        assert again.headers["x-apikeyrouter-key-id"] == "canary"
        assert sim.provider.key_stats("canary").served == ROUTED + 2
        assert windows(second, "canary")["requests"] == (ROUTED + 2 if prefix is None else 1)

        policy = api(second, "GET", "/api/v1/policies/durable-global")
        assert policy["source"] == "api"
        assert (policy["policy"]["description"], policy["policy"]["budgets"]) == (
            "kept",
            ["vault-month"],
        )
        budget = api(second, "GET", "/api/v1/budgets/vault-month")
        assert budget["source"] == "api"
        assert budget["budget"]["limit_usd"] == 10.0
        if prefix is None:  # its spend counter is a usage window like the others
            assert budget["spent_usd"] > expected_cost
    finally:
        second.stop()
