"""End-to-end fixtures: a simulator thread server and the proxy as a real process.

The proxy is started exactly as an operator would (``python -m apikeyrouter_proxy.cli serve``),
with secrets passed through the environment and referenced from the YAML file. Readiness is
polled with a deadline; output goes to files the tests can read after the process stops.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apikeyrouter.testing import (
    DEFAULT_MODELS,
    SimKeyConfig,
    SimulatedProvider,
    SimulatorServer,
    run_simulator_in_thread,
)

STARTUP_DEADLINE_SECONDS = 30.0
ADMIN_TOKEN = "e2e-admin-token-0001"
CLIENT_KEY = "e2e-client-key-000001"
BUSY_MODEL = "gpt-busy"

#: Secrets the simulator knows, handed to the proxy only through its environment.
SECRETS = {
    "E2E_KEY_PRIMARY": "sk-e2e-primary-00000000000000001",
    "E2E_KEY_INVALID": "sk-e2e-invalid-00000000000000002",
    "E2E_KEY_GOOD": "sk-e2e-good-0000000000000000003",
    "E2E_KEY_BUSY": "sk-e2e-busy-0000000000000000004",
    "E2E_KEY_NEW": "sk-e2e-new-00000000000000000005",
    "E2E_ADMIN_TOKEN": ADMIN_TOKEN,
    "E2E_CLIENT_KEY": CLIENT_KEY,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    provider = SimulatedProvider(models=(*DEFAULT_MODELS, BUSY_MODEL), seed=11)
    provider.add_key(SimKeyConfig(key=SECRETS["E2E_KEY_PRIMARY"], label="primary"))
    provider.add_key(SimKeyConfig(key=SECRETS["E2E_KEY_INVALID"], label="invalid", invalid=True))
    provider.add_key(SimKeyConfig(key=SECRETS["E2E_KEY_GOOD"], label="good"))
    provider.add_key(SimKeyConfig(key=SECRETS["E2E_KEY_BUSY"], label="busy"))
    provider.add_key(SimKeyConfig(key=SECRETS["E2E_KEY_NEW"], label="new"))
    provider.inject_fault("busy", "status_429", count=-1, retry_after_s=30)
    with run_simulator_in_thread(provider) as server:
        yield server


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Replace a config file atomically (write a temporary file, rename it over)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    temporary.replace(path)


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    config_path: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, data: Mapping[str, Any]) -> None:
        write_config(self.config_path, data)

    def output(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        return out + self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def wait_until_live(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the proxy exited early:\n{self.output()}")
                try:
                    if client.get(self.url + "/health/live").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the proxy did not come up:\n{self.output()}")
                time.sleep(0.05)


def launch_proxy(
    directory: Path, config: Mapping[str, Any], extra_env: Mapping[str, str] | None = None
) -> ProxyProcess:
    """Start ``apikeyrouter-proxy serve`` on a free port without waiting for it (several can
    then come up in parallel); secrets in its environment only (``extra_env`` adds variables,
    e.g. the master key of a shared store)."""
    port = free_port()
    config_path = directory / "proxy.yaml"
    write_config(config_path, config)
    env = {**os.environ, **SECRETS, **(extra_env or {})}
    env.pop("APIKEYROUTER_CONFIG", None)
    argv = [
        sys.executable,
        "-m",
        "apikeyrouter_proxy.cli",
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
    ]
    stdout_path, stderr_path = directory / "stdout.log", directory / "stderr.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)  # noqa: S603
    return ProxyProcess(process, port, config_path, stdout_path, stderr_path)


def start_proxy(
    directory: Path, config: Mapping[str, Any], extra_env: Mapping[str, str] | None = None
) -> ProxyProcess:
    """``apikeyrouter-proxy serve`` on a free port, answering once this returns."""
    proxy = launch_proxy(directory, config, extra_env)
    try:
        proxy.wait_until_live()
    except BaseException:
        proxy.stop()
        raise
    return proxy


def base_config(simulator_url: str, **overrides: Any) -> dict[str, Any]:
    """Providers on the simulator; secrets referenced from the environment only."""
    config: dict[str, Any] = {
        "server": {"admin_token": "${E2E_ADMIN_TOKEN}"},
        "auth": {"clients": [{"id": "e2e", "key": "${E2E_CLIENT_KEY}"}]},
        "routing": {"backoff_base_seconds": 0, "attempt_timeout_seconds": 10},
        "providers": [
            {
                "id": "main",
                "base_url": simulator_url,
                "models": ["gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"],
                "keys": [{"id": "primary", "key": "${E2E_KEY_PRIMARY}"}],
            },
            {
                "id": "failover",
                "base_url": simulator_url,
                "models": ["gpt-4o"],
                "keys": [
                    {"id": "invalid", "key": "${E2E_KEY_INVALID}", "weight": 1000},
                    {"id": "good", "key": "${E2E_KEY_GOOD}"},
                ],
            },
            {
                "id": "busy",
                "base_url": simulator_url,
                "models": [BUSY_MODEL],
                "keys": [{"id": "busy", "key": "${E2E_KEY_BUSY}"}],
            },
        ],
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def proxy(
    simulator: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    process = start_proxy(tmp_path_factory.mktemp("proxy"), base_config(simulator.base_url))
    try:
        yield process
    finally:
        process.stop()
