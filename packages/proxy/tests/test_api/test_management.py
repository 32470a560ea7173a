"""The management API, endpoint by endpoint. Key material goes in and never comes out."""

from __future__ import annotations

from apikeyrouter.testing import SimKeyConfig, SimulatedProvider

from .conftest import KEY_A, KEY_B, KEY_BAD
from .support import ADMIN, make_config, running_proxy

NEW_KEY = "sk-test-charlie-00000000000000004"


async def test_add_list_get_key_without_material(sim: SimulatedProvider) -> None:
    sim.add_key(SimKeyConfig(key=NEW_KEY, label="c"))
    async with running_proxy(make_config([{"id": "a", "key": KEY_A}]), sim) as proxy:
        created = await proxy.client.post(
            "/api/v1/keys",
            headers=ADMIN,
            json={
                "provider_id": "sim",
                "key": NEW_KEY,
                "id": "c",
                "requests_per_minute": 50,
                "weight": 3,
                "tags": ["team-x"],
                "models": ["gpt-4o-mini"],
                "metadata": {"owner": "ops"},
            },
        )
        listing = await proxy.client.get("/api/v1/keys", headers=ADMIN)
        one = await proxy.client.get("/api/v1/keys/c", headers=ADMIN)
        by_provider = await proxy.client.get("/api/v1/keys?provider_id=sim", headers=ADMIN)
        missing = await proxy.client.get("/api/v1/keys/nope", headers=ADMIN)
        served = await proxy.chat()
    assert created.status_code == 201
    view = created.json()
    assert view["id"] == "c"
    assert view["limits"]["requests_per_minute"] == 50
    assert view["weight"] == 3
    assert view["tags"] == ["team-x"]
    assert view["models"] == ["gpt-4o-mini"]
    assert view["source"] == "api"
    assert view["metadata"] == {"owner": "ops"}
    assert view["fingerprint"] == "..." + NEW_KEY[-4:]
    assert {k["id"] for k in listing.json()} == {"a", "c"}
    assert one.json()["id"] == "c"
    assert len(by_provider.json()) == 2
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "key_not_found"
    for response in (created, listing, one, by_provider):
        assert NEW_KEY not in response.text
        assert KEY_A not in response.text
    assert served.status_code == 200


async def test_keys_list_in_pages(sim: SimulatedProvider) -> None:
    keys = [{"id": f"k{n}", "key": f"sk-test-page-{n:02d}-0000000000000000"} for n in range(7)]
    async with running_proxy(make_config(keys), sim) as proxy:
        pages = [
            await proxy.client.get(f"/api/v1/keys?offset={offset}&limit=3", headers=ADMIN)
            for offset in (0, 3, 6, 9)
        ]
        everything = await proxy.client.get("/api/v1/keys", headers=ADMIN)
        bad = await proxy.client.get("/api/v1/keys?limit=0", headers=ADMIN)
    assert [[k["id"] for k in page.json()] for page in pages] == [
        ["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"], []
    ]  # fmt: skip
    assert {page.headers["x-total-count"] for page in pages} == {"7"}
    assert len(everything.json()) == 7
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "limit"


async def test_add_key_errors(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"id": "a", "key": KEY_A}]), sim) as proxy:
        unknown_provider = await proxy.client.post(
            "/api/v1/keys", headers=ADMIN, json={"provider_id": "nope", "key": NEW_KEY}
        )
        duplicate = await proxy.client.post(
            "/api/v1/keys", headers=ADMIN, json={"provider_id": "sim", "key": NEW_KEY, "id": "a"}
        )
        invalid = await proxy.client.post(
            "/api/v1/keys",
            headers=ADMIN,
            json={"provider_id": "sim", "key": NEW_KEY, "requests_per_minute": -1},
        )
        extra = await proxy.client.post(
            "/api/v1/keys",
            headers=ADMIN,
            json={"provider_id": "sim", "key": NEW_KEY, "colour": "blue"},
        )
    assert unknown_provider.status_code == 404
    assert duplicate.status_code == 409
    assert invalid.status_code == 422
    assert invalid.json()["error"]["param"] == "requests_per_minute"
    assert NEW_KEY not in invalid.text  # validation errors never echo the input
    assert extra.status_code == 422
    assert NEW_KEY not in extra.text


async def test_patch_limits_weight_tags_models_and_state(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A, "requests_per_minute": 10, "models": ["x"]}])
    async with running_proxy(config, sim) as proxy:
        patched = await proxy.client.patch(
            "/api/v1/keys/a",
            headers=ADMIN,
            json={"tokens_per_minute": 1000, "weight": 2.5, "tags": ["b", "a"], "models": None},
        )
        cleared = await proxy.client.patch(
            "/api/v1/keys/a", headers=ADMIN, json={"requests_per_minute": None}
        )
        disabled = await proxy.client.patch(
            "/api/v1/keys/a", headers=ADMIN, json={"state": "disabled", "reason": "maintenance"}
        )
        refused = await proxy.chat()
        bad_transition = await proxy.client.patch(
            "/api/v1/keys/a", headers=ADMIN, json={"state": "throttled"}
        )
        enabled = await proxy.client.patch(
            "/api/v1/keys/a", headers=ADMIN, json={"state": "available"}
        )
        served = await proxy.chat()
        audit = await proxy.client.get("/api/v1/state/audit?key_id=a", headers=ADMIN)
    view = patched.json()
    assert view["limits"]["requests_per_minute"] == 10
    assert view["limits"]["tokens_per_minute"] == 1000
    assert view["weight"] == 2.5
    assert view["tags"] == ["a", "b"]
    assert view["models"] is None
    assert cleared.json()["limits"]["requests_per_minute"] is None
    assert cleared.json()["limits"]["tokens_per_minute"] == 1000
    assert disabled.json()["state"] == "disabled"
    assert disabled.json()["state_reason"] == "maintenance"
    assert refused.status_code == 429
    assert bad_transition.status_code == 409
    assert enabled.json()["state"] == "available"
    assert served.status_code == 200
    transitions = [(t["from_state"], t["to_state"], t["actor"]) for t in audit.json()]
    assert ("available", "disabled", "operator") in transitions
    assert ("disabled", "available", "operator") in transitions


async def test_revoke_and_rotate(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_BAD}, {"id": "b", "key": KEY_B}])
    async with running_proxy(config, sim) as proxy:
        await proxy.chat()  # "a" is found invalid upstream (or "b" serves); make "a" fail:
        invalid = await proxy.client.patch(
            "/api/v1/keys/a", headers=ADMIN, json={"state": "invalid", "reason": "test"}
        )
        rotated = await proxy.client.post(
            "/api/v1/keys/a/rotate", headers=ADMIN, json={"key": KEY_A}
        )
        revoked = await proxy.client.delete("/api/v1/keys/b", headers=ADMIN)
        gone = await proxy.client.get("/api/v1/keys/b", headers=ADMIN)
        served = await proxy.chat()
    assert invalid.json()["state"] == "invalid"
    assert rotated.status_code == 200
    assert rotated.json()["id"] == "a"
    assert rotated.json()["state"] == "available"
    assert rotated.json()["fingerprint"] == "..." + KEY_A[-4:]
    assert KEY_A not in rotated.text
    assert revoked.json()["key_id"] == "b"
    assert revoked.json()["revoked"] is True
    assert gone.status_code == 404
    assert served.headers["x-apikeyrouter-key-id"] == "a"  # the rotated secret works


async def test_quota_view(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A, "requests_per_minute": 10}])
    async with running_proxy(config, sim) as proxy:
        for _ in range(3):
            await proxy.chat()
        quota = (await proxy.client.get("/api/v1/keys/a/quota", headers=ADMIN)).json()
    assert quota["key_id"] == "a"
    assert quota["state"] == "available"
    assert quota["routable"] is True
    assert quota["circuit"]["state"] == "closed"
    requests = next(w for w in quota["windows"] if w["metric"] == "requests")
    assert requests["limit"] == 10
    assert requests["used"] >= 3
    assert requests["remaining"] <= 7


async def test_providers_list_add_get_health(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}, {"id": "bad", "key": KEY_BAD}])
    async with running_proxy(config, sim) as proxy:
        for _ in range(3):
            await proxy.chat()  # finds "bad" invalid along the way
        listing = (await proxy.client.get("/api/v1/providers", headers=ADMIN)).json()
        added = await proxy.client.post(
            "/api/v1/providers",
            headers=ADMIN,
            json={"id": "second", "kind": "openai", "base_url": "http://sim.test/v1"},
        )
        again = await proxy.client.post("/api/v1/providers", headers=ADMIN, json={"id": "second"})
        key = await proxy.client.post(
            "/api/v1/keys", headers=ADMIN, json={"provider_id": "second", "key": KEY_B}
        )
        one = await proxy.client.get("/api/v1/providers/second", headers=ADMIN)
        health = (await proxy.client.get("/api/v1/providers/sim/health", headers=ADMIN)).json()
        missing = await proxy.client.get("/api/v1/providers/nope/health", headers=ADMIN)
    assert listing[0]["id"] == "sim"
    assert listing[0]["kind"] == "openai"
    assert listing[0]["keys"] == 2
    assert listing[0]["source"] == "config"
    assert added.status_code == 201
    assert added.json()["source"] == "api"
    assert again.status_code == 409
    assert key.status_code == 201
    assert one.json()["keys"] == 1
    assert health["status"] == "degraded"
    assert health["routable_keys"] == 1
    assert health["keys_by_state"] == {"available": 1, "invalid": 1}
    assert {k["key_id"]: k["routable"] for k in health["keys"]} == {"a": True, "bad": False}
    assert missing.status_code == 404


async def test_unavailable_provider_kind_is_a_400_not_a_500(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        response = await proxy.client.post(
            "/api/v1/providers", headers=ADMIN, json={"id": "x", "kind": "mystery"}
        )
    assert response.status_code == 422


async def test_state_summary_decisions_and_audit(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "bad", "key": KEY_BAD, "weight": 100}, {"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        await proxy.chat()
        await proxy.chat()
        summary = (await proxy.client.get("/api/v1/state/summary", headers=ADMIN)).json()
        decisions = (
            await proxy.client.get("/api/v1/state/decisions?limit=5", headers=ADMIN)
        ).json()
        audit = (await proxy.client.get("/api/v1/state/audit", headers=ADMIN)).json()
        bad_limit = await proxy.client.get("/api/v1/state/decisions?limit=0", headers=ADMIN)
    assert summary["ready"] is True
    assert summary["keys_total"] == 2
    assert summary["keys_by_state"] == {"invalid": 1, "available": 1}
    assert summary["routable_keys"] == 1
    assert summary["providers"] == ["sim"]
    assert summary["requests_served"] >= 2
    assert summary["config"]["last_changes"]["keys_added"] == ["bad", "a"]
    assert decisions
    assert all(d["explanation"] for d in decisions)
    assert any("failed over" in d["explanation"] for d in decisions)
    assert any(t["key_id"] == "bad" and t["to_state"] == "invalid" for t in audit)
    assert bad_limit.status_code == 422
