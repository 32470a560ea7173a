"""Config reload in process: diff-based reconciliation, and bad files that change nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from apikeyrouter import KeyState
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.config import ProxyConfig
from apikeyrouter_proxy.main import create_app, lifespan
from apikeyrouter_proxy.services.config_watcher import ConfigWatcher

from .conftest import KEY_A, KEY_B, KEY_BAD
from .support import ADMIN, ADMIN_TOKEN, SIM_BASE, chat_body, make_config, running_proxy

KEY_C = "sk-test-charlie-00000000000000004"


async def test_reload_adds_updates_and_revokes_keys(sim: SimulatedProvider) -> None:
    first = make_config(
        [{"id": "a", "key": KEY_A, "requests_per_minute": 10}, {"id": "bad", "key": KEY_BAD}]
    )
    async with running_proxy(first, sim) as proxy:
        await proxy.chat()
        await proxy.chat()  # "bad" is found invalid on the way
        service = proxy.runtime.service
        key_a = service.router.keys.get("a")
        assert service.router.keys.get("bad").state is KeyState.INVALID
        second = make_config(
            [
                {"id": "a", "key": KEY_A, "requests_per_minute": 20, "weight": 5},
                {"id": "b", "key": KEY_B},
            ],
            routing={"max_attempts": 2, "scan_limit": 16},
        )
        assert service.router.scan_limit == 64  # the default
        report = await proxy.runtime.apply(second)
        assert report.keys_added == ["b"]
        assert report.keys_updated == ["a"]
        assert report.keys_revoked == ["bad"]
        assert service.router.keys.get("a") is key_a  # same record: state, usage, id kept
        assert key_a.limits.requests_per_minute == 20
        assert key_a.weight == 5
        assert key_a.usage.successes >= 1
        assert not service.has_key("bad")
        assert service.router.failures.retry.max_attempts == 2
        assert service.router.scan_limit == 16
        # Nothing changed: nothing happens.
        again = await proxy.runtime.apply(second)
        assert not any(again.as_dict().values())


async def test_keys_without_ids_keep_their_id_across_reloads(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        (before,) = proxy.runtime.router.keys.list_keys()
        await proxy.runtime.apply(make_config([{"key": KEY_A, "weight": 3}, {"key": KEY_B}]))
        ids = {k.id for k in proxy.runtime.router.keys.list_keys()}
        assert before.id in ids
        assert len(ids) == 2
        assert proxy.runtime.router.keys.get(before.id).weight == 3


async def test_new_secret_under_an_explicit_id_rotates(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"id": "k", "key": KEY_BAD}]), sim) as proxy:
        assert (await proxy.chat()).status_code == 429  # the only key is invalid upstream
        report = await proxy.runtime.apply(make_config([{"id": "k", "key": KEY_A}]))
        assert report.keys_rotated == ["k"]
        response = await proxy.chat()
    assert response.status_code == 200
    assert response.headers["x-apikeyrouter-key-id"] == "k"


async def test_reload_leaves_api_keys_alone_and_refuses_id_clashes(
    sim: SimulatedProvider,
) -> None:
    sim.add_key(SimKeyConfig(key=KEY_C, label="c"))
    async with running_proxy(make_config([{"id": "a", "key": KEY_A}]), sim) as proxy:
        added = await proxy.client.post(
            "/api/v1/keys", headers=ADMIN, json={"provider_id": "sim", "key": KEY_C, "id": "c"}
        )
        assert added.status_code == 201
        await proxy.runtime.apply(make_config([{"id": "b", "key": KEY_B}]))
        ids = {k.id for k in proxy.runtime.router.keys.list_keys()}
        assert ids == {"b", "c"}
        clash = make_config([{"id": "c", "key": KEY_A}])
        with pytest.raises(ConfigurationError, match="already used"):
            await proxy.runtime.apply(clash)  # an id owned by an API key is not taken over
        assert {k.id for k in proxy.runtime.router.keys.list_keys()} == {"b", "c"}


async def test_provider_changes_and_removal(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"id": "a", "key": KEY_A}]), sim) as proxy:
        service = proxy.runtime.service
        old_adapter = service.providers()["sim"].adapter
        changed = make_config([{"id": "a", "key": KEY_A}], provider={"models": ["gpt-4o-mini"]})
        report = await proxy.runtime.apply(changed)
        assert report.providers_updated == ["sim"]
        assert service.providers()["sim"].adapter is not old_adapter
        assert (await proxy.chat()).status_code == 200
        assert (
            await proxy.client.post("/v1/chat/completions", json={**chat_body(), "model": "gpt-4o"})
        ).status_code == 404
        empty = ProxyConfig.model_validate({"server": {"admin_token": ADMIN_TOKEN}})
        report = await proxy.runtime.apply(empty)
        assert report.providers_removed == ["sim"]
        assert report.keys_revoked == ["a"]
        assert service.providers() == {}
        assert (await proxy.chat()).status_code in (404, 429)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(path)  # atomic, as the docs recommend


def _file_config(keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server": {"admin_token": ADMIN_TOKEN},
        "providers": [{"id": "sim", "base_url": SIM_BASE, "keys": keys}],
    }


async def test_watcher_applies_good_files_and_rejects_bad_ones(
    sim: SimulatedProvider, tmp_path: Path
) -> None:
    path = tmp_path / "proxy.yaml"
    _write(path, _file_config([{"id": "a", "key": KEY_A}]))
    app = create_app(path, transport=ASGITransport(sim))
    async with lifespan(app):
        runtime = app.runtime
        watcher = ConfigWatcher(runtime, path)  # driven by hand here: no timing involved
        assert await watcher.reload() is False  # unchanged content is a no-op
        _write(path, _file_config([{"id": "a", "key": KEY_A}, {"id": "b", "key": KEY_B}]))
        assert await watcher.reload() is True
        assert runtime.service.has_key("b")
        path.write_text("providers:\n  - id: sim\n    keys:\n      - key: ${UNSET_VARIABLE_X}\n")
        assert await watcher.reload() is False
        assert runtime.reload_status.rejected == 1
        assert runtime.reload_status.last_error is not None
        assert "UNSET_VARIABLE_X" in runtime.reload_status.last_error
        assert "line 4" in runtime.reload_status.last_error
        assert runtime.service.has_key("a")
        assert runtime.service.has_key("b")
        metrics = (await runtime.metrics.render(runtime.service.router)).decode()
        assert 'apikeyrouter_proxy_config_reloads_total{result="rejected"} 1.0' in metrics


async def test_file_watch_reloads_without_restart(sim: SimulatedProvider, tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    _write(path, _file_config([{"id": "a", "key": KEY_A}]))
    app = create_app(path, transport=ASGITransport(sim))
    async with lifespan(app):
        _write(path, _file_config([{"id": "b", "key": KEY_B}]))
        deadline = time.monotonic() + 5.0
        while not app.runtime.service.has_key("b"):
            assert time.monotonic() < deadline, "the config change was not picked up"
            await asyncio.sleep(0.02)
        assert not app.runtime.service.has_key("a")
