"""Policies, budgets, prices and provider kinds in the config file: errors with field and line,
applied at start and on reload, and a bad file keeping the running config."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from apikeyrouter.domain.components.policy_loader import validate_policy
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.config import ConfigError, ProxyConfig, load_config, load_config_text
from apikeyrouter_proxy.main import ProxyApp, create_app, lifespan
from apikeyrouter_proxy.services.config_watcher import ConfigWatcher

from .conftest import KEY_A, KEY_B
from .support import ADMIN, ADMIN_TOKEN, SIM_BASE, chat_body, make_config, running_proxy


def _errors(text: str, source: str = "proxy.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(textwrap.dedent(text), source, env={}, use_env_overrides=False)
    return [str(issue) for issue in caught.value.issues]


def test_inline_policies_and_budgets_are_validated_with_lines() -> None:
    errors = _errors(
        """\
        policies:
          - name: base
            scope: provdier:openai
          - name: team
            scope: client:team
            budgets: [team-day, ghost]
          - name: team
            scope: global
        budgets:
          - id: team-day
            scope: client
            scope_value: team
            limit_usd: 1
            period: day
          - id: team-day
            scope: global
            limit_usd: -1
            period: day
        """
    )
    assert any(e.startswith("line 3: policies[0].scope: unknown scope") for e in errors)
    assert "line 17: budgets[1].limit_usd: Input should be greater than 0" in errors
    # Cross-section checks run once every field is valid.
    errors = _errors(
        """\
        auth:
          clients:
            - {id: team, key: team-client-key, budget_usd_per_day: 2}
        policies:
          - {name: team, scope: "client:team", budgets: [client-team-day, ghost]}
          - name: team
            scope: global
        budgets:
          - {id: org, scope: global, limit_usd: 10, period: month}
          - {id: org, scope: global, limit_usd: 20, period: day}
        """
    )
    assert errors == [
        "line 6: policies[1].name: duplicate policy name 'team' (also at policies[0])",
        "line 10: budgets[1].id: budget id 'org' is already used by budgets[0].id",
        "line 5: policies[0].budgets[1]: unknown budget 'ghost': define it under budgets "
        "(or give a client budget_usd_per_day/per_month)",
    ]


def test_provider_kinds_and_options_are_validated_with_lines() -> None:
    assert _errors("providers: [{id: az, kind: azure_openai}]") == [
        "line 1: providers[0]: a provider of kind 'azure_openai' needs a base_url"
    ]
    assert _errors("providers: [{id: x, kind: openai_compatible}]")[0].endswith(
        "needs a base_url or options.preset"
    )
    assert _errors("providers: [{id: x, kind: cohere}]")[0].startswith(
        "line 1: providers[0].kind: Input should be 'openai', 'openai_compatible', "
    )
    # Options are checked per kind once every field is valid.
    errors = _errors(
        """\
        providers:
          - id: geo
            kind: generic
            base_url: http://geo.test
            options:
              path: /geocode
              stauts_map: {429: rate_limited}
              key_in: cookie
          - id: claude
            kind: anthropic
            options: {default_max_tokens: 0}
          - id: local
            kind: openai_compatible
            options: {preset: vlm}
          - id: geo2
            kind: generic
            base_url: http://geo.test
            options: {base_url: http://elsewhere.test}
        """
    )
    assert errors[0].startswith("line 8: providers[0].options.key_in: Input should be")
    assert errors[1] == (
        "line 7: providers[0].options.stauts_map: unknown option 'stauts_map' "
        "(did you mean 'status_map'?)"
    )
    assert errors[2] == (
        "line 11: providers[1].options.default_max_tokens: Input should be greater than 0"
    )
    assert errors[3].startswith("line 14: providers[2].options.preset: unknown preset 'vlm'")
    assert errors[4] == (
        "line 18: providers[3].options.base_url: set it on the provider itself "
        "(providers[].base_url), not in options"
    )


async def test_every_kind_builds_its_adapter(sim: SimulatedProvider) -> None:
    config = ProxyConfig.model_validate(
        {
            "server": {"admin_token": ADMIN_TOKEN, "watch_config": False},
            "providers": [
                {"id": "oai", "kind": "openai", "options": {"extra_headers": {"x-team": "a"}}},
                {"id": "groq", "kind": "openai_compatible", "options": {"preset": "groq"}},
                {
                    "id": "azure",
                    "kind": "azure_openai",
                    "base_url": "https://res.openai.azure.com",
                    "options": {"api_version": "2024-10-21", "deployments": {"gpt-4o": "p4o"}},
                },
                {"id": "claude", "kind": "anthropic", "options": {"api_version": "2023-06-01"}},
                {"id": "gem", "kind": "gemini"},
                {
                    "id": "geo",
                    "kind": "generic",
                    "base_url": "http://geo.test",
                    "options": {"path": "/geocode", "key_in": "query", "key_name": "key"},
                },
            ],
        }
    )
    async with running_proxy(config, sim) as proxy:
        providers = (await proxy.client.get("/api/v1/providers", headers=ADMIN)).json()
        added = await proxy.client.post(
            "/api/v1/providers",
            headers=ADMIN,
            json={"id": "geo2", "kind": "generic", "base_url": "http://geo.test",
                  "options": {"pth": "/x"}},
        )  # fmt: skip
        no_url = await proxy.client.post(
            "/api/v1/providers", headers=ADMIN, json={"id": "az2", "kind": "azure_openai"}
        )
    kinds = {p["id"]: (p["kind"], p["base_url"]) for p in providers}
    assert kinds == {
        "oai": ("openai", "https://api.openai.com/v1"),
        "groq": ("openai_compatible", "https://api.groq.com/openai/v1"),
        "azure": ("azure_openai", "https://res.openai.azure.com"),
        "claude": ("anthropic", "https://api.anthropic.com"),
        "gem": ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
        "geo": ("generic", "http://geo.test"),
    }
    raw = next(p for p in providers if p["id"] == "geo")
    assert raw["capabilities"]["raw"] is True
    assert added.status_code == 422
    assert added.json()["error"]["param"] == "options.pth"
    assert no_url.status_code == 422
    assert "needs a base_url" in no_url.json()["error"]["message"]


def test_policies_file_errors_name_both_files_and_lines(tmp_path: Path) -> None:
    (tmp_path / "policies.yaml").write_text(
        "policies:\n  - name: base\n    scope: global\n    retri: {max_attempts: 2}\n"
    )
    (tmp_path / "prices.yaml").write_text("models:\n  my-model: {input: 1}\n")
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "server: {watch_config: false}\n"
        "policies_file: policies.yaml\n"
        "pricing_overrides_file: prices.yaml\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={}, use_env_overrides=False)
    first, second = (str(issue) for issue in caught.value.issues)
    assert first.startswith(f"line 2: policies_file: {tmp_path / 'policies.yaml'}:4: ")
    assert "policies[0].retri: unknown field 'retri' (did you mean 'retry'?)" in first
    assert second.startswith("line 3: pricing_overrides_file: ")
    assert "my-model" in second
    assert "output" in second
    (tmp_path / "policies.yaml").unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(config, env={}, use_env_overrides=False)


def test_policies_file_loads_json_and_joins_inline_policies(tmp_path: Path) -> None:
    (tmp_path / "policies.json").write_text(
        '[{"name": "from-file", "scope": "global", "budgets": ["org"]}]'
    )
    config_path = tmp_path / "proxy.yaml"
    config_path.write_text(
        "policies_file: policies.json\n"
        "policies: [{name: inline, scope: global}]\n"
        "budgets: [{id: org, scope: global, limit_usd: 1, period: month}]\n"
    )
    config = load_config(config_path, env={}, use_env_overrides=False)
    assert config.files is not None
    assert [p.name for p in config.files.policies] == ["from-file"]
    assert [p.name for p in config.policies] == ["inline"]
    config_path.write_text(
        "policies_file: policies.json\npolicies: [{name: from-file, scope: global}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, env={}, use_env_overrides=False)
    messages = [str(i) for i in caught.value.issues]
    assert any(
        "'from-file' in policies.json is already defined at policies[0]" in m for m in messages
    )
    assert any("names unknown budget 'org'" in m for m in messages)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(path)


def _file_config(**extra: Any) -> dict[str, Any]:
    return {
        "server": {"admin_token": ADMIN_TOKEN},
        "routing": {"backoff_base_seconds": 0.0},
        "providers": [
            {
                "id": "sim",
                "base_url": SIM_BASE,
                "keys": [
                    {"id": "a", "key": KEY_A, "tags": ["preview"]},
                    {"id": "b", "key": KEY_B, "tags": ["stable"]},
                ],
            }
        ],
        "policies_file": "policies.yaml",
        **extra,
    }


def _policies(*policies: dict[str, Any]) -> dict[str, Any]:
    return {"policies": list(policies)}


async def _names(app: ProxyApp) -> dict[str, str]:
    engine = app.runtime.router.policies
    governance = app.runtime.service.governance
    return {p.name: governance.policy_source(p.name) for p in engine.list()}


async def test_reload_applies_policies_budgets_and_keeps_old_config_on_bad_files(
    sim: SimulatedProvider, tmp_path: Path
) -> None:
    path = tmp_path / "proxy.yaml"
    policies = tmp_path / "policies.yaml"
    _write(policies, _policies({"name": "no-preview", "scope": "global", "deny_tags": ["preview"]}))
    budget = {"id": "org", "scope": "global", "limit_usd": 10, "period": "month"}
    _write(path, _file_config(budgets=[budget]))
    app = create_app(path, transport=ASGITransport(sim))
    async with lifespan(app):
        runtime = app.runtime
        router = runtime.router
        watcher = ConfigWatcher(runtime, path)  # driven by hand: no timing involved
        assert await _names(app) == {"no-preview": "config"}
        assert router.cost.get_budget("org") == router.cost.budgets()[0]
        # An API policy survives reloads; an API budget too.
        router.policies.upsert(validate_policy({"name": "api-one", "scope": "client:x"}))
        # Only the policies file changes: that is a reload too.
        _write(
            policies, _policies({"name": "no-stable", "scope": "global", "deny_tags": ["stable"]})
        )
        assert await watcher.reload() is True
        assert await _names(app) == {"no-stable": "config", "api-one": "api"}
        report = runtime.reload_status.last_report
        assert report["policies_set"] == ["no-stable"]
        assert report["policies_removed"] == ["no-preview"]
        # New budgets apply; removed ones go.
        new_budget = {"id": "team", "scope": "client", "scope_value": "t", "limit_usd": 1,
                      "period": "day"}  # fmt: skip
        _write(path, _file_config(budgets=[new_budget]))
        assert await watcher.reload() is True
        assert [b.id for b in router.cost.budgets()] == ["team"]
        assert runtime.reload_status.last_report["budgets_removed"] == ["org"]
        # A broken policies file: rejected with its line; everything keeps running as it was.
        policies.write_text("policies:\n  - name: broken\n    scope: global\n    colour: red\n")
        assert await watcher.reload() is False
        error = runtime.reload_status.last_error
        assert error is not None
        assert "policies.yaml:4: policies[0].colour" in error
        assert await _names(app) == {"no-stable": "config", "api-one": "api"}
        # A config naming an unknown budget: rejected too.
        _write(policies, _policies({"name": "p", "scope": "global", "budgets": ["ghost"]}))
        assert await watcher.reload() is False
        assert "unknown budget 'ghost'" in (runtime.reload_status.last_error or "")
        assert [b.id for b in router.cost.budgets()] == ["team"]
        # A config trying to take over an API policy's name is rejected.
        _write(policies, _policies({"name": "api-one", "scope": "global"}))
        assert await watcher.reload() is False
        assert "already used by policies created through the API" in (
            runtime.reload_status.last_error or ""
        )
        assert runtime.reload_status.rejected == 3
        served = await _serve(app)
    assert served == {"a"}  # "no-stable" still applies


async def _serve(app: ProxyApp) -> set[str]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        keys = set()
        for _ in range(4):
            response = await client.post("/v1/chat/completions", json=chat_body())
            assert response.status_code == 200, response.text
            keys.add(response.headers["x-apikeyrouter-key-id"])
        return keys


async def test_pricing_overrides_apply_and_revert(sim: SimulatedProvider, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  gpt-4o-mini: {provider: openai, input: 1000, output: 1000}\n")
    path = tmp_path / "proxy.yaml"
    data = _file_config(pricing_overrides_file="prices.yaml")
    del data["policies_file"]
    _write(path, data)
    app = create_app(path, transport=ASGITransport(sim))
    async with lifespan(app):
        watcher = ConfigWatcher(app.runtime, path)
        cost = app.runtime.router.cost
        price = cost.price_for("gpt-4o-mini")
        assert price is not None
        assert price.input == 1000
        del data["pricing_overrides_file"]
        _write(path, data)
        assert await watcher.reload() is True
        price = cost.price_for("gpt-4o-mini")
        assert price is not None
        assert price.input < 1
        assert app.runtime.reload_status.last_report["pricing_models"] == ["gpt-4o-mini"]


async def test_a_config_built_in_code_gets_the_same_checks(sim: SimulatedProvider) -> None:
    config = make_config(
        [{"id": "a", "key": KEY_A}], policies=[{"name": "p", "scope": "global", "budgets": ["x"]}]
    )
    with pytest.raises(ConfigurationError, match="unknown budget 'x'"):
        async with running_proxy(config, sim):
            pass
