"""OpenAI reply bodies (``chat.completion`` and ``chat.completion.chunk``) for translating adapters.

Callers only ever see OpenAI's shape, whichever provider answered, so a client must not be able
to tell Anthropic from Gemini by the envelope. Building every envelope here keeps the translators
emitting the same keys in the same order; each translator decides only what goes inside.
"""

from __future__ import annotations

from typing import Any

import orjson

from apikeyrouter.domain.models.response import Usage


def _envelope(kind: str, response_id: str, created: int, model: str) -> dict[str, Any]:
    """The keys every reply body and chunk opens with, in OpenAI's order."""
    return {"id": response_id, "object": kind, "created": created, "model": model}


def tool_call(call_id: str, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call; providers hand over parsed arguments, OpenAI wants a JSON string."""
    return {
        "id": call_id,
        "type": "function",
        "function": {
            "name": str(name or ""),
            "arguments": orjson.dumps(arguments or {}).decode(),
        },
    }


def assistant_message(content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant message; ``tool_calls`` appears only when there are calls, as at OpenAI."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion_choice(index: int, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    """One ``choices`` entry of a ``chat.completion`` (no provider here reports logprobs)."""
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}


def chat_completion(
    response_id: str, created: int, model: str, choices: list[dict[str, Any]], usage: Usage
) -> dict[str, Any]:
    """A whole ``chat.completion`` body."""
    body = _envelope("chat.completion", response_id, created, model)
    body["choices"] = choices
    body["usage"] = usage.model_dump()
    return body


def chunk(
    response_id: str,
    created: int,
    model: str,
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` carrying one delta for the choice at ``index``."""
    body = _envelope("chat.completion.chunk", response_id, created, model)
    body["choices"] = [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    return body


def usage_chunk(response_id: str, created: int, model: str, usage: Usage) -> dict[str, Any]:
    """The closing ``choices: []`` chunk with the usage of the whole call, which OpenAI sends
    last when ``stream_options.include_usage`` is set (the router reads usage from it)."""
    body = _envelope("chat.completion.chunk", response_id, created, model)
    body["choices"] = []
    body["usage"] = usage.model_dump()
    return body
