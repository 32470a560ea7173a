"""OpenAI chat/embeddings <-> Gemini translation, checked against documented wire shapes."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from apikeyrouter.infrastructure.adapters.gemini_stream import (
    GeminiChunkTranslator,
    GeminiStreamError,
    parse_sse_payload,
)
from apikeyrouter.infrastructure.adapters.gemini_translation import (
    FOREIGN_THOUGHT_SIGNATURE,
    from_gemini_embedding_response,
    from_gemini_response,
    map_finish_reason,
    strip_model_prefix,
    to_gemini_embedding_request,
    to_gemini_request,
    usage_from_gemini,
)
from apikeyrouter.utils.exceptions import InvalidRequestError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"

TEMPERATURE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_temperature",
        "description": "Gets the current temperature for a given location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city name, e.g. San Francisco"}
            },
            "required": ["location"],
        },
    },
}


def load(name: str) -> dict[str, Any]:
    value = json.loads((FIXTURES / name).read_text())
    assert isinstance(value, dict)
    return value


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- requests


def test_function_calling_conversation_matches_documented_request() -> None:
    body = {
        "model": "gemini-2.0-flash",
        "temperature": 0.5,
        "max_tokens": 256,
        "stop": "END",
        "tools": [TEMPERATURE_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_current_temperature"}},
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            user("What's the temperature in London?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {
                            "name": "get_current_temperature",
                            "arguments": '{"location": "London"}',
                        },
                        "extra_content": {"google": {"thought_signature": "Q2lnLXNpZ25hdHVyZS0x"}},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_0",
                "content": '{"temperature": 15, "unit": "celsius"}',
            },
        ],
    }
    assert to_gemini_request(body) == load("request_function_calling.json")


def test_roles_system_and_merging() -> None:
    request = to_gemini_request(
        {
            "messages": [
                {"role": "developer", "content": "Rule one."},
                user("a"),
                user("b"),
                {"role": "system", "content": [{"type": "text", "text": "Rule two."}]},
                {"role": "assistant", "content": "c"},
                {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
            ]
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Rule one.\n\nRule two."}]}
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
    ]
    assert "generationConfig" not in request
    assert "tools" not in request


def test_generation_config() -> None:
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "temperature": 1.2,
            "top_p": 0.8,
            "max_completion_tokens": 99,
            "max_tokens": 5,
            "stop": ["x", "y"],
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "response_format": {"type": "json_object"},
        }
    )
    assert request["generationConfig"] == {
        "temperature": 1.2,
        "topP": 0.8,
        "maxOutputTokens": 99,
        "stopSequences": ["x", "y"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
    }


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
    )
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        ),
        (None, None),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    body: dict[str, Any] = {"messages": [user("hi")], "tools": [TEMPERATURE_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    request = to_gemini_request(body)
    assert request.get("toolConfig") == expected
    [declaration] = request["tools"][0]["functionDeclarations"]
    assert declaration["name"] == "get_current_temperature"
    assert declaration["parametersJsonSchema"] == TEMPERATURE_TOOL["function"]["parameters"]  # type: ignore[index]


def test_images_become_inline_data_or_file_data() -> None:
    request = to_gemini_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/cat.png?size=2"},
                        },
                    ],
                }
            ]
        }
    )
    assert request["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"fileData": {"fileUri": "https://x.test/cat.png?size=2", "mimeType": "image/png"}},
    ]


def test_tool_result_that_is_not_json_is_wrapped() -> None:
    call = {"id": "abc", "type": "function", "function": {"name": "lookup", "arguments": ""}}
    request = to_gemini_request(
        {
            "messages": [
                user("go"),
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "abc", "content": "sunny"},
                {"role": "tool", "tool_call_id": "zzz", "name": "other", "content": "[1, 2]"},
            ]
        }
    )
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "lookup", "args": {}},
                "thoughtSignature": FOREIGN_THOUGHT_SIGNATURE,  # the history has none
            }
        ],
    }
    assert request["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"result": "sunny"}}},
        {"functionResponse": {"name": "other", "response": {"result": [1, 2]}}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            "messages.0.tool_call_id",
        ),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "a", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"messages": [user("x")], "tools": [{"type": "retrieval"}]}, "tools.0"),
        ({"messages": [user("x")], "tools": [TEMPERATURE_TOOL], "tool_choice": 3}, "tool_choice"),
    ],
)
def test_untranslatable_requests_raise(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_gemini_request(body)
    assert info.value.param == param


# --------------------------------------------------------------------------- responses


def test_text_response() -> None:
    body = from_gemini_response(load("generate_text.json"), "gemini-x", 1700000000, "fallback")
    assert body["id"] == "mAitaLmkHPPlz7IPvtfUqQ4"
    assert body["object"] == "chat.completion"
    assert body["model"] == "gemini-2.5-flash"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "AI learns patterns from data to make predictions.",
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 32,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }


def test_function_call_response_gets_stable_ids() -> None:
    payload = load("generate_function_call.json")
    body = from_gemini_response(payload, "gemini-x", 0, "chatcmpl-1")
    assert body["id"] == "chatcmpl-1"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_0", "call_1"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"location": "London"},
        {"location": "Paris"},
    ]
    # Parallel calls: Gemini signs the first only, and so does the translation.
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "Q2lnLXBhcmFsbGVsLTE="}}
    assert "extra_content" not in calls[1]
    again = from_gemini_response(payload, "gemini-x", 0, "chatcmpl-2")
    assert again["choices"][0]["message"]["tool_calls"] == calls


def test_a_reply_kept_in_the_history_hands_gemini_its_signatures_back_unchanged() -> None:
    reply = from_gemini_response(load("generate_function_call.json"), "gemini-x", 0, "c")
    message = reply["choices"][0]["message"]
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 15}'}
        for call in message["tool_calls"]
    ]
    request = to_gemini_request({"messages": [user("Weather?"), message, *results]})
    sent = load("generate_function_call.json")["candidates"][0]["content"]["parts"]
    assert request["contents"][1] == {"role": "model", "parts": sent}


def test_only_the_first_call_of_a_step_without_any_signature_gets_the_stand_in() -> None:
    def calls(*signatures: str | None) -> dict[str, Any]:
        tool_calls = []
        for n, signature in enumerate(signatures):
            call: dict[str, Any] = {
                "id": f"c{n}",
                "type": "function",
                "function": {"name": f"f{n}", "arguments": "{}"},
            }
            if signature is not None:
                call["extra_content"] = {"google": {"thought_signature": signature}}
            tool_calls.append(call)
        return {"role": "assistant", "content": None, "tool_calls": tool_calls}

    def signatures(message: dict[str, Any]) -> list[str | None]:
        request = to_gemini_request({"messages": [user("go"), message]})
        return [part.get("thoughtSignature") for part in request["contents"][1]["parts"]]

    assert signatures(calls(None, None)) == [FOREIGN_THOUGHT_SIGNATURE, None]
    assert signatures(calls("c2ln", None)) == ["c2ln", None]
    assert signatures(calls("c2ln", "c2lnMg==")) == ["c2ln", "c2lnMg=="]


@pytest.mark.parametrize(
    ("name", "finish"),
    [
        ("generate_max_tokens.json", "length"),
        ("generate_safety.json", "content_filter"),
        ("generate_blocked_prompt.json", "content_filter"),
    ],
)
def test_finish_reasons_from_fixtures(name: str, finish: str) -> None:
    body = from_gemini_response(load(name), "gemini-x", 0, "id")
    assert body["choices"][0]["finish_reason"] == finish
    assert isinstance(body["choices"][0]["message"]["content"], str)


@pytest.mark.parametrize(
    ("reason", "tools", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        (None, False, None),
    ],
)
def test_finish_reason_mapping(reason: str | None, tools: bool, expected: str | None) -> None:
    assert map_finish_reason(reason, tools) == expected


def test_multiple_candidates_become_choices() -> None:
    payload = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
            {
                "content": {"parts": [{"text": "b", "thought": False}]},
                "finishReason": "STOP",
                "index": 1,
            },
            {
                "content": {"parts": [{"text": "hidden", "thought": True}, {"text": "c"}]},
                "index": 2,
            },
        ]
    }
    body = from_gemini_response(payload, "m", 0, "id")
    assert [c["message"]["content"] for c in body["choices"]] == ["a", "b", "c"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]


def test_usage_handles_string_counts_and_absence() -> None:
    assert usage_from_gemini(None).total_tokens == 0
    usage = usage_from_gemini({"promptTokenCount": "5", "candidatesTokenCount": 3})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 3, 8)


def test_model_prefix_is_stripped() -> None:
    assert strip_model_prefix("models/gemini-2.0-flash") == "gemini-2.0-flash"
    assert strip_model_prefix("gemini-2.0-flash") == "gemini-2.0-flash"


# --------------------------------------------------------------------------- embeddings


def test_single_embedding_round_trip() -> None:
    method, request = to_gemini_embedding_request(
        {"input": "hello", "dimensions": 4}, "text-embedding-004"
    )
    assert method == "embedContent"
    assert request == {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4}
    body = from_gemini_embedding_response(load("embed_content.json"), "text-embedding-004")
    assert body["object"] == "list"
    assert body["model"] == "text-embedding-004"
    assert body["data"] == [
        {
            "object": "embedding",
            "index": 0,
            "embedding": [0.013168517, -0.00871193, -0.046782672, 0.00069969177],
        }
    ]
    assert body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_batch_embedding_round_trip() -> None:
    method, request = to_gemini_embedding_request({"input": ["a", "b"]}, "text-embedding-004")
    assert method == "batchEmbedContents"
    assert request == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
        ]
    }
    body = from_gemini_embedding_response(load("batch_embed_contents.json"), "m")
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == [0.4, 0.5, 0.6]


def test_base64_embeddings_are_little_endian_float32() -> None:
    body = from_gemini_embedding_response(load("batch_embed_contents.json"), "m", "base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == pytest.approx((0.1, 0.2, 0.3))


@pytest.mark.parametrize("value", [[1, 2, 3], [[1, 2]], [], None, ["a", 1]])
def test_token_array_inputs_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidRequestError):
        to_gemini_embedding_request({"input": value}, "m")


# --------------------------------------------------------------------------- stream slices


def slices(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_bytes().splitlines()
    return [p for p in (parse_sse_payload(line) for line in lines) if p is not None]


def run_translator(name: str) -> tuple[list[dict[str, Any]], GeminiChunkTranslator]:
    translator = GeminiChunkTranslator("gemini-x", 5, "chatcmpl-fallback")
    chunks: list[dict[str, Any]] = []
    for payload in slices(name):
        chunks.extend(translator.translate(payload))
    chunks.append(translator.final_chunk())
    return chunks, translator


def assert_well_formed(chunks: list[dict[str, Any]]) -> None:
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == []
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[-1] is not None
    assert all(f is None for f in finishes[:-1])


def test_text_stream_translation() -> None:
    chunks, translator = run_translator("stream_text.sse")
    assert_well_formed(chunks)
    assert chunks[0]["id"] == "resp-stream-1"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "The quick brown fox jumps."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 16
    assert translator.finished
    assert translator.usage is not None
    assert translator.usage.completion_tokens == 7


def test_function_call_stream_translation() -> None:
    chunks, _ = run_translator("stream_function_call.sse")
    assert_well_formed(chunks)
    [call] = [
        c for chunk in chunks[:-1] for c in chunk["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert call["index"] == 0
    assert call["id"] == "call_0"
    assert call["function"]["name"] == "get_current_temperature"
    assert json.loads(call["function"]["arguments"]) == {"location": "London"}
    assert call["extra_content"] == {"google": {"thought_signature": "Q2lnLXN0cmVhbS0x"}}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_blocked_prompt_stream_finishes_with_content_filter() -> None:
    translator = GeminiChunkTranslator("m", 0, "id")
    chunks = translator.translate(load("generate_blocked_prompt.json"))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "content_filter"]
    assert translator.finished


def test_truncated_stream_is_not_finished() -> None:
    _, translator = run_translator("stream_truncated.sse")
    assert not translator.finished


def test_error_slice_raises() -> None:
    translator = GeminiChunkTranslator("m", 0, "id")
    first, error = slices("stream_error.sse")
    translator.translate(first)
    with pytest.raises(GeminiStreamError, match="overloaded"):
        translator.translate(error)


def test_sse_payload_parsing() -> None:
    assert parse_sse_payload(b"") is None
    assert parse_sse_payload(b"data: [") is None
    assert parse_sse_payload(b'data: [{"error": {"code": 1}}]') == {"error": {"code": 1}}
