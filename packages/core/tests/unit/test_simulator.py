"""Tests of the simulated provider itself (apikeyrouter.testing).

Most tests drive the ASGI app in-process through ``httpx.ASGITransport`` with a hand-moved clock,
so limits and refills are exact; a few go over real HTTP to cover what only a socket has
(connection drops, client timeouts, shutdown with held requests, the CLI).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from apikeyrouter.testing import (
    UNKNOWN_LABEL,
    Fault,
    FaultMode,
    SimKeyConfig,
    SimulatedProvider,
    mask_key,
    run_simulator_in_thread,
    serve_simulator,
)
from apikeyrouter.testing.__main__ import build_parser, load_keys_file, provider_from_args
from apikeyrouter.testing.simulator.asgi import SimulatedDisconnect
from apikeyrouter.testing.simulator.buckets import TokenBucket, format_reset
from apikeyrouter.testing.simulator.stats import max_in_window
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_clock import FakeClock

KEY = "sk-test-0123456789abcdef"
USER_MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def client_for(provider: SimulatedProvider, key: str | None = KEY) -> httpx.AsyncClient:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=provider),
        base_url="http://sim.test/v1",
        headers=headers,
    )


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[tuple[SimulatedProvider, httpx.AsyncClient]]:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=60, tpm=1000, label="main")], clock=clock)
    async with client_for(provider) as client:
        yield provider, client


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": USER_MSG, **extra}


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            events.append(block[len("data: ") :])
    return events


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


# --- wire format -------------------------------------------------------------------------------


async def test_chat_completion_shape_usage_and_headers(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    messages = [
        {"role": "system", "content": "You are helpful"},  # 15 chars
        {"role": "user", "content": "hello there"},  # 11 chars
    ]
    response = await client.post("/chat/completions", json=chat_body(messages=messages))
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Simulated reply to: hello there",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # ceil(26 / 4) + 3 per message = 7 + 6
    assert body["usage"] == {"prompt_tokens": 13, "completion_tokens": 16, "total_tokens": 29}
    h = response.headers
    assert h["x-ratelimit-limit-requests"] == "60"
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-requests"] == "59"
    assert h["x-ratelimit-remaining-tokens"] == str(1000 - 13 - 16)
    assert h["x-ratelimit-reset-requests"] == "1s"
    assert h["x-ratelimit-reset-tokens"] == "1.74s"  # 29 tokens at 1000/60 per second
    assert h["x-request-id"].startswith("req_")


async def test_reply_quotes_40_chars_of_last_user_message(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    long_text = "x" * 30 + "y" * 30
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": long_text}]},
    ]
    response = await client.post("/chat/completions", json=chat_body(messages=messages))
    content = response.json()["choices"][0]["message"]["content"]
    assert content == "Simulated reply to: " + long_text[:40]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_completion_and_sets_length(
    sim: tuple[SimulatedProvider, httpx.AsyncClient], field: str
) -> None:
    _, client = sim
    response = await client.post("/chat/completions", json=chat_body(**{field: 4}))
    body = response.json()
    assert body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["finish_reason"] == "length"
    full = "Simulated reply to: hello there"
    assert body["choices"][0]["message"]["content"] == full[: math.ceil(len(full) * 4 / 16)]
    # The bucket is charged prompt + max_tokens up front, like OpenAI.
    assert response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 6 - 4)


async def test_chat_stream_with_usage(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-ratelimit-remaining-requests"] == "59"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "Simulated reply to: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22}
    # One content chunk per completion token, plus role, finish and usage chunks.
    assert len(chunks) == 16 + 3


async def test_chat_stream_without_usage_has_no_usage_field(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    response = await client.post("/chat/completions", json=chat_body(stream=True))
    chunks = [json.loads(e) for e in sse_events(response.text)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)


async def test_legacy_completions_plain_and_streaming(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": ["Say hi", "Say bye"], "max_tokens": 5}
    body = (await client.post("/completions", json=request)).json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    full = "Simulated completion of: Say hi"
    assert body["choices"][0]["text"] == full[: math.ceil(len(full) * 5 / 16)]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14}

    stream = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "stream": True}
    stream["stream_options"] = {"include_usage": True}
    events = sse_events((await client.post("/completions", json=stream)).text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "Simulated completion of: Say hi"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 16


async def test_embeddings_are_deterministic_unit_vectors(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    request = {"model": "text-embedding-3-small", "input": ["alpha", "beta", "alpha"]}
    body = (await client.post("/embeddings", json=request)).json()
    assert body["object"] == "list"
    assert body["model"] == "text-embedding-3-small"
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in body["data"])
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, abs_tol=1e-4)

    single = {"model": "text-embedding-3-small", "input": "alpha", "dimensions": 3}
    assert len((await client.post("/embeddings", json=single)).json()["data"][0]["embedding"]) == 3

    as_b64 = {"model": "text-embedding-3-small", "input": "alpha", "encoding_format": "base64"}
    encoded = (await client.post("/embeddings", json=as_b64)).json()["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, vectors[0], strict=True))


async def test_models_list_and_retrieve(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    body = (await client.get("/models")).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-3.5-turbo-instruct",
        "text-embedding-3-small",
    ]
    assert all(m["object"] == "model" for m in body["data"])
    assert (await client.get("/models/gpt-4o")).json()["id"] == "gpt-4o"
    missing = await client.get("/models/nope")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "model_not_found"


async def test_key_restricted_to_models(clock: FakeClock) -> None:
    config = SimKeyConfig(KEY, models=frozenset({"gpt-4o-mini"}))
    provider = SimulatedProvider([config], clock=clock)
    async with client_for(provider) as client:
        denied = await client.post("/chat/completions", json=chat_body())
        assert denied.status_code == 404
        assert error_of(denied)["code"] == "model_not_found"
        ok = await client.post("/chat/completions", json=chat_body(model="gpt-4o-mini"))
        assert ok.status_code == 200
        assert [m["id"] for m in (await client.get("/models")).json()["data"]] == ["gpt-4o-mini"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        (b"{not json", 400, None, None),
        (b"[1, 2]", 400, None, None),
        (orjson.dumps({"messages": USER_MSG}), 400, None, "model"),
        (orjson.dumps({"model": "gpt-4o"}), 400, "missing_required_parameter", "messages"),
        (orjson.dumps({"model": "gpt-4o", "messages": []}), 400, None, "messages"),
        (orjson.dumps(chat_body(max_tokens=0)), 400, "invalid_value", "max_tokens"),
        (orjson.dumps({"model": "gpt-9", "messages": USER_MSG}), 404, "model_not_found", None),
    ],
)
async def test_bad_requests_get_openai_errors(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
    payload: bytes,
    status: int,
    code: str | None,
    param: str | None,
) -> None:
    provider, client = sim
    response = await client.post("/chat/completions", content=payload)
    assert response.status_code == status
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)
    assert provider.key_stats("main").status_4xx == 1
    assert provider.key_stats("main").admitted == 0


async def test_unknown_route_and_method(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    assert (await client.post("/nope", json={})).status_code == 404
    assert (await client.get("/chat/completions")).status_code == 405
    assert error_of(await client.get("/chat/completions"))["type"] == "invalid_request_error"


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-unknown-abcdefghijklmnop", None])
async def test_unknown_or_missing_key_is_401(clock: FakeClock, key: str | None) -> None:
    provider = SimulatedProvider([KEY], clock=clock)
    async with client_for(provider, key) as client:
        response = await client.post("/chat/completions", json=chat_body())
    assert response.status_code == 401
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    if key is not None:
        assert key not in response.text
        assert error["message"].startswith("Incorrect API key provided: sk-un***mnop.")
    assert "x-ratelimit-limit-requests" not in response.headers
    assert provider.stats()[UNKNOWN_LABEL].status_401 == 1


async def test_invalid_configured_key_is_401_and_counted(clock: FakeClock) -> None:
    provider = SimulatedProvider(["sk-revoked-key-0000001:invalid,label=bad"], clock=clock)
    async with client_for(provider, "sk-revoked-key-0000001") as client:
        response = await client.post("/chat/completions", json=chat_body())
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert "sk-revoked-key-0000001" not in response.text
    assert provider.key_stats("bad").status_401 == 1


@settings(max_examples=200)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=80))
def test_mask_key_never_reveals_the_key(key: str) -> None:
    masked = mask_key(key)
    assert key not in masked
    assert "***" in masked


# --- limits ------------------------------------------------------------------------------------


async def test_rpm_bucket_refills_continuously(clock: FakeClock) -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=3)], clock=clock)
    async with client_for(provider) as client:
        for _ in range(3):
            assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        limited = await client.post("/chat/completions", json=chat_body())
        assert limited.status_code == 429
        error = error_of(limited)
        assert error["type"] == "requests"
        assert error["code"] == "rate_limit_exceeded"
        assert error["message"].startswith("Rate limit reached for requests")
        assert limited.headers["retry-after"] == "20"
        assert limited.headers["retry-after-ms"] == "20000"
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert limited.headers["x-ratelimit-reset-requests"] == "1m0s"
        # Only the configured limit gets headers.
        assert "x-ratelimit-limit-tokens" not in limited.headers

        clock.advance(19.9)
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 429
        clock.advance(0.1)
        again = await client.post("/chat/completions", json=chat_body())
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining-requests"] == "0"
    stats = provider.key_stats(KEY)
    assert (stats.received, stats.admitted, stats.served, stats.status_429) == (6, 4, 4, 2)


async def test_tpm_limit_and_request_is_not_charged_when_refused(clock: FakeClock) -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=100, tpm=60)], clock=clock)
    async with client_for(provider) as client:
        # Each request costs 6 prompt + 16 default completion = 22 tokens.
        for _ in range(2):
            assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        limited = await client.post("/chat/completions", json=chat_body())
        assert limited.status_code == 429
        assert error_of(limited)["type"] == "tokens"
        assert error_of(limited)["code"] == "rate_limit_exceeded"
        # 16 tokens left, 22 needed: 6 tokens at 1 token/s.
        assert limited.headers["retry-after-ms"] == "6000"
        assert limited.headers["retry-after"] == "6"
        # The refused request did not spend a request.
        assert limited.headers["x-ratelimit-remaining-requests"] == "98"

        too_big = await client.post("/chat/completions", json=chat_body(max_tokens=500))
        assert too_big.status_code == 429
        assert "Request too large" in error_of(too_big)["message"]
        assert "retry-after" not in too_big.headers


async def test_hard_quota_gives_insufficient_quota(clock: FakeClock) -> None:
    provider = SimulatedProvider(["sk-q:quota=2"], clock=clock)
    async with client_for(provider, "sk-q") as client:
        statuses = [
            (await client.post("/chat/completions", json=chat_body())).status_code for _ in range(2)
        ]
        assert statuses == [200, 200]
        refused = await client.post("/chat/completions", json=chat_body())
    assert refused.status_code == 429
    assert error_of(refused) == {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert "x-ratelimit-limit-requests" not in refused.headers


async def test_key_without_limits_sends_no_rate_headers(clock: FakeClock) -> None:
    provider = SimulatedProvider([KEY], clock=clock)
    async with client_for(provider) as client:
        response = await client.post("/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("x-ratelimit")]


async def test_max_admitted_in_window_follows_the_bucket(clock: FakeClock) -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=5)], clock=clock)
    async with client_for(provider) as client:
        # A burst of 8 at t=0, then one request a second for two minutes.
        for _ in range(8):
            await client.post("/chat/completions", json=chat_body())
        for _ in range(119):
            clock.advance(1.0)
            await client.post("/chat/completions", json=chat_body())
    # The full bucket (5) at t=0, then one refill every 12 s: t=12, 24, 36, 48 in [0, 60).
    # A token bucket's bound is limit + refill during the window, here 5 + 5; never 2x more.
    assert provider.max_admitted_in_window(KEY, 60) == 5 + 4
    assert provider.max_admitted_in_window(KEY, 1) == 5
    times = provider.admission_times(KEY)
    assert len(times) == provider.key_stats(KEY).admitted == 5 + 9
    assert times[5] - times[0] == 12.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.02, "20ms"),
        (0.0001, "1ms"),
        (1.0, "1s"),
        (1.74, "1.74s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (90.5, "1m30.5s"),
        (3600.0, "1h0m0s"),
    ],
)
def test_format_reset_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


@settings(max_examples=100)
@given(
    capacity=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=300),
    window=st.floats(min_value=0.5, max_value=120.0),
)
def test_token_bucket_never_exceeds_capacity_plus_refill(
    capacity: int, gaps: list[float], window: float
) -> None:
    now = 0.0
    bucket = TokenBucket(capacity, now)
    admitted = []
    for gap in gaps:
        now += gap
        if bucket.wait_time(1, now) == 0:
            bucket.take(1, now)
            admitted.append(now)
    bound = capacity + capacity * window / 60.0
    assert max_in_window(admitted, window) <= math.floor(bound + 1e-6)


def test_max_in_window_is_half_open() -> None:
    assert max_in_window([0.0, 0.0, 60.0], 60.0) == 2
    assert max_in_window([0.0, 30.0, 59.9], 60.0) == 3
    assert max_in_window([], 60.0) == 0


# --- faults ------------------------------------------------------------------------------------


async def test_status_faults_with_count_do_not_charge_the_bucket(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "status_500", count=2)
    provider.inject_fault(KEY, Fault(FaultMode.STATUS_503, count=1))
    statuses = [
        (await client.post("/chat/completions", json=chat_body())).status_code for _ in range(4)
    ]
    assert statuses == [500, 500, 503, 200]
    stats = provider.key_stats("main")
    assert (stats.status_5xx, stats.admitted, stats.served) == (3, 1, 1)
    assert provider.pending_faults("main") == []


async def test_injected_429_and_401_bodies(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "status_429", count=1, retry_after_s=2.5)
    provider.inject_fault("main", "status_401", count=1)
    limited = await client.post("/chat/completions", json=chat_body())
    assert limited.status_code == 429
    assert error_of(limited)["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "3"
    assert limited.headers["retry-after-ms"] == "2500"
    assert "x-ratelimit-remaining-requests" in limited.headers
    revoked = await client.post("/chat/completions", json=chat_body())
    assert revoked.status_code == 401
    assert error_of(revoked)["code"] == "invalid_api_key"
    assert KEY not in revoked.text
    not_found = error_of(await client.post("/embeddings", json={"model": "x", "input": "a"}))
    assert not_found["code"] == "model_not_found"  # faults used up; validation applies again


async def test_forever_fault_until_cleared(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "status_503")
    for _ in range(5):
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 503
    assert (await client.get("/models")).status_code == 503
    assert provider.clear_faults("main") == 1
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 200


async def test_probabilistic_faults_are_reproducible_with_a_seed(clock: FakeClock) -> None:
    async def run(seed: int) -> list[int]:
        provider = SimulatedProvider([KEY], clock=clock, seed=seed)
        provider.inject_fault(KEY, "status_500", probability=0.5)
        async with client_for(provider) as client:
            return [
                (await client.post("/chat/completions", json=chat_body())).status_code
                for _ in range(60)
            ]

    first, second, other = await run(7), await run(7), await run(8)
    assert first == second
    assert first != other
    assert 10 < first.count(500) < 50


async def test_timeout_fault_holds_until_the_client_gives_up(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "timeout", count=1, timeout_s=30)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/chat/completions", json=chat_body()), 0.2)
    assert provider.key_stats("main").held == 1
    assert provider.holds.active == 0
    # The hold used up the fault: the next request is answered at once.
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 200


async def test_timeout_fault_answers_after_the_hold(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "timeout", count=1, timeout_s=0.01)
    response = await client.post("/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert provider.key_stats("main").held == 1


async def test_release_holds_ends_held_requests(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "timeout", count=1, timeout_s=30)
    task = asyncio.create_task(client.post("/chat/completions", json=chat_body()))
    for _ in range(1000):  # yield to the loop until the request is parked in its hold
        if provider.holds.active:
            break
        await asyncio.sleep(0)
    assert provider.holds.active == 1
    provider.release_holds()
    response = await asyncio.wait_for(task, 5)
    assert response.status_code == 503
    provider.reset()  # reopens holds
    assert provider.holds.active == 0


async def test_drop_stream_in_process_raises_simulated_disconnect(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "drop_stream", count=1, after_chunks=2)
    with pytest.raises(SimulatedDisconnect):
        await client.post("/chat/completions", json=chat_body(stream=True))
    stats = provider.key_stats("main")
    assert (stats.admitted, stats.dropped, stats.served) == (1, 1, 0)


async def test_stream_error_ends_the_stream_with_an_error_chunk(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "stream_error", count=1, after_chunks=2)
    response = await client.post("/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    assert len(events) == 3
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    provider.inject_fault("main", "stream_error", count=1)
    plain = await client.post("/chat/completions", json=chat_body())
    assert plain.status_code == 500
    assert error_of(plain)["type"] == "server_error"
    stats = provider.key_stats("main")
    assert (stats.admitted, stats.stream_errors, stats.status_5xx, stats.served) == (2, 1, 1, 0)


async def test_latency_delays_the_answer(clock: FakeClock) -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, latency_ms=60)], clock=clock)
    async with client_for(provider) as client:
        started = time.perf_counter()
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        assert time.perf_counter() - started >= 0.05
        provider.set_latency(latency_ms=0, key=KEY)
        assert provider.describe_keys()[0]["latency_ms"] == 0


async def test_chunk_delay_streams_event_by_event(clock: FakeClock) -> None:
    provider = SimulatedProvider([KEY], clock=clock, chunk_delay_ms=10, completion_tokens=4)
    async with client_for(provider) as client:
        started = time.perf_counter()
        body = chat_body(stream=True, stream_options={"include_usage": True})
        response = await client.post("/chat/completions", json=body)
        elapsed = time.perf_counter() - started
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 1 + 4 + 1 + 1  # role, 4 content pieces, finish, usage
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Simulated reply to: hello there"
    assert elapsed >= 0.06  # a delay after each of the 7 events but the last


def test_jitter_is_bounded_and_seeded() -> None:
    def delays(seed: int) -> list[float]:
        provider = SimulatedProvider([KEY], latency_ms=10, jitter_ms=5, seed=seed)
        state = provider.lookup(KEY)
        assert state is not None
        return [provider.first_byte_delay_s(state) for _ in range(50)]

    first = delays(3)
    assert first == delays(3)
    assert all(0.010 <= d <= 0.015 for d in first)
    assert len(set(first)) > 1


# --- Python control surface --------------------------------------------------------------------


def test_key_spec_parsing() -> None:
    config = SimKeyConfig.parse("sk-a:rpm=60,tpm=10000,quota=5,label=a,models=gpt-4o|gpt-4o-mini")
    assert (config.key, config.rpm, config.tpm, config.quota, config.label) == (
        "sk-a",
        60,
        10000,
        5,
        "a",
    )
    assert config.models == frozenset({"gpt-4o", "gpt-4o-mini"})
    assert SimKeyConfig.parse("sk-bad:invalid").invalid
    faulty = SimKeyConfig.parse("sk-f:fault=status_500:3:0.5,fault=timeout")
    assert faulty.faults == (
        Fault(FaultMode.STATUS_500, count=3, probability=0.5),
        Fault(FaultMode.TIMEOUT),
    )
    for bad in ("sk-a:rpm=x", "sk-a:rpm=0", "sk-a:bogus", "sk-a:fault=explode", "sk-a:color=red"):
        with pytest.raises(ValueError, match=r"."):
            SimKeyConfig.parse(bad)


def test_labels_default_to_masked_keys_and_never_collide(clock: FakeClock) -> None:
    provider = SimulatedProvider(["sk-a", "sk-b", "sk-live-0123456789abcdef"], clock=clock)
    labels = provider.labels()
    assert len(set(labels)) == 3
    assert "sk-li***cdef" in labels
    assert not any(key in label for label in labels for key in ("sk-a", "sk-b"))
    assert provider.label_of("sk-b") == labels[1]
    with pytest.raises(ValueError, match="already in use"):
        provider.add_key(SimKeyConfig("sk-c", label=labels[0]))
    with pytest.raises(KeyError):
        provider.key_stats("sk-nope")


async def test_reset_restores_initial_configuration(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.add_key("sk-extra")
    provider.inject_fault("main", "status_500")
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 500
    provider.reset(stats_only=True)
    assert provider.key_stats("main").received == 0
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 500
    provider.reset()
    assert provider.labels() == ["main"]
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 200


# --- admin API ---------------------------------------------------------------------------------


async def test_admin_api_round_trip(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    provider, _ = sim
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=provider), base_url="http://sim.test"
    ) as admin:
        added = await admin.post("/_sim/keys", json={"key": "sk-new-key-abcdef", "rpm": 1})
        assert added.status_code == 201
        assert added.json() == {"labels": ["sk-ne***cdef"]}
        faults = [{"mode": "status_500", "count": 1}, {"mode": "status_429", "count": 1}]
        armed = await admin.post("/_sim/keys/sk-new-key-abcdef/faults", json=faults)
        assert armed.json() == {"label": "sk-ne***cdef", "added": 2}

        async with client_for(provider, "sk-new-key-abcdef") as client:
            statuses = [
                (await client.post("/chat/completions", json=chat_body())).status_code
                for _ in range(4)
            ]
        assert statuses == [500, 429, 200, 429]

        stats = (await admin.get("/_sim/stats")).json()
        entry = stats["keys"]["sk-ne***cdef"]
        assert (entry["received"], entry["served"], entry["status_429"], entry["status_5xx"]) == (
            4,
            1,
            2,
            1,
        )
        assert entry["max_admitted_in_window"] == 1

        keys = await admin.get("/_sim/keys")
        assert "sk-new-key-abcdef" not in keys.text
        assert {k["label"] for k in keys.json()["keys"]} == {"main", "sk-ne***cdef"}

        await admin.post("/_sim/keys/sk-ne***cdef/faults", json={"mode": "status_503"})
        cleared = await admin.delete("/_sim/keys/sk-ne***cdef/faults")
        assert cleared.json() == {"label": "sk-ne***cdef", "cleared": 1}

        latency = await admin.post("/_sim/latency", json={"latency_ms": 5})
        assert latency.json()["latency_ms"] == 5
        assert (await admin.delete("/_sim/keys/sk-ne***cdef")).json() == {"deleted": "sk-ne***cdef"}
        assert (await admin.delete("/_sim/keys/sk-ne***cdef")).status_code == 404
        bad = await admin.post("/_sim/keys", json={"key": "sk-x", "rpm": "many"})
        assert bad.status_code == 400
        boom = await admin.post("/_sim/keys/main/faults", json={"mode": "boom"})
        assert boom.status_code == 400

        assert (await admin.post("/_sim/reset")).json() == {"reset": True}
        assert provider.labels() == ["main"]
        assert provider.latency_ms == 5  # reset restores keys, not runtime latency


# --- real HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def server_provider() -> SimulatedProvider:
    return SimulatedProvider([SimKeyConfig(KEY, rpm=10, label="main")])


async def test_real_http_concurrency_respects_rpm(server_provider: SimulatedProvider) -> None:
    with run_simulator_in_thread(server_provider) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
            responses = await asyncio.gather(
                *(client.post("/chat/completions", json=chat_body()) for _ in range(30))
            )
            stream = await client.post(
                "/chat/completions", json=chat_body(stream=True), headers={"Authorization": "x"}
            )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
    assert stream.status_code == 401
    assert server_provider.max_admitted_in_window("main") == 10


async def test_real_http_drop_stream_cuts_the_connection(
    server_provider: SimulatedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server_provider.inject_fault("main", "drop_stream", count=2, after_chunks=3)
    caplog.set_level(logging.WARNING)
    with run_simulator_in_thread(server_provider) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
            events: list[str] = []

            async def read_stream() -> None:
                body = chat_body(stream=True)
                async with client.stream("POST", "/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line)

            with pytest.raises(httpx.RemoteProtocolError):
                await read_stream()
            assert len(events) == 3
            assert "data: [DONE]" not in events
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/chat/completions", json=chat_body())
            ok = await client.post("/chat/completions", json=chat_body())
            assert ok.status_code == 200
    assert server_provider.key_stats("main").dropped == 2
    assert not [r for r in caplog.records if "ASGI" in r.getMessage()]


async def test_shutdown_does_not_wait_for_held_requests(
    server_provider: SimulatedProvider,
) -> None:
    server_provider.inject_fault("main", "timeout", timeout_s=30)
    server = run_simulator_in_thread(server_provider)
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        # Only the read is short: a connect on a loaded machine may take longer than the held
        # request's 0.3 s, and would then fail as a connect timeout, not the read timeout.
        timeout = httpx.Timeout(10.0, read=0.3)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=headers, timeout=timeout
        ) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=chat_body())
            task = asyncio.create_task(
                client.post("/chat/completions", json=chat_body(), timeout=10)
            )
            # Wait (in a worker thread) until the second request is parked server-side.
            assert await asyncio.to_thread(server_provider.holds.wait_for, 1, 10.0)
            started = time.perf_counter()
            await asyncio.to_thread(server.stop)
            assert time.perf_counter() - started < 5
            response = await task
            assert response.status_code == 503
    finally:
        server.stop()
    assert server_provider.key_stats("main").held == 2


async def test_serve_simulator_in_current_loop() -> None:
    provider = SimulatedProvider([KEY])
    headers = {"Authorization": f"Bearer {KEY}"}
    async with serve_simulator(provider) as address:
        async with httpx.AsyncClient(base_url=address.base_url, headers=headers) as client:
            response = await client.post("/embeddings", json={"model": "gpt-4o", "input": "x"})
        assert response.status_code == 200
    assert provider.key_stats(KEY).served == 1


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_builds_provider_from_flags_and_files(tmp_path: Path) -> None:
    json_file = tmp_path / "keys.json"
    json_file.write_text(
        json.dumps(
            [
                {"key": "sk-j", "rpm": 5, "faults": [{"mode": "status_500", "count": 1}]},
                "sk-s:tpm=100",
            ]
        )
    )
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text("keys:\n  - key: sk-y\n    quota: 3\n    label: yaml-key\n")
    assert [c.key for c in load_keys_file(json_file)] == ["sk-j", "sk-s"]
    assert load_keys_file(yaml_file)[0].quota == 3

    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--key",
            "sk-a:rpm=60,tpm=10000",
            "--key",
            "sk-bad:invalid",
            "--keys-file",
            str(yaml_file),
            "--latency-ms",
            "20",
        ]
    )
    provider = provider_from_args(args)
    assert provider.latency_ms == 20
    assert len(provider.labels()) == 3
    assert "yaml-key" in provider.labels()


def test_cli_runs_and_prints_base_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "apikeyrouter.testing", "--port", "0", "--key", "sk-cli:rpm=5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()  # printed once the server listens
        assert base_url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{base_url}/models", headers={"Authorization": "Bearer sk-cli"})
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "5"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
