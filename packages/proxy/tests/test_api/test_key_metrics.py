"""Per-key gauges: exactly the exposition prometheus-client would write, at any pool size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from apikeyrouter import ApiKeyRouter, KeyState, OpenAIAdapter
from apikeyrouter_proxy.observability import key_metrics
from apikeyrouter_proxy.observability.key_metrics import KeyGauges, window_name
from prometheus_client import CollectorRegistry, Gauge, generate_latest

# Ids a user may choose: the exposition must escape quotes, backslashes and newlines.
KEY_IDS = ["plain", 'with"quote', "back\\slash", "new\nline", "k5", "k6", "k7"]


@pytest.fixture
async def router() -> AsyncIterator[ApiKeyRouter]:
    instance = ApiKeyRouter(clock=lambda: 1_000_000.0)
    await instance.register_provider("openai", OpenAIAdapter("http://unused.invalid/v1"))
    await instance.register_provider("other", OpenAIAdapter("http://unused.invalid/v1"))
    for n, key_id in enumerate(KEY_IDS):
        limits: dict[str, Any] = (
            {"requests_per_minute": 60, "tokens_per_day": 10_000} if n % 2 else {}
        )
        provider = "other" if n == 4 else "openai"
        await instance.register_key(
            f"sk-test-metrics-{n}-xxxxxxxx", provider, key_id=key_id, **limits
        )
    await instance.keys.set_state("k5", KeyState.DISABLED, "test")
    yield instance
    await instance.close()


async def reference(router: ApiKeyRouter) -> bytes:
    """The same three families through prometheus-client's own gauges."""
    registry = CollectorRegistry()
    state = Gauge(
        key_metrics.STATE, key_metrics._HELP[key_metrics.STATE],
        ["key_id", "provider", "state"], registry=registry,
    )  # fmt: skip
    labels = ["key_id", "provider", "metric", "window"]
    remaining = Gauge(
        key_metrics.REMAINING, key_metrics._HELP[key_metrics.REMAINING], labels, registry=registry
    )
    limit = Gauge(
        key_metrics.LIMIT, key_metrics._HELP[key_metrics.LIMIT], labels, registry=registry
    )
    for key in router.keys.list_keys():
        for value in KeyState:
            state.labels(key.id, key.provider_id, value.value).set(key.state is value)
        for window in (await router.quota_state(key.id)).windows:
            series = (key.id, key.provider_id, window.metric, window_name(window.window_seconds))
            remaining.labels(*series).set(window.remaining)
            limit.labels(*series).set(window.limit)
    return generate_latest(registry)


async def test_the_exposition_is_byte_for_byte_prometheus_clients(router: ApiKeyRouter) -> None:
    # Some usage, so remaining differs from the limit and has a fraction.
    key = router.keys.get('with"quote')
    await router.store.charge(key.id, router.quota.effective_windows(key)[0], 7.5, 1_000_000.0)
    ours = await KeyGauges().render(router)
    assert ours == await reference(router)
    assert 'key_id="with\\"quote"' in ours.decode()
    assert 'key_id="new\\nline"' in ours.decode()


async def test_a_pool_read_in_chunks_gives_the_same_text(
    router: ApiKeyRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await KeyGauges().render(router)
    reads: list[int] = []
    read = router.quota_states

    async def counted(key_ids: object = None) -> object:
        states = await read(key_ids)  # type: ignore[arg-type]
        reads.append(len(states))
        return states

    monkeypatch.setattr(router, "quota_states", counted)
    monkeypatch.setattr(key_metrics, "KEYS_PER_CHUNK", 3)
    turns = 0

    async def other_work() -> None:  # runs only when the render hands the loop back
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    started = turns
    chunked = await KeyGauges().render(router)
    worker.cancel()
    assert chunked == whole
    assert reads == [3, 3, 1]
    assert turns - started >= 2  # the loop ran other work between the chunks


async def test_a_key_revoked_between_chunks_is_left_out(
    router: ApiKeyRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_metrics, "KEYS_PER_CHUNK", 3)
    read = router.quota_states
    revoked: list[str] = []

    async def revoking_after_the_first_chunk(key_ids: object = None) -> object:
        states = await read(key_ids)  # type: ignore[arg-type]
        if not revoked:  # an operator revokes a key the render has not reached yet
            await router.keys.revoke("k6")
            revoked.append("k6")
        return states

    monkeypatch.setattr(router, "quota_states", revoking_after_the_first_chunk)
    text = (await KeyGauges().render(router)).decode()
    assert revoked == ["k6"]
    assert 'key_id="k6"' not in text
    assert 'key_id="k5"' in text
