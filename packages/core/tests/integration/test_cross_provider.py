"""One router over OpenAI, Anthropic and Gemini, all against one simulator over real HTTP:
model groups, fallback chains, streaming in OpenAI chunks, capability-aware routing, and
Gemini 3 thought signatures surviving the round trip through the OpenAI format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
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
from apikeyrouter.domain.components.policy_loader import parse_policies
from apikeyrouter.domain.interfaces.state_store import CircuitState
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.infrastructure.adapters.anthropic_adapter import AnthropicAdapter
from apikeyrouter.infrastructure.adapters.gemini_adapter import GeminiAdapter
from apikeyrouter.infrastructure.adapters.gemini_translation import FOREIGN_THOUGHT_SIGNATURE
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.testing import SAFETY_TRIGGER, TOOL_TRIGGER
from apikeyrouter.testing.simulator.gemini_wire import thought_signature

from tests.fake_clock import FakeClock

from .provider_env import (
    GEMINI_MODELS,
    OPENAI_MODELS,
    WEATHER_TOOL,
    ProviderEnv,
    Received,
    SimKey,
    add_key,
    make_router,
    register_three_providers,
    start_env,
)

MODEL_ON = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
NEXT_PROVIDER = {"anthropic": "gemini", "gemini": "openai", "openai": "anthropic"}
PROVIDERS = ("anthropic", "gemini", "openai")


@pytest.fixture
def env() -> Iterator[ProviderEnv]:
    yield from start_env()


@pytest.fixture
async def router(env: ProviderEnv, clock: FakeClock) -> AsyncIterator[ApiKeyRouter]:
    instance = make_router(clock)
    await register_three_providers(instance, env, clock)
    yield instance
    await instance.close()


def ask(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def chain(router: ApiKeyRouter, name: str, *providers: str) -> None:
    router.add_model_group(name, [f"{p}/{MODEL_ON[p]}" for p in providers], strategy="ordered")


# --- checking what came back ------------------------------------------------------------------


@dataclass
class Assembled:
    """A stream put back together the way an OpenAI client does it."""

    text: str = ""
    finish_reason: str | None = None
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)


def assemble(chunks: list[dict[str, Any]]) -> Assembled:
    """Check that ``chunks`` form a well-formed OpenAI chat stream and put it together."""
    assert len(chunks) >= 3, chunks
    assert len({c["id"] for c in chunks}) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        assert isinstance(chunk["model"], str)
        assert chunk["model"]
    *body, last = chunks
    assert last["choices"] == []  # the usage chunk, and only that one, has no choices
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0
    assert all(len(c["choices"]) == 1 and c.get("usage") is None for c in body)
    deltas = [c["choices"][0]["delta"] for c in body]
    assert deltas[0]["role"] == "assistant"
    assert all("role" not in d for d in deltas[1:])
    finishes = [c["choices"][0]["finish_reason"] for c in body]
    assert [f for f in finishes if f is not None] == [finishes[-1]]  # one, at the very end
    out = Assembled(finish_reason=finishes[-1], usage=usage)
    out.text = "".join(d.get("content") or "" for d in deltas)
    for delta in deltas:
        for call in delta.get("tool_calls") or ():
            slot = out.tool_calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
            if "id" in call:
                assert not slot["id"], "a tool call's id is sent once"
                assert call["type"] == "function"
                slot["id"] = call["id"]
                slot["name"] = call["function"]["name"]
            slot["args"] += call["function"].get("arguments") or ""
    return out


def assert_chat_completion(body: dict[str, Any], model: str, prompt: str) -> None:
    """An OpenAI ``chat.completion`` whatever provider produced it."""
    assert body["object"] == "chat.completion"
    assert body["model"] == model
    assert isinstance(body["id"], str)
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert prompt in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def sent_by(env: ProviderEnv, key: SimKey) -> list[Received]:
    return env.provider.requests_for(key.secret)


def assert_anthropic_wire(request: Received, key: SimKey, model: str) -> dict[str, Any]:
    """A Messages API call: path, headers, and an Anthropic body (no OpenAI-only fields)."""
    assert request.method == "POST"
    assert request.url == "/v1/messages"
    assert request.headers["x-api-key"] == key.secret
    assert request.headers["anthropic-version"]
    assert "authorization" not in request.headers
    body = request.json()
    assert body["model"] == model
    assert isinstance(body["max_tokens"], int)
    assert {m["role"] for m in body["messages"]} <= {"user", "assistant"}
    return body


def assert_openai_wire(request: Received, key: SimKey, path: str) -> dict[str, Any]:
    assert request.method == "POST"
    assert request.url == path
    assert request.headers["authorization"] == f"Bearer {key.secret}"
    assert "x-api-key" not in request.headers
    assert "x-goog-api-key" not in request.headers
    return request.json()


def assert_gemini_wire(request: Received, key: SimKey, model: str, method: str) -> dict[str, Any]:
    assert request.method == "POST"
    assert request.path == f"/v1beta/models/{model}:{method}"
    assert request.headers["x-goog-api-key"] == key.secret
    assert key.secret not in request.url
    assert "authorization" not in request.headers
    return request.json()


# --- a 429 storm on Anthropic -----------------------------------------------------------------

CONVERSATION: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hello from the storm"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "stop": ["\n\n"],
}


async def test_anthropic_429_storm_serves_the_group_from_openai(
    env: ProviderEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    an1 = await add_key(env, router, "anthropic", "an1")
    an2 = await add_key(env, router, "anthropic", "an2")
    oa = await add_key(env, router, "openai", "oa")
    ge = await add_key(env, router, "gemini", "ge")
    env.provider.inject_fault("an1", "status_429", count=-1, retry_after_s=7)
    env.provider.inject_fault("an2", "status_429", count=-1, retry_after_s=9)
    router.add_model_group("smart", ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"])

    request = {"model": "smart", **CONVERSATION}
    response = await router.route(request)

    assert response.provider_id == "openai"
    assert response.key_used == oa.id
    assert response.model == "gpt-4o"
    assert_chat_completion(response.body, "gpt-4o", "hello from the storm")
    assert [(a.provider_id, a.outcome) for a in response.attempts] == [
        ("anthropic", "rate_limited"),
        ("anthropic", "rate_limited"),
        ("openai", "success"),
    ]
    explanation = response.decision.explanation
    assert "member of smart" in explanation
    assert "failed over from" in explanation
    assert f"{an1.id} (rate_limited)" in explanation
    assert f"{an2.id} (rate_limited)" in explanation
    assert response.decision.provider_id == "openai"
    # Both Anthropic keys cool down exactly until the retry-after they were given.
    assert an1.key.state is KeyState.THROTTLED
    assert an2.key.state is KeyState.THROTTLED
    assert an1.key.cooldown_until == pytest.approx(clock.now + 7, abs=0.01)
    assert an2.key.cooldown_until == pytest.approx(clock.now + 9, abs=0.01)

    # What the simulator saw: each Anthropic key once, in the Messages format, turned away
    # by the limiter (a malformed request would have been a 400/404 instead).
    stats = env.provider.stats()
    for label in ("an1", "an2"):
        assert stats[label].received == 1
        assert stats[label].status_429 == 1
        assert stats[label].status_4xx == 0
        assert stats[label].admitted == 0
    assert stats["oa"].received == stats["oa"].served == 1
    assert stats["oa"].status_4xx == 0
    assert stats["ge"].received == 0
    for key in (an1, an2):
        (sent,) = sent_by(env, key)
        body = assert_anthropic_wire(sent, key, "claude-sonnet-4-5")
        assert body["system"] == "Answer briefly."  # lifted out of the messages
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hello from the storm"}]}
        ]
        assert body["max_tokens"] == 64
        assert body["temperature"] == 0.2
        assert body["stop_sequences"] == ["\n\n"]
        assert "stop" not in body
    # The OpenAI side got the caller's own OpenAI request, only the model swapped in.
    (sent,) = sent_by(env, oa)
    assert assert_openai_wire(sent, oa, "/v1/chat/completions") == {**request, "model": "gpt-4o"}
    assert sent_by(env, ge) == []

    # While they cool down the Anthropic keys are not even tried...
    again = await router.route({"model": "smart", **CONVERSATION})
    assert [a.outcome for a in again.attempts] == ["success"]
    assert again.provider_id == "openai"
    assert env.provider.key_stats("an1").received == 1
    assert env.provider.key_stats("an2").received == 1
    # ...and each is tried again once its own retry-after has passed.
    clock.advance(7.01)
    await router.route({"model": "smart", **CONVERSATION})
    assert env.provider.key_stats("an1").received == 2
    assert env.provider.key_stats("an2").received == 1
    clock.advance(2.0)
    await router.route({"model": "smart", **CONVERSATION})
    assert env.provider.key_stats("an2").received == 2


async def test_anthropic_429_storm_with_policy_fallback_to_openai(
    env: ProviderEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    router.policies.replace_all(
        parse_policies(
            """
            policies:
              - name: claude-to-gpt
                scope: global
                models: [claude-sonnet-4-5]
                fallback: [{model: gpt-4o, provider: openai}]
            """
        )
    )
    an1 = await add_key(env, router, "anthropic", "an1")
    an2 = await add_key(env, router, "anthropic", "an2")
    oa = await add_key(env, router, "openai", "oa")
    ge = await add_key(env, router, "gemini", "ge")
    for key in (an1, an2):
        env.provider.inject_fault(key.label, "status_429", count=-1, retry_after_s=5)

    request = {"model": "claude-sonnet-4-5", **CONVERSATION}
    response = await router.route(request)

    assert response.provider_id == "openai"
    assert response.model == "gpt-4o"
    assert_chat_completion(response.body, "gpt-4o", "hello from the storm")
    assert "serving openai/gpt-4o as fallback" in response.decision.explanation
    assert [a.outcome for a in response.attempts] == ["rate_limited", "rate_limited", "success"]
    for key in (an1, an2):
        assert key.key.state is KeyState.THROTTLED
        assert key.key.cooldown_until == pytest.approx(clock.now + 5, abs=0.01)
        (sent,) = sent_by(env, key)
        assert assert_anthropic_wire(sent, key, "claude-sonnet-4-5")["system"] == "Answer briefly."
        assert env.provider.key_stats(key.label).status_429 == 1
    (sent,) = sent_by(env, oa)
    assert assert_openai_wire(sent, oa, "/v1/chat/completions") == {**request, "model": "gpt-4o"}
    assert env.provider.key_stats(ge.label).received == 0

    # A stream takes the same path, before its first byte.
    stream = await router.open_stream(request)
    assert stream.provider_id == "openai"
    assert [a.outcome for a in stream.attempts] == []  # the throttled keys were skipped
    assembled = assemble([c async for c in stream.chunks()])
    assert "hello from the storm" in assembled.text
    assert assembled.finish_reason == "stop"

    # Without the storm Claude serves again: the fallback is only a fallback.
    for key in (an1, an2):
        env.provider.clear_faults(key.label)
    clock.advance(5.01)
    recovered = await router.route(request)
    assert recovered.provider_id == "anthropic"
    assert recovered.model == "claude-sonnet-4-5"
    assert_chat_completion(recovered.body, "claude-sonnet-4-5", "hello from the storm")


# --- invalid keys, open circuits, everything down -------------------------------------------


@pytest.mark.parametrize("failing", PROVIDERS)
async def test_invalid_keys_fall_back_to_the_next_provider(
    env: ProviderEnv, router: ApiKeyRouter, failing: str
) -> None:
    nxt = NEXT_PROVIDER[failing]
    bad = [await add_key(env, router, failing, f"bad{n}", invalid=True) for n in range(2)]
    good = await add_key(env, router, nxt, "good")
    chain(router, "chain", failing, nxt)

    response = await router.route(ask("chain", "who serves me"))
    assert response.provider_id == nxt
    assert response.key_used == good.id
    assert_chat_completion(response.body, MODEL_ON[nxt], "who serves me")
    assert [a.outcome for a in response.attempts] == ["invalid_key", "invalid_key", "success"]
    assert f"serving {nxt}/{MODEL_ON[nxt]} as member of chain" in response.decision.explanation
    for key in bad:
        assert key.key.state is KeyState.INVALID
        assert env.provider.key_stats(key.label).status_401 == 1

    again = await router.route(ask("chain", "who serves me now"))  # invalid keys stay out
    assert [a.outcome for a in again.attempts] == ["success"]
    assert again.provider_id == nxt
    assert [env.provider.key_stats(k.label).received for k in bad] == [1, 1]


@pytest.mark.parametrize("failing", PROVIDERS)
async def test_open_circuit_falls_back_to_the_next_provider(
    env: ProviderEnv, router: ApiKeyRouter, clock: FakeClock, failing: str
) -> None:
    nxt = NEXT_PROVIDER[failing]
    flaky = await add_key(env, router, failing, "flaky")
    await add_key(env, router, nxt, "solid")
    env.provider.inject_fault("flaky", "status_500", count=-1)
    chain(router, "chain", failing, nxt)

    for _ in range(2):  # the threshold is 2 consecutive provider errors
        response = await router.route(ask("chain"))
        assert [(a.provider_id, a.outcome) for a in response.attempts] == [
            (failing, "provider_error"),
            (nxt, "success"),
        ]
    circuit = await router.circuit(flaky.id)
    assert circuit.state is CircuitState.OPEN
    assert circuit.open_until == pytest.approx(clock.now + 30.0, abs=0.01)

    for _ in range(3):  # open: the provider is skipped without a call
        response = await router.route(ask("chain"))
        assert [a.outcome for a in response.attempts] == ["success"]
        assert response.provider_id == nxt
        assert_chat_completion(response.body, MODEL_ON[nxt], "hello there")
    assert env.provider.key_stats("flaky").received == 2
    assert env.provider.key_stats("flaky").status_5xx == 2

    clock.advance(30.0)  # half-open: one probe, which fails again, and the next one serves
    response = await router.route(ask("chain"))
    assert [a.outcome for a in response.attempts] == ["provider_error", "success"]
    assert env.provider.key_stats("flaky").received == 3
    assert (await router.circuit(flaky.id)).state is CircuitState.OPEN


@pytest.mark.parametrize("probe_outcome", ["bad_request", "rate_limited"])
async def test_half_open_probe_without_a_verdict_does_not_strand_the_key(
    env: ProviderEnv, router: ApiKeyRouter, clock: FakeClock, probe_outcome: str
) -> None:
    flaky = await add_key(env, router, "gemini", "flaky")
    await add_key(env, router, "openai", "solid")
    env.provider.inject_fault("flaky", "status_500", count=2)
    chain(router, "chain", "gemini", "openai")
    for _ in range(2):
        await router.route(ask("chain"))
    assert (await router.circuit(flaky.id)).state is CircuitState.OPEN
    clock.advance(30.0)
    # The half-open probe goes to the key, and ends in an answer that says nothing about the
    # provider's health: the caller's own mistake, or a rate limit.
    if probe_outcome == "bad_request":
        with pytest.raises(UpstreamError):
            await router.route(ask("gemini-2.5-flash", temperature=5))
    else:
        env.provider.inject_fault("flaky", "status_429", count=1, retry_after_s=1)
        await router.route(ask("chain"))
        clock.advance(1.01)
    assert env.provider.key_stats("flaky").received == 3
    # The provider is healthy again: the next request must be allowed to probe it.
    clock.advance(60.0)
    response = await router.route(ask("chain"))
    assert response.provider_id == "gemini"
    assert (await router.circuit(flaky.id)).state is CircuitState.CLOSED


async def add_broken_keys(env: ProviderEnv, router: ApiKeyRouter) -> list[SimKey]:
    keys = []
    for provider in PROVIDERS:
        for n in range(2):
            key = await add_key(env, router, provider, f"{provider}{n}")
            env.provider.inject_fault(key.label, "status_503", count=-1)
            keys.append(key)
    chain(router, "everywhere", "anthropic", "gemini", "openai")
    return keys


async def test_every_provider_down_is_a_503_and_no_request_is_lost(
    env: ProviderEnv, clock: FakeClock
) -> None:
    router = make_router(clock, failure_threshold=1000)  # keep every key in play
    await register_three_providers(router, env, clock)
    keys = await add_broken_keys(env, router)

    outcomes = await asyncio.gather(
        *(router.route(ask("everywhere", f"request {n}")) for n in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(o, ProvidersUnavailableError) for o in outcomes), outcomes
    errors = [o for o in outcomes if isinstance(o, ProvidersUnavailableError)]
    assert {e.status for e in errors} == {503}
    assert {e.to_openai_error()["error"]["code"] for e in errors} == {"providers_unavailable"}
    # Every request visited every key of every provider once, and nothing else happened: the
    # calls the router counts are exactly the calls the providers answered.
    assert [e.attempts for e in errors] == [6] * 10
    stats = env.provider.stats()
    assert {label: s.received for label, s in stats.items()} == {k.label: 10 for k in keys}
    assert all(s.status_5xx == s.received for s in stats.values())
    for key in keys:
        assert router.stats(key.id).in_flight == 0
        assert key.key.usage.failures == 10

    with pytest.raises(ProvidersUnavailableError) as streamed:
        await router.open_stream(ask("everywhere", "a stream"))
    assert streamed.value.status == 503

    for key in keys:  # once a provider is back, requests are served again
        env.provider.clear_faults(key.label)
    served = await asyncio.gather(*(router.route(ask("everywhere")) for _ in range(6)))
    assert {r.provider_id for r in served} == {"anthropic"}
    await router.close()


async def test_every_provider_down_stays_a_503_once_circuits_are_open(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    await add_broken_keys(env, router)
    for _ in range(2):  # opens every circuit (threshold 2)
        with pytest.raises(ProvidersUnavailableError):
            await router.route(ask("everywhere"))
    received = sum(s.received for s in env.provider.stats().values())
    with pytest.raises(NoKeyAvailableError) as caught:
        await router.route(ask("everywhere"))
    assert sum(s.received for s in env.provider.stats().values()) == received  # no calls
    assert caught.value.retry_after == pytest.approx(30.0, abs=0.01)
    assert isinstance(caught.value, ProvidersUnavailableError)
    assert caught.value.status == 503


# --- streaming through every provider ---------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_from_each_provider_is_well_formed_openai(
    env: ProviderEnv, router: ApiKeyRouter, provider: str
) -> None:
    key = await add_key(env, router, provider, "only")
    model = MODEL_ON[provider]
    prompt = f"stream from {provider}"
    chunks = [c async for c in router.stream(ask(model, prompt, max_tokens=40))]

    assembled = assemble(chunks)
    assert assembled.text == f"Simulated reply to: {prompt}"[: len(assembled.text)]
    assert prompt in assembled.text
    assert assembled.finish_reason == "stop"
    assert assembled.tool_calls == {}
    stats = env.provider.key_stats("only")
    assert stats.served == 1
    assert assembled.usage["prompt_tokens"] == stats.prompt_tokens
    assert assembled.usage["completion_tokens"] == stats.completion_tokens
    assert key.key.usage.successes == 1
    assert key.key.usage.completion_tokens == stats.completion_tokens
    assert router.stats(key.id).in_flight == 0

    (sent,) = sent_by(env, key)
    if provider == "openai":
        body = assert_openai_wire(sent, key, "/v1/chat/completions")
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
    elif provider == "anthropic":
        body = assert_anthropic_wire(sent, key, model)
        assert body["stream"] is True
        assert body["max_tokens"] == 40
    else:
        body = assert_gemini_wire(sent, key, model, "streamGenerateContent")
        assert sent.query == "alt=sse"
        assert body["generationConfig"]["maxOutputTokens"] == 40


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
async def test_tool_call_streams_assemble_into_json_arguments(
    env: ProviderEnv, router: ApiKeyRouter, provider: str
) -> None:
    key = await add_key(env, router, provider, "tools")
    request = ask(MODEL_ON[provider], f"What is the {TOOL_TRIGGER} in Paris?", tools=[WEATHER_TOOL])
    chunks = [c async for c in router.stream(request)]

    assembled = assemble(chunks)
    assert assembled.finish_reason == "tool_calls"
    assert assembled.text == ""
    assert list(assembled.tool_calls) == [0]
    call = assembled.tool_calls[0]
    assert call["id"]
    assert call["name"] == "get_weather"
    assert orjson.loads(call["args"]) == {"location": "Paris"}

    (sent,) = sent_by(env, key)
    body = sent.json()
    if provider == "anthropic":
        assert body["tools"][0]["name"] == "get_weather"
        assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]
    else:
        declarations = body["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in declarations] == ["get_weather"]


async def test_gemini_safety_block_streams_content_filter(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    key = await add_key(env, router, "gemini", "safety")
    chunks = [c async for c in router.stream(ask("gemini-2.5-flash", f"{SAFETY_TRIGGER} this"))]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *body, last = chunks
    finishes = [c["choices"][0]["finish_reason"] for c in body]
    assert finishes[-1] == "content_filter"
    assert [f for f in finishes if f is not None] == ["content_filter"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body) == ""
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 0
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] > 0
    assert key.key.usage.successes == 1  # a block is an answer, not a failure


# --- streaming fallback happens only before the first byte -------------------------------------


@pytest.mark.parametrize("mode", ["drop_stream", "stream_error"])
@pytest.mark.parametrize("first", PROVIDERS)
async def test_stream_broken_before_first_byte_is_served_by_the_next_provider(
    env: ProviderEnv, router: ApiKeyRouter, first: str, mode: str
) -> None:
    nxt = NEXT_PROVIDER[first]
    broken = await add_key(env, router, first, "broken")
    good = await add_key(env, router, nxt, "good")
    env.provider.inject_fault("broken", mode, count=1, after_chunks=0)
    chain(router, "chain", first, nxt)

    stream = await router.open_stream(ask("chain", "first byte"))
    assert stream.provider_id == nxt
    assert stream.key_used == good.id
    assert [a.key_id for a in stream.attempts] == [broken.id]
    assert stream.attempts[0].outcome in ("connection", "provider_error")
    assembled = assemble([c async for c in stream.chunks()])
    assert "first byte" in assembled.text
    assert assembled.finish_reason == "stop"
    broken_stats = env.provider.key_stats("broken")
    assert broken_stats.dropped + broken_stats.stream_errors == 1
    assert broken_stats.served == 0
    assert env.provider.key_stats("good").served == 1
    assert (await router.circuit(broken.id)).consecutive_failures == 1


@pytest.mark.parametrize("mode", ["drop_stream", "stream_error"])
@pytest.mark.parametrize("first", PROVIDERS)
async def test_stream_broken_after_output_ends_with_an_explicit_error(
    env: ProviderEnv, router: ApiKeyRouter, first: str, mode: str
) -> None:
    nxt = NEXT_PROVIDER[first]
    broken = await add_key(env, router, first, "broken")
    await add_key(env, router, nxt, "spare")
    env.provider.inject_fault("broken", mode, count=1, after_chunks=2)
    chain(router, "chain", first, nxt)

    received: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in router.stream(ask("chain", "midway")):
            received.append(chunk)

    with pytest.raises(StreamInterruptedError) as caught:
        await consume()
    assert caught.value.status == 502
    assert caught.value.code == "stream_interrupted"
    # The caller has what was sent before the break, well-formed, and no finish or usage.
    assert received
    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    for chunk in received:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"][0]["finish_reason"] is None
        assert chunk.get("usage") is None
    # No silent retry elsewhere after output reached the caller.
    assert env.provider.key_stats("spare").received == 0
    stats = env.provider.key_stats("broken")
    assert stats.dropped + stats.stream_errors == 1
    assert stats.served == 0
    assert broken.key.usage.failures == 1
    assert broken.key.usage.successes == 0
    assert (await router.circuit(broken.id)).consecutive_failures == 1
    assert router.stats(broken.id).in_flight == 0


# --- capabilities -----------------------------------------------------------------------------


async def test_tools_never_reach_a_provider_without_tool_support(
    env: ProviderEnv, router: ApiKeyRouter, clock: FakeClock
) -> None:
    no_tools = ProviderCapabilities(
        chat=True, completions=False, embeddings=False, streaming=True, tools=False, vision=False
    )
    await router.register_provider(
        "generic",
        OpenAIAdapter(env.server.base_url, capabilities=no_tools, clock=clock),
        models=["gpt-4o", "gpt-4o-mini"],
    )
    generic = await add_key(env, router, "generic", "generic")
    oa = await add_key(env, router, "openai", "oa")
    router.add_model_group("via-generic", ["generic/gpt-4o"])

    plain = await router.route(ask("via-generic", "no tools here"))
    assert plain.key_used == generic.id  # the generic endpoint does serve chat

    weather = ask("gpt-4o", f"the {TOOL_TRIGGER} please", tools=[WEATHER_TOOL])
    for _ in range(3):
        response = await router.route(weather)
        assert response.key_used == oa.id
        assert response.decision.excluded == {"provider_lacks_capability": 1}
    stream = await router.open_stream(weather)
    assert stream.key_used == oa.id
    await stream.aclose()

    with pytest.raises(ModelNotFoundError) as caught:
        await router.route(ask("via-generic", "tools", tools=[WEATHER_TOOL]))
    assert "required capabilities" in caught.value.message

    assert env.provider.key_stats("generic").received == 1
    assert all("tools" not in r.json() for r in sent_by(env, generic))
    assert len(sent_by(env, oa)) == 4
    assert all(r.json()["tools"] == [WEATHER_TOOL] for r in sent_by(env, oa))


async def test_embeddings_never_reach_anthropic(env: ProviderEnv, clock: FakeClock) -> None:
    router = make_router(clock)
    server = env.server
    # Anthropic accepts any model name here, so only its capabilities can keep it out.
    await router.register_provider(
        "anthropic", AnthropicAdapter(server.anthropic_base_url, clock=clock)
    )
    await router.register_provider(
        "openai", OpenAIAdapter(server.base_url, clock=clock), models=OPENAI_MODELS
    )
    await router.register_provider(
        "gemini", GeminiAdapter(server.gemini_base_url, clock=clock), models=GEMINI_MODELS
    )
    an = await add_key(env, router, "anthropic", "an", weight=1000.0)
    oa = await add_key(env, router, "openai", "oa")
    ge = await add_key(env, router, "gemini", "ge")

    for data in ("one text", ["first text", "second text"]):
        response = await router.route(
            {"model": "text-embedding-3-small", "input": data}, endpoint=Endpoint.EMBEDDINGS
        )
        assert response.key_used == oa.id
        assert response.decision.excluded == {"provider_lacks_capability": 1}
        assert response.body["object"] == "list"
        expected = 1 if isinstance(data, str) else 2
        assert [item["index"] for item in response.body["data"]] == list(range(expected))

    router.add_model_group(
        "vectors",
        [
            "anthropic/text-embedding-004",
            "gemini/text-embedding-004",
            "openai/text-embedding-3-small",
        ],
    )
    response = await router.route(
        {"model": "vectors", "input": ["a", "b", "c"]}, endpoint=Endpoint.EMBEDDINGS
    )
    assert response.key_used == ge.id
    assert response.attempts[0].provider_id == "gemini"
    assert [item["index"] for item in response.body["data"]] == [0, 1, 2]
    assert all(
        item["object"] == "embedding" and all(isinstance(v, float) for v in item["embedding"])
        for item in response.body["data"]
    )
    (sent,) = sent_by(env, ge)
    assert_gemini_wire(sent, ge, "text-embedding-004", "batchEmbedContents")

    assert env.provider.key_stats("an").received == 0
    assert not any(r.path.startswith("/v1/messages") for r in env.provider.received)
    assert an.key.usage.requests == 0
    await router.close()


# --- Gemini 3 thought signatures through the OpenAI format ----------------------------------

GEMINI_3 = "gemini-3.5-flash"
QUESTION = {"role": "user", "content": f"What is the {TOOL_TRIGGER} in Paris?"}


def follow_up(assistant: dict[str, Any]) -> dict[str, Any]:
    """The next step of the conversation: the call's result goes back with the history."""
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'}
        for call in assistant["tool_calls"]
    ]
    return {
        "model": GEMINI_3,
        "messages": [QUESTION, assistant, *results],
        "tools": [WEATHER_TOOL],
    }


async def test_a_gemini_3_tool_step_keeps_its_signature_through_the_openai_format(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    key = await add_key(env, router, "gemini", "sig")
    first = await router.route({"model": GEMINI_3, "messages": [QUESTION], "tools": [WEATHER_TOOL]})
    assistant = first.body["choices"][0]["message"]
    (call,) = assistant["tool_calls"]
    signature = thought_signature("get_weather")
    assert call["extra_content"] == {"google": {"thought_signature": signature}}

    second = await router.route(follow_up(assistant))
    assert second.body["choices"][0]["finish_reason"] == "stop"
    sent = env.provider.requests_for(key.secret)[-1].json()
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == signature

    # The simulator, like Gemini 3, refuses the same step with the signature dropped in transit;
    # the router then sends Google's stand-in, so a caller that drops it still gets an answer.
    bare = {**assistant, "tool_calls": [{k: v for k, v in call.items() if k != "extra_content"}]}
    third = await router.route(follow_up(bare))
    assert third.body["choices"][0]["finish_reason"] == "stop"
    sent = env.provider.requests_for(key.secret)[-1].json()
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == FOREIGN_THOUGHT_SIGNATURE


async def test_a_tool_step_another_provider_wrote_continues_on_gemini_3(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    await add_key(env, router, "gemini", "gm")
    written_by_openai = {  # OpenAI's shape: no signature anywhere
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_Xb2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    }
    reply = await router.route(follow_up(written_by_openai))
    assert reply.provider_id == "gemini"
    assert reply.body["choices"][0]["finish_reason"] == "stop"
