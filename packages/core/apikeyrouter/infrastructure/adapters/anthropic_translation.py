"""OpenAI chat <-> Anthropic Messages translation, as pure functions over JSON dicts.

Kept free of I/O so every quirk of the mapping can be tested without a server. A request the
Messages API cannot express raises :class:`InvalidRequestError`, which the adapter returns as a
caller fault instead of spending a key on a call that is bound to fail.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from apikeyrouter.domain.models.response import Usage
from apikeyrouter.utils.exceptions import InvalidRequestError

DEFAULT_MAX_TOKENS = 4096

#: Anthropic's sampling temperature tops out at 1.0 where OpenAI's goes to 2.0; clamping keeps a
#: perfectly valid OpenAI request from becoming a 400 just because it was routed here.
_MAX_TEMPERATURE = 1.0

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.S
)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

Block = dict[str, Any]


def map_stop_reason(stop_reason: Any) -> str | None:
    """OpenAI ``finish_reason`` for an Anthropic ``stop_reason`` (``None`` while still running)."""
    if not isinstance(stop_reason, str):
        return None
    return _STOP_REASONS.get(stop_reason, "stop")


def usage_from_anthropic(raw: Any) -> Usage:
    """Prompt tokens include cache writes and reads: Anthropic reports them apart, OpenAI not."""
    if not isinstance(raw, dict):
        return Usage()
    fresh = _int(raw.get("input_tokens"))
    cache_write = _int(raw.get("cache_creation_input_tokens"))
    cache_read = _int(raw.get("cache_read_input_tokens"))
    prompt = fresh + cache_write + cache_read
    completion = _int(raw.get("output_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cache_read},
    )


def openai_usage_dict(usage: Usage) -> dict[str, Any]:
    """The ``usage`` object of an OpenAI response body."""
    return usage.model_dump()


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    return 0


# --------------------------------------------------------------------------- request


def to_anthropic_request(
    body: dict[str, Any],
    model: str,
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    stream: bool = False,
) -> dict[str, Any]:
    """Build a Messages API request body from an OpenAI chat completion body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequestError("n > 1 is not supported by the Anthropic API", param="n")

    system, turns = _translate_messages(messages)
    request: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": _max_tokens(body, default_max_tokens),
    }
    if system:
        request["system"] = system
    _copy_sampling(body, request)
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = [str(s) for s in stop if s]
    _copy_tools(body, request)
    user = body.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user[:256]}
    if stream:
        request["stream"] = True
    return request


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def _copy_sampling(body: dict[str, Any], request: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        request["temperature"] = min(max(float(temperature), 0.0), _MAX_TEMPERATURE)
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool):
        request["top_p"] = float(top_p)
    top_k = body.get("top_k")  # not OpenAI, but some callers send it for Anthropic's sake
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        request["top_k"] = top_k


def _translate_messages(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Lift system prompts out and merge consecutive turns, which the API requires to alternate."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError("a message must be an object", param=f"messages.{position}")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), position)
            if text:
                system_parts.append(text)
            continue
        if role == "user":
            anthropic_role, blocks = "user", _user_blocks(message.get("content"), position)
        elif role == "assistant":
            anthropic_role, blocks = "assistant", _assistant_blocks(message, position)
        elif role == "tool":
            anthropic_role, blocks = "user", [_tool_result_block(message, position)]
        else:
            raise InvalidRequestError(
                f"unsupported message role {role!r}", param=f"messages.{position}.role"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    return "\n\n".join(system_parts), turns


def _plain_text(content: Any, position: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text") or ""))
            else:
                raise InvalidRequestError(
                    "only text parts are allowed here", param=f"messages.{position}.content"
                )
        return "\n".join(t for t in texts if t)
    raise InvalidRequestError("content must be a string or a list", param=f"messages.{position}")


def _user_blocks(content: Any, position: int) -> list[Block]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(
            "content must be a string or a list", param=f"messages.{position}.content"
        )
    blocks: list[Block] = []
    for index, part in enumerate(content):
        param = f"messages.{position}.content.{index}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            assert isinstance(part, dict)
            text = str(part.get("text") or "")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            assert isinstance(part, dict)
            blocks.append(image_block(part.get("image_url"), param))
        else:
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported by the Anthropic API", param=param
            )
    return blocks


def image_block(image_url: Any, param: str) -> Block:
    """An OpenAI ``image_url`` part as an Anthropic image block (inline base64 or URL source)."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("image_url.url is required", param=param)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group("params"):
        raise InvalidRequestError("image must be an http(s) URL or a base64 data: URL", param=param)
    media_type = (match.group("mime") or "").lower()
    if media_type not in _IMAGE_TYPES:
        raise InvalidRequestError(f"image type {media_type!r} is not supported", param=param)
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": match.group("data")},
    }


def _assistant_blocks(message: dict[str, Any], position: int) -> list[Block]:
    blocks: list[Block] = []
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            # An assistant may carry a refusal part; Anthropic has only text to put it in.
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                text = str(part.get("text") or part.get("refusal") or "")
                if text:
                    blocks.append({"type": "text", "text": text})
    else:
        text = _plain_text(content, position)
        if text:
            blocks.append({"type": "text", "text": text})
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for index, call in enumerate(tool_calls):
            blocks.append(_tool_use_block(call, f"messages.{position}.tool_calls.{index}"))
    return blocks


def _tool_use_block(call: Any, param: str) -> Block:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise InvalidRequestError("tool call must have a function", param=param)
    function = call["function"]
    call_id, name = call.get("id"), function.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise InvalidRequestError("tool call needs an id and a function name", param=param)
    return {"type": "tool_use", "id": call_id, "name": name, "input": _arguments(function, param)}


def _arguments(function: dict[str, Any], param: str) -> dict[str, Any]:
    raw = function.get("arguments")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InvalidRequestError(
            "tool call arguments must be a JSON object", param=f"{param}.function.arguments"
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidRequestError(
            "tool call arguments must be a JSON object", param=f"{param}.function.arguments"
        )
    return parsed


def _tool_result_block(message: dict[str, Any], position: int) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(
            "tool message needs tool_call_id", param=f"messages.{position}.tool_call_id"
        )
    block: Block = {"type": "tool_result", "tool_use_id": call_id}
    text = _plain_text(message.get("content"), position)
    if text:
        block["content"] = text
    return block


def _copy_tools(body: dict[str, Any], request: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return
    request["tools"] = [_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        request["tool_choice"] = choice


def _tool(tool: Any, param: str) -> Block:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidRequestError("only function tools are supported", param=param)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("function tools need a name", param=f"{param}.function")
    schema = function.get("parameters")
    result: Block = {
        "name": function["name"],
        "input_schema": schema
        if isinstance(schema, dict) and schema
        else {"type": "object", "properties": {}},
    }
    description = function.get("description")
    if isinstance(description, str) and description:
        result["description"] = description
    return result


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise InvalidRequestError("unsupported tool_choice", param="tool_choice")


# --------------------------------------------------------------------------- response


def from_anthropic_response(payload: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body for a Messages API response."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    content = payload.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": str(block.get("id") or f"call_{len(tool_calls)}"),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = usage_from_anthropic(payload.get("usage"))
    return {
        "id": str(payload.get("id") or "msg_unknown"),
        "object": "chat.completion",
        "created": created,
        "model": str(payload.get("model") or model),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": map_stop_reason(payload.get("stop_reason")) or "stop",
                "logprobs": None,
            }
        ],
        "usage": openai_usage_dict(usage),
    }
