"""OpenAI chat <-> Anthropic Messages translation, as pure functions over JSON dicts.

Kept free of I/O so every quirk of the mapping can be tested without a server. A request the
Messages API cannot express raises :class:`InvalidRequestError`, which the adapter returns as a
caller fault instead of spending a key on a call that is bound to fail.
"""

from __future__ import annotations

from typing import Any

from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.adapters.openai_content import (
    forced_function_name,
    image_source_url,
    parse_base64_data_url,
    plain_text,
    split_conversation,
    stop_sequences,
    tool_call_arguments,
    tool_function,
    unsupported_role,
    user_content,
)
from apikeyrouter.infrastructure.adapters.openai_replies import (
    assistant_message,
    chat_completion,
    completion_choice,
    tool_call,
)
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
    stop = stop_sequences(body)
    if stop is not None:
        request["stop_sequences"] = stop
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
    return split_conversation(
        messages, system_text=plain_text, build_turn=_turn, items_key="content"
    )


def _turn(role: Any, message: dict[str, Any], position: int) -> tuple[str, list[Block]]:
    """Tool results go back as user turns: the Messages API has no tool role."""
    if role == "user":
        return "user", _user_blocks(message.get("content"), position)
    if role == "assistant":
        return "assistant", _assistant_blocks(message, position)
    if role == "tool":
        return "user", [_tool_result_block(message, position)]
    raise unsupported_role(role, position)


def _text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def _user_blocks(content: Any, position: int) -> list[Block]:
    return user_content(
        content, position, text=_text_block, image=image_block, provider="Anthropic"
    )


def image_block(image_url: Any, param: str) -> Block:
    """An OpenAI ``image_url`` part as an Anthropic image block (inline base64 or URL source)."""
    url = image_source_url(image_url, param)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    data_url = parse_base64_data_url(url)
    if data_url is None:
        raise InvalidRequestError("image must be an http(s) URL or a base64 data: URL", param=param)
    media_type = data_url.media_type or ""
    if media_type not in _IMAGE_TYPES:
        raise InvalidRequestError(f"image type {media_type!r} is not supported", param=param)
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": data_url.data},
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
                    blocks.append(_text_block(text))
    else:
        text = plain_text(content, position)
        if text:
            blocks.append(_text_block(text))
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
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name,
        "input": tool_call_arguments(function, param),
    }


def _tool_result_block(message: dict[str, Any], position: int) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(
            "tool message needs tool_call_id", param=f"messages.{position}.tool_call_id"
        )
    block: Block = {"type": "tool_result", "tool_use_id": call_id}
    text = plain_text(message.get("content"), position)
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
    function = tool_function(tool, param)
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
    return {"type": "tool", "name": forced_function_name(choice)}


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
            call_id = str(block.get("id") or f"call_{len(tool_calls)}")
            tool_calls.append(tool_call(call_id, block.get("name"), block.get("input")))
    # Any text block, even an empty one, makes the content a string rather than null.
    content = "".join(texts) if texts or not tool_calls else None
    finish_reason = map_stop_reason(payload.get("stop_reason")) or "stop"
    return chat_completion(
        str(payload.get("id") or "msg_unknown"),
        created,
        str(payload.get("model") or model),
        [completion_choice(0, assistant_message(content, tool_calls), finish_reason)],
        usage_from_anthropic(payload.get("usage")),
    )
