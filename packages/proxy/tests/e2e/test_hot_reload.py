"""Hot reload of a running proxy process: a new key is used within a second; a broken file
changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikeyrouter.testing import SimulatorServer

from .conftest import ADMIN_TOKEN, CLIENT_KEY, ProxyProcess, base_config, start_proxy

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "reload?"}]}


@pytest.fixture
def reloading_proxy(simulator: SimulatorServer, tmp_path: Path) -> Iterator[ProxyProcess]:
    process = start_proxy(tmp_path, base_config(simulator.base_url))
    try:
        yield process
    finally:
        process.stop()


def served_by(client: httpx.Client) -> str:
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    return response.headers["x-apikeyrouter-key-id"]


def config_status(client: httpx.Client) -> dict[str, Any]:
    summary = client.get(
        "/api/v1/state/summary", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    status: dict[str, Any] = summary.json()["config"]
    return status


def test_new_key_is_used_within_a_second_and_bad_files_are_ignored(
    reloading_proxy: ProxyProcess, simulator: SimulatorServer
) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=reloading_proxy.url, headers=headers, timeout=10) as client:
        assert served_by(client) == "primary"

        config = base_config(simulator.base_url)
        config["providers"][0]["keys"] = [{"id": "new", "key": "${E2E_KEY_NEW}"}]
        written = time.monotonic()
        reloading_proxy.write_config(config)
        while served_by(client) != "new":
            assert time.monotonic() - written < 1.0, "the new key was not used within a second"
        took = time.monotonic() - written
        assert took < 1.0

        reloading_proxy.write_config({"providers": [{"id": "main", "kind": "nonsense"}]})
        deadline = time.monotonic() + 10.0
        while config_status(client)["reloads_rejected"] < 1:
            assert time.monotonic() < deadline, "the invalid file was never looked at"
            time.sleep(0.02)
        status = config_status(client)
        assert "providers[0].kind" in status["last_error"]
        assert "line" in status["last_error"]
        for _ in range(3):
            assert served_by(client) == "new"  # the previous config keeps serving
    assert '"config_rejected"' in reloading_proxy.output()
