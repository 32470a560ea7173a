"""The ``store:`` section, the master key rule, readiness of the store, fail-open/closed answers
and the usage ledger writer, in process (the real servers are in ``tests/e2e``).

The outage cases run the proxy on a :class:`ResilientStateStore` over an in-memory primary that
refuses connections on demand (the core's ``FlakyStore``), so they need no server and take
milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx
import pytest
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.resilient_store import ResilientStateStore, StoreMode
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter.utils.encryption import MASTER_KEY_ENV, generate_master_key
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.cli import describe
from apikeyrouter_proxy.config import ConfigError, ProxyConfig, load_config_text
from apikeyrouter_proxy.config.schema import UsageLedgerConfig
from apikeyrouter_proxy.main import create_app, lifespan
from apikeyrouter_proxy.services.store import redact_url
from apikeyrouter_proxy.services.usage_ledger import UsageLedgerWriter
from tests.integration.test_resilient_store import FlakyStore

from .conftest import KEY_A
from .support import chat_body, make_config

MASTER = generate_master_key()
REDIS_YAML = """\
providers: []
store:
  kind: redis
  redis:
    url: redis://:hunter2-not-printed@cache.internal:6380/3
    prefix: "tenant-a:"
"""


# --- configuration ------------------------------------------------------------------------------


def test_the_default_store_is_memory_and_needs_no_master_key() -> None:
    config = load_config_text("providers: []", env={}, use_env_overrides=False)
    assert config.store.kind == "memory"
    assert config.store.on_redis_unavailable == "open"


def test_a_shared_store_without_a_master_key_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(REDIS_YAML, "proxy.yaml", env={}, use_env_overrides=False)
    (issue,) = caught.value.issues
    assert issue.path == "store.kind"
    assert issue.line == 3
    assert MASTER_KEY_ENV in issue.message
    assert "generate_master_key" in issue.message  # says how to make one
    assert "hunter2" not in caught.value.describe()


def test_a_malformed_master_key_is_refused_without_quoting_it() -> None:
    env = {MASTER_KEY_ENV: "not-a-key-but-a-secret-anyway"}
    with pytest.raises(ConfigError) as caught:
        load_config_text(REDIS_YAML, "proxy.yaml", env=env, use_env_overrides=False)
    text = caught.value.describe()
    assert MASTER_KEY_ENV in text
    assert "not-a-key-but" not in text


def test_store_settings_and_the_summary_never_show_credentials() -> None:
    config = load_config_text(REDIS_YAML, env={MASTER_KEY_ENV: MASTER}, use_env_overrides=False)
    redis = config.store.redis
    assert redis.prefix == "tenant-a:"
    assert "hunter2" not in repr(config)
    summary = describe(config)
    assert "store: redis (redis redis://cache.internal:6380/3 prefix 'tenant-a:'" in summary
    assert "hunter2" not in summary
    assert redact_url("mongodb://user:pw@db:27017/x?authSource=admin") == "mongodb://db:27017/x"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"kind": "sqlite"}, "store.kind"),
        ({"on_redis_unavailable": "maybe"}, "store.on_redis_unavailable"),
        ({"redis": {"url": "http://secret-host:6379"}}, "store.redis.url"),
        ({"mongo": {"url": "postgres://secret-host"}}, "store.mongo.url"),
        ({"redis": {"op_timeout_seconds": 0}}, "store.redis.op_timeout_seconds"),
        ({"usage_ledger": {"queue_size": 0}}, "store.usage_ledger.queue_size"),
        ({"redis": {"colour": "blue"}}, "store.redis.colour"),
    ],
)
def test_bad_store_settings_name_the_field(section: dict[str, Any], field: str) -> None:
    import yaml

    text = yaml.safe_dump({"store": section})
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={MASTER_KEY_ENV: MASTER}, use_env_overrides=False)
    assert field in {issue.path for issue in caught.value.issues}
    assert "secret-host" not in caught.value.describe()


def test_the_environment_can_choose_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYROUTER_STORE__KIND", "mongo")
    monkeypatch.setenv("APIKEYROUTER_STORE__MONGO__DATABASE", "tenant_a")
    config = load_config_text("providers: []", env={MASTER_KEY_ENV: MASTER})
    assert (config.store.kind, config.store.mongo.database) == ("mongo", "tenant_a")


def test_the_app_factory_refuses_a_shared_store_without_a_master_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    config = ProxyConfig.model_validate({"store": {"kind": "redis"}})
    with pytest.raises(ConfigurationError, match=MASTER_KEY_ENV):
        create_app(config)


# --- readiness and answers during an outage -----------------------------------------------------


@asynccontextmanager
async def proxy_on(
    store: InMemoryStateStore | ResilientStateStore, sim: SimulatedProvider
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        make_config([{"id": "a", "key": KEY_A}]), store=store, transport=ASGITransport(sim)
    )
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            yield client


async def test_readiness_reports_the_store(sim: SimulatedProvider) -> None:
    async with proxy_on(InMemoryStateStore(), sim) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "reasons": [],
        "store": {"kind": "InMemoryStateStore", "status": "ok"},
    }


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_an_unreachable_store_per_mode(mode: StoreMode, sim: SimulatedProvider) -> None:
    primary = FlakyStore()
    store = ResilientStateStore(primary, mode=mode, op_timeout_seconds=0.2, retry_after_seconds=60)
    async with proxy_on(store, sim) as client:
        assert (await client.get("/health/ready")).json()["store"]["status"] == "ok"
        primary.down = True
        answer = await client.post("/v1/chat/completions", json=chat_body())
        ready = await client.get("/health/ready")
        body = ready.json()
    if mode == "open":
        assert answer.status_code == 200
        assert ready.status_code == 200
        assert body["status"] == "degraded"
        assert body["store"]["status"] == "degraded"
        assert "fail-open" in body["reasons"][0]
    else:
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "60"
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert ready.status_code == 503
        assert body["status"] == "unavailable"
        assert body["store"] == {
            "kind": "ResilientStateStore",
            "status": "unavailable",
            "mode": "closed",
            "outages": 1,
            "degraded_operations": body["store"]["degraded_operations"],
            "pending_resync": body["store"]["pending_resync"],
        }


# --- the usage ledger writer --------------------------------------------------------------------


class Sink:
    """Records ledger rows; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.failing = False
        self.calls = 0

    async def record_usage(self, *, day: str | date, **row: Any) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("the database is away")
        self.rows.append({"day": str(day), **row})


def totals(sink: Sink) -> dict[str, float]:
    out = {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0}
    for row in sink.rows:
        for name in out:
            out[name] += row[name]
    return out


def ledger(sink: Sink, **options: Any) -> UsageLedgerWriter:
    config = UsageLedgerConfig(**{"flush_seconds": 30.0, **options})
    return UsageLedgerWriter(sink, config, clock=lambda: 1_764_374_400.0)  # 2025-11-29 UTC


async def test_records_are_summed_per_row_and_written_in_one_batch() -> None:
    sink = Sink()
    writer = ledger(sink)
    writer.start()
    for n in range(10):
        writer.record(
            "k1" if n % 2 else "k2",
            "p",
            "gpt-4o",
            "web",
            Usage(prompt_tokens=3, completion_tokens=1),
            0.5,
        )
    writer.record("k1", "p", "gpt-4o", None, None, None)  # no usage reported, still a request
    assert await writer.flush(timeout=5.0)
    await writer.close()
    assert sink.calls == 3  # (k1, web), (k2, web), (k1, no client)
    assert totals(sink) == {
        "requests": 11,
        "prompt_tokens": 30,
        "completion_tokens": 10,
        "cost_usd": 5.0,
    }
    assert {row["day"] for row in sink.rows} == {"2025-11-29"}
    assert writer.written == 11


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = Sink()
    writer = ledger(sink, batch_size=5)
    writer.start()
    for _ in range(5):
        writer.record("k1", "p", "m", None, Usage(prompt_tokens=1), None)
    async with asyncio.timeout(5.0):  # far below the 30 s flush interval
        while writer.written < 5:
            await asyncio.sleep(0.001)
    await writer.close()


async def test_a_full_buffer_drops_and_counts_instead_of_growing() -> None:
    sink = Sink()
    dropped: list[int] = []
    config = UsageLedgerConfig(queue_size=3, flush_seconds=30.0)
    writer = UsageLedgerWriter(sink, config, on_drop=dropped.append)
    for _ in range(5):  # the writer task is not even running: nothing drains
        writer.record("k1", "p", "m", None, None, None)
    assert writer.buffered == 3
    assert writer.dropped == 2
    assert dropped == [1, 1]


async def test_failed_rows_are_kept_and_written_once_the_database_is_back() -> None:
    sink = Sink()
    sink.failing = True
    writer = ledger(sink)
    writer.start()
    writer.record("k1", "p", "m", None, Usage(prompt_tokens=7), 0.25)
    assert not await writer.flush(timeout=0.3)  # still failing: not flushed
    assert writer.failures >= 1
    sink.failing = False
    assert await writer.flush(timeout=10.0)
    await writer.close()
    assert totals(sink)["requests"] == 1
    assert totals(sink)["prompt_tokens"] == 7


async def test_closing_stops_accepting_records() -> None:
    sink = Sink()
    writer = ledger(sink)
    writer.start()
    await writer.close()
    writer.record("k1", "p", "m", None, None, None)
    assert writer.dropped == 1
    assert sink.rows == []
