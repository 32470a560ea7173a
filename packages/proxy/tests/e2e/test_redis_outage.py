"""Redis dies under load and comes back; the proxy process keeps its promises throughout.

The proxy runs on a private ``redis-server`` (own port and directory, no persistence; the shared
Redis is never touched) while a client thread sends a request every 50 ms. Then Redis is
SIGKILLed, and later restarted, empty, on the same port:

* ``on_redis_unavailable: open``: every request keeps succeeding on the replica's own state,
  and ``/health/ready`` says ``degraded`` (200, so the load balancer keeps it);
* ``closed``: requests get a clean 503 ``store_unavailable`` with Retry-After at once (never a
  hang up to the deadline), and ``/health/ready`` says ``unavailable`` (503);
* both: once Redis answers again the proxy resyncs (its keys are written back to the empty
  server) and serves normally, without a restart. No request is ever lost or left hanging.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.testing import SimulatorServer
from tests.integration.test_resilient_store import REDIS_SERVER, PrivateRedis

from .conftest import CLIENT_KEY, ProxyProcess, start_proxy
from .store_support import STORE_ENV, eventually, readiness, wait_ready

pytestmark = pytest.mark.timeout(150)

PREFIX = "akr-outage:"
DEADLINE_SECONDS = 5.0
#: A refusal while failing closed must come at once: well under the request deadline.
QUICK_SECONDS = 1.5
PACE_SECONDS = 0.05
OUTAGE_DEADLINE = 15.0
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def outage_config(simulator_url: str, redis_url: str, mode: str) -> dict[str, Any]:
    return {
        "server": {"admin_token": "${E2E_ADMIN_TOKEN}", "watch_config": False},
        "auth": {"clients": [{"id": "e2e", "key": "${E2E_CLIENT_KEY}"}]},
        "routing": {"backoff_base_seconds": 0, "deadline_seconds": DEADLINE_SECONDS},
        "logging": {"access_log": False},
        "store": {
            "kind": "redis",
            "redis": {"url": redis_url, "prefix": PREFIX, "retry_after_seconds": 0.2},
            "on_redis_unavailable": mode,
        },
        "providers": [
            {
                "id": "main",
                "base_url": simulator_url,
                "models": ["gpt-4o-mini"],
                "keys": [{"id": "primary", "key": "${E2E_KEY_PRIMARY}"}],
            }
        ],
    }


@dataclass
class Outcome:
    at: float
    status: int | None  # None: no HTTP answer (lost, or hanging past the client timeout)
    seconds: float
    retry_after: str | None = None
    code: str | None = None


class SteadyLoad:
    """A request every ``PACE_SECONDS`` from a background thread, each outcome recorded."""

    def __init__(self, url: str) -> None:
        self._url = url + "/v1/chat/completions"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE_SECONDS * 3)

    def outcomes(self, since: float = 0.0) -> list[Outcome]:
        with self._lock:
            return [o for o in self._outcomes if o.at >= since]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(timeout=DEADLINE_SECONDS * 2, headers=headers) as client:
            while not self._stop.wait(PACE_SECONDS):  # the pace of the load
                started = time.monotonic()
                try:
                    response = client.post(self._url, json=CHAT)
                except httpx.HTTPError:
                    outcome = Outcome(started, None, time.monotonic() - started)
                else:
                    code = None
                    if response.status_code != 200:
                        code = response.json().get("error", {}).get("code")
                    outcome = Outcome(
                        started,
                        response.status_code,
                        time.monotonic() - started,
                        response.headers.get("retry-after"),
                        code,
                    )
                with self._lock:
                    self._outcomes.append(outcome)


def count_after(load: SteadyLoad, since: float, status: int, at_least: int) -> bool:
    return sum(o.status == status for o in load.outcomes(since)) >= at_least


def ready_state(proxy: ProxyProcess) -> tuple[int, str, str]:
    code, body = readiness(proxy)
    return code, body["status"], body["store"]["status"]


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_killed_and_restarted_under_load(
    mode: str, private_redis: PrivateRedis, simulator: SimulatorServer, tmp_path: Path
) -> None:
    proxy = start_proxy(
        tmp_path, outage_config(simulator.base_url, private_redis.url, mode), STORE_ENV
    )
    try:
        body = wait_ready(proxy)
        assert body["store"] == {
            "kind": "redis",
            "status": "ok",
            "mode": mode,
            "outages": 0,
            "degraded_operations": 0,
            "pending_resync": 0,
        }
        pid = proxy.process.pid
        with SteadyLoad(proxy.url) as load:
            eventually(lambda: count_after(load, 0.0, 200, 5), 15.0, "requests before the outage")

            # --- Redis dies ---------------------------------------------------------------
            killed_at = time.monotonic()
            private_redis.kill()
            if mode == "open":
                eventually(
                    lambda: ready_state(proxy) == (200, "degraded", "degraded"),
                    OUTAGE_DEADLINE,
                    "readiness saying degraded",
                )
                eventually(lambda: count_after(load, killed_at, 200, 20), OUTAGE_DEADLINE, "served")
            else:
                eventually(
                    lambda: ready_state(proxy) == (503, "unavailable", "unavailable"),
                    OUTAGE_DEADLINE,
                    "readiness saying unavailable",
                )
                eventually(
                    lambda: count_after(load, killed_at, 503, 20), OUTAGE_DEADLINE, "refused"
                )
            restarted_at = time.monotonic()
            during = load.outcomes(killed_at)

            # --- Redis returns, empty, on the same port ------------------------------------
            private_redis.start()
            eventually(
                lambda: ready_state(proxy) == (200, "ok", "ok"),
                OUTAGE_DEADLINE,
                "readiness back to ok after Redis returned",
            )
            recovered_at = time.monotonic()
            eventually(
                lambda: count_after(load, recovered_at, 200, 10),
                OUTAGE_DEADLINE,
                "requests served after recovery",
            )
        everything = load.outcomes()
        after = load.outcomes(recovered_at)
    finally:
        proxy.stop()

    assert proxy.process.pid == pid  # recovered in place, never restarted
    statuses = Counter(o.status for o in everything)
    assert None not in statuses, f"requests without an answer: {statuses}"
    assert max(o.seconds for o in everything) < DEADLINE_SECONDS, "a request hung"
    during = [o for o in during if o.at < restarted_at]
    if mode == "open":
        assert {o.status for o in during} == {200}, Counter(o.status for o in during)
    else:
        refused = [o for o in during if o.status == 503]
        assert len(refused) >= 20
        # Requests already past the store when it died may still finish; nothing else.
        assert {o.status for o in during} <= {200, 503}
        assert all(o.code == "store_unavailable" for o in refused)
        assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in refused)
        assert max(o.seconds for o in refused) < QUICK_SECONDS
    assert {o.status for o in after} == {200}, Counter(o.status for o in after)
    assert set(statuses) <= {200, 503}


async def test_keys_are_written_back_to_a_restarted_redis(
    private_redis: PrivateRedis, simulator: SimulatorServer, tmp_path: Path
) -> None:
    """The restarted server was empty; the recovered proxy put its keys back (so a replica
    starting now would find them)."""
    proxy = start_proxy(
        tmp_path, outage_config(simulator.base_url, private_redis.url, "open"), STORE_ENV
    )
    try:
        wait_ready(proxy)
        private_redis.kill()
        eventually(lambda: ready_state(proxy)[2] == "degraded", OUTAGE_DEADLINE, "degraded")
        private_redis.start()
        eventually(lambda: ready_state(proxy) == (200, "ok", "ok"), OUTAGE_DEADLINE, "ok")
        store = RedisStateStore(private_redis.url, prefix=PREFIX)
        try:
            assert [k.id for k in await store.list_keys()] == ["primary"]
        finally:
            await store.close()
    finally:
        proxy.stop()
