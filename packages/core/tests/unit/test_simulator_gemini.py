"""Tests of the simulator's Gemini (Generative Language v1beta) wire format.

In-process through ``httpx.ASGITransport`` with a hand-moved clock so limits are exact; one test
goes over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from apikeyrouter.testing import (
    DEFAULT_GEMINI_MODELS,
    UNKNOWN_LABEL,
    SimKeyConfig,
    SimulatedProvider,
    run_simulator_in_thread,
)
from apikeyrouter.testing.simulator.asgi import SimulatedDisconnect
from apikeyrouter.testing.simulator.gemini_wire import thought_signature

from tests.fake_clock import FakeClock

KEY = "AIza-test-0123456789abcdef"
MODEL = "gemini-2.5-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
EMBED_MODEL = "text-embedding-004"
USER = [{"role": "user", "parts": [{"text": "hello there"}]}]
TYPE = "type.googleapis.com/google.rpc."
WEATHER_DECLARATION = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}},
}
TIME_DECLARATION = {"name": "get_time", "description": "Current time"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make_provider(clock: FakeClock, *keys: SimKeyConfig | str) -> SimulatedProvider:
    configs = keys or (SimKeyConfig(KEY, rpm=60, tpm=1000, label="main"),)
    return SimulatedProvider(configs, clock=clock)


def client_for(provider: SimulatedProvider, key: str | None = KEY) -> httpx.AsyncClient:
    headers = {} if key is None else {"x-goog-api-key": key}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=provider), base_url="http://sim.test", headers=headers
    )


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[tuple[SimulatedProvider, httpx.AsyncClient]]:
    provider = make_provider(clock)
    async with client_for(provider) as client:
        yield provider, client


def body(**extra: Any) -> dict[str, Any]:
    return {"contents": USER, **extra}


def weather(**extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "What is the Weather in town?"}]}],
        "tools": [{"functionDeclarations": [WEATHER_DECLARATION, TIME_DECLARATION]}],
    }
    return {**defaults, **extra}


def error_of(response: httpx.Response, code: int, status: str) -> dict[str, Any]:
    """Check the google.rpc.Status shape; return the error object."""
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error"}
    error: dict[str, Any] = payload["error"]
    assert set(error) - {"details"} == {"code", "message", "status"}
    assert (response.status_code, error["code"], error["status"]) == (code, code, status)
    return error


def detail(error: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [d for d in error.get("details", []) if d["@type"] == TYPE + kind]
    assert len(found) == 1, error
    return found[0]


def assert_no_rate_headers(response: httpx.Response) -> None:
    leaked = [h for h in response.headers if "ratelimit" in h or h.startswith("retry-after")]
    assert leaked == []


def sse_payloads(text: str) -> list[dict[str, Any]]:
    """The ``data:`` payloads of a Gemini SSE body (events end with CRLF pairs, no [DONE])."""
    assert "[DONE]" not in text
    blocks = [b for b in text.split("\r\n\r\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[len("data: ") :]) for b in blocks]


def text_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        part.get("text", "")
        for chunk in chunks
        for candidate in chunk["candidates"]
        if candidate["index"] == index
        for part in candidate.get("content", {}).get("parts", [])
    )


# --- success bodies ----------------------------------------------------------------------------


async def test_generate_content_shape_and_no_rate_headers(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    response = await client.post(GENERATE, json=body())
    assert response.status_code == 200
    payload = response.json()
    assert payload == {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "Simulated reply to: hello there"}],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [],
            }
        ],
        # ceil(11 / 4) + 3 for the one content; 16 = the default completion length.
        "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 16, "totalTokenCount": 22},
        "modelVersion": MODEL,
        "responseId": payload["responseId"],
    }
    assert_no_rate_headers(response)
    stats = provider.key_stats("main")
    assert (stats.received, stats.admitted, stats.served, stats.key_in_url) == (1, 1, 1, 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (6, 16)


async def test_system_instruction_config_and_candidates(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    contents = [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
        {"parts": [{"text": "x" * 30}, {"text": "y" * 30}]},  # no role: a user turn
    ]
    request = {
        "contents": contents,
        "system_instruction": {"parts": [{"text": "You are helpful"}]},  # snake_case works too
        "generationConfig": {"candidateCount": 2, "temperature": 1.5, "max_output_tokens": 4},
    }
    payload = (await client.post(GENERATE, json=request)).json()
    assert [c["index"] for c in payload["candidates"]] == [0, 1]
    full = "Simulated reply to: " + ("x" * 30 + "y" * 30)[:40]
    for candidate in payload["candidates"]:
        assert candidate["finishReason"] == "MAX_TOKENS"
        assert candidate["content"]["parts"][0]["text"] == full[: math.ceil(len(full) * 4 / 16)]
    # ceil((5 + 2 + 60 + 15) / 4) + 3 * (3 contents + system)
    assert payload["usageMetadata"] == {
        "promptTokenCount": 21 + 12,
        "candidatesTokenCount": 8,
        "totalTokenCount": 41,
    }


async def test_stop_sequences_cut_the_reply(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    request = body(generationConfig={"stopSequences": ["reply"]})
    candidate = (await client.post(GENERATE, json=request)).json()["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"] == [{"text": "Simulated "}]


# --- streaming ---------------------------------------------------------------------------------


async def test_sse_stream_chunks(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    _, client = sim
    response = await client.post(STREAM, params={"alt": "sse"}, json=body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_no_rate_headers(response)
    chunks = sse_payloads(response.text)
    assert len(chunks) == 16
    assert text_of(chunks) == "Simulated reply to: hello there"
    assert len({c["responseId"] for c in chunks}) == 1
    assert {c["modelVersion"] for c in chunks} == {MODEL}
    finishes = [c["candidates"][0].get("finishReason") for c in chunks]
    assert finishes == [None] * 15 + ["STOP"]
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == list(range(1, 17))
    assert chunks[-1]["usageMetadata"] == {
        "promptTokenCount": 6,
        "candidatesTokenCount": 16,
        "totalTokenCount": 22,
    }
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)


async def test_stream_without_alt_sse_is_a_json_array(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    request = body(generationConfig={"maxOutputTokens": 3})
    response = await client.post(STREAM, json=request)
    assert response.headers["content-type"] == "application/json"
    chunks = response.json()
    assert isinstance(chunks, list)
    assert len(chunks) == 3
    assert text_of(chunks) == "Simulated reply to: hello there"[:6]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


# --- triggers ----------------------------------------------------------------------------------


async def test_weather_with_tools_answers_with_function_call(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    candidate = (await client.post(GENERATE, json=weather())).json()["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"] == {
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"location": "Paris"}},
                "thoughtSignature": thought_signature("get_weather"),
            }
        ],
        "role": "model",
    }
    chunks = sse_payloads((await client.post(STREAM, params={"alt": "sse"}, json=weather())).text)
    assert len(chunks) == 1
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == (
        "get_weather"
    )
    no_tools = {"contents": weather()["contents"]}
    plain = (await client.post(GENERATE, json=no_tools)).json()["candidates"][0]
    assert "text" in plain["content"]["parts"][0]


def _after_call(signature: str | None, *, new_turn: bool = False) -> dict[str, Any]:
    """A conversation whose model step called get_weather and got its result back."""
    call: dict[str, Any] = {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}
    if signature is not None:
        call["thoughtSignature"] = signature
    contents = [
        {"role": "user", "parts": [{"text": "What is the Weather in town?"}]},
        {"role": "model", "parts": [call]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"temp": 20}}}]},
    ]  # fmt: skip
    if new_turn:
        contents += [
            {"role": "model", "parts": [{"text": "It is 20 degrees."}]},
            {"role": "user", "parts": [{"text": "Thanks!"}]},
        ]
    return weather(contents=contents)


async def test_gemini_3_refuses_an_unsigned_function_call_in_the_current_turn_only(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    gemini_3 = "/v1beta/models/gemini-3.5-flash:generateContent"
    unsigned = await client.post(gemini_3, json=_after_call(None))
    assert "missing a thought_signature" in error_of(unsigned, 400, "INVALID_ARGUMENT")["message"]
    signed = await client.post(gemini_3, json=_after_call(thought_signature("get_weather")))
    assert signed.status_code == 200
    # An earlier turn is not checked, and older models never check.
    assert (await client.post(gemini_3, json=_after_call(None, new_turn=True))).status_code == 200
    assert (await client.post(GENERATE, json=_after_call(None))).status_code == 200


@pytest.mark.parametrize(
    ("config", "text", "expected"),
    [
        ({"mode": "NONE"}, "weather?", None),
        ({"mode": "AUTO"}, "hello", None),
        ({"mode": "ANY"}, "hello", ("get_weather", {"location": "Paris"})),
        ({"mode": "ANY", "allowedFunctionNames": ["get_time"]}, "hello", ("get_time", {})),
    ],
)
async def test_function_calling_modes(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
    config: dict[str, Any],
    text: str,
    expected: tuple[str, dict[str, str]] | None,
) -> None:
    _, client = sim
    request = weather(
        contents=[{"role": "user", "parts": [{"text": text}]}],
        toolConfig={"functionCallingConfig": config},
    )
    candidate = (await client.post(GENERATE, json=request)).json()["candidates"][0]
    part = candidate["content"]["parts"][0]
    if expected is None:
        assert "text" in part
    else:
        assert (part["functionCall"]["name"], part["functionCall"]["args"]) == expected


async def test_function_response_turn_is_answered_with_text(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    call = (await client.post(GENERATE, json=weather())).json()["candidates"][0]["content"]
    response_part = {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}
    contents = [*weather()["contents"], call, {"role": "user", "parts": [response_part]}]
    candidate = (await client.post(GENERATE, json=weather(contents=contents))).json()["candidates"][
        0
    ]
    assert candidate["content"]["parts"] == [{"text": 'Simulated reply to: {"sky":"clear"}'}]


async def test_blockme_gives_safety_finish(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    request = body(contents=[{"role": "user", "parts": [{"text": "please BLOCKME"}]}])
    payload = (await client.post(GENERATE, json=request)).json()
    [candidate] = payload["candidates"]
    assert candidate["finishReason"] == "SAFETY"
    assert "content" not in candidate
    assert [r for r in candidate["safetyRatings"] if r.get("blocked")] == [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
    ]
    assert payload["usageMetadata"]["candidatesTokenCount"] == 0
    chunks = sse_payloads((await client.post(STREAM, params={"alt": "sse"}, json=request)).text)
    assert [c["candidates"][0]["finishReason"] for c in chunks] == ["SAFETY"]
    assert provider.key_stats("main").completion_tokens == 0


# --- embeddings --------------------------------------------------------------------------------


async def test_embed_and_batch_embed(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    provider, client = sim
    single = await client.post(
        f"/v1beta/models/{EMBED_MODEL}:embedContent",
        json={"content": {"parts": [{"text": "alpha"}]}, "taskType": "RETRIEVAL_QUERY"},
    )
    assert single.status_code == 200
    values = single.json()["embedding"]["values"]
    assert len(values) == 8
    assert math.isclose(math.fsum(v * v for v in values), 1.0, abs_tol=1e-4)

    requests: list[dict[str, Any]] = [
        {"model": f"models/{EMBED_MODEL}", "content": {"parts": [{"text": t}]}}
        for t in ("alpha", "beta", "alpha")
    ]
    requests[1]["outputDimensionality"] = 3
    batch = await client.post(
        f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents", json={"requests": requests}
    )
    vectors = [e["values"] for e in batch.json()["embeddings"]]
    assert vectors[0] == vectors[2] == values
    assert len(vectors[1]) == 3

    # The same text embeds to the same vector over the OpenAI format.
    openai = await client.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "alpha"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert openai.json()["data"][0]["embedding"] == values
    assert provider.key_stats("main").served == 3

    mismatch = [{**requests[0], "model": "models/other"}]
    wrong = await client.post(
        f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents", json={"requests": mismatch}
    )
    assert "does not match" in error_of(wrong, 400, "INVALID_ARGUMENT")["message"]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "Invalid JSON payload"),
        (orjson.dumps({}), "contents is not specified"),
        (orjson.dumps(body(max_tokens=5)), 'Unknown name "max_tokens"'),
        (
            orjson.dumps(body(generationConfig={"max_tokens": 5})),
            "Unknown name \"max_tokens\" at 'generation_config'",
        ),
        (orjson.dumps({"contents": [{"role": "user", "parts": []}]}), "must not be empty"),
        (orjson.dumps({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}), "role"),
        (orjson.dumps({"contents": [{"parts": [{}]}]}), "oneof field 'data'"),
        (orjson.dumps(body(generationConfig={"temperature": 3})), "temperature"),
        (orjson.dumps(body(generationConfig={"candidateCount": 9})), "candidateCount"),
        (
            orjson.dumps(
                {
                    "contents": [
                        {
                            "role": "user",
                            "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                        }
                    ]
                }
            ),
            "function response turn comes immediately after a function call turn",
        ),
        (
            orjson.dumps(weather(tools=[{"functionDeclarations": [{"name": "bad name!"}]}])),
            "Invalid function name",
        ),
    ],
)
async def test_invalid_requests_get_400_invalid_argument(
    sim: tuple[SimulatedProvider, httpx.AsyncClient], payload: bytes, fragment: str
) -> None:
    provider, client = sim
    response = await client.post(GENERATE, content=payload)
    assert fragment in error_of(response, 400, "INVALID_ARGUMENT")["message"]
    assert_no_rate_headers(response)
    assert provider.key_stats("main").status_4xx == 1
    assert provider.key_stats("main").admitted == 0


async def test_unknown_field_carries_a_bad_request_detail(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    _, client = sim
    error = error_of(await client.post(GENERATE, json=body(n=2)), 400, "INVALID_ARGUMENT")
    violation = detail(error, "BadRequest")["fieldViolations"][0]
    assert 'Unknown name "n"' in violation["description"]


async def test_unknown_model_and_routes_are_404(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, models=frozenset({"gemini-2.5-pro"})))
    async with client_for(provider) as client:
        unknown = await client.post("/v1beta/models/gemini-9:generateContent", json=body())
        message = error_of(unknown, 404, "NOT_FOUND")["message"]
        assert message.startswith("models/gemini-9 is not found for API version v1beta")
        assert "generateContent" in message
        denied = await client.post(GENERATE, json=body())
        error_of(denied, 404, "NOT_FOUND")
        ok = await client.post("/v1beta/models/gemini-2.5-pro:generateContent", json=body())
        assert ok.status_code == 200
        listed = (await client.get("/v1beta/models")).json()
        assert [m["name"] for m in listed["models"]] == ["models/gemini-2.5-pro"]
        bad_method = await client.post(f"/v1beta/models/{MODEL}:explode", json=body())
        error_of(bad_method, 404, "NOT_FOUND")
        wrong_verb = await client.get(GENERATE)
        error_of(wrong_verb, 404, "NOT_FOUND")


# --- authentication ----------------------------------------------------------------------------


async def test_missing_key_is_403_and_bad_key_is_api_key_invalid(clock: FakeClock) -> None:
    provider = make_provider(clock)
    async with client_for(provider, None) as client:
        missing = await client.post(GENERATE, json=body())
        error_of(missing, 403, "PERMISSION_DENIED")
    async with client_for(provider, "AIza-unknown-000000000") as client:
        bad = await client.post(GENERATE, json=body())
    error = error_of(bad, 400, "INVALID_ARGUMENT")
    assert error["message"] == "API key not valid. Please pass a valid API key."
    info = detail(error, "ErrorInfo")
    assert (info["reason"], info["domain"]) == ("API_KEY_INVALID", "googleapis.com")
    assert "AIza-unknown" not in bad.text
    assert_no_rate_headers(bad)
    unknown = provider.stats()[UNKNOWN_LABEL]
    assert (unknown.received, unknown.status_401, unknown.status_4xx) == (2, 2, 0)


async def test_key_in_url_works_but_is_counted(clock: FakeClock) -> None:
    provider = make_provider(clock)
    async with client_for(provider, None) as client:
        ok = await client.post(GENERATE, params={"key": KEY}, json=body())
        assert ok.status_code == 200
        bad = await client.post(GENERATE, params={"key": "AIza-nope-0000000"}, json=body())
        assert bad.status_code == 400
    async with client_for(provider) as client:
        assert (await client.post(GENERATE, json=body())).status_code == 200
    assert provider.key_stats("main").key_in_url == 1
    assert provider.key_stats("main").served == 2
    assert provider.stats()[UNKNOWN_LABEL].key_in_url == 1


# --- faults and limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code", "status", "counter"),
    [
        ("status_429", 429, "RESOURCE_EXHAUSTED", "status_429"),
        ("status_401", 400, "INVALID_ARGUMENT", "status_401"),
        ("status_500", 500, "INTERNAL", "status_5xx"),
        ("status_503", 503, "UNAVAILABLE", "status_5xx"),
    ],
)
async def test_injected_status_faults_use_gemini_errors(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
    mode: str,
    code: int,
    status: str,
    counter: str,
) -> None:
    provider, client = sim
    provider.inject_fault("main", mode, count=1, retry_after_s=2.5)
    response = await client.post(GENERATE, json=body())
    error = error_of(response, code, status)
    assert_no_rate_headers(response)
    if mode == "status_429":
        assert detail(error, "RetryInfo") == {"@type": TYPE + "RetryInfo", "retryDelay": "3s"}
        violation = detail(error, "QuotaFailure")["violations"][0]
        assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
        assert violation["quotaDimensions"]["model"] == MODEL
    if mode == "status_401":
        assert detail(error, "ErrorInfo")["reason"] == "API_KEY_INVALID"
    assert KEY not in response.text
    assert (await client.post(GENERATE, json=body())).status_code == 200
    stats = provider.key_stats("main")
    assert getattr(stats, counter) == 1
    assert stats.admitted == 1


async def test_rpm_limit_gives_retry_info(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, rpm=3, label="main"))
    async with client_for(provider) as client:
        for _ in range(3):
            assert (await client.post(GENERATE, json=body())).status_code == 200
        limited = await client.post(GENERATE, json=body())
        error = error_of(limited, 429, "RESOURCE_EXHAUSTED")
        assert detail(error, "RetryInfo")["retryDelay"] == "20s"
        violation = detail(error, "QuotaFailure")["violations"][0]
        assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
        assert violation["quotaValue"] == "3"
        detail(error, "Help")
        assert_no_rate_headers(limited)
        clock.advance(20)
        assert (await client.post(GENERATE, json=body())).status_code == 200


async def test_tpm_limit_and_too_large(clock: FakeClock) -> None:
    provider = make_provider(clock, SimKeyConfig(KEY, tpm=60, label="main"))
    async with client_for(provider) as client:
        for _ in range(2):  # 6 prompt + 16 completion = 22 tokens
            assert (await client.post(GENERATE, json=body())).status_code == 200
        limited = error_of(await client.post(GENERATE, json=body()), 429, "RESOURCE_EXHAUSTED")
        violation = detail(limited, "QuotaFailure")["violations"][0]
        assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute"
        assert detail(limited, "RetryInfo")["retryDelay"] == "6s"
        huge = body(contents=[{"role": "user", "parts": [{"text": "x" * 400}]}])
        too_big = error_of(await client.post(GENERATE, json=huge), 429, "RESOURCE_EXHAUSTED")
        assert not [d for d in too_big["details"] if d["@type"] == TYPE + "RetryInfo"]


async def test_hard_quota_is_a_per_day_quota_failure(clock: FakeClock) -> None:
    provider = make_provider(clock, "AIza-q-000000:quota=1")
    async with client_for(provider, "AIza-q-000000") as client:
        assert (await client.post(GENERATE, json=body())).status_code == 200
        refused = await client.post(GENERATE, json=body())
    error = error_of(refused, 429, "RESOURCE_EXHAUSTED")
    assert "PerDay" in detail(error, "QuotaFailure")["violations"][0]["quotaId"]
    assert not [d for d in error["details"] if d["@type"] == TYPE + "RetryInfo"]


async def test_drop_stream_and_stream_error(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "drop_stream", count=1, after_chunks=2)
    with pytest.raises(SimulatedDisconnect):
        await client.post(STREAM, params={"alt": "sse"}, json=body())

    provider.inject_fault("main", "stream_error", count=1, after_chunks=3)
    response = await client.post(STREAM, params={"alt": "sse"}, json=body())
    assert response.status_code == 200
    chunks = sse_payloads(response.text)
    assert len(chunks) == 4
    assert chunks[-1] == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])

    provider.inject_fault("main", "stream_error", count=1, after_chunks=1)
    array = (await client.post(STREAM, json=body())).json()
    assert [("error" in item) for item in array] == [False, True]

    provider.inject_fault("main", "stream_error", count=1)
    error_of(await client.post(GENERATE, json=body()), 503, "UNAVAILABLE")
    stats = provider.key_stats("main")
    assert (stats.admitted, stats.dropped, stats.stream_errors, stats.served) == (4, 1, 2, 0)


async def test_timeout_hold_released_answers_503(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    provider.inject_fault("main", "timeout", count=1, timeout_s=30)
    task = asyncio.create_task(client.post(GENERATE, json=body()))
    for _ in range(1000):
        if provider.holds.active:
            break
        await asyncio.sleep(0)
    provider.release_holds()
    error_of(await asyncio.wait_for(task, 5), 503, "UNAVAILABLE")
    provider.reset()


# --- models and token counting -----------------------------------------------------------------


async def test_models_list_pagination_and_get(
    sim: tuple[SimulatedProvider, httpx.AsyncClient],
) -> None:
    provider, client = sim
    listed = (await client.get("/v1beta/models")).json()
    assert [m["name"] for m in listed["models"]] == [f"models/{m}" for m in DEFAULT_GEMINI_MODELS]
    assert "nextPageToken" not in listed
    flash = listed["models"][0]
    assert flash["baseModelId"] == MODEL
    assert "generateContent" in flash["supportedGenerationMethods"]
    embedder = next(m for m in listed["models"] if m["baseModelId"] == EMBED_MODEL)
    assert "embedContent" in embedder["supportedGenerationMethods"]

    first = (await client.get("/v1beta/models", params={"pageSize": 3})).json()
    assert len(first["models"]) == 3
    rest = await client.get(
        "/v1beta/models", params={"pageSize": 3, "pageToken": first["nextPageToken"]}
    )
    assert [m["baseModelId"] for m in rest.json()["models"]] == list(DEFAULT_GEMINI_MODELS[3:])
    bad_token = await client.get("/v1beta/models", params={"pageToken": "nope"})
    error_of(bad_token, 400, "INVALID_ARGUMENT")

    one = (await client.get(f"/v1beta/models/{MODEL}")).json()
    assert one["name"] == f"models/{MODEL}"
    error_of(await client.get("/v1beta/models/gemini-9"), 404, "NOT_FOUND")
    assert provider.key_stats("main").admitted == 0  # listing is not charged


async def test_count_tokens(sim: tuple[SimulatedProvider, httpx.AsyncClient]) -> None:
    provider, client = sim
    path = f"/v1beta/models/{MODEL}:countTokens"
    assert (await client.post(path, json={"contents": USER})).json() == {"totalTokens": 6}
    wrapped = {"generateContentRequest": {"model": f"models/{MODEL}", "contents": USER}}
    assert (await client.post(path, json=wrapped)).json() == {"totalTokens": 6}
    assert provider.key_stats("main").admitted == 0


# --- real HTTP ---------------------------------------------------------------------------------


async def test_real_http_sse_stream_and_key_in_url() -> None:
    provider = SimulatedProvider([SimKeyConfig(KEY, rpm=100, label="main")])
    with run_simulator_in_thread(provider) as server:
        assert server.gemini_base_url == server.root_url + "/v1beta"
        headers = {"x-goog-api-key": KEY}
        async with httpx.AsyncClient(base_url=server.gemini_base_url, headers=headers) as client:
            payloads: list[dict[str, Any]] = []
            path = f"models/{MODEL}:streamGenerateContent"
            async with client.stream("POST", path, params={"alt": "sse"}, json=body()) as r:
                assert r.status_code == 200
                assert_no_rate_headers(r)
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        payloads.append(json.loads(line[len("data: ") :]))
            assert text_of(payloads) == "Simulated reply to: hello there"
            assert payloads[-1]["candidates"][0]["finishReason"] == "STOP"
        url = f"{server.gemini_base_url}/models/{MODEL}:generateContent"
        async with httpx.AsyncClient() as bare:
            in_url = await bare.post(url, params={"key": KEY}, json=body())
        assert in_url.status_code == 200
    stats = provider.key_stats("main")
    assert (stats.served, stats.key_in_url) == (2, 1)
