"""The router against the simulated provider over real HTTP: every failure meaning."""

from __future__ import annotations

import asyncio

import pytest
from apikeyrouter import (
    ApiKeyRouter,
    Endpoint,
    KeyState,
    ModelNotFoundError,
    NoKeyAvailableError,
    ProvidersUnavailableError,
    StreamInterruptedError,
    UpstreamError,
)
from apikeyrouter.domain.interfaces.state_store import CircuitState
from apikeyrouter.testing import SimKeyConfig

from tests.fake_clock import FakeClock

from .conftest import SimEnv, chat


async def test_routes_and_explains(sim: SimEnv, router: ApiKeyRouter) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-aaaaaaaaaaaa1", label="a"))
    key = await router.register_key("sk-test-aaaaaaaaaaaa1", "openai")
    response = await router.route(chat("ping"))
    assert response.key_used == key.id
    assert response.content is not None
    assert "ping" in response.content
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.usage.total_tokens > 0
    assert response.body["object"] == "chat.completion"
    assert key.id in response.decision.explanation
    assert f"by {response.decision.objective.value}" in response.decision.explanation
    assert [a.outcome for a in response.attempts] == ["success"]


async def test_rate_limited_key_fails_over_and_cools_down_until_reset(
    sim: SimEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-busy00000001", label="busy"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-free00000002", label="free"))
    sim.provider.inject_fault("busy", "status_429", count=-1, retry_after_s=7)
    busy = await router.register_key("sk-test-busy00000001", "openai", weight=100)
    free = await router.register_key("sk-test-free00000002", "openai")

    response = await router.route(chat())
    assert [a.key_id for a in response.attempts] == [busy.id, free.id]
    assert response.attempts[0].outcome == "rate_limited"
    assert busy.state is KeyState.THROTTLED
    assert busy.cooldown_until == pytest.approx(clock.now + 7, abs=0.01)

    for _ in range(5):  # while cooling down the throttled key is never tried
        assert (await router.route(chat())).key_used == free.id
    assert sim.provider.key_stats("busy").received == 1

    clock.advance(7.01)  # after the reset it is eligible again (and still failing here)
    await router.route(chat())
    assert sim.provider.key_stats("busy").received == 2


async def test_invalid_key_is_marked_and_never_retried(sim: SimEnv, router: ApiKeyRouter) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-revoked00001", invalid=True, label="bad"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-good00000002", label="good"))
    bad = await router.register_key("sk-test-revoked00001", "openai", weight=100)
    await router.register_key("sk-test-good00000002", "openai")
    for _ in range(10):
        await router.route(chat())
    assert bad.state is KeyState.INVALID
    assert sim.provider.key_stats("bad").status_401 == 1
    audit = await router.store.list_audit(bad.id)
    assert [(t.from_state, t.to_state) for t in audit] == [(KeyState.AVAILABLE, KeyState.INVALID)]


async def test_server_errors_open_the_circuit_then_half_open_probe(
    sim: SimEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-flaky0000001", label="flaky"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-solid0000002", label="solid"))
    sim.provider.inject_fault("flaky", "status_500", count=2)
    flaky = await router.register_key("sk-test-flaky0000001", "openai", weight=1000)
    solid = await router.register_key("sk-test-solid0000002", "openai")

    for _ in range(2):  # threshold is 2 consecutive failures
        response = await router.route(chat())
        assert response.key_used == solid.id
    assert (await router.circuit(flaky.id)).state is CircuitState.OPEN
    for _ in range(5):
        assert (await router.route(chat())).key_used == solid.id
    assert sim.provider.key_stats("flaky").received == 2

    clock.advance(30.0)  # open period over: one probe request goes to the key and succeeds
    probe = await router.route(chat())
    assert probe.key_used == flaky.id
    assert (await router.circuit(flaky.id)).state is CircuitState.CLOSED
    assert sim.provider.key_stats("flaky").received == 3


async def test_half_open_allows_a_single_concurrent_probe(
    sim: SimEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-flaky0000001", label="flaky"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-solid0000002", label="solid"))
    sim.provider.inject_fault("flaky", "status_500", count=2)
    flaky = await router.register_key("sk-test-flaky0000001", "openai", weight=1000)
    await router.register_key("sk-test-solid0000002", "openai")
    for _ in range(2):
        await router.route(chat())
    clock.advance(31.0)
    results = await asyncio.gather(*(router.route(chat()) for _ in range(10)))
    assert sum(r.key_used == flaky.id for r in results) == 1


async def test_timeout_fails_over_within_the_deadline(sim: SimEnv, clock: FakeClock) -> None:
    from apikeyrouter import OpenAIAdapter, RetryPolicy

    sim.provider.add_key(SimKeyConfig(key="sk-test-slow00000001", label="slow"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-fast00000002", label="fast"))
    sim.provider.inject_fault("slow", "timeout", count=1, timeout_s=30)
    router = ApiKeyRouter(
        clock=clock,
        retry_policy=RetryPolicy(deadline_seconds=5.0, attempt_timeout_seconds=0.3),
    )
    await router.register_provider("openai", OpenAIAdapter(sim.base_url, clock=clock))
    slow = await router.register_key("sk-test-slow00000001", "openai", weight=100)
    fast = await router.register_key("sk-test-fast00000002", "openai")
    response = await router.route(chat())
    await router.close()
    assert [a.outcome for a in response.attempts] == ["timeout", "success"]
    assert response.attempts[0].key_id == slow.id
    assert response.key_used == fast.id
    assert 300 <= response.attempts[0].latency_ms < 2000
    assert response.latency_ms < 5000


async def test_all_keys_throttled_reports_earliest_reset(
    sim: SimEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    for label, wait in (("k1", 9), ("k2", 4), ("k3", 6)):
        secret = f"sk-test-{label}-000000000"
        sim.provider.add_key(SimKeyConfig(key=secret, label=label))
        sim.provider.inject_fault(label, "status_429", count=-1, retry_after_s=wait)
        await router.register_key(secret, "openai")
    with pytest.raises(NoKeyAvailableError) as first:
        await router.route(chat())
    assert first.value.retry_after == pytest.approx(4, abs=0.01)
    assert first.value.status == 429
    clock.advance(1)
    with pytest.raises(NoKeyAvailableError) as second:  # no upstream call: all cooling down
        await router.route(chat())
    assert second.value.retry_after == pytest.approx(3, abs=0.01)
    assert sum(s.received for s in sim.provider.stats().values()) == 3


async def test_every_provider_failing_is_a_503(sim: SimEnv, router: ApiKeyRouter) -> None:
    for n in range(2):
        secret = f"sk-test-down{n}-00000000"
        sim.provider.add_key(SimKeyConfig(key=secret, label=f"down{n}"))
        sim.provider.inject_fault(f"down{n}", "status_503", count=-1)
        await router.register_key(secret, "openai")
    with pytest.raises(ProvidersUnavailableError) as caught:
        await router.route(chat())
    assert caught.value.status == 503


async def test_caller_errors_are_returned_without_failover(
    sim: SimEnv, router: ApiKeyRouter
) -> None:
    for n in range(3):
        sim.provider.add_key(SimKeyConfig(key=f"sk-test-key{n}-000000000", label=f"k{n}"))
        await router.register_key(f"sk-test-key{n}-000000000", "openai")
    with pytest.raises(UpstreamError) as caught:
        await router.route(chat(stream_options="not-an-object"))
    assert caught.value.status == 400
    assert caught.value.param == "stream_options"
    assert sum(s.received for s in sim.provider.stats().values()) == 1
    with pytest.raises(ModelNotFoundError):
        await router.route(
            {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
        )


async def test_completions_embeddings_and_models(sim: SimEnv, router: ApiKeyRouter) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-all000000001", label="all"))
    await router.register_key("sk-test-all000000001", "openai")
    completion = await router.route(
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}, endpoint=Endpoint.COMPLETIONS
    )
    assert completion.body["object"] == "text_completion"
    assert completion.content
    embedding = await router.route(
        {"model": "text-embedding-3-small", "input": ["a", "b"]}, endpoint=Endpoint.EMBEDDINGS
    )
    assert [item["index"] for item in embedding.body["data"]] == [0, 1]


async def test_stream_yields_chunks_ending_with_usage(sim: SimEnv, router: ApiKeyRouter) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-stream000001", label="s"))
    await router.register_key("sk-test-stream000001", "openai")
    chunks = [chunk async for chunk in router.stream(chat("stream please"))]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(
        (choice.get("delta") or {}).get("content") or "" for c in chunks for choice in c["choices"]
    )
    assert "stream please" in text
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


async def test_stream_dropped_before_first_chunk_fails_over(
    sim: SimEnv, router: ApiKeyRouter
) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-drop00000001", label="drop"))
    sim.provider.add_key(SimKeyConfig(key="sk-test-keep00000002", label="keep"))
    sim.provider.inject_fault("drop", "drop_stream", count=1, after_chunks=0)
    drop = await router.register_key("sk-test-drop00000001", "openai", weight=100)
    keep = await router.register_key("sk-test-keep00000002", "openai")
    stream = await router.open_stream(chat())
    assert stream.key_used == keep.id
    assert [a.key_id for a in stream.attempts] == [drop.id]
    chunks = [c async for c in stream.chunks()]
    assert chunks[-1]["usage"] is not None


async def test_stream_broken_after_output_ends_with_an_error(
    sim: SimEnv, router: ApiKeyRouter
) -> None:
    sim.provider.add_key(SimKeyConfig(key="sk-test-drop00000001", label="drop"))
    sim.provider.inject_fault("drop", "drop_stream", count=1, after_chunks=2)
    await router.register_key("sk-test-drop00000001", "openai")
    received: list[dict[str, object]] = []

    async def consume() -> None:
        async for chunk in router.stream(chat()):
            received.append(chunk)

    with pytest.raises(StreamInterruptedError):
        await consume()
    assert len(received) >= 1


async def test_concurrent_routes_are_all_served_and_counted_exactly(
    sim: SimEnv, router: ApiKeyRouter
) -> None:
    keys = []
    for n in range(5):
        secret = f"sk-test-conc{n}-00000000"
        sim.provider.add_key(SimKeyConfig(key=secret, label=f"c{n}"))
        keys.append(await router.register_key(secret, "openai"))
    responses = await asyncio.gather(*(router.route(chat(f"r{i}")) for i in range(200)))
    assert len(responses) == 200
    assert all(r.content for r in responses)
    per_key = {k.id: sum(r.key_used == k.id for r in responses) for k in keys}
    assert sum(per_key.values()) == 200
    assert max(per_key.values()) - min(per_key.values()) <= 1  # fairness spreads evenly
    for key in keys:
        assert key.usage.successes == per_key[key.id]
        assert router.stats(key.id).in_flight == 0
    served = {label: s.served for label, s in sim.provider.stats().items()}
    assert sum(served.values()) == 200
    assert sorted(served.values()) == sorted(per_key.values())
