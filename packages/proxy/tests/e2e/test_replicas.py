"""Four proxy processes on one Redis behave as one router.

Four ``apikeyrouter-proxy serve`` processes share the Redis store (127.0.0.1:6379, a prefix of
their own, deleted afterwards) and one simulated provider. Three keys allow 12 requests per
minute each; an async client sends twice that and more, spread over the four replicas, for
about 20 seconds. The simulator, which counts what it admitted per key and what it refused,
is the judge:

* no key admitted more than its limit in any 60-second window, in total over all replicas,
  and the provider never had to answer 429 (the router refused first, cleanly);
* the limit was used, not wasted: exactly 3 x 12 requests were served;
* every client request got an answer: 200, or 429 with Retry-After and ``no_key_available``
  (none lost, none 5xx).

Then a key found invalid (a simulator 401) through replica 1 is skipped by replicas 2-4
within a second, pushed through Redis, without any of them trying it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, run_simulator_in_thread

from .conftest import CLIENT_KEY, ProxyProcess, launch_proxy
from .store_support import (
    ADMIN,
    SHARED_REDIS_URL,
    STORE_ENV,
    eventually,
    redis_dump,
    redis_prefix,  # noqa: F401 (a fixture, used by name)
    wait_ready,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

REPLICAS = 4
RPM = 12
# Random after "sk-", so no 8-character piece of a secret can coincide with an id.
LIMITED = {f"REPLICA_KEY_{n}": "sk-" + secrets.token_hex(16) for n in range(3)}
OTHER = {name: "sk-" + secrets.token_hex(16) for name in ("REPLICA_DOOMED", "REPLICA_BACKUP")}
OTHER["REPLICA_SPARE"] = "sk-" + secrets.token_hex(16)
LOAD_SECONDS = 20.0
RATE_PER_SECOND = 6.0  # 120 requests against 36 admissible per minute
REQUEST_TIMEOUT = 15.0
#: How fast another replica must stop using a key one replica found invalid.
PROPAGATION_SECONDS = 1.0
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "replica load"}]}
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


@dataclass
class Simulated:
    provider: SimulatedProvider
    base_url: str


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulated]:
    provider = SimulatedProvider(seed=7)
    for n, secret in enumerate(LIMITED.values()):
        provider.add_key(SimKeyConfig(key=secret, label=f"lim-{n}", rpm=RPM))
    provider.add_key(SimKeyConfig(key=OTHER["REPLICA_DOOMED"], label="doomed", invalid=True))
    provider.add_key(SimKeyConfig(key=OTHER["REPLICA_BACKUP"], label="backup"))
    provider.add_key(SimKeyConfig(key=OTHER["REPLICA_SPARE"], label="spare"))
    with run_simulator_in_thread(provider) as server:
        yield Simulated(provider, server.base_url)


def replica_config(sim_url: str, prefix: str) -> dict[str, Any]:
    return {
        "server": {"admin_token": "${E2E_ADMIN_TOKEN}", "watch_config": False},
        "auth": {"clients": [{"id": "e2e", "key": "${E2E_CLIENT_KEY}"}]},
        "routing": {
            "backoff_base_seconds": 0,
            "attempt_timeout_seconds": 10,
            "deadline_seconds": 12,
        },
        "logging": {"access_log": False},
        "store": {"kind": "redis", "redis": {"url": SHARED_REDIS_URL, "prefix": prefix}},
        "providers": [
            {
                "id": "limited",
                "base_url": sim_url,
                "models": ["gpt-4o-mini"],
                "keys": [
                    {"id": f"lim-{n}", "key": "${" + name + "}", "requests_per_minute": RPM}
                    for n, name in enumerate(LIMITED)
                ],
            },
            {
                "id": "flaky",
                "base_url": sim_url,
                "models": ["gpt-4o"],
                "keys": [
                    # Ranked first (as in the other e2e tests), so it is tried first once.
                    {"id": "doomed", "key": "${REPLICA_DOOMED}", "weight": 1000},
                    {"id": "backup", "key": "${REPLICA_BACKUP}"},
                ],
            },
            {
                # No explicit id: every replica must derive the same one (no duplicates).
                "id": "spare",
                "base_url": sim_url,
                "models": ["gpt-3.5-turbo-instruct"],
                "keys": [{"key": "${REPLICA_SPARE}"}],
            },
        ],
    }


@pytest.fixture
def replicas(sim: Simulated, redis_prefix: str, tmp_path: Path) -> Iterator[list[ProxyProcess]]:  # noqa: F811
    config = replica_config(sim.base_url, redis_prefix)
    env = {**STORE_ENV, **LIMITED, **OTHER}
    started: list[ProxyProcess] = []
    try:
        for n in range(REPLICAS):  # launched together, so they start up concurrently
            directory = tmp_path / f"replica-{n}"
            directory.mkdir()
            started.append(launch_proxy(directory, config, env))
        for proxy in started:
            proxy.wait_until_live()
            wait_ready(proxy)
        yield started
    finally:
        for proxy in started:
            proxy.stop()


@dataclass
class Outcome:
    replica: int
    status: int | None  # None: no HTTP answer at all (a lost request)
    retry_after: str | None = None
    code: str | None = None
    key_id: str | None = None
    seconds: float = 0.0


async def one_request(client: httpx.AsyncClient, replica: int, url: str) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post(url + "/v1/chat/completions", json=CHAT, headers=CLIENT)
    except httpx.HTTPError:
        return Outcome(replica, None, seconds=time.monotonic() - started)
    code = None
    if response.status_code != 200:
        code = response.json().get("error", {}).get("code")
    return Outcome(
        replica,
        response.status_code,
        response.headers.get("retry-after"),
        code,
        response.headers.get("x-apikeyrouter-key-id"),
        time.monotonic() - started,
    )


async def drive(urls: list[str]) -> list[Outcome]:
    """Requests at a steady rate, round-robin over the replicas, each in its own task (a slow
    answer never slows the offered load)."""
    total = int(LOAD_SECONDS * RATE_PER_SECOND)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks = []
        for i in range(total):
            delay = begin + i / RATE_PER_SECOND - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
            replica = i % len(urls)
            tasks.append(asyncio.create_task(one_request(client, replica, urls[replica])))
        return list(await asyncio.gather(*tasks))


def key_state(proxy: ProxyProcess, key_id: str) -> str:
    response = httpx.get(f"{proxy.url}/api/v1/keys/{key_id}", headers=ADMIN, timeout=5.0)
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def invalid_on(proxy: ProxyProcess, key_id: str) -> Callable[[], bool]:
    return lambda: key_state(proxy, key_id) == "invalid"


def test_four_replicas_share_limits_and_key_state(
    replicas: list[ProxyProcess],
    sim: Simulated,
    redis_prefix: str,  # noqa: F811 (the fixture the replicas run under)
) -> None:
    provider = sim.provider
    provider.reset(stats_only=True)

    # Every replica registered the same config keys, under the same ids, once.
    listings = [
        sorted(k["id"] for k in httpx.get(p.url + "/api/v1/keys", headers=ADMIN).json())
        for p in replicas
    ]
    assert all(listing == listings[0] for listing in listings), listings
    assert len(listings[0]) == 6
    assert {"lim-0", "lim-1", "lim-2", "doomed", "backup"} < set(listings[0])

    # --- load above the limit, spread over the replicas -----------------------------------
    outcomes = asyncio.run(drive([p.url for p in replicas]))
    statuses = Counter(o.status for o in outcomes)
    assert len(outcomes) == int(LOAD_SECONDS * RATE_PER_SECOND)
    assert set(statuses) <= {200, 429}, f"lost or failed requests: {statuses}"
    refused = [o for o in outcomes if o.status == 429]
    assert all(o.code == "no_key_available" for o in refused), Counter(o.code for o in refused)
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in refused)
    assert max(o.seconds for o in outcomes) < REQUEST_TIMEOUT
    served = statuses[200]
    # Every replica took part in both serving and refusing.
    assert {o.replica for o in outcomes if o.status == 200} == set(range(REPLICAS))

    stats = provider.stats()
    admitted = 0
    for n in range(3):
        label = f"lim-{n}"
        assert stats[label].status_429 == 0, f"{label}: the provider had to refuse"
        most = provider.max_admitted_in_window(label, 60.0)
        assert most <= RPM, f"{label}: {most} admitted in one window, limit {RPM}"
        admitted += stats[label].admitted
    assert admitted == served
    # The limit was shared, not multiplied, and not wasted either.
    assert served == 3 * RPM, statuses
    assert Counter(o.key_id for o in outcomes if o.status == 200) == {
        f"lim-{n}": RPM for n in range(3)
    }

    # --- a key one replica finds invalid, the others skip within a second ------------------
    first = httpx.post(
        replicas[0].url + "/v1/chat/completions",
        json={**CHAT, "model": "gpt-4o"},
        headers=CLIENT,
        timeout=REQUEST_TIMEOUT,
    )
    found_at = time.monotonic()
    assert first.status_code == 200, first.text
    assert first.headers["x-apikeyrouter-key-id"] == "backup"
    assert first.headers["x-apikeyrouter-attempts"] == "2"  # "doomed" was tried, and failed
    assert provider.key_stats("doomed").status_401 == 1
    assert key_state(replicas[0], "doomed") == "invalid"
    for proxy in replicas[1:]:
        eventually(
            invalid_on(proxy, "doomed"),
            PROPAGATION_SECONDS - (time.monotonic() - found_at),
            f"replica {proxy.url} learning that 'doomed' is invalid",
        )
    assert time.monotonic() - found_at < PROPAGATION_SECONDS
    for proxy in replicas[1:]:
        for _ in range(3):
            response = httpx.post(
                proxy.url + "/v1/chat/completions",
                json={**CHAT, "model": "gpt-4o"},
                headers=CLIENT,
                timeout=REQUEST_TIMEOUT,
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-apikeyrouter-key-id"] == "backup"
            assert response.headers["x-apikeyrouter-attempts"] == "1"
    assert provider.key_stats("doomed").received == 1  # nobody tried it again

    # --- at rest: Redis holds every key, none of them readable -----------------------------
    stored = redis_dump(redis_prefix)
    assert stored.count(":key:") >= 6
    for secret in (*LIMITED.values(), *OTHER.values()):
        pieces = [secret[i : i + 8] for i in range(len(secret) - 7)]
        assert not [piece for piece in pieces if piece in stored], "key material in Redis"
