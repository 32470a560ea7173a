"""Tests of the simulator's Anthropic Messages API wire format (apikeyrouter.testing).

In-process through ``httpx.ASGITransport`` with a hand-moved monotonic clock and a fixed wall
clock, so rate-limit numbers and RFC 3339 reset times are exact; one test goes over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from apikeyrouter.testing import (
    DEFAULT_ANTHROPIC_MODELS,
    UNKNOWN_LABEL,
    SimKeyConfig,
    SimulatedProvider,
    run_simulator_in_thread,
)
from apikeyrouter.testing.__main__ import build_parser, provider_from_args
from apikeyrouter.testing.simulator.asgi import SimulatedDisconnect

from tests.fake_clock import FakeClock

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-sonnet-4-5"
USER_MSG = [{"role": "user", "content": "hello there"}]
WALL = 1_750_000_000.0  # 2025-06-15T15:06:40Z
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}
CLOCK_TOOL = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make_provider(clock: FakeClock, *keys: SimKeyConfig | str) -> SimulatedProvider:
    configs = keys or (SimKeyConfig(KEY, rpm=60, tpm=1000, label="main"),)
    return SimulatedProvider(configs, clock=clock, wall_clock=lambda: WALL)


def client_for(
    provider: SimulatedProvider, key: str | None = KEY, version: str | None = "2023-06-01"
) -> httpx.AsyncClient:
    headers = {}
    if key is not None:
        headers["x-api-key"] = key
    if version is not None:
        headers["anthropic-version"] = version
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=provider), base_url="http://sim.test", headers=headers
    )


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[tuple[SimulatedProvider, httpx.AsyncClient]]:
    provider = make_provider(clock)
    async with client_for(provider) as client:
        yield provider, client


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": USER_MSG, **extra}


def weather(**extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "messages": [{"role": "user", "content": "What is the weather like?"}],
        "tools": [WEATHER_TOOL, CLOCK_TOOL],
    }
    return body(**{**defaults, **extra})


def utc(offset_s: int) -> str:
    return datetime.fromtimestamp(WALL + offset_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_of(response: httpx.Response, type_: str) -> str:
    """Check the Anthropic error shape and type; return the message."""
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"type", "error"}
    assert payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == type_
    message: str = payload["error"]["message"]
    return message


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an Anthropic SSE body; the names must match ``data.type``."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        name, data = name_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name
        events.append((name, data))
    return events


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


# --- success bodies and headers ----------------------------------------------------------------


async def test_message_shape_usage_and_rate_limit_headers(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    response = await client.post("/v1/messages", json=body())
    assert response.status_code == 200
    payload = response.json()
    assert payload == {
        "id": payload["id"],
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Simulated reply to: hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        # ceil(11 / 4) + 3 for the one message; 16 = the default completion length.
        "usage": {
            "input_tokens": 6,
            "output_tokens": 16,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert payload["id"].startswith("msg_")
    h = response.headers
    assert h["request-id"].startswith("req_")
    assert h["anthropic-ratelimit-requests-limit"] == "60"
    assert h["anthropic-ratelimit-requests-remaining"] == "59"
    assert h["anthropic-ratelimit-requests-reset"] == utc(1)  # one request back per second
    for family in ("tokens", "input-tokens", "output-tokens"):
        assert h[f"anthropic-ratelimit-{family}-limit"] == "1000"
        assert h[f"anthropic-ratelimit-{family}-remaining"] == str(1000 - 22)
        # 22 tokens at 1000/60 per second = 1.32 s, rounded up to the second.
        assert h[f"anthropic-ratelimit-{family}-reset"] == utc(2)
    for name, value in h.items():
        if name.endswith("-reset"):
            assert RFC3339.match(value), value
            assert datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() >= WALL
    assert not [name for name in h if name.startswith("x-ratelimit")]
    assert "retry-after" not in h
    stats = provider.key_stats("main")
    assert (stats.received, stats.admitted, stats.served) == (1, 1, 1)
    assert (stats.prompt_tokens, stats.completion_tokens) == (6, 16)


async def test_system_prompt_blocks_and_last_user_turn(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    long_text = "x" * 30 + "y" * 30
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": long_text}]},
    ]
    system = [{"type": "text", "text": "You are helpful"}]  # 15 chars
    payload = (
        await client.post("/v1/messages", json=body(messages=messages, system=system))
    ).json()
    assert payload["content"][0]["text"] == "Simulated reply to: " + long_text[:40]
    # ceil((5 + 2 + 60 + 15) / 4) + 3 * (3 messages + system)
    assert payload["usage"]["input_tokens"] == 21 + 12
    as_string = await client.post("/v1/messages", json=body(system="You are helpful"))
    assert as_string.json()["usage"]["input_tokens"] == 7 + 6


async def test_max_tokens_and_stop_sequences(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    capped = (await client.post("/v1/messages", json=body(max_tokens=4))).json()
    assert capped["stop_reason"] == "max_tokens"
    assert capped["usage"]["output_tokens"] == 4
    assert capped["content"][0]["text"] == "Simulated reply to: hello there"[:8]
    stopped = (await client.post("/v1/messages", json=body(stop_sequences=["zz", "reply"]))).json()
    assert stopped["stop_reason"] == "stop_sequence"
    assert stopped["stop_sequence"] == "reply"
    assert stopped["content"][0]["text"] == "Simulated "
    assert 0 < stopped["usage"]["output_tokens"] < 16
    assert provider.key_stats("main").served == 2


# --- streaming ---------------------------------------------------------------------------------


async def test_text_stream_event_sequence(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "59"
    assert response.headers["request-id"].startswith("req_")
    events = sse_events(response.text)
    assert names(events) == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 16,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = events[0][1]["message"]
    assert message["id"].startswith("msg_")
    assert (message["content"], message["stop_reason"], message["model"]) == ([], None, MODEL)
    assert message["usage"]["input_tokens"] == 6
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == "Simulated reply to: hello there"
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 16},
    }


async def test_tool_use_stream_sends_input_json_deltas(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    events = sse_events((await client.post("/v1/messages", json=weather(stream=True))).text)
    assert names(events)[:3] == ["message_start", "content_block_start", "ping"]
    assert names(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {})
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"location": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# --- triggers ----------------------------------------------------------------------------------


async def test_weather_with_tools_answers_with_tool_use(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    payload = (await client.post("/v1/messages", json=weather())).json()
    assert payload["stop_reason"] == "tool_use"
    [block] = payload["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"location": "Paris"})

    # Without a location property the input is empty; without tools the word is just text.
    no_location = weather(tools=[CLOCK_TOOL])
    assert (await client.post("/v1/messages", json=no_location)).json()["content"][0]["input"] == {}
    plain = body(messages=[{"role": "user", "content": "What is the weather like?"}])
    assert (await client.post("/v1/messages", json=plain)).json()["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("choice", "text", "expected"),
    [
        ({"type": "none"}, "What is the weather like?", None),
        ({"type": "auto"}, "hello", None),
        ({"type": "any"}, "hello", "get_weather"),
        ({"type": "tool", "name": "get_time"}, "hello", "get_time"),
    ],
)
async def test_tool_choice_forces_or_disables_the_call(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
    choice: dict[str, str],
    text: str,
    expected: str | None,
) -> None:
    _, client = sim
    request = weather(tool_choice=choice, messages=[{"role": "user", "content": text}])
    payload = (await client.post("/v1/messages", json=request)).json()
    if expected is None:
        assert payload["content"][0]["type"] == "text"
    else:
        assert payload["content"][0]["name"] == expected


async def test_tool_result_turn_is_answered_with_text(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    first = (await client.post("/v1/messages", json=weather())).json()
    tool_use = first["content"][0]
    messages = [
        {"role": "user", "content": "What is the weather like?"},
        {"role": "assistant", "content": [tool_use]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny, 21C"}
            ],
        },
    ]
    second = (await client.post("/v1/messages", json=weather(messages=messages))).json()
    assert second["stop_reason"] == "end_turn"
    assert second["content"] == [{"type": "text", "text": "Simulated reply to: sunny, 21C"}]


async def test_blockme_is_refused(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    request = body(messages=[{"role": "user", "content": "please BLOCKME now"}])
    payload = (await client.post("/v1/messages", json=request)).json()
    assert (payload["stop_reason"], payload["content"]) == ("refusal", [])
    assert payload["usage"]["output_tokens"] == 0
    events = sse_events((await client.post("/v1/messages", json={**request, "stream": True})).text)
    assert names(events) == ["message_start", "ping", "message_delta", "message_stop"]
    assert events[2][1]["delta"]["stop_reason"] == "refusal"


# --- validation --------------------------------------------------------------------------------

TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1]", "JSON object"),
        (orjson.dumps({"model": MODEL, "messages": USER_MSG}), "max_tokens: Field required"),
        (orjson.dumps(body(max_tokens=0)), "max_tokens"),
        (orjson.dumps({"max_tokens": 5, "messages": USER_MSG}), "model: Field required"),
        (orjson.dumps(body(messages=None)), "messages: Field required"),
        (orjson.dumps(body(messages=[])), "at least one message"),
        (orjson.dumps(body(n=2)), "n: Extra inputs are not permitted"),
        (orjson.dumps(body(temperature=1.5)), "temperature"),
        (orjson.dumps(body(system=5)), "system"),
        (orjson.dumps(body(tools=[{"name": "x"}])), "input_schema"),
        (orjson.dumps(body(messages=[{"role": "system", "content": "x"}])), "role"),
        (
            orjson.dumps(body(messages=[{"role": "assistant", "content": "hi"}])),
            'first message must use the "user" role',
        ),
        (orjson.dumps(body(messages=USER_MSG * 2)), "roles must alternate"),
        (
            orjson.dumps(
                body(
                    messages=[
                        *USER_MSG,
                        {"role": "assistant", "content": [TOOL_USE]},
                        {"role": "user", "content": "no result"},
                    ]
                )
            ),
            "`tool_use` ids were found without `tool_result` blocks",
        ),
        (
            orjson.dumps(
                body(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}
                            ],
                        }
                    ]
                )
            ),
            "unexpected `tool_use_id`",
        ),
    ],
)
async def test_invalid_requests_get_400_invalid_request_error(
    sim: tuple[SimulatedProvider, httpx.AsyncClient], payload: bytes, fragment: str
) -> None:
    provider, client = sim
    response = await client.post("/v1/messages", content=payload)
    assert response.status_code == 400
    assert fragment in error_of(response, "invalid_request_error")
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "60"
    assert provider.key_stats("main").status_4xx == 1
    assert provider.key_stats("main").admitted == 0


@pytest.mark.parametrize(("version", "fragment"), [(None, "required"), ("2099-01-01", "2099")])
async def test_missing_or_unknown_version_is_400(
    clock: FakeClock, version: str | None, fragment: str
) -> None:
    provider = make_provider(clock)
    async with client_for(provider, version=version) as client:
        response = await client.post("/v1/messages", json=body())
    assert response.status_code == 400
    message = error_of(response, "invalid_request_error")
    assert "anthropic-version" in message
    assert fragment in message


async def test_unknown_model_and_restricted_key_are_404(clock: FakeClock) -> None:
    restricted = SimKeyConfig(KEY, models=frozenset({"claude-haiku-4-5", "gpt-4o"}))
    provider = make_provider(clock, restricted)
    async with client_for(provider) as client:
        unknown = await client.post("/v1/messages", json=body(model="claude-9"))
        assert unknown.status_code == 404
        assert error_of(unknown, "not_found_error") == "model: claude-9"
        denied = await client.post("/v1/messages", json=body())
        assert error_of(denied, "not_found_error") == f"model: {MODEL}"
        openai_model = await client.post("/v1/messages", json=body(model="gpt-4o"))
        assert openai_model.status_code == 404  # each format serves its own models
        ok = await client.post("/v1/messages", json=body(model="claude-haiku-4-5"))
        assert ok.status_code == 200
        listed = (await client.get("/v1/models")).json()
        assert [m["id"] for m in listed["data"]] == ["claude-haiku-4-5"]


async def test_unknown_route_and_method(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    missing = await client.post("/v1/messages/batches", json={})
    assert missing.status_code == 404
    error_of(missing, "not_found_error")
    wrong = await client.get("/v1/messages")
    assert wrong.status_code == 405
    error_of(wrong, "invalid_request_error")


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "x-api-key header is required"), ("sk-ant-unknown-key-000000", "invalid x-api-key")],
)
async def test_missing_or_unknown_key_is_401(
    clock: FakeClock, key: str | None, message: str
) -> None:
    provider = make_provider(clock)
    async with client_for(provider, key) as client:
        response = await client.post("/v1/messages", json=body())
    assert response.status_code == 401
    assert error_of(response, "authentication_error") == message
    assert response.headers["request-id"].startswith("req_")
    assert not [h for h in response.headers if h.startswith("anthropic-ratelimit")]
    assert provider.stats()[UNKNOWN_LABEL].status_401 == 1


async def test_bearer_only_on_messages_is_401(clock: FakeClock) -> None:
    provider = make_provider(clock)
    async with client_for(provider, None) as client:
        response = await client.post(
            "/v1/messages", json=body(), headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 401
    assert error_of(response, "authentication_error") == "x-api-key header is required"


async def test_revoked_key_is_401_and_counted(clock: FakeClock) -> None:
    provider = make_provider(clock, "sk-ant-revoked-000001:invalid,label=bad")
    async with client_for(provider, "sk-ant-revoked-000001") as client:
        response = await client.post("/v1/messages", json=body())
    assert error_of(response, "authentication_error") == "invalid x-api-key"
    assert provider.key_stats("bad").status_401 == 1


# --- faults and limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "type_"),
    [
        ("status_429", 429, "rate_limit_error"),
        ("status_401", 401, "authentication_error"),
        ("status_500", 500, "api_error"),
        ("status_503", 529, "overloaded_error"),
    ],
)
async def test_injected_status_faults_use_anthropic_errors(
    sim: tuple[SimulatedProvider, httpx.AsyncClient], mode: str, status: int, type_: str
) -> None:
    provider, client = sim
    provider.inject_fault("main", mode, count=1, retry_after_s=2.5)
    response = await client.post("/v1/messages", json=body())
    assert response.status_code == status
    error_of(response, type_)
    assert response.headers["request-id"].startswith("req_")
    # Refused outright: the key's limits were not charged, and the headers say so.
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "60"
    if status == 429:
        assert response.headers["retry-after"] == "3"
    else:
        assert "retry-after" not in response.headers
    assert KEY not in response.text
    assert (await client.post("/v1/messages", json=body())).status_code == 200
    stats = provider.key_stats("main")
    assert stats.admitted == 1
    assert (stats.status_429, stats.status_401, stats.status_5xx) == (
        int(status == 429),
        int(status == 401),
        int(status >= 500),
    )


async def test_rpm_limit_429_with_retry_after_and_reset(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, rpm=3, label="main"))
    async with client_for(provider) as client:
        for _ in range(3):
            assert (await client.post("/v1/messages", json=body())).status_code == 200
        limited = await client.post("/v1/messages", json=body())
        assert limited.status_code == 429
        assert "requests per minute" in error_of(limited, "rate_limit_error")
        assert limited.headers["retry-after"] == "20"
        assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert limited.headers["anthropic-ratelimit-requests-reset"] == utc(60)
        assert "anthropic-ratelimit-tokens-limit" not in limited.headers
        clock.advance(20)
        assert (await client.post("/v1/messages", json=body())).status_code == 200
    assert provider.key_stats("main").status_429 == 1


async def test_tpm_limit_and_request_too_large(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, tpm=60, label="main"))
    async with client_for(provider) as client:
        # 6 prompt + 16 completion = 22 tokens a request.
        for _ in range(2):
            assert (await client.post("/v1/messages", json=body())).status_code == 200
        limited = await client.post("/v1/messages", json=body())
        assert limited.status_code == 429
        assert "tokens per minute" in error_of(limited, "rate_limit_error")
        assert limited.headers["retry-after"] == "6"  # 6 tokens missing at 1 token/s
        assert limited.headers["anthropic-ratelimit-tokens-remaining"] == "16"
        huge = body(messages=[{"role": "user", "content": "x" * 400}])
        too_big = await client.post("/v1/messages", json=huge)
        assert too_big.status_code == 429
        assert "on its own" in error_of(too_big, "rate_limit_error")
        assert "retry-after" not in too_big.headers


async def test_hard_quota_is_credit_balance_error(clock: FakeClock) -> None:
    provider = make_provider(clock, "sk-q:quota=1")
    async with client_for(provider, "sk-q") as client:
        assert (await client.post("/v1/messages", json=body())).status_code == 200
        refused = await client.post("/v1/messages", json=body())
    assert refused.status_code == 400
    assert "credit balance is too low" in error_of(refused, "invalid_request_error")


async def test_drop_stream_and_stream_error(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "drop_stream", count=1, after_chunks=2)
    with pytest.raises(SimulatedDisconnect):
        await client.post("/v1/messages", json=body(stream=True))

    provider.inject_fault("main", "stream_error", count=1, after_chunks=3)
    response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert names(events) == ["message_start", "content_block_start", "ping", "error"]
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}

    provider.inject_fault("main", "stream_error", count=1)
    unstreamed = await client.post("/v1/messages", json=body())
    assert unstreamed.status_code == 529
    error_of(unstreamed, "overloaded_error")
    stats = provider.key_stats("main")
    assert (stats.admitted, stats.dropped, stats.stream_errors, stats.served) == (3, 1, 1, 0)
    assert stats.status_5xx == 1


async def test_timeout_hold_released_answers_529(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "timeout", count=1, timeout_s=30)
    task = asyncio.create_task(client.post("/v1/messages", json=body()))
    for _ in range(1000):
        if provider.holds.active:
            break
        await asyncio.sleep(0)
    provider.release_holds()
    response = await asyncio.wait_for(task, 5)
    assert response.status_code == 529
    error_of(response, "overloaded_error")
    assert provider.key_stats("main").held == 1
    provider.reset()


# --- models and token counting -----------------------------------------------------------------


async def test_models_list_pagination_and_retrieve(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    listed = await client.get("/v1/models")
    assert listed.status_code == 200
    payload = listed.json()
    assert [m["id"] for m in payload["data"]] == list(DEFAULT_ANTHROPIC_MODELS)
    assert payload["has_more"] is False
    assert (payload["first_id"], payload["last_id"]) == ("claude-sonnet-4-5", "claude-opus-4-1")
    first = payload["data"][0]
    assert set(first) == {"type", "id", "display_name", "created_at"}
    assert (first["type"], first["display_name"]) == ("model", "Claude Sonnet 4.5")
    assert RFC3339.match(first["created_at"])
    assert listed.headers["anthropic-ratelimit-requests-remaining"] == "60"  # not charged

    page = (await client.get("/v1/models", params={"limit": 1})).json()
    assert ([m["id"] for m in page["data"]], page["has_more"]) == (["claude-sonnet-4-5"], True)
    rest = (await client.get("/v1/models", params={"limit": 5, "after_id": page["last_id"]})).json()
    assert [m["id"] for m in rest["data"]] == ["claude-haiku-4-5", "claude-opus-4-1"]
    assert rest["has_more"] is False
    before = (await client.get("/v1/models", params={"before_id": "claude-opus-4-1"})).json()
    assert before["first_id"] == "claude-sonnet-4-5"

    one = (await client.get("/v1/models/claude-opus-4-1")).json()
    assert (one["id"], one["display_name"]) == ("claude-opus-4-1", "Claude Opus 4.1")
    missing = await client.get("/v1/models/claude-9")
    assert missing.status_code == 404
    assert error_of(missing, "not_found_error") == "model: claude-9"


async def test_models_route_is_chosen_by_credential_style(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, _ = sim
    transport = httpx.ASGITransport(app=provider)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as raw:
        openai = await raw.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert openai.json()["object"] == "list"
        assert "gpt-4o" in [m["id"] for m in openai.json()["data"]]
        assert "x-ratelimit-limit-requests" in openai.headers
        anthropic = await raw.get(
            "/v1/models", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        )
        assert "object" not in anthropic.json()
        assert anthropic.json()["first_id"] == "claude-sonnet-4-5"


async def test_count_tokens(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    provider, client = sim
    request = {"model": MODEL, "messages": USER_MSG}
    response = await client.post("/v1/messages/count_tokens", json=request)
    assert response.json() == {"input_tokens": 6}
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "60"
    assert provider.key_stats("main").admitted == 0


async def test_one_key_shares_limits_across_formats(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, rpm=2, label="main"))
    transport = httpx.ASGITransport(app=provider)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as raw:
        openai = await raw.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": USER_MSG},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert openai.status_code == 200
        anthropic_headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        first = await raw.post("/v1/messages", json=body(), headers=anthropic_headers)
        assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
        second = await raw.post("/v1/messages", json=body(), headers=anthropic_headers)
        assert second.status_code == 429
    assert provider.key_stats("main").served == 2


def test_cli_model_flags_per_format() -> None:
    args = build_parser().parse_args(
        ["--key", KEY, "--anthropic-model", "claude-x", "--gemini-model", "gemini-x"]
    )
    provider = provider_from_args(args)
    assert provider.anthropic_models == ("claude-x",)
    assert provider.gemini_models == ("gemini-x",)
    assert "gpt-4o" in provider.models  # the OpenAI list keeps its default


# --- real HTTP ---------------------------------------------------------------------------------


async def test_real_http_stream_drop_and_stream_error(caplog: pytest.LogCaptureFixture) -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=100, label="main")])
    provider.inject_fault("main", "drop_stream", count=1, after_chunks=3)
    caplog.set_level(logging.WARNING)
    with run_simulator_in_thread(provider) as server:
        assert server.anthropic_base_url == server.root_url
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient(base_url=server.anthropic_base_url, headers=headers) as client:
            lines: list[str] = []

            async def read_stream() -> None:
                async with client.stream("POST", "/v1/messages", json=body(stream=True)) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("event: "):
                            lines.append(line)

            with pytest.raises(httpx.RemoteProtocolError):
                await read_stream()
            assert lines == [
                "event: message_start",
                "event: content_block_start",
                "event: ping",
            ]
            whole = await client.post("/v1/messages", json=weather(stream=True))
            assert whole.status_code == 200
            assert names(sse_events(whole.text))[-1] == "message_stop"
            reset = whole.headers["anthropic-ratelimit-requests-reset"]
            assert RFC3339.match(reset)
    assert provider.key_stats("main").dropped == 1
    assert provider.key_stats("main").served == 1
    assert not [r for r in caplog.records if "ASGI" in r.getMessage()]
