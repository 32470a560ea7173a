"""GeminiAdapter over an in-process fake Gemini server: URLs, key handling, errors, streaming."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream, UpstreamSuccess
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.infrastructure.adapters.gemini_adapter import (
    GeminiAdapter,
    classify_gemini_error,
    next_pacific_midnight,
)
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.infrastructure.transport.base import HttpStreamResponse
from apikeyrouter.utils.exceptions import StreamInterruptedError

from tests.replay_upstream import ReplayUpstream, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"
BASE = "https://generativelanguage.googleapis.test/v1beta"
CANARY = "AIzaCANARY0123456789abcdefghijk"
NOW = 1_700_000_000.0  # 2023-11-14 14:13:20 PST
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class RecordingTransport(ASGITransport):
    """Keeps the exact URL strings the adapter asked for, query string included.

    ``ASGITransport.request`` goes through ``open_stream``, so recording there sees every call
    (the canary test checks the count against the requests the app received).
    """

    def __init__(self, app: ReplayUpstream) -> None:
        super().__init__(app)
        self.urls: list[str] = []

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        self.urls.append(url)
        return await super().open_stream(method, url, headers, body, timeout)


def adapter_for(app: ReplayUpstream, **kwargs: Any) -> GeminiAdapter:
    return GeminiAdapter(BASE, transport=ASGITransport(app), clock=lambda: NOW, **kwargs)


def chat(model: str = "gemini-2.0-flash", **body: Any) -> RequestIntent:
    payload = {"model": model, "messages": [{"role": "user", "content": "Hello"}], **body}
    return RequestIntent(model=model, body=payload, stream=bool(body.get("stream")))


def embed(value: Any, **body: Any) -> RequestIntent:
    payload = {"model": "text-embedding-004", "input": value, **body}
    return RequestIntent(endpoint=Endpoint.EMBEDDINGS, model="text-embedding-004", body=payload)


def sse_pieces(name: str) -> list[bytes]:
    return [event + b"\n\n" for event in fixture(name).split(b"\n\n") if event.strip()]


async def collect(stream: UpstreamStream) -> list[dict[str, Any]]:
    return [orjson.loads(payload) async for payload in stream]


# --------------------------------------------------------------------------- plain calls


async def test_generate_content_wire_format() -> None:
    app = ReplayUpstream(Reply(body=fixture("generate_text.json")))
    adapter = adapter_for(app, model_map={"fast": "models/gemini-2.5-flash"})
    result = await adapter.send(chat("fast", temperature=0.2), CANARY, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    [seen] = app.seen
    assert (seen.method, seen.path, seen.query) == (
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "",
    )
    assert seen.headers["x-goog-api-key"] == CANARY
    assert seen.headers["content-type"] == "application/json"
    assert seen.json() == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "generationConfig": {"temperature": 0.2},
    }
    assert result.body["choices"][0]["message"]["content"].startswith("AI learns")
    assert result.body["created"] == int(NOW)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (8, 32)
    assert result.usage.total_tokens == 40


async def test_generated_response_id_when_gemini_gives_none() -> None:
    app = ReplayUpstream(Reply(body=fixture("generate_function_call.json")))
    result = await adapter_for(app).send(chat(), CANARY, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    assert result.body["id"].startswith("chatcmpl-")
    assert result.body["choices"][0]["finish_reason"] == "tool_calls"


async def test_blocked_prompt_is_a_content_filter_answer() -> None:
    app = ReplayUpstream(Reply(body=fixture("generate_blocked_prompt.json")))
    result = await adapter_for(app).send(chat(), CANARY, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    assert result.body["choices"][0]["finish_reason"] == "content_filter"
    assert result.usage.prompt_tokens == 7


async def test_single_embedding_call() -> None:
    app = ReplayUpstream(Reply(body=fixture("embed_content.json")))
    result = await adapter_for(app).send(embed("hello"), CANARY, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    assert app.seen[0].path == "/v1beta/models/text-embedding-004:embedContent"
    assert app.seen[0].json() == {"content": {"parts": [{"text": "hello"}]}}
    assert len(result.body["data"][0]["embedding"]) == 4


async def test_batch_embedding_call() -> None:
    app = ReplayUpstream(Reply(body=fixture("batch_embed_contents.json")))
    result = await adapter_for(app).send(embed(["a", "b"]), CANARY, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    assert app.seen[0].path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert len(app.seen[0].json()["requests"]) == 2
    assert [d["index"] for d in result.body["data"]] == [0, 1]


async def test_token_input_embeddings_fail_without_a_call() -> None:
    app = ReplayUpstream(Reply())
    result = await adapter_for(app).send(embed([1, 2, 3]), CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.BAD_REQUEST
    assert result.param == "input"
    assert app.seen == []


async def test_completions_are_not_supported() -> None:
    app = ReplayUpstream(Reply())
    adapter = adapter_for(app)
    assert adapter.supports(Endpoint.EMBEDDINGS, stream=False)
    assert not adapter.supports(Endpoint.COMPLETIONS, stream=False)
    intent = RequestIntent(endpoint=Endpoint.COMPLETIONS, model="m", body={"prompt": "x"})
    result = await adapter.send(intent, CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.BAD_REQUEST
    stream = await adapter.open_stream(embed("x"), CANARY, timeout=5)
    assert isinstance(stream, ProviderFailure)
    assert app.seen == []


async def test_model_names_cannot_escape_the_path() -> None:
    app = ReplayUpstream(Reply(body=fixture("generate_text.json")))
    transport = RecordingTransport(app)
    adapter = GeminiAdapter(BASE, transport=transport)
    await adapter.send(chat("../tunedModels/x?y"), CANARY, timeout=5)
    assert transport.urls == [f"{BASE}/models/..%2FtunedModels%2Fx%3Fy:generateContent"]


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("error_rate_limited.json", 429, FailureKind.RATE_LIMITED),
        ("error_quota_per_day.json", 429, FailureKind.QUOTA_EXHAUSTED),
        ("error_api_key_invalid.json", 400, FailureKind.INVALID_KEY),
        ("error_permission_denied.json", 403, FailureKind.INVALID_KEY),
        ("error_not_found_model.json", 404, FailureKind.MODEL_NOT_ALLOWED),
        ("error_invalid_argument.json", 400, FailureKind.BAD_REQUEST),
        ("error_context_too_long.json", 400, FailureKind.CONTEXT_TOO_LONG),
        ("error_unavailable.json", 503, FailureKind.PROVIDER_ERROR),
        ("error_internal.json", 500, FailureKind.PROVIDER_ERROR),
    ],
)
async def test_error_mapping(name: str, status: int, kind: FailureKind) -> None:
    app = ReplayUpstream(Reply(status=status, body=fixture(name)))
    result = await adapter_for(app).send(chat(), CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is kind
    assert result.status == status
    expected = json.loads(fixture(name))["error"]
    assert result.error_type == expected["status"]
    assert result.message == expected["message"]


async def test_rate_limit_retry_delay_comes_from_retry_info() -> None:
    app = ReplayUpstream(Reply(status=429, body=fixture("error_rate_limited.json")))
    result = await adapter_for(app).send(chat(), CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.rate_limit.retry_after_at == NOW + 17
    assert result.rate_limit.earliest_reset() == NOW + 17


def test_fractional_retry_delay_and_retry_after_header() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "slow down",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}
            ],
        }
    }
    failure = classify_gemini_error(429, orjson.dumps(body), {}, NOW, CANARY)
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.rate_limit.retry_after_at == NOW + 0.5
    body["error"]["details"][0]["retryDelay"] = "Infinity"  # type: ignore[index]
    junk = classify_gemini_error(429, orjson.dumps(body), {}, NOW, CANARY)
    assert junk.rate_limit.retry_after_at is None
    bare = classify_gemini_error(429, b"", {"retry-after": "9"}, NOW, CANARY)
    assert bare.kind is FailureKind.RATE_LIMITED
    assert bare.rate_limit.retry_after_at == NOW + 9


async def test_per_day_quota_resets_at_pacific_midnight() -> None:
    app = ReplayUpstream(Reply(status=429, body=fixture("error_quota_per_day.json")))
    result = await adapter_for(app).send(chat(), CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    expected = datetime(2023, 11, 15, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    assert result.rate_limit.retry_after_at == expected


def test_pacific_midnight_across_daylight_saving() -> None:
    pacific = ZoneInfo("America/Los_Angeles")
    before_switch = datetime(2024, 3, 9, 23, 30, tzinfo=pacific).timestamp()
    assert next_pacific_midnight(before_switch) == datetime(2024, 3, 10, tzinfo=pacific).timestamp()
    summer = datetime(2024, 7, 1, 0, 0, 1, tzinfo=pacific).timestamp()
    assert next_pacific_midnight(summer) == datetime(2024, 7, 2, tzinfo=pacific).timestamp()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, b"", FailureKind.INVALID_KEY),
        (429, b"", FailureKind.RATE_LIMITED),
        (502, b"<html>bad gateway</html>", FailureKind.PROVIDER_ERROR),
        (404, b"", FailureKind.BAD_REQUEST),
        (
            403,
            b'{"error": {"code": 403, "status": "PERMISSION_DENIED", '
            b'"message": "You do not have permission to access tuned model tunedModels/x"}}',
            FailureKind.MODEL_NOT_ALLOWED,
        ),
        (
            400,
            b'[{"error": {"code": 400, "status": "INVALID_ARGUMENT", '
            b'"message": "API key expired. Please renew the API key."}}]',
            FailureKind.INVALID_KEY,
        ),
    ],
)
def test_error_mapping_edge_cases(status: int, body: bytes, kind: FailureKind) -> None:
    assert classify_gemini_error(status, body, {}, NOW, CANARY).kind is kind


async def test_list_models_strips_prefix_and_pages() -> None:
    app = ReplayUpstream(
        Reply(body=fixture("models_list_page1.json")), Reply(body=fixture("models_list_page2.json"))
    )
    models = await adapter_for(app).list_models(CANARY, timeout=5)
    assert models == ["gemini-2.0-flash", "text-embedding-004"]
    assert [s.path for s in app.seen] == ["/v1beta/models", "/v1beta/models"]
    assert "pageToken" not in app.seen[0].query
    assert "pageToken=Ch5tb2RlbHMvZ2VtaW5pLTIuMC1mbGFzaA%3D%3D" in app.seen[1].query


async def test_list_models_failure_is_classified() -> None:
    app = ReplayUpstream(Reply(status=400, body=fixture("error_api_key_invalid.json")))
    result = await adapter_for(app).list_models(CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.INVALID_KEY


# --------------------------------------------------------------------------- streaming


async def test_stream_wire_format_and_chunks() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_text.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), CANARY, timeout=5)
    assert isinstance(stream, UpstreamStream)
    assert app.seen[0].path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert app.seen[0].query == "alt=sse"
    assert "stream" not in app.seen[0].json()
    chunks = await collect(stream)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "The quick brown fox jumps."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 16
    assert stream.usage is not None
    assert stream.usage.total_tokens == 16


async def test_stream_with_function_call() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_function_call.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), CANARY, timeout=5)
    assert isinstance(stream, UpstreamStream)
    chunks = await collect(stream)
    calls = [c for chunk in chunks[:-1] for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["get_current_temperature"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_truncated_stream_is_interrupted() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_truncated.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), CANARY, timeout=5)
    assert isinstance(stream, UpstreamStream)
    with pytest.raises(StreamInterruptedError, match="finishReason"):
        await collect(stream)
    assert stream.usage is None


async def test_stream_error_slice_is_interrupted() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_error.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), CANARY, timeout=5)
    assert isinstance(stream, UpstreamStream)
    with pytest.raises(StreamInterruptedError, match="overloaded"):
        await collect(stream)


async def test_stream_http_error_is_classified() -> None:
    app = ReplayUpstream(Reply(status=503, body=fixture("error_unavailable.json")))
    result = await adapter_for(app).open_stream(chat(stream=True), CANARY, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.PROVIDER_ERROR


# --------------------------------------------------------------------------- canary


def echo_key_error(status: int, state: str) -> Reply:
    """An error that quotes the key back, as a careless upstream (or proxy) might."""
    body = {"error": {"code": status, "status": state, "message": f"key {CANARY} rejected"}}
    return Reply(status=status, body=orjson.dumps(body))


async def test_canary_key_never_leaves_the_header() -> None:
    app = ReplayUpstream(
        Reply(body=fixture("generate_text.json")),
        Reply(body=sse_pieces("stream_text.sse")),
        Reply(body=fixture("batch_embed_contents.json")),
        Reply(body=fixture("models_list_page1.json")),
        Reply(body=fixture("models_list_page2.json")),
        echo_key_error(400, "INVALID_ARGUMENT"),
        echo_key_error(403, "PERMISSION_DENIED"),
        echo_key_error(429, "RESOURCE_EXHAUSTED"),
        Reply(
            body=[b'data: {"error": {"code": 500, "message": "boom ' + CANARY.encode() + b'"}}\n\n']
        ),
    )
    transport = RecordingTransport(app)
    adapter = GeminiAdapter(BASE, transport=transport)
    messages: list[str] = []

    assert isinstance(await adapter.send(chat(), CANARY, 5), UpstreamSuccess)
    stream = await adapter.open_stream(chat(stream=True), CANARY, 5)
    assert isinstance(stream, UpstreamStream)
    await collect(stream)
    assert isinstance(await adapter.send(embed(["a", "b"]), CANARY, 5), UpstreamSuccess)
    assert isinstance(await adapter.list_models(CANARY, 5), list)
    for _ in range(3):
        failure = await adapter.send(chat(), CANARY, 5)
        assert isinstance(failure, ProviderFailure)
        messages.append(failure.message)
        messages.append(repr(failure))
    broken = await adapter.open_stream(chat(stream=True), CANARY, 5)
    assert isinstance(broken, UpstreamStream)
    with pytest.raises(StreamInterruptedError) as info:
        await collect(broken)
    messages.append(info.value.message)

    assert len(transport.urls) == len(app.seen) == 9
    for url in transport.urls:
        assert CANARY not in url
        assert "key=" not in url
    for seen in app.seen:
        assert seen.headers["x-goog-api-key"] == CANARY
        assert CANARY not in seen.query
        assert CANARY.encode() not in seen.body
    assert all(CANARY not in message for message in messages)
    assert all("[redacted]" in message for message in messages if "key" in message)
