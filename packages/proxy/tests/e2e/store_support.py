"""Helpers for the end-to-end tests of the shared and durable stores (replicas, Redis outage,
restart durability): a master key for the run, a Redis key prefix that is cleaned up, and
polling a condition against a deadline (never a fixed sleep standing in for "it happened")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from apikeyrouter.infrastructure.state_store.redis_codec import glob_escape
from apikeyrouter.utils.encryption import MASTER_KEY_ENV, generate_master_key
from redis import Redis
from redis.exceptions import RedisError

from .conftest import ADMIN_TOKEN, ProxyProcess

T = TypeVar("T")

#: The shared Redis the test suites use; each test works under its own prefix.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
#: One master key for the whole run: replicas (and restarts) must share it.
MASTER_KEY = generate_master_key()
STORE_ENV = {MASTER_KEY_ENV: MASTER_KEY}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
POLL_SECONDS = 0.02


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s", pytrace=False)
        time.sleep(POLL_SECONDS)


def readiness(proxy: ProxyProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(proxy.url + "/health/ready", timeout=5.0)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def wait_ready(proxy: ProxyProcess, timeout: float = 30.0) -> dict[str, Any]:
    """Until ``/health/ready`` says 200 (the store answers, a key is routable)."""

    def check() -> dict[str, Any] | None:
        if proxy.process.poll() is not None:
            pytest.fail(f"the proxy exited:\n{proxy.output()[-4000:]}", pytrace=False)
        status, body = readiness(proxy)
        return body if status == 200 else None

    return eventually(check, timeout, f"{proxy.url} ready")


def delete_prefix(prefix: str, url: str = SHARED_REDIS_URL) -> int:
    """Delete every Redis key under ``prefix`` (SCAN + DEL; never FLUSHDB)."""
    client: Redis = Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def redis_dump(prefix: str, url: str = SHARED_REDIS_URL) -> str:
    """Every key and value under ``prefix`` as text, whatever the type: what a Redis backup
    (or anyone with access to the server) would see."""
    client: Redis = Redis.from_url(url, decode_responses=True)
    try:
        lines = []
        for name in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            kind = client.type(name)
            value: Any
            if kind == "hash":
                value = client.hgetall(name)
            elif kind == "list":
                value = client.lrange(name, 0, -1)
            elif kind == "set":
                value = sorted(client.smembers(name))
            elif kind == "zset":
                value = client.zrange(name, 0, -1, withscores=True)
            else:
                value = client.get(name)
            lines.append(f"{name} {value!r}")
        return "\n".join(lines)
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh prefix on the shared Redis; everything under it is deleted afterwards."""
    client: Redis = Redis.from_url(SHARED_REDIS_URL)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        pytest.fail(f"Redis is not reachable at {SHARED_REDIS_URL} ({exc!r})", pytrace=False)
    finally:
        client.close()
    prefix = f"akr-e2e-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        delete_prefix(prefix)
