"""``/api/v1/policies`` and ``/api/v1/model-groups``: CRUD, validation with lines, dry runs, and
policies actually steering which key serves."""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any

import httpx
import pytest
from apikeyrouter.testing import SimulatedProvider

from .conftest import KEY_A, KEY_B
from .support import ADMIN, Proxy, chat_body, make_config, running_proxy

KEYS = [
    {"id": "a", "key": KEY_A, "tags": ["preview"]},
    {"id": "b", "key": KEY_B, "tags": ["stable"]},
]
BASE = {"name": "base", "scope": "global", "objective": "fairness"}

#: Every new management endpoint, for the auth checks.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/policies", None),
    ("GET", "/api/v1/policies/base", None),
    ("PUT", "/api/v1/policies/x", {"scope": "global"}),
    ("DELETE", "/api/v1/policies/base", None),
    ("POST", "/api/v1/policies/validate", {"policies": []}),
    ("POST", "/api/v1/policies/dry-run", {"policies": BASE}),
    ("GET", "/api/v1/budgets", None),
    ("GET", "/api/v1/budgets/x", None),
    ("PUT", "/api/v1/budgets/x", {"scope": "global", "limit_usd": 1, "period": "day"}),
    ("DELETE", "/api/v1/budgets/x", None),
    ("GET", "/api/v1/state/spend", None),
    ("GET", "/api/v1/model-groups", None),
    ("GET", "/api/v1/model-groups/g", None),
    ("PUT", "/api/v1/model-groups/g", {"members": ["gpt-4o-mini"]}),
    ("DELETE", "/api/v1/model-groups/g", None),
]


async def _served_by(proxy: Proxy, n: int = 6) -> Counter[str]:
    served: Counter[str] = Counter()
    for i in range(n):
        response = await proxy.chat(text=f"request {i}")
        assert response.status_code == 200, response.text
        served[response.headers["x-apikeyrouter-key-id"]] += 1
    return served


async def test_every_new_endpoint_needs_the_admin_token(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS, policies=[BASE]), sim) as proxy:
        for method, path, body in ENDPOINTS:
            missing = await proxy.client.request(method, path, json=body)
            wrong = await proxy.client.request(
                method, path, json=body, headers={"Authorization": "Bearer not-the-token"}
            )
            assert missing.status_code == 401, (method, path)
            assert missing.json()["error"]["code"] == "missing_admin_token"
            assert wrong.status_code == 403, (method, path)
            assert wrong.json()["error"]["code"] == "invalid_admin_token"
        # Nothing was changed by the refused calls.
        assert (await proxy.client.get("/api/v1/policies/base", headers=ADMIN)).status_code == 200


async def test_crud_and_sources(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS, policies=[BASE]), sim) as proxy:
        client = proxy.client
        listed = await client.get("/api/v1/policies", headers=ADMIN)
        created = await client.put(
            "/api/v1/policies/team-a",
            headers=ADMIN,
            json={"scope": "client:team-a", "objective": "cost", "budgets": ["nope"]},
        )
        replaced = await client.put(
            "/api/v1/policies/team-a",
            headers=ADMIN,
            json={"name": "team-a", "scope": "client:team-a", "objective": "latency"},
        )
        one = await client.get("/api/v1/policies/team-a", headers=ADMIN)
        missing = await client.get("/api/v1/policies/ghost", headers=ADMIN)
        deleted = await client.delete("/api/v1/policies/team-a", headers=ADMIN)
        again = await client.delete("/api/v1/policies/team-a", headers=ADMIN)
        config_owned = await client.delete("/api/v1/policies/base", headers=ADMIN)
        bad_name = await client.get("/api/v1/policies/no spaces", headers=ADMIN)
    assert [(p["name"], p["source"]) for p in listed.json()] == [("base", "config")]
    assert listed.json()[0]["policy"]["scope"] == "global"
    assert created.status_code == 201
    assert created.json()["source"] == "api"
    assert created.json()["warnings"] == ["budget 'nope' does not exist"]
    assert replaced.status_code == 200
    assert one.json()["policy"]["objective"] == "latency"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "policy_not_found"
    assert deleted.json() == {"name": "team-a", "deleted": True, "source": "api"}
    assert again.status_code == 404
    assert config_owned.json()["source"] == "config"
    assert bad_name.status_code == 422


async def test_put_rejects_invalid_policies_with_field_names(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        client = proxy.client
        typo = await client.put(
            "/api/v1/policies/p", headers=ADMIN, json={"scope": "global", "retri": {}}
        )
        bad_scope = await client.put(
            "/api/v1/policies/p", headers=ADMIN, json={"scope": "provdier:openai"}
        )
        mismatch = await client.put(
            "/api/v1/policies/p", headers=ADMIN, json={"name": "q", "scope": "global"}
        )
        not_object = await client.put("/api/v1/policies/p", headers=ADMIN, json=["global"])
        listed = await client.get("/api/v1/policies", headers=ADMIN)
    assert typo.status_code == 422
    assert typo.json()["error"]["code"] == "invalid_policy"
    assert "did you mean 'retry'" in typo.json()["error"]["message"]
    assert typo.json()["error"]["param"] == "retri"
    assert bad_scope.status_code == 422
    assert "unknown scope" in bad_scope.json()["error"]["message"]
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["param"] == "name"
    assert not_object.status_code == 422
    assert listed.json() == []


async def test_a_policy_denying_a_tag_changes_which_key_serves(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        deny_preview = {"scope": "global", "deny_tags": ["preview"]}
        put = await proxy.client.put(
            "/api/v1/policies/no-preview", headers=ADMIN, json=deny_preview
        )
        assert put.status_code == 201
        assert await _served_by(proxy) == Counter({"b": 6})
        deny_stable = {"scope": "global", "deny_tags": ["stable"]}
        await proxy.client.put("/api/v1/policies/no-preview", headers=ADMIN, json=deny_stable)
        assert await _served_by(proxy) == Counter({"a": 6})
        await proxy.client.delete("/api/v1/policies/no-preview", headers=ADMIN)
        decisions = await proxy.client.get("/api/v1/state/decisions?limit=1", headers=ADMIN)
    assert decisions.status_code == 200


VALID_YAML = textwrap.dedent(
    """\
    policies:
      - name: base
        scope: global
        deny_tags: [preview]
    """
)
BAD_YAML = textwrap.dedent(
    """\
    policies:
      - name: base
        scope: provdier:openai
      - name: other
        scope: global
        retri: {max_attempts: 2}
    """
)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (VALID_YAML, {"content-type": "application/yaml"}),
        (VALID_YAML, {"content-type": "text/plain"}),
        ('{"policies": [{"name": "base", "scope": "global"}]}', {"content-type": "text/plain"}),
    ],
)
async def test_validate_accepts_yaml_and_json_text(
    sim: SimulatedProvider, content: str, headers: dict[str, str]
) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        response = await proxy.client.post(
            "/api/v1/policies/validate", headers={**ADMIN, **headers}, content=content
        )
        listed = await proxy.client.get("/api/v1/policies", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"valid": True, "policies": ["base"], "problems": [], "warnings": []}
    assert listed.json() == []  # validating applies nothing


async def test_validate_reports_every_problem_with_its_line(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        client = proxy.client
        yaml_text = await client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "application/yaml"},
            content=BAD_YAML,
        )
        wrapped = await client.post(
            "/api/v1/policies/validate", headers=ADMIN, json={"text": BAD_YAML}
        )
        json_doc = await client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "application/json"},
            content='{"policies": [\n  {"name": "x",\n   "scope": "global",\n   "colour": 1}\n]}',
        )
        single = await client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "application/json"},
            content='{"name": "x",\n "scope": "nowhere"}',
        )
        syntax = await client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "text/plain"},
            content="policies:\n  - name: [unclosed\n",
        )
        control = await client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "text/plain"},
            content="policies:\n  - \x04\n",
        )
        warned = await client.post(
            "/api/v1/policies/validate",
            headers=ADMIN,
            json=[{"name": "p", "scope": "global", "budgets": ["nope"], "deny_keys": ["ghost"]}],
        )
    for response in (yaml_text, wrapped):
        body = response.json()
        assert response.status_code == 200
        assert body["valid"] is False
        assert body["policies"] == []
        found = {(p["line"], p["path"]) for p in body["problems"]}
        assert found == {(3, "policies[0].scope"), (6, "policies[1].retri")}
        assert "did you mean 'retry'" in body["problems"][1]["message"]
    assert [(p["line"], p["path"]) for p in json_doc.json()["problems"]] == [
        (4, "policies[0].colour")
    ]
    assert [(p["line"], p["path"]) for p in single.json()["problems"]] == [(2, "scope")]
    assert syntax.json()["valid"] is False
    assert syntax.json()["problems"][0]["line"] == 3  # where YAML noticed: the end
    assert "invalid YAML" in syntax.json()["problems"][0]["message"]
    assert control.json()["valid"] is False
    assert control.json()["problems"][0]["line"] == 2
    assert warned.json()["valid"] is True
    assert warned.json()["warnings"] == [
        "p: budget 'nope' does not exist",
        "p: key 'ghost' does not exist",
    ]


async def test_validate_refuses_alias_bombs(sim: SimulatedProvider) -> None:
    bomb = "a: &a [x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    bomb += "policies: " + "[" + ", ".join(["*u"] * 60) + "]\n"
    async with running_proxy(make_config(KEYS), sim) as proxy:
        response = await proxy.client.post(
            "/api/v1/policies/validate",
            headers={**ADMIN, "content-type": "text/plain"},
            content=bomb,
        )
    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert "aliases" in response.json()["problems"][0]["message"]


async def test_dry_run_reports_the_effect_without_applying(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS, policies=[BASE]), sim) as proxy:
        client = proxy.client
        report = await client.post(
            "/api/v1/policies/dry-run",
            headers=ADMIN,
            json={
                "policies": {"name": "no-preview", "scope": "global", "deny_tags": ["preview"]},
                "requests": [{"model": "gpt-4o-mini"}, {"model": "gpt-4o-mini", "client_id": "x"}],
            },
        )
        replacing = await client.post(
            "/api/v1/policies/dry-run",
            headers=ADMIN,
            json={"policies": [{"name": "base", "scope": "global", "objective": "cost"}]},
        )
        invalid = await client.post(
            "/api/v1/policies/dry-run",
            headers=ADMIN,
            json={"policies": [{"name": "d", "scope": "global"}, {"name": "d", "scope": "global"}]},
        )
        bad_field = await client.post(
            "/api/v1/policies/dry-run", headers=ADMIN, json={"policies": {"name": "d"}}
        )
        listed = await client.get("/api/v1/policies", headers=ADMIN)
    body = report.json()
    assert report.status_code == 200
    assert body["candidates"] == ["no-preview"]
    assert body["requests_checked"] == 2
    assert body["requests_affected"] == 2
    assert body["keys_affected"] == ["a"]
    excluded = body["requests"][0]["newly_excluded"]
    assert excluded == [
        {
            "key_id": "a",
            "provider_id": "sim",
            "reason": "tag(s) preview denied by 'no-preview' (global)",
        }
    ]
    assert replacing.json()["replaces"] == ["base"]
    change = replacing.json()["requests"][0]["changes"][0]
    assert change == {"setting": "objective", "before": "fairness", "after": "cost"}
    assert invalid.status_code == 422
    assert bad_field.status_code == 422
    assert bad_field.json()["error"]["param"] == "scope"
    assert [p["name"] for p in listed.json()] == ["base"]  # nothing applied


async def test_model_groups_api(sim: SimulatedProvider) -> None:
    groups = [{"name": "smart", "members": ["sim/gpt-4o-mini"]}]
    async with running_proxy(make_config(KEYS, model_groups=groups), sim) as proxy:
        client = proxy.client
        listed = await client.get("/api/v1/model-groups", headers=ADMIN)
        created = await client.put(
            "/api/v1/model-groups/fast",
            headers=ADMIN,
            json={
                "members": [{"model": "gpt-4o-mini", "provider": "sim", "weight": 3}, "gpt-4o"],
                "strategy": "weighted",
            },
        )
        replaced = await client.put(
            "/api/v1/model-groups/fast", headers=ADMIN, json={"members": ["gpt-4o-mini"]}
        )
        one = await client.get("/api/v1/model-groups/fast", headers=ADMIN)
        served = await client.post("/v1/chat/completions", json={**chat_body(), "model": "fast"})
        models = await client.get("/v1/models")
        invalid = await client.put("/api/v1/model-groups/x", headers=ADMIN, json={"members": []})
        deleted = await client.delete("/api/v1/model-groups/fast", headers=ADMIN)
        missing = await client.get("/api/v1/model-groups/fast", headers=ADMIN)
        gone = await client.post("/v1/chat/completions", json={**chat_body(), "model": "fast"})
    assert listed.json() == [
        {
            "name": "smart",
            "strategy": "ordered",
            "members": [{"model": "gpt-4o-mini", "provider": "sim", "weight": 1.0}],
            "source": "config",
        }
    ]
    assert created.status_code == 201
    assert created.json()["strategy"] == "weighted"
    assert created.json()["members"][0]["weight"] == 3
    assert created.json()["source"] == "api"
    assert replaced.status_code == 200
    assert one.json()["members"] == [{"model": "gpt-4o-mini", "provider": None, "weight": 1.0}]
    assert served.status_code == 200, served.text
    assert "fast" in {m["id"] for m in models.json()["data"]}
    assert invalid.status_code == 422
    assert deleted.json() == {"name": "fast", "deleted": True}
    assert missing.status_code == 404
    assert gone.status_code in (404, 429)


def _is_openai_error(response: httpx.Response) -> bool:
    error = response.json().get("error", {})
    return {"message", "type", "param", "code"} <= set(error)


async def test_errors_are_openai_shaped(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config(KEYS), sim) as proxy:
        responses = [
            await proxy.client.get("/api/v1/policies/ghost", headers=ADMIN),
            await proxy.client.put("/api/v1/policies/p", headers=ADMIN, json={"scope": 3}),
            await proxy.client.post("/api/v1/policies/dry-run", headers=ADMIN, json={}),
        ]
    assert all(_is_openai_error(r) for r in responses)
