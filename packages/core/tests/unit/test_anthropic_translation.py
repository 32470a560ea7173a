"""OpenAI chat <-> Anthropic Messages translation, checked against documented wire shapes.

Generated request bodies are also validated against the Messages create schema from the
published OpenAPI spec (a small JSON-schema subset checker; ``jsonschema`` is not installed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from apikeyrouter.infrastructure.adapters.anthropic_stream import (
    AnthropicChunkTranslator,
    AnthropicStreamError,
    parse_sse_data,
)
from apikeyrouter.infrastructure.adapters.anthropic_translation import (
    from_anthropic_response,
    map_stop_reason,
    to_anthropic_request,
    usage_from_anthropic,
)
from apikeyrouter.utils.exceptions import InvalidRequestError

from ..spec_files import spec_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
SPEC_NAME = "anthropic/anthropic-stainless-2024-11.prism.json"
MODEL = "claude-3-5-sonnet-20241022"
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "The city and state, e.g. San Francisco, CA",
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}


def load(name: str) -> dict[str, Any]:
    value = json.loads((FIXTURES / name).read_text())
    assert isinstance(value, dict)
    return value


def translate(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return to_anthropic_request(body, MODEL, **kwargs)


# --------------------------------------------------------------------------- schema checker


class SchemaChecker:
    """Validates JSON against the JSON-schema subset the Anthropic spec uses.

    Handles ``$ref``, ``type``, ``required``, ``properties``, ``additionalProperties``,
    ``items``, ``anyOf``/``oneOf`` (by discriminator when present), ``allOf``, ``enum``,
    ``const``, numeric and length bounds, and ``pattern``.
    """

    _TYPES: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "array": (list,),
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "null": (type(None),),
    }

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def schema(self, name: str) -> dict[str, Any]:
        value = self._document["components"]["schemas"][name]
        assert isinstance(value, dict)
        return value

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self._document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
        return node

    def errors(self, value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
        if "$ref" in schema:
            return self.errors(value, self._resolve(schema["$ref"]), path)
        problems: list[str] = []
        problems += self._type_errors(value, schema, path)
        if problems:
            return problems
        for sub in schema.get("allOf", []):
            problems += self.errors(value, sub, path)
        if "anyOf" in schema or "oneOf" in schema:
            problems += self._choice_errors(value, schema, path)
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{path}: {value!r} not in {schema['enum']}")
        if "const" in schema and value != schema["const"]:
            problems.append(f"{path}: {value!r} != {schema['const']!r}")
        problems += self._bound_errors(value, schema, path)
        if isinstance(value, dict):
            problems += self._object_errors(value, schema, path)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                problems += self.errors(item, schema["items"], f"{path}[{index}]")
        return problems

    def _type_errors(self, value: Any, schema: dict[str, Any], path: str) -> list[str]:
        declared = schema.get("type")
        if declared is None:
            return []
        names = declared if isinstance(declared, list) else [declared]
        for name in names:
            expected = self._TYPES[name]
            if isinstance(value, bool) and bool not in expected:
                continue
            if isinstance(value, expected):
                return []
        return [f"{path}: expected {declared}, got {type(value).__name__}"]

    def _choice_errors(self, value: Any, schema: dict[str, Any], path: str) -> list[str]:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        discriminator = schema.get("discriminator")
        if discriminator and isinstance(value, dict):
            tag = value.get(discriminator["propertyName"])
            target = discriminator["mapping"].get(tag)
            if target is None:
                return [f"{path}: unknown {discriminator['propertyName']} {tag!r}"]
            return self.errors(value, {"$ref": target}, path)
        if any(not self.errors(value, option, path) for option in options):
            return []
        return [f"{path}: matches none of the allowed shapes"]

    def _bound_errors(self, value: Any, schema: dict[str, Any], path: str) -> list[str]:
        problems: list[str] = []
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(f"{path}: {value} < {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(f"{path}: {value} > {schema['maximum']}")
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                problems.append(f"{path}: shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"{path}: longer than {schema['maxLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                problems.append(f"{path}: does not match {schema['pattern']}")
        return problems

    def _object_errors(self, value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
        problems = [
            f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value
        ]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += self.errors(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}: unexpected key {key!r}")
        return problems


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return SchemaChecker(json.loads(spec_path(SPEC_NAME).read_text()))


def assert_valid_request(checker: SchemaChecker, request: dict[str, Any]) -> None:
    problems = checker.errors(request, checker.schema("CreateMessageParams"))
    assert problems == []


def test_schema_checker_catches_bad_requests(checker: SchemaChecker) -> None:
    schema = checker.schema("CreateMessageParams")
    assert any("max_tokens" in p for p in checker.errors({"model": MODEL, "messages": []}, schema))
    bad_role = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}
    assert checker.errors(bad_role, schema)
    bad_block = {
        "model": MODEL,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "text"}]}],
    }
    assert checker.errors(bad_block, schema)
    assert checker.errors({**bad_role, "temperature": 1.5}, schema)


# --------------------------------------------------------------------------- requests


def test_system_and_developer_messages_are_lifted(checker: SchemaChecker) -> None:
    request = translate(
        {
            "model": "x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "Hello"},
            ],
        }
    )
    assert request["system"] == "Be brief.\n\nUse French."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert request["model"] == MODEL
    assert "stream" not in request
    assert_valid_request(checker, request)


def test_consecutive_same_role_messages_are_merged(checker: SchemaChecker) -> None:
    request = translate(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": "four"},
                {"role": "user", "content": "five"},
            ]
        }
    )
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in request["messages"][0]["content"]] == ["one", "two"]
    assert [b["text"] for b in request["messages"][1]["content"]] == ["three", "four"]
    assert_valid_request(checker, request)


def test_empty_messages_are_dropped_before_merging() -> None:
    request = translate(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "b"},
            ]
        }
    )
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("body", "default", "expected"),
    [
        ({}, 4096, 4096),
        ({}, 1000, 1000),
        ({"max_tokens": 77}, 4096, 77),
        ({"max_completion_tokens": 88}, 4096, 88),
        ({"max_tokens": 77, "max_completion_tokens": 88}, 4096, 88),
        ({"max_tokens": 0}, 512, 512),
    ],
)
def test_max_tokens_defaulted(body: dict[str, Any], default: int, expected: int) -> None:
    request = translate(
        {"messages": [{"role": "user", "content": "hi"}], **body}, default_max_tokens=default
    )
    assert request["max_tokens"] == expected


def test_sampling_stop_user_and_stream(checker: SchemaChecker) -> None:
    request = translate(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-123",
        },
        stream=True,
    )
    assert request["temperature"] == 1.0  # OpenAI allows 2.0; Anthropic tops out at 1.0
    assert request["top_p"] == 0.9
    assert request["stop_sequences"] == ["END"]
    assert request["metadata"] == {"user_id": "user-123"}
    assert request["stream"] is True
    assert_valid_request(checker, request)
    listed = translate({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b"]})
    assert listed["stop_sequences"] == ["a", "b"]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tools_and_tool_choice(
    checker: SchemaChecker, tool_choice: Any, parallel: bool | None, expected: Any
) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER_TOOL],
    }
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    request = translate(body)
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert request.get("tool_choice") == expected
    if tool_choice != "none":  # {"type": "none"} is newer than the 2024-11 spec snapshot
        assert_valid_request(checker, request)


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "ping"}}
    request = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert request["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_tool_conversation_matches_documented_request(checker: SchemaChecker) -> None:
    body = {
        "model": "claude",
        "max_tokens": 1024,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "system", "content": "You are a helpful weather assistant."},
            {"role": "user", "content": "What is the weather like in San Francisco?"},
            {
                "role": "assistant",
                "content": "I'll check the current weather in San Francisco for you.",
                "tool_calls": [
                    {
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "San Francisco, CA", "unit": "celsius"}',
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                "content": "15 degrees",
            },
        ],
    }
    request = translate(body)
    assert request == load("request_tool_use.json")
    assert_valid_request(checker, request)


def test_consecutive_tool_results_merge_into_one_user_turn(checker: SchemaChecker) -> None:
    calls = [
        {"id": f"toolu_{i}", "type": "function", "function": {"name": "f", "arguments": ""}}
        for i in range(2)
    ]
    request = translate(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "toolu_0", "content": "a"},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_1",
                    "content": [{"type": "text", "text": "b"}],
                },
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        }
    )
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assistant, results = request["messages"][1]["content"], request["messages"][2]["content"]
    assert [b["input"] for b in assistant] == [{}, {}]
    assert results == [
        {"type": "tool_result", "tool_use_id": "toolu_0", "content": "a"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "b"},
        {"type": "text", "text": "thanks"},
    ]
    assert_valid_request(checker, request)


def test_images_become_image_blocks(checker: SchemaChecker) -> None:
    inline = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": f"data:image/png;base64,{PNG_B64}",
                                "detail": "low",
                            },
                        },
                    ],
                }
            ]
        }
    )
    assert inline["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
    }
    assert_valid_request(checker, inline)
    remote = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}}
                    ],
                }
            ]
        }
    )
    # URL sources are newer than the 2024-11 spec snapshot, so this one is checked by shape only.
    assert remote["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}}
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[1]"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]},
            "tools.0",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": "sometimes",
            },
            "tool_choice",
        ),
    ],
)
def test_untranslatable_requests_raise(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        translate(body)
    assert info.value.param == param


# --------------------------------------------------------------------------- responses


def test_text_response_with_cache_usage() -> None:
    body = from_anthropic_response(load("message_text.json"), "fallback", 1700000000)
    assert body["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 2095 + 100 + 1800,
        "completion_tokens": 503,
        "total_tokens": 2095 + 100 + 1800 + 503,
        "prompt_tokens_details": {"cached_tokens": 1800},
    }


def test_tool_use_response_becomes_tool_calls() -> None:
    body = from_anthropic_response(load("message_tool_use.json"), MODEL, 0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert (
        choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    )
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }
    assert body["usage"]["prompt_tokens"] == 384
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_tool_only_response_has_null_content() -> None:
    payload = load("message_tool_use.json")
    payload["content"] = payload["content"][1:]
    body = from_anthropic_response(payload, MODEL, 0)
    assert body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_stop_reason_mapping(reason: str | None, expected: str | None) -> None:
    assert map_stop_reason(reason) == expected


def test_max_tokens_response() -> None:
    body = from_anthropic_response(load("message_max_tokens.json"), MODEL, 0)
    assert body["choices"][0]["finish_reason"] == "length"


def test_usage_tolerates_missing_fields() -> None:
    assert usage_from_anthropic(None).total_tokens == 0
    usage = usage_from_anthropic({"input_tokens": 3, "output_tokens": 4})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 4, 7)


# --------------------------------------------------------------------------- stream events


def events(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_bytes().splitlines()
    return [e for e in (parse_sse_data(line) for line in lines) if e is not None]


def run_translator(name: str) -> tuple[list[dict[str, Any]], AnthropicChunkTranslator]:
    translator = AnthropicChunkTranslator("fallback", 123)
    chunks: list[dict[str, Any]] = []
    for event in events(name):
        chunks.extend(translator.translate(event))
    return chunks, translator


def assert_well_formed(chunks: list[dict[str, Any]]) -> None:
    """What an OpenAI client expects: one id, role first, finish before a final usage chunk."""
    assert len({c["id"] for c in chunks}) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        orjson.dumps(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == []
    assert set(chunks[-1]["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[-1] is not None
    assert all(f is None for f in finishes[:-1])


def test_text_stream_translation() -> None:
    chunks, translator = run_translator("stream_text.sse")
    assert_well_formed(chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "Hello!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[0]["model"] == MODEL
    assert chunks[0]["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    assert chunks[-1]["usage"]["prompt_tokens"] == 25
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    assert translator.finished
    assert translator.usage is not None
    assert translator.usage.total_tokens == 40


def test_tool_use_stream_translation() -> None:
    chunks, _ = run_translator("stream_tool_use.sse")
    assert_well_formed(chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(call["index"] == 0 for call in calls)
    assert all(set(call) == {"index", "function"} for call in calls[1:])
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 89


def test_error_event_raises() -> None:
    translator = AnthropicChunkTranslator(MODEL, 0)
    *before, error = events("stream_error_midway.sse")
    for event in before:
        translator.translate(event)
    with pytest.raises(AnthropicStreamError) as info:
        translator.translate(error)
    assert info.value.error_type == "overloaded_error"
    assert info.value.message == "Overloaded"


def test_non_data_lines_are_ignored() -> None:
    assert parse_sse_data(b"event: ping") is None
    assert parse_sse_data(b"data: not json") is None
    assert parse_sse_data(b'data: {"type": "ping"}') == {"type": "ping"}
