"""The requests the OpenAI adapter sends validate against OpenAI's published OpenAPI spec.

Bodies are captured in process (ASGITransport and a recording ASGI app) and checked against
``CreateChatCompletionRequest``, ``CreateCompletionRequest`` and ``CreateEmbeddingRequest`` from
``../shared/specs/openai/openapi.yaml``. ``jsonschema`` is not a dependency, so a small validator
for the subset of OpenAPI/JSON Schema these schemas use lives here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import yaml
from apikeyrouter import ApiKeyRouter
from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream, UpstreamSuccess
from apikeyrouter.domain.models.request_context import Endpoint
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport, Message, Scope
from apikeyrouter.utils.validation import intent_from_openai

from ..spec_files import spec_path

SPEC_NAME = "openai/openapi.yaml"
SECRET = "sk-test-spec-0123456789abcdefghij"
CHAT = "CreateChatCompletionRequest"
COMPLETION = "CreateCompletionRequest"
EMBEDDING = "CreateEmbeddingRequest"

# --- a validator for the OpenAPI schema subset the request schemas use ------------------------

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``2 == 2.0`` but ``True`` is not ``1``."""
    if _TYPES["number"](a) and _TYPES["number"](b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


class SchemaValidator:
    """``$ref`` (local), ``allOf``/``anyOf``/``oneOf``, ``type`` (one or a list, ``null``),
    ``nullable``, ``enum``, ``required``, ``properties``, ``additionalProperties`` (false or a
    schema), ``items``, ``minItems``/``maxItems``, ``minimum``/``maximum``, ``maxLength``.
    Annotations (``description``, ``discriminator``, ``x-*``...) are ignored."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def schema(self, name: str) -> dict[str, Any]:
        return self.resolve(f"#/components/schemas/{name}")

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported: {ref}")
        node: Any = self._document
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
        return node

    def validate(self, value: Any, name: str) -> list[str]:
        return self.errors(value, self.schema(name), "$")

    def errors(self, value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
        if value is None and schema.get("nullable") is True:
            return []
        found: list[str] = []
        ref = schema.get("$ref")
        if isinstance(ref, str):
            found += self.errors(value, self.resolve(ref), path)
        for sub in schema.get("allOf", ()):
            found += self.errors(value, sub, path)
        for keyword in ("anyOf", "oneOf"):
            if keyword not in schema:
                continue
            results = [self.errors(value, sub, path) for sub in schema[keyword]]
            matches = sum(not errors for errors in results)
            if matches == 0:
                closest = min(results, key=len)  # the alternative the value nearly is
                found.append(
                    f"{path}: matches none of the {keyword} alternatives "
                    f"(closest: {'; '.join(closest)})"
                )
            elif keyword == "oneOf" and matches > 1:
                found.append(f"{path}: matches {matches} of the oneOf alternatives, not 1")
        if "type" in schema:
            allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_TYPES[t](value) for t in allowed):
                found.append(f"{path}: {type(value).__name__} is not {'/'.join(allowed)}")
                return found  # the remaining checks assume the type
        if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
            found.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
        if isinstance(value, dict):
            found += self._object(value, schema, path)
        elif isinstance(value, list):
            found += self._array(value, schema, path)
        elif _TYPES["number"](value):
            if "minimum" in schema and value < schema["minimum"]:
                found.append(f"{path}: {value} < minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                found.append(f"{path}: {value} > maximum {schema['maximum']}")
        elif isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{path}: longer than {schema['maxLength']}")
        return found

    def _object(self, value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
        found = [
            f"{path}: missing {name!r}" for name in schema.get("required", ()) if name not in value
        ]
        properties: Mapping[str, Any] = schema.get("properties") or {}
        for name, item in value.items():
            if name in properties:
                found += self.errors(item, properties[name], f"{path}.{name}")
                continue
            extra = schema.get("additionalProperties", True)
            if extra is False:
                found.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                found += self.errors(item, extra, f"{path}.{name}")
        return found

    def _array(self, value: list[Any], schema: Mapping[str, Any], path: str) -> list[str]:
        found = []
        if len(value) < schema.get("minItems", 0):
            found.append(f"{path}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", math.inf):
            found.append(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                found += self.errors(item, items, f"{path}[{index}]")
        return found


@pytest.fixture(scope="module")
def validator() -> SchemaValidator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the file is ~3 MB
    with spec_path(SPEC_NAME).open("rb") as handle:
        document = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader
    assert isinstance(document, dict)
    return SchemaValidator(document)


def assert_valid(validator: SchemaValidator, body: dict[str, Any], name: str) -> None:
    errors = validator.validate(body, name)
    assert errors == [], f"{name} rejects the body:\n" + "\n".join(errors)


# --- capturing what the adapter sends ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


_CHAT_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
_COMPLETION_REPLY = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"index": 0, "text": "ok", "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}
_EMBEDDING_REPLY = {
    "object": "list",
    "model": "text-embedding-3-small",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}


def _sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"


_STREAM_REPLY = _sse(
    {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}],
    },
    {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    },
)


@dataclass
class RecordingUpstream:
    """A tiny OpenAI stand-in that keeps every request and answers with canned bodies."""

    captured: list[Captured] = field(default_factory=list)

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        body = orjson.loads(raw)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.captured.append(Captured(scope["method"], scope["path"], headers, body))
        content_type = b"application/json"
        if scope["path"].endswith("/chat/completions") and body.get("stream"):
            payload, content_type = _STREAM_REPLY, b"text/event-stream"
        elif scope["path"].endswith("/chat/completions"):
            payload = orjson.dumps(_CHAT_REPLY)
        elif scope["path"].endswith("/completions"):
            payload = orjson.dumps(_COMPLETION_REPLY)
        else:
            payload = orjson.dumps(_EMBEDDING_REPLY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    @property
    def last(self) -> Captured:
        return self.captured[-1]


@pytest.fixture
def upstream() -> RecordingUpstream:
    return RecordingUpstream()


@pytest.fixture
async def adapter(upstream: RecordingUpstream) -> AsyncIterator[OpenAIAdapter]:
    instance = OpenAIAdapter("http://openai.test/v1", transport=ASGITransport(upstream))
    yield instance
    await instance.close()


async def send(adapter: OpenAIAdapter, body: dict[str, Any], endpoint: Endpoint) -> None:
    result = await adapter.send(intent_from_openai(body, endpoint), SECRET, 5.0)
    assert isinstance(result, UpstreamSuccess), result


async def stream(adapter: OpenAIAdapter, body: dict[str, Any]) -> list[bytes]:
    opened = await adapter.open_stream(intent_from_openai(body), SECRET, 5.0)
    assert isinstance(opened, UpstreamStream), opened
    return [payload async for payload in opened]


def assert_openai_call(captured: Captured, path: str) -> None:
    assert captured.method == "POST"
    assert captured.path == path
    assert captured.headers["authorization"] == f"Bearer {SECRET}"
    assert captured.headers["content-type"] == "application/json"


# --- the bodies ---------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

PLAIN_CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi."},
    ],
}

RICH_CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "Use tools when useful."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the weather where this photo was taken?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/paris.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": 21}'},
        {"role": "user", "content": "And in Fahrenheit?", "name": "alice"},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "strict": True,
            "schema": {"type": "object", "properties": {"temp_f": {"type": "number"}}},
        },
    },
    "temperature": 0.3,
    "top_p": 0.9,
    "max_completion_tokens": 200,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "n": 1,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "user": "user-1234",
    "metadata": {"team": "search"},
    "store": False,
    "service_tier": "auto",
    # Fields the spec does not know (newer API versions, vendor extensions) pass through.
    "x_trace_id": "trace-1",
    "vendor_options": {"priority": "high", "tags": ["a", "b"]},
}

CHAT_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": PLAIN_CHAT,
    "rich": RICH_CHAT,
    "tool_choice_auto": {**PLAIN_CHAT, "tools": [WEATHER_TOOL], "tool_choice": "auto"},
    "tool_choice_required": {**PLAIN_CHAT, "tools": [WEATHER_TOOL], "tool_choice": "required"},
    "json_object": {**PLAIN_CHAT, "response_format": {"type": "json_object"}, "max_tokens": 50},
    "text_format_null_stop": {**PLAIN_CHAT, "response_format": {"type": "text"}, "stop": None},
    "stop_string": {**PLAIN_CHAT, "stop": "END", "temperature": None},
}


# --- tests: what the adapter sends ------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CHAT_VARIANTS))
async def test_chat_requests_match_the_spec(
    validator: SchemaValidator,
    adapter: OpenAIAdapter,
    upstream: RecordingUpstream,
    variant: str,
) -> None:
    body = CHAT_VARIANTS[variant]
    await send(adapter, body, Endpoint.CHAT)
    sent = upstream.last
    assert_openai_call(sent, "/v1/chat/completions")
    assert sent.body == body  # passed through untouched, unknown fields included
    assert "stream" not in sent.body
    assert_valid(validator, sent.body, CHAT)


@pytest.mark.parametrize("variant", ["plain", "rich"])
async def test_streaming_chat_requests_ask_for_usage_and_match_the_spec(
    validator: SchemaValidator,
    adapter: OpenAIAdapter,
    upstream: RecordingUpstream,
    variant: str,
) -> None:
    body = {**CHAT_VARIANTS[variant], "stream": True}
    payloads = await stream(adapter, body)
    assert len(payloads) == 2
    sent = upstream.last
    assert_openai_call(sent, "/v1/chat/completions")
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent.body.items() if k != "stream_options"} == body
    assert_valid(validator, sent.body, CHAT)


async def test_streaming_keeps_the_callers_stream_options(
    validator: SchemaValidator, adapter: OpenAIAdapter, upstream: RecordingUpstream
) -> None:
    body = {
        **PLAIN_CHAT,
        "stream": True,
        "stream_options": {"include_usage": False, "include_obfuscation": False},
    }
    await stream(adapter, body)
    options = upstream.last.body["stream_options"]
    assert options == {"include_usage": True, "include_obfuscation": False}
    assert_valid(validator, upstream.last.body, CHAT)


async def test_router_stream_sends_a_streaming_request_that_matches_the_spec(
    validator: SchemaValidator, upstream: RecordingUpstream
) -> None:
    router = ApiKeyRouter()
    await router.register_provider(
        "openai", OpenAIAdapter("http://openai.test/v1", transport=ASGITransport(upstream))
    )
    await router.register_key(SECRET, "openai")
    chunks = [chunk async for chunk in router.stream(dict(PLAIN_CHAT))]  # no "stream" given
    await router.close()
    assert chunks[-1]["usage"]["total_tokens"] == 4
    sent = upstream.last
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert_valid(validator, sent.body, CHAT)


async def test_model_map_renames_and_still_matches_the_spec(
    validator: SchemaValidator, upstream: RecordingUpstream
) -> None:
    adapter = OpenAIAdapter(
        "http://openai.test/v1",
        transport=ASGITransport(upstream),
        model_map={"house-model": "gpt-4o-mini"},
    )
    await send(adapter, {**PLAIN_CHAT, "model": "house-model"}, Endpoint.CHAT)
    await adapter.close()
    assert upstream.last.body["model"] == "gpt-4o-mini"
    assert_valid(validator, upstream.last.body, CHAT)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5},
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": ["one", "two"],
            "temperature": 0,
            "stop": ["\n"],
            "echo": False,
            "n": 2,
            "best_of": 3,
            "suffix": None,
            "user": "user-1",
        },
        {"model": "davinci-002", "prompt": [1212, 318, 257], "logprobs": 2, "seed": 1},
    ],
    ids=["string", "list", "tokens"],
)
async def test_legacy_completion_requests_match_the_spec(
    validator: SchemaValidator,
    adapter: OpenAIAdapter,
    upstream: RecordingUpstream,
    body: dict[str, Any],
) -> None:
    await send(adapter, body, Endpoint.COMPLETIONS)
    sent = upstream.last
    assert_openai_call(sent, "/v1/completions")
    assert sent.body == body
    assert_valid(validator, sent.body, COMPLETION)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "text-embedding-3-small", "input": "The quick brown fox"},
        {
            "model": "text-embedding-3-small",
            "input": ["first", "second"],
            "encoding_format": "float",
            "dimensions": 256,
            "user": "user-1",
        },
    ],
    ids=["string", "list"],
)
async def test_embedding_requests_match_the_spec(
    validator: SchemaValidator,
    adapter: OpenAIAdapter,
    upstream: RecordingUpstream,
    body: dict[str, Any],
) -> None:
    await send(adapter, body, Endpoint.EMBEDDINGS)
    sent = upstream.last
    assert_openai_call(sent, "/v1/embeddings")
    assert sent.body == body
    assert_valid(validator, sent.body, EMBEDDING)


# --- tests: the validator itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "body", "complaint"),
    [
        (CHAT, {"model": "gpt-4o"}, "missing 'messages'"),
        (CHAT, {"model": "gpt-4o", "messages": []}, "fewer than 1 items"),
        (CHAT, {"model": "gpt-4o", "messages": [{"role": "robot", "content": "hi"}]}, "oneOf"),
        (CHAT, {**PLAIN_CHAT, "stream_options": "yes"}, "$.stream_options"),
        (CHAT, {**PLAIN_CHAT, "temperature": "hot"}, "$.temperature"),
        (CHAT, {**PLAIN_CHAT, "temperature": 3}, "$.temperature"),
        (CHAT, {**PLAIN_CHAT, "n": 1.5}, "$.n"),
        (CHAT, {**PLAIN_CHAT, "stream": "true"}, "$.stream"),
        (CHAT, {**PLAIN_CHAT, "tools": [{"type": "function", "function": {}}]}, "$.tools[0]"),
        (CHAT, {**PLAIN_CHAT, "tool_choice": "sometimes"}, "$.tool_choice"),
        (CHAT, {**PLAIN_CHAT, "response_format": {"type": "yaml"}}, "$.response_format"),
        (CHAT, {**PLAIN_CHAT, "stop": ["a", "b", "c", "d", "e"]}, "$.stop"),
        (COMPLETION, {"model": "gpt-3.5-turbo-instruct", "prompt": {"text": "hi"}}, "$.prompt"),
        (EMBEDDING, {"model": "text-embedding-3-small"}, "missing 'input'"),
        (EMBEDDING, {"model": "text-embedding-3-small", "input": "x", "extra": 1}, "'extra'"),
        (EMBEDDING, {"model": "text-embedding-3-small", "input": []}, "$.input"),
        (EMBEDDING, {"model": "x", "input": "y", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_the_validator_rejects_wrong_bodies(
    validator: SchemaValidator, schema: str, body: dict[str, Any], complaint: str
) -> None:
    errors = validator.validate(body, schema)
    assert errors, f"{schema} should reject {body!r}"
    assert any(complaint in error for error in errors), errors


def test_the_validator_handles_refs_nullable_and_json_types(validator: SchemaValidator) -> None:
    assert validator.validate({**PLAIN_CHAT, "stop": None, "seed": None}, CHAT) == []
    assert validator.validate({**PLAIN_CHAT, "logprobs": 1}, CHAT) != []  # 1 is not a boolean
    assert validator.validate({**PLAIN_CHAT, "max_tokens": True}, CHAT) != []  # nor an integer
    assert validator.errors(None, {"type": "string"}, "$") == ["$: NoneType is not string"]
    assert validator.errors(2, {"enum": [2.0]}, "$") == []
    assert validator.errors(True, {"enum": [1]}, "$") != []
    with pytest.raises(ValueError, match="local"):
        validator.resolve("other.yaml#/components/schemas/X")
