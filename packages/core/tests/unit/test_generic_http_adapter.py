"""GenericHttpAdapter against an in-process recording API: key placement, request shapes,
quota headers, failure meanings, usage, bodies, SSE, config errors, the registry, and a canary
for keys placed in the query string."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream, UpstreamSuccess
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.infrastructure.adapters.anthropic_adapter import AnthropicAdapter
from apikeyrouter.infrastructure.adapters.gemini_adapter import GeminiAdapter
from apikeyrouter.infrastructure.adapters.generic_http_adapter import (
    OPENAI_COMPATIBLE_PRESETS,
    GenericHttpAdapter,
    azure_openai,
    openai_compatible,
    scrub_secret,
)
from apikeyrouter.infrastructure.adapters.generic_http_config import GenericHttpConfig
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.infrastructure.adapters.registry import build_adapter, known_kinds
from apikeyrouter.infrastructure.transport.aiohttp_transport import AiohttpTransport
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport, Message, Scope
from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
    TransportError,
)
from apikeyrouter.utils.exceptions import ConfigurationError, StreamInterruptedError
from pydantic import ValidationError

from tests.replay_upstream import ReplayUpstream, Reply

SECRET = "geoKEY-7fQ2xL9pV4tZ8mR3hS6jB1nD5"
NOW = 1_700_000_000.0
BASE = "https://api.example.test"

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def make(app: Any, **fields: Any) -> GenericHttpAdapter:
    config = GenericHttpConfig(base_url=BASE, **fields)
    return GenericHttpAdapter(config, transport=ASGITransport(app), clock=lambda: NOW)


def call(body: dict[str, Any] | None = None, model: str = "geocode", **extra: Any) -> RequestIntent:
    return RequestIntent(model=model, body={"model": model, **(body or {})}, **extra)


async def ok(adapter: GenericHttpAdapter, intent: RequestIntent | None = None) -> UpstreamSuccess:
    result = await adapter.send(intent or call(), SECRET, timeout=5)
    assert isinstance(result, UpstreamSuccess), result
    return result


async def failed(
    adapter: GenericHttpAdapter, intent: RequestIntent | None = None
) -> ProviderFailure:
    result = await adapter.send(intent or call(), SECRET, timeout=5)
    assert isinstance(result, ProviderFailure), result
    return result


# --------------------------------------------------------------------------- key placement


async def test_default_placement_is_an_authorization_bearer_header() -> None:
    app = ReplayUpstream()
    await ok(make(app))
    [seen] = app.seen
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.params == {}


@pytest.mark.parametrize(
    ("fields", "header", "value"),
    [
        ({"key_name": "X-API-Key"}, "x-api-key", SECRET),
        ({"key_name": "X-API-Key", "key_prefix": "Key "}, "x-api-key", f"Key {SECRET}"),
        ({"key_name": "Authorization", "key_prefix": "Token "}, "authorization", f"Token {SECRET}"),
        ({"key_name": "Authorization", "key_prefix": ""}, "authorization", SECRET),
    ],
)
async def test_header_placement_with_name_and_prefix(
    fields: dict[str, Any], header: str, value: str
) -> None:
    app = ReplayUpstream()
    await ok(make(app, **fields))
    assert app.seen[0].headers[header] == value


async def test_query_placement_puts_the_key_in_the_named_parameter_only() -> None:
    app = ReplayUpstream()
    adapter = make(app, key_in="query", key_name="api_key", extra_headers={"X-Client": "t"})
    await ok(adapter)
    [seen] = app.seen
    assert seen.params["api_key"] == [SECRET]
    assert SECRET not in json.dumps(seen.headers)
    assert "authorization" not in seen.headers
    assert seen.headers["x-client"] == "t"
    assert SECRET not in repr(adapter)


async def test_query_key_with_prefix_and_a_caller_cannot_override_it() -> None:
    app = ReplayUpstream()
    adapter = make(app, method="GET", key_in="query", key_name="key", key_prefix="k:")
    await ok(adapter, call({"key": "callers-own-key", "q": "x"}))
    assert app.seen[0].params["key"] == [f"k:{SECRET}"]


# --------------------------------------------------------------------------- request shapes


async def test_post_sends_the_body_as_json_without_router_fields() -> None:
    app = ReplayUpstream()
    adapter = make(app, path="/v1/search", extra_query={"v": "2"}, extra_headers={"X-A": "b"})
    body = {"q": "Paris", "limit": 3, "stream": False, "stream_options": {}}
    await ok(adapter, call(body))
    [seen] = app.seen
    assert (seen.method, seen.path) == ("POST", "/v1/search")
    assert seen.json() == {"q": "Paris", "limit": 3}
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-a"] == "b"
    assert seen.params == {"v": ["2"]}


async def test_put_sends_json_too_and_strip_fields_is_configurable() -> None:
    app = ReplayUpstream()
    adapter = make(app, method="put", strip_fields=["internal"], model_map={"geocode": "geo-v2"})
    await ok(adapter, call({"internal": 1, "q": "x"}))
    [seen] = app.seen
    assert seen.method == "PUT"
    assert seen.json() == {"model": "geo-v2", "q": "x"}  # kept, and mapped


async def test_get_sends_the_body_as_query_parameters() -> None:
    app = ReplayUpstream()
    adapter = make(app, method="GET", path="/geo?format=json", key_in="query", key_name="key")
    body = {"q": "Paris", "limit": 3, "tags": ["a", "b"], "exact": True, "bbox": {"n": 1}}
    await ok(adapter, call({**body, "skip": None}))
    [seen] = app.seen
    assert seen.method == "GET"
    assert seen.body == b""
    assert "content-type" not in seen.headers
    assert seen.params == {
        "format": ["json"],
        "q": ["Paris"],
        "limit": ["3"],
        "tags": ["a", "b"],
        "exact": ["true"],
        "bbox": ['{"n":1}'],
        "key": [SECRET],
    }


async def test_path_template_uses_the_mapped_model_safely() -> None:
    app = ReplayUpstream()
    adapter = make(app, path="/v1/{model}/run", model_map={"small": "llama3:8b"})
    await ok(adapter, call(model="small"))
    await ok(adapter, call(model="../../admin"))
    assert app.seen[0].path == "/v1/llama3:8b/run"
    assert "/admin" not in app.seen[1].path
    assert unquote(app.seen[1].path) == "/v1/../../admin/run"


async def test_endpoints_without_a_path_are_refused_and_not_claimed() -> None:
    adapter = make(ReplayUpstream())
    assert adapter.supports(Endpoint.CHAT, stream=False)
    assert not adapter.supports(Endpoint.EMBEDDINGS, stream=False)
    assert not adapter.supports(Endpoint.CHAT, stream=True)
    failure = await failed(adapter, call(endpoint=Endpoint.EMBEDDINGS))
    assert failure.kind is FailureKind.BAD_REQUEST
    embedder = make(ReplayUpstream(), paths={"embeddings": "/embed"})
    assert embedder.supports(Endpoint.EMBEDDINGS, stream=False)


# --------------------------------------------------------------------------- rate limits

RL_NAMES = {
    "requests_limit": "X-RateLimit-Limit",
    "requests_remaining": "X-RateLimit-Remaining",
    "requests_reset": "X-RateLimit-Reset",
    "tokens_limit": "X-Tokens-Limit",
    "tokens_remaining": "X-Tokens-Remaining",
    "tokens_reset": "X-Tokens-Reset",
}
RFC3339 = "2023-11-14T22:15:00Z"


@pytest.mark.parametrize(
    ("fmt", "requests_reset", "tokens_reset", "expected_requests", "expected_tokens"),
    [
        ("seconds", "30", "1.5", NOW + 30, NOW + 1.5),
        ("duration", "1m30s", "20ms", NOW + 90, NOW + 0.02),
        ("epoch", "1700000100", "1700000200000", 1_700_000_100.0, 1_700_000_200.0),
        (
            "rfc3339",
            RFC3339,
            "2023-11-14T22:15:00+00:00",
            datetime(2023, 11, 14, 22, 15, tzinfo=UTC).timestamp(),
            datetime(2023, 11, 14, 22, 15, tzinfo=UTC).timestamp(),
        ),
    ],
)
async def test_rate_limit_headers_in_each_reset_format(
    fmt: str,
    requests_reset: str,
    tokens_reset: str,
    expected_requests: float,
    expected_tokens: float,
) -> None:
    headers = {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "7",
        "X-RateLimit-Reset": requests_reset,
        "X-Tokens-Limit": "5000",
        "X-Tokens-Remaining": "4000",
        "X-Tokens-Reset": tokens_reset,
    }
    app = ReplayUpstream(Reply(headers=headers))
    result = await ok(make(app, rate_limit_headers={**RL_NAMES, "reset_format": fmt}))
    info = result.rate_limit
    assert (info.requests_limit, info.requests_remaining) == (100, 7)
    assert (info.tokens_limit, info.tokens_remaining) == (5000, 4000)
    assert info.requests_reset_at == pytest.approx(expected_requests)
    assert info.tokens_reset_at == pytest.approx(expected_tokens)
    assert info.retry_after_at is None


async def test_unparseable_rate_limit_values_are_ignored() -> None:
    headers = {"X-RateLimit-Limit": "lots", "X-RateLimit-Reset": "soon"}
    app = ReplayUpstream(Reply(headers=headers))
    result = await ok(make(app, rate_limit_headers=RL_NAMES))
    assert result.rate_limit.requests_limit is None
    assert result.rate_limit.requests_reset_at is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, NOW + 7),
        ({"Retry-After-Ms": "1500"}, NOW + 1.5),
        ({"Retry-After": "Tue, 14 Nov 2023 22:15:00 GMT"}, RFC3339),
    ],
)
async def test_retry_after_is_always_honoured(headers: dict[str, str], expected: Any) -> None:
    app = ReplayUpstream(Reply(status=429, headers=headers))
    failure = await failed(make(app))  # no rate_limit_headers configured
    assert failure.kind is FailureKind.RATE_LIMITED
    if isinstance(expected, str):
        expected = datetime.fromisoformat(expected.replace("Z", "+00:00")).timestamp()
    assert failure.rate_limit.retry_after_at == pytest.approx(expected)
    assert failure.rate_limit.earliest_reset(NOW) == pytest.approx(expected)


# --------------------------------------------------------------------------- failure meanings


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, FailureKind.RATE_LIMITED),
        (401, FailureKind.INVALID_KEY),
        (403, FailureKind.INVALID_KEY),
        (402, FailureKind.QUOTA_EXHAUSTED),
        (404, FailureKind.BAD_REQUEST),
        (400, FailureKind.BAD_REQUEST),
        (422, FailureKind.BAD_REQUEST),
        (418, FailureKind.BAD_REQUEST),
        (408, FailureKind.TIMEOUT),
        (500, FailureKind.PROVIDER_ERROR),
        (503, FailureKind.PROVIDER_ERROR),
        (302, FailureKind.PROVIDER_ERROR),
    ],
)
async def test_default_status_meanings(status: int, kind: FailureKind) -> None:
    body = b'{"error": {"message": "nope", "code": "E42"}}'
    failure = await failed(make(ReplayUpstream(Reply(status=status, body=body))))
    assert (failure.kind, failure.status) == (kind, status)
    assert failure.message == f"upstream HTTP {status}: nope"
    assert failure.code == "E42"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (403, FailureKind.QUOTA_EXHAUSTED),  # exact override of a default
        (401, FailureKind.INVALID_KEY),  # untouched default
        (503, FailureKind.RATE_LIMITED),  # the 5xx range replaced
        (501, FailureKind.PROVIDER_ERROR),  # a narrower span beats the range
        (420, FailureKind.RATE_LIMITED),  # a status no default names
        (499, FailureKind.CONNECTION),  # a span over the 4xx default, same width
    ],
)
async def test_status_map_overrides_and_ranges(status: int, kind: FailureKind) -> None:
    status_map = {
        403: "quota_exhausted",
        "5XX": "rate_limited",
        "500-502": "provider_error",
        "420": "rate_limited",
        "400-499": "connection",
    }
    adapter = make(ReplayUpstream(Reply(status=status)), status_map=status_map)
    assert (await failed(adapter)).kind is kind


async def test_body_rules_override_the_status_meaning_but_never_touch_successes() -> None:
    rules = {"quota": "quota_exhausted", "Invalid API key": "invalid_key"}
    app = ReplayUpstream(
        Reply(status=429, body=b'{"message": "Daily QUOTA exceeded"}'),
        Reply(status=400, body=b"invalid api key given"),
        Reply(status=429, body=b"slow down"),
        Reply(status=200, body=b'{"place": "Quota, Peru"}'),
    )
    adapter = make(app, body_rules=rules)
    assert (await failed(adapter)).kind is FailureKind.QUOTA_EXHAUSTED
    second = await failed(adapter)
    assert second.kind is FailureKind.INVALID_KEY
    assert second.message == "upstream HTTP 400: invalid api key given"
    assert (await failed(adapter)).kind is FailureKind.RATE_LIMITED
    assert (await ok(adapter)).body == {"place": "Quota, Peru"}


async def test_error_messages_come_from_common_shapes_and_are_bounded() -> None:
    app = ReplayUpstream(
        Reply(status=400, body=b'{"detail": "q is required"}'),
        Reply(status=400, body=b'{"error": "bad_query", "error_description": "q?"}'),
        Reply(status=500, body=b"x" * 5000),
        Reply(status=500, body=b""),
    )
    adapter = make(app)
    assert (await failed(adapter)).message == "upstream HTTP 400: q is required"
    assert (await failed(adapter)).message == "upstream HTTP 400: q?"
    assert len((await failed(adapter)).message) < 400
    assert (await failed(adapter)).message == "upstream HTTP 500"


# --------------------------------------------------------------------------- usage and bodies


async def test_usage_from_a_dotted_path_shorthand() -> None:
    app = ReplayUpstream(Reply(body=b'{"usage": {"total_tokens": 42}}'))
    result = await ok(make(app, usage_path="usage.total_tokens"))
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (0, 42)


async def test_usage_from_several_paths_including_list_indexes() -> None:
    body = b'{"meta": [{"in": 10, "out": "5"}]}'
    paths = {"prompt_tokens": "meta.0.in", "completion_tokens": "meta.0.out"}
    result = await ok(make(ReplayUpstream(Reply(body=body)), usage_path=paths))
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 5, 15)


async def test_without_usage_paths_usage_is_zero_tokens() -> None:
    app = ReplayUpstream(Reply(body=b'{"usage": {"total_tokens": 42}}'))
    assert (await ok(make(app))).usage.total_tokens == 0
    missing = await ok(make(ReplayUpstream(Reply(body=b"{}")), usage_path="usage.total"))
    assert missing.usage.total_tokens == 0


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (200, b'{"lat": 48.85}', {"lat": 48.85}),
        (200, b"[1, 2]", {"data": [1, 2]}),
        (200, b'"fine"', {"data": "fine"}),
        (200, b"lat,lon\n48.85,2.35\n", {"text": "lat,lon\n48.85,2.35\n"}),
        (201, b"\xff not utf-8", {"text": "\ufffd not utf-8"}),
        (204, b"", {}),
    ],
)
async def test_any_answer_comes_back_as_a_dict(
    status: int, payload: bytes, expected: dict[str, Any]
) -> None:
    result = await ok(make(ReplayUpstream(Reply(status=status, body=payload))))
    assert result.body == expected
    assert result.status == status


# --------------------------------------------------------------------------- streaming


def sse(*events: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in events]


async def collect(stream: UpstreamStream) -> list[Any]:
    return [orjson.loads(payload) async for payload in stream]


async def drain(stream: UpstreamStream, into: list[Any]) -> None:
    """Like :func:`collect`, but keeps what arrived before an exception."""
    async for payload in stream:
        into.append(orjson.loads(payload))


async def test_sse_stream_yields_each_data_payload() -> None:
    events = sse(
        b": keep-alive comment",
        b'event: partial\ndata: {"n": 1}',
        b'data: {"n": 2,\ndata:  "more": true}',  # one event over two data lines
        b"data: plain words",
        b"data: [3, 4]",
        b'data: {"n": 5, "usage": {"total": 9}}',
        b"data: [DONE]",
        b'data: {"never": "seen"}',
    )
    app = ReplayUpstream(Reply(body=events, headers={"content-type": "text/event-stream"}))
    adapter = make(
        app,
        path="/run",
        stream="sse",
        stream_path="/run/stream",
        stream_params={"live": True},
        usage_path="usage.total",
    )
    assert adapter.capabilities.streaming
    stream = await adapter.open_stream(call({"q": "x"}, stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    assert await collect(stream) == [
        {"n": 1},
        {"n": 2, "more": True},
        {"text": "plain words"},
        {"data": [3, 4]},
        {"n": 5, "usage": {"total": 9}},
    ]
    assert stream.usage is not None
    assert stream.usage.total_tokens == 9
    [seen] = app.seen
    assert seen.path == "/run/stream"
    assert seen.json() == {"q": "x", "live": True}
    assert seen.headers["accept"] == "text/event-stream"


async def test_sse_stream_without_done_just_ends() -> None:
    app = ReplayUpstream(Reply(body=[b'data: {"a": 1}\n', b'\ndata: {"a": 2}']))
    stream = await make(app, stream="sse").open_stream(call(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    assert await collect(stream) == [{"a": 1}, {"a": 2}]
    assert stream.usage is None


async def test_stream_that_breaks_off_raises_stream_interrupted() -> None:
    app = ReplayUpstream(Reply(body=sse(b'data: {"a": 1}'), break_after=True))
    adapter = make(app, stream="sse", key_in="query", key_name="key")
    stream = await adapter.open_stream(call(stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    seen: list[Any] = []
    with pytest.raises(StreamInterruptedError) as caught:
        await drain(stream, seen)
    assert seen == [{"a": 1}]
    assert_clean(str(caught.value))
    assert caught.value.__cause__ is None


async def test_stream_error_status_is_classified_and_unconfigured_streams_refused() -> None:
    app = ReplayUpstream(Reply(status=429, headers={"Retry-After": "3"}))
    failure = await make(app, stream="sse").open_stream(call(stream=True), SECRET, timeout=5)
    assert isinstance(failure, ProviderFailure)
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.rate_limit.retry_after_at == NOW + 3
    refused = await make(app).open_stream(call(stream=True), SECRET, timeout=5)
    assert isinstance(refused, ProviderFailure)
    assert refused.kind is FailureKind.BAD_REQUEST


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"key_in": "cookie"}, "key_in"),
        ({"key_name": "X API Key"}, "key_name"),
        ({"method": "FETCH"}, "method"),
        ({"base_url": "ftp://example.test"}, "base_url"),
        ({"base_url": "https://example.test/?key=1"}, "base_url"),
        ({"path": "v1/search"}, "path"),
        ({"path": "/v1/{city}"}, "path"),
        ({"paths": {"embeddings": "/e/{x}"}}, "paths.embeddings"),
        ({"status_map": {"5yx": "provider_error"}}, "status_map"),
        ({"status_map": {"503-500": "provider_error"}}, "status_map"),
        ({"status_map": {"429": "slow_down"}}, "status_map"),
        ({"body_rules": {" ": "invalid_key"}}, "body_rules"),
        ({"rate_limit_headers": {"reset_format": "unix"}}, "reset_format"),
        ({"rate_limit_headers": {"requests_limit": "bad header"}}, "rate_limit_headers"),
        ({"usage_path": "usage..total"}, "usage_path"),
        ({"extra_headers": {"authorization": "x"}}, "extra_headers"),
        ({"extra_headers": {"X-A": "a\r\nX-B: b"}}, "extra_headers"),
        ({"key_in": "query", "key_name": "k", "extra_query": {"k": "1"}}, "extra_query"),
        ({"capabilities": {"streaming": True}}, "capabilities"),
        ({"stream": "none", "stream_path": "/s"}, "stream_path"),
        ({"mode": "openai", "method": "GET"}, "method"),
        ({"keyname": "X-API-Key"}, "keyname"),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GenericHttpConfig.model_validate({"base_url": BASE, **fields})
    assert named in str(caught.value)


def test_config_defaults_resolve_by_mode() -> None:
    raw = GenericHttpConfig(base_url=BASE + "/")
    assert raw.base_url == BASE
    assert raw.effective_key_prefix() == "Bearer "
    assert not raw.streams
    assert not raw.effective_capabilities().list_models
    assert raw.effective_rate_limit_headers() is None
    assert "model" in raw.effective_strip_fields()
    query = GenericHttpConfig(base_url=BASE, key_in="query", key_name="Authorization")
    assert query.effective_key_prefix() == ""
    openai = GenericHttpConfig(base_url=BASE, mode="openai")
    assert openai.streams
    assert openai.effective_capabilities().embeddings
    assert openai.effective_strip_fields() == frozenset()
    headers = openai.effective_rate_limit_headers()
    assert headers is not None
    assert headers.reset_format == "duration"
    # Capabilities that do not mention streaming follow `stream` (the model defaults it on).
    claimed = GenericHttpConfig(base_url=BASE, capabilities={"embeddings": True})
    caps = claimed.effective_capabilities()
    assert caps.embeddings
    assert not caps.streaming


# --------------------------------------------------------------------------- openai-style


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
COMPLETION = b'{"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'


async def test_azure_openai_uses_the_api_key_header_deployment_path_and_api_version() -> None:
    app = ReplayUpstream(Reply(body=COMPLETION, headers={"x-ratelimit-remaining-requests": "9"}))
    adapter = azure_openai(
        "https://res.openai.azure.com/",
        deployments={"gpt-4o": "prod-gpt4o"},
        transport=ASGITransport(app),
        clock=lambda: NOW,
    )
    result = await adapter.send(call(CHAT, model="gpt-4o"), SECRET, timeout=5)
    assert isinstance(result, UpstreamSuccess)
    assert result.usage.total_tokens == 7
    assert result.rate_limit.requests_remaining == 9
    [seen] = app.seen
    assert seen.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert seen.params == {"api-version": ["2024-10-21"]}
    assert seen.headers["api-key"] == SECRET
    assert "authorization" not in seen.headers
    assert seen.json() == {"model": "prod-gpt4o", **CHAT}


async def test_azure_v1_api_and_openai_error_meanings() -> None:
    error = b'{"error": {"code": "content_filter", "message": "filtered"}}'
    app = ReplayUpstream(Reply(status=400, body=error), Reply(status=429))
    adapter = azure_openai(
        "https://res.openai.azure.com/openai", api_version=None, transport=ASGITransport(app)
    )
    failure = await adapter.send(call(CHAT, model="gpt-4o"), SECRET, timeout=5)
    assert isinstance(failure, ProviderFailure)
    assert failure.kind is FailureKind.CONTENT_POLICY
    assert app.seen[0].path == "/openai/v1/chat/completions"
    assert app.seen[0].params == {}
    throttled = await adapter.send(call(CHAT, model="gpt-4o"), SECRET, timeout=5)
    assert isinstance(throttled, ProviderFailure)
    assert throttled.kind is FailureKind.RATE_LIMITED


async def test_openai_mode_streams_with_usage_and_requires_done() -> None:
    chunks = sse(
        b'data: {"choices": [{"delta": {"content": "hi"}}]}',
        b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}',
        b"data: [DONE]",
    )
    app = ReplayUpstream(Reply(body=chunks), Reply(body=chunks[:1]))
    adapter = make(app, mode="openai", key_in="query", key_name="key", key_prefix="")
    stream = await adapter.open_stream(call(CHAT, model="m", stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    assert len(await collect(stream)) == 2
    assert stream.usage is not None
    assert stream.usage.total_tokens == 3
    sent = app.seen[0].json()
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert app.seen[0].path == "/chat/completions"
    short = await adapter.open_stream(call(CHAT, model="m", stream=True), SECRET, timeout=5)
    assert isinstance(short, UpstreamStream)
    with pytest.raises(StreamInterruptedError, match=r"\[DONE\]"):
        await collect(short)


async def test_openai_mode_stream_error_events_are_scrubbed() -> None:
    event = b'data: {"error": {"message": "key ' + SECRET.encode() + b' revoked"}}'
    app = ReplayUpstream(Reply(body=sse(event)))
    adapter = make(app, mode="openai", key_in="query", key_name="key")
    stream = await adapter.open_stream(call(CHAT, model="m", stream=True), SECRET, timeout=5)
    assert isinstance(stream, UpstreamStream)
    with pytest.raises(StreamInterruptedError) as caught:
        await collect(stream)
    assert_clean(caught.value.message)


async def test_list_models_by_mode() -> None:
    app = ReplayUpstream(Reply(body=b'{"data": [{"id": "a"}, {"id": "b"}]}'))
    openai = make(app, mode="openai", key_name="api-key")
    assert await openai.list_models(SECRET, timeout=5) == ["a", "b"]
    assert app.seen[0].path == "/models"
    assert app.seen[0].headers["api-key"] == SECRET
    raw = make(app, model_map={"geocode": "v2", "reverse": "v2r"})
    assert await raw.list_models(SECRET, timeout=5) == ["geocode", "reverse"]


def test_openai_compatible_factory() -> None:
    groq = openai_compatible(preset="groq", model_map={"fast": "llama-3.1-8b-instant"})
    assert isinstance(groq, OpenAIAdapter)
    assert groq.base_url == OPENAI_COMPATIBLE_PRESETS["groq"]
    assert groq.capabilities.chat
    assert not groq.capabilities.embeddings
    local = openai_compatible("http://gpu1:8000/v1/", extra_headers={"X-Title": "t"})
    assert local.base_url == "http://gpu1:8000/v1"
    with pytest.raises(ValueError, match=r"known presets: .*ollama"):
        openai_compatible(preset="nonesuch")
    with pytest.raises(ValueError, match="base_url"):
        openai_compatible()


# --------------------------------------------------------------------------- registry


def test_registry_builds_every_kind() -> None:
    assert set(known_kinds()) == {
        "openai",
        "openai_compatible",
        "azure_openai",
        "anthropic",
        "gemini",
        "generic",
    }
    assert isinstance(build_adapter("openai"), OpenAIAdapter)
    assert isinstance(build_adapter("openai_compatible", preset="ollama"), OpenAIAdapter)
    azure = build_adapter("azure_openai", base_url="https://r.openai.azure.com")
    assert isinstance(azure, GenericHttpAdapter)
    assert azure.config.key_name == "api-key"
    assert isinstance(build_adapter("anthropic", base_url="http://a.test"), AnthropicAdapter)
    assert isinstance(build_adapter("gemini"), GeminiAdapter)
    generic = build_adapter("generic", base_url=BASE, key_in="query", key_name="key")
    assert isinstance(generic, GenericHttpAdapter)
    assert generic.kind == "generic"
    config = GenericHttpConfig(base_url=BASE)
    from_config = build_adapter("generic", config=config)
    assert isinstance(from_config, GenericHttpAdapter)
    assert from_config.config is config
    from_mapping = build_adapter("generic", config={"base_url": BASE, "method": "get"})
    assert isinstance(from_mapping, GenericHttpAdapter)
    assert from_mapping.config.method == "GET"


def test_registry_errors_name_the_kind_or_the_option() -> None:
    with pytest.raises(ConfigurationError) as unknown:
        build_adapter("cohere")
    assert "'cohere'" in unknown.value.message
    assert all(kind in unknown.value.message for kind in known_kinds())
    assert unknown.value.param == "kind"
    with pytest.raises(ConfigurationError, match="base_urll"):
        build_adapter("openai", base_urll="http://x.test")
    with pytest.raises(ConfigurationError) as invalid:
        build_adapter("generic", base_url=BASE, key_in="cookie")
    assert invalid.value.param == "key_in"
    assert "key_in" in invalid.value.message
    with pytest.raises(ConfigurationError, match="extra_headers"):
        build_adapter("generic", base_url=BASE, extra_headers={"Authorization": "x"})
    with pytest.raises(ConfigurationError, match="either config or its fields"):
        build_adapter("generic", config={"base_url": BASE}, method="GET")
    with pytest.raises(ConfigurationError, match="known presets"):
        build_adapter("openai_compatible", preset="nonesuch")


# --------------------------------------------------------------------------- the canary


PIECE = 8


def assert_clean(text: str) -> None:
    """Neither the key nor any 8-character piece of it (as sent or URL-encoded)."""
    assert SECRET not in text
    for index in range(len(SECRET) - PIECE + 1):
        assert SECRET[index : index + PIECE] not in text, text


class HangingApi:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(30)


class CrashingApi:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ConnectionResetError(f"peer reset while serving {scope['query_string']!r}")


class CarelessTransport(HttpTransport):
    """A transport that (unlike ours) puts the whole URL into its errors."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        raise TransportError(f"connect to {url} failed (headers {dict(headers)})")

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        raise TransportError(f"connect to {url} failed")

    async def close(self) -> None:
        return None


def echo(status: int, text: str) -> Reply:
    return Reply(status=status, body=orjson.dumps({"error": {"message": text, "code": text}}))


QUERY_KEY = {"key_in": "query", "key_name": "api_key", "method": "GET", "stream": "sse"}


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (
            ReplayUpstream(echo(500, f"boom for {BASE}/?api_key={SECRET}")),
            FailureKind.PROVIDER_ERROR,
        ),
        (ReplayUpstream(echo(500, f"key {SECRET[:12]}... failed")), FailureKind.PROVIDER_ERROR),
        (ReplayUpstream(echo(503, f"url-encoded {SECRET.replace('-', '%2D')}")), None),
        (ReplayUpstream(echo(500, "ends with a cut key " + SECRET[:20])), None),
        (ReplayUpstream(echo(401, f"Incorrect key {SECRET[:6]}***{SECRET[-9:]}")), None),
        (HangingApi(), FailureKind.TIMEOUT),
        (CrashingApi(), FailureKind.CONNECTION),
    ],
)
async def test_canary_a_query_key_never_appears_in_failure_messages(
    app: Any, kind: FailureKind | None
) -> None:
    adapter = make(app, **QUERY_KEY)
    for attempt in (
        adapter.send(call({"q": "x"}), SECRET, timeout=0.2),
        adapter.open_stream(call({"q": "x"}, stream=True), SECRET, timeout=0.2),
    ):
        failure = await attempt
        assert isinstance(failure, ProviderFailure)
        if kind is not None:
            assert failure.kind is kind
        assert_clean(failure.message)
        assert_clean(str(failure.code))
        assert_clean(repr(failure))


async def test_canary_real_connection_failures_and_careless_transports() -> None:
    refused = GenericHttpAdapter(
        GenericHttpConfig(base_url="http://127.0.0.1:9", **QUERY_KEY),
        transport=AiohttpTransport(),
    )
    careless = GenericHttpAdapter(
        GenericHttpConfig(base_url=BASE, **QUERY_KEY), transport=CarelessTransport()
    )
    try:
        for adapter in (refused, careless):
            failure = await adapter.send(call({"q": "x"}), SECRET, timeout=2)
            assert isinstance(failure, ProviderFailure)
            assert failure.kind is FailureKind.CONNECTION
            assert_clean(failure.message)
            opened = await adapter.open_stream(call(stream=True), SECRET, timeout=2)
            assert isinstance(opened, ProviderFailure)
            assert_clean(opened.message)
        listed = await careless.list_models(SECRET, timeout=2)
        assert listed == []  # raw mode asks nobody
    finally:
        await refused.close()


def test_scrub_secret_covers_encodings_and_pieces() -> None:
    secret = "a+b/c=d-0123456789"
    assert scrub_secret(f"x {secret} y", secret) == "x [redacted] y"
    assert scrub_secret("x a%2Bb%2Fc%3Dd-0123456789 y", secret) == "x [redacted] y"
    assert scrub_secret("x a+b+c%3Dd y", secret) == "x a+b+c%3Dd y"
    assert scrub_secret("tail 01234567", secret) == "tail [redacted]"
    assert scrub_secret("short abc", "abc") == "short [redacted]"
    assert scrub_secret("nothing here", "") == "nothing here"
