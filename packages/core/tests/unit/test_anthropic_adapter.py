"""AnthropicAdapter over an in-process fake Anthropic server: wire, errors, quota, streaming."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream, UpstreamSuccess
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.infrastructure.adapters.anthropic_adapter import (
    AnthropicAdapter,
    classify_anthropic_error,
    parse_anthropic_headers,
)
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport, Message, Scope
from apikeyrouter.utils.exceptions import StreamInterruptedError

from tests.replay_upstream import ReplayUpstream, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
SECRET = "sk-ant-api03-TESTKEY0123456789abcdefghijklmnop"
NOW = 1_700_000_000.0
RESET = "2023-11-14T22:14:00Z"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def adapter_for(app: ReplayUpstream, **kwargs: Any) -> AnthropicAdapter:
    return AnthropicAdapter(
        "https://api.anthropic.test", transport=ASGITransport(app), clock=lambda: NOW, **kwargs
    )


def chat(**body: Any) -> RequestIntent:
    payload = {"model": "claude-x", "messages": [{"role": "user", "content": "Hello"}], **body}
    return RequestIntent(model="claude-x", body=payload, stream=bool(body.get("stream")))


def sse_pieces(name: str) -> list[bytes]:
    """The fixture split into separate body messages, one per SSE event, as a server sends."""
    return [event + b"\n\n" for event in fixture(name).split(b"\n\n") if event.strip()]


async def collect(stream: UpstreamStream) -> list[dict[str, Any]]:
    return [orjson.loads(payload) async for payload in stream]


async def drain(stream: UpstreamStream, into: list[dict[str, Any]]) -> None:
    """Like :func:`collect`, but keeps what arrived before an exception."""
    async for payload in stream:
        into.append(orjson.loads(payload))


# --------------------------------------------------------------------------- plain calls


async def test_send_translates_request_and_response() -> None:
    app = ReplayUpstream(Reply(body=fixture("message_text.json")))
    adapter = adapter_for(app, model_map={"claude-x": "claude-3-5-sonnet-20241022"})
    result = await adapter.send(chat(max_tokens=50), SECRET, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    [seen] = app.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["x-api-key"] == SECRET
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers
    assert seen.json() == {
        "model": "claude-3-5-sonnet-20241022",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }
    assert result.body["choices"][0]["message"]["content"] == "Hi! My name is Claude."
    assert result.body["created"] == int(NOW)
    assert result.usage.prompt_tokens == 2095 + 100 + 1800
    assert result.usage.completion_tokens == 503
    assert result.rate_limit.is_empty()


async def test_default_max_tokens_is_configurable() -> None:
    app = ReplayUpstream(Reply(body=fixture("message_text.json")))
    await adapter_for(app, default_max_tokens=321).send(chat(), SECRET, timeout=5)
    assert app.seen[0].json()["max_tokens"] == 321


async def test_send_reads_rate_limit_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": RESET,
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "90000",
        "anthropic-ratelimit-tokens-reset": RESET,
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "4000",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:30Z",
    }
    app = ReplayUpstream(Reply(body=fixture("message_text.json"), headers=headers))
    result = await adapter_for(app).send(chat(), SECRET, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    limit = result.rate_limit
    reset = datetime.fromisoformat("2023-11-14T22:14:00+00:00").timestamp()
    assert (limit.requests_limit, limit.requests_remaining) == (1000, 999)
    assert limit.requests_reset_at == reset
    # Output tokens are 25% left against 94% of the total: the output window is the tight one.
    assert (limit.tokens_limit, limit.tokens_remaining) == (16000, 4000)
    assert limit.tokens_reset_at == reset - 30
    assert limit.retry_after_at is None


def test_rate_limit_headers_pick_the_tightest_token_window() -> None:
    headers = {
        "anthropic-ratelimit-tokens-limit": "100000",
        "anthropic-ratelimit-tokens-remaining": "50000",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": RESET,
        "retry-after": "7",
    }
    info = parse_anthropic_headers(headers, NOW)
    assert (info.tokens_limit, info.tokens_remaining) == (80000, 0)
    assert info.retry_after_at == NOW + 7
    assert info.earliest_reset() == NOW + 7
    assert parse_anthropic_headers({}, NOW).is_empty()
    for junk in ("lots", "inf", "nan"):
        garbled = parse_anthropic_headers({"anthropic-ratelimit-requests-limit": junk}, NOW)
        assert garbled.requests_limit is None


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("error_rate_limit.json", 429, FailureKind.RATE_LIMITED),
        ("error_overloaded.json", 529, FailureKind.PROVIDER_ERROR),
        ("error_api.json", 500, FailureKind.PROVIDER_ERROR),
        ("error_authentication.json", 401, FailureKind.INVALID_KEY),
        ("error_permission.json", 403, FailureKind.INVALID_KEY),
        ("error_permission_model.json", 403, FailureKind.MODEL_NOT_ALLOWED),
        ("error_not_found_model.json", 404, FailureKind.MODEL_NOT_ALLOWED),
        ("error_invalid_request.json", 400, FailureKind.BAD_REQUEST),
        ("error_prompt_too_long.json", 400, FailureKind.CONTEXT_TOO_LONG),
        ("error_request_too_large.json", 413, FailureKind.BAD_REQUEST),
        ("error_credit_balance.json", 400, FailureKind.QUOTA_EXHAUSTED),
        ("error_billing.json", 402, FailureKind.QUOTA_EXHAUSTED),
    ],
)
async def test_error_mapping(name: str, status: int, kind: FailureKind) -> None:
    headers = {"retry-after": "12"} if status == 429 else {}
    app = ReplayUpstream(Reply(status=status, body=fixture(name), headers=headers))
    result = await adapter_for(app).send(chat(), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is kind
    assert result.status == status
    expected = json.loads(fixture(name))["error"]
    assert result.error_type == expected["type"]
    assert result.message == expected["message"]
    if status == 429:
        assert result.rate_limit.retry_after_at == NOW + 12


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, FailureKind.INVALID_KEY),
        (404, FailureKind.BAD_REQUEST),
        (429, FailureKind.RATE_LIMITED),
        (502, FailureKind.PROVIDER_ERROR),
        (529, FailureKind.PROVIDER_ERROR),
        (418, FailureKind.BAD_REQUEST),
    ],
)
def test_error_mapping_without_a_json_body(status: int, kind: FailureKind) -> None:
    failure = classify_anthropic_error(
        status, b"<html>oops</html>", parse_anthropic_headers({}, 0), ""
    )
    assert failure.kind is kind
    assert failure.message == f"upstream HTTP {status}"


async def test_error_messages_never_carry_the_key() -> None:
    body = {"type": "error", "error": {"type": "authentication_error", "message": f"bad {SECRET}"}}
    app = ReplayUpstream(Reply(status=401, body=orjson.dumps(body)))
    result = await adapter_for(app).send(chat(), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert SECRET not in result.message
    assert "[redacted]" in result.message


async def test_untranslatable_request_fails_without_a_call() -> None:
    app = ReplayUpstream(Reply())
    result = await adapter_for(app).send(chat(n=3), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.BAD_REQUEST
    assert result.param == "n"
    assert app.seen == []


async def test_embeddings_and_completions_are_not_supported() -> None:
    app = ReplayUpstream(Reply())
    adapter = adapter_for(app)
    assert adapter.supports(Endpoint.CHAT, stream=True)
    assert not adapter.supports(Endpoint.EMBEDDINGS, stream=False)
    assert not adapter.supports(Endpoint.COMPLETIONS, stream=False)
    intent = RequestIntent(endpoint=Endpoint.EMBEDDINGS, model="m", body={"input": "x"})
    result = await adapter.send(intent, SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.BAD_REQUEST
    assert app.seen == []


async def test_transport_failure_is_a_connection_failure() -> None:
    async def broken(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        raise ConnectionResetError

    adapter = AnthropicAdapter(transport=ASGITransport(broken))
    result = await adapter.send(chat(), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.CONNECTION


async def test_non_json_success_is_a_provider_error() -> None:
    result = await adapter_for(ReplayUpstream(Reply(body=b"not json"))).send(chat(), SECRET, 5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.PROVIDER_ERROR


async def test_list_models_follows_pagination() -> None:
    first = {"data": [{"type": "model", "id": "claude-a"}], "has_more": True, "last_id": "claude-a"}
    app = ReplayUpstream(Reply(body=orjson.dumps(first)), Reply(body=fixture("models_list.json")))
    models = await adapter_for(app).list_models(SECRET, timeout=5)
    assert models == ["claude-a", "claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022"]
    assert [s.path for s in app.seen] == ["/v1/models", "/v1/models"]
    assert "after_id" not in app.seen[0].query
    assert "after_id=claude-a" in app.seen[1].query
    assert all(s.headers["x-api-key"] == SECRET for s in app.seen)


async def test_list_models_failure_is_classified() -> None:
    app = ReplayUpstream(Reply(status=401, body=fixture("error_authentication.json")))
    result = await adapter_for(app).list_models(SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.INVALID_KEY


# --------------------------------------------------------------------------- streaming


async def test_stream_yields_openai_chunks_and_usage() -> None:
    headers = {"content-type": "text/event-stream", "anthropic-ratelimit-requests-remaining": "5"}
    app = ReplayUpstream(Reply(body=sse_pieces("stream_text.sse"), headers=headers))
    stream = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    assert stream.rate_limit.requests_remaining == 5
    assert app.seen[0].json()["stream"] is True
    chunks = await collect(stream)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hello!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 40
    assert stream.usage is not None
    assert stream.usage.completion_tokens == 15


async def test_stream_with_tool_use() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_tool_use.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    chunks = await collect(stream)
    calls = [c for chunk in chunks[:-1] for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.usage is not None
    assert stream.usage.prompt_tokens == 472


async def test_stream_error_before_any_content_is_a_failure_result() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_error_first.sse")))
    result = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.PROVIDER_ERROR
    assert result.status == 529
    assert result.error_type == "overloaded_error"


async def test_stream_error_midway_interrupts_with_a_redacted_message() -> None:
    pieces = sse_pieces("stream_error_midway.sse")
    pieces[-1] = pieces[-1].replace(b"Overloaded", b"Overloaded for " + SECRET.encode())
    app = ReplayUpstream(Reply(body=pieces))
    stream = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    received: list[dict[str, Any]] = []
    with pytest.raises(StreamInterruptedError) as info:
        await drain(stream, received)
    assert [c["choices"][0]["delta"].get("content") for c in received] == ["", "Partial"]
    assert "overloaded_error" in info.value.message
    assert SECRET not in info.value.message


async def test_stream_ending_without_message_stop_is_interrupted() -> None:
    app = ReplayUpstream(Reply(body=sse_pieces("stream_truncated.sse")))
    stream = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    with pytest.raises(StreamInterruptedError, match="message_stop"):
        await collect(stream)
    assert stream.usage is None


async def test_empty_stream_is_a_connection_failure() -> None:
    app = ReplayUpstream(Reply(body=b""))
    result = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.CONNECTION


async def test_stream_http_error_is_classified() -> None:
    app = ReplayUpstream(
        Reply(status=429, body=fixture("error_rate_limit.json"), headers={"retry-after": "3"})
    )
    result = await adapter_for(app).open_stream(chat(stream=True), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure)
    assert result.kind is FailureKind.RATE_LIMITED
    assert result.rate_limit.retry_after_at == NOW + 3
