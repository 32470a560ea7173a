"""Validation of Anthropic Messages requests, strict where the real API is strict.

The point of speaking the format is to catch an adapter that speaks it wrongly, so this rejects
what the API rejects with a 400 ``invalid_request_error``: fields it does not know (the API
forbids extra inputs, which catches OpenAI fields leaking through a translation), a missing
``max_tokens``, turns that do not alternate or do not start with the user, and ``tool_use``
blocks without matching ``tool_result`` blocks in the next turn (and the reverse).

Token estimate, as for OpenAI: ceil(chars / 4) over all text (system, text blocks, tool results,
and tool inputs as JSON), plus 3 per message and 3 for a system prompt.
"""

from __future__ import annotations

from typing import Any

import orjson

from .anthropic_wire import invalid_request
from .native import SAFETY_TRIGGER, NativeRequest, ToolCall, tool_arguments, wants_tool
from .parsing import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

__all__ = ["KNOWN_FIELDS", "load_object", "parse_count_tokens", "parse_messages"]

KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "metadata", "stop_sequences", "stream", "system",
        "temperature", "tool_choice", "tools", "top_k", "top_p", "thinking", "service_tier",
        "container", "mcp_servers", "context_management",
    }
)  # fmt: skip
"""Top-level fields of a Messages request (the 2024-11 spec plus later additions)."""

_ROLES = ("user", "assistant")
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})


def load_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_request("There was an issue with your request body: invalid JSON") from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object")
    return payload


class _Conversation:
    """Walks ``messages`` once: validates, counts characters, finds the last user turn."""

    def __init__(self) -> None:
        self.chars = 0
        self.quoted = ""  # all text of the last user turn, tool results included
        self.user_text = ""  # only what the user typed in the last user turn
        self._pending_tool_ids: list[str] = []
        self._pending_at = -1

    def walk(self, messages: Any) -> int:
        if messages is None:
            raise invalid_request("messages: Field required")
        if not isinstance(messages, list):
            raise invalid_request("messages: Input should be a valid list")
        if not messages:
            raise invalid_request("messages: at least one message is required")
        previous = None
        for index, message in enumerate(messages):
            role = self._role(message, index)
            if previous is None and role != "user":
                raise invalid_request('messages: first message must use the "user" role')
            if role == previous:
                raise invalid_request(
                    'messages: roles must alternate between "user" and "assistant", '
                    f'but found multiple "{role}" roles in a row'
                )
            self._message(message["content"], role, index)
            previous = role
        return len(messages)

    @staticmethod
    def _role(message: Any, index: int) -> str:
        if not isinstance(message, dict):
            raise invalid_request(f"messages.{index}: Input should be a valid dictionary")
        unknown = set(message) - {"role", "content"}
        if unknown:
            raise invalid_request(
                f"messages.{index}.{min(unknown)}: Extra inputs are not permitted"
            )
        role = message.get("role")
        if role not in _ROLES:
            raise invalid_request(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise invalid_request(f"messages.{index}.content: Field required")
        return str(role)

    def _message(self, content: Any, role: str, index: int) -> None:
        blocks = _blocks(content, f"messages.{index}.content")
        typed: list[str] = []
        results: list[str] = []
        tool_uses: list[str] = []
        result_ids: list[tuple[int, str]] = []
        for position, block in enumerate(blocks):
            kind = block["type"]
            if kind == "text":
                typed.append(block["text"])
            elif kind == "tool_result":
                results.append(_result_text(block.get("content")))
                result_ids.append((position, str(block.get("tool_use_id"))))
            elif kind == "tool_use":
                tool_uses.append(str(block.get("id")))
                self.chars += len(orjson.dumps(block.get("input", {})))
        self.chars += sum(map(len, typed)) + sum(map(len, results))
        if role == "user":
            self._check_results(result_ids, index)
            self.user_text = "".join(typed)
            self.quoted = "".join(results + typed)
        else:
            self._check_unanswered()
            self._pending_tool_ids, self._pending_at = tool_uses, index

    def _check_results(self, result_ids: list[tuple[int, str]], index: int) -> None:
        pending = set(self._pending_tool_ids)
        for position, tool_use_id in result_ids:
            if tool_use_id not in pending:
                raise invalid_request(
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {tool_use_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        answered = {tool_use_id for _, tool_use_id in result_ids}
        self._pending_tool_ids = [i for i in self._pending_tool_ids if i not in answered]
        self._check_unanswered()

    def _check_unanswered(self) -> None:
        if self._pending_tool_ids:
            raise invalid_request(
                f"messages.{self._pending_at}: `tool_use` ids were found without `tool_result` "
                f"blocks immediately after: {', '.join(self._pending_tool_ids)}. Each `tool_use` "
                "block must have a corresponding `tool_result` block in the next message."
            )


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid_request(f"{where}: Input should be a valid string or list of content blocks")
    for position, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid_request(f"{where}.{position}.type: Field required")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise invalid_request(f"{where}.{position}.text: Field required")
        if block["type"] == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise invalid_request(f"{where}.{position}.tool_use_id: Field required")
        if block["type"] == "tool_use" and not (
            isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
        ):
            raise invalid_request(f"{where}.{position}: tool_use blocks need an id and a name")
    return content


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        return "".join(b["text"] for b in system)
    raise invalid_request("system: Input should be a valid string or a list of text blocks")


def _number(payload: dict[str, Any], name: str, high: float) -> None:
    value = payload.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"{name}: Input should be a valid number")
    if not 0 <= value <= high:
        raise invalid_request(f"{name}: Input should be between 0 and {high:g}")


def _max_tokens(payload: dict[str, Any], required: bool) -> int | None:
    value = payload.get("max_tokens")
    if value is None:
        if required:
            raise invalid_request("max_tokens: Field required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request("max_tokens: Input should be a valid integer")
    if value < 1:
        raise invalid_request("max_tokens: Input should be greater than or equal to 1")
    return value


def _tools(payload: dict[str, Any]) -> list[dict[str, Any]]:
    tools = payload.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid_request("tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid_request(f"tools.{index}.name: Field required")
        custom = tool.get("type") in (None, "custom")
        if custom and not isinstance(tool.get("input_schema"), dict):
            raise invalid_request(f"tools.{index}.custom.input_schema: Field required")
    return tools


def _tool_call(
    payload: dict[str, Any], tools: list[dict[str, Any]], user_text: str
) -> ToolCall | None:
    choice = payload.get("tool_choice")
    kind = "auto"
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in _TOOL_CHOICES:
            raise invalid_request(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
            )
        kind = choice["type"]
    by_name = {tool["name"]: tool for tool in tools}
    chosen = tools[0] if tools else None
    if kind == "tool":
        name = choice.get("name") if isinstance(choice, dict) else None
        if name not in by_name:
            raise invalid_request(f"tool_choice.name: no tool named {name!r} in tools")
        chosen = by_name[name]
    if chosen is None or not wants_tool(user_text, True, kind in ("any", "tool"), kind == "none"):
        return None
    return ToolCall(chosen["name"], tool_arguments(chosen.get("input_schema")))


def _stop_sequences(payload: dict[str, Any]) -> tuple[str, ...]:
    stops = payload.get("stop_sequences")
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid_request("stop_sequences: Input should be a valid list of strings")
    return tuple(stops)


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise invalid_request("model: Field required")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Input should be a valid string")
    return model


def _common(payload: dict[str, Any]) -> tuple[_Conversation, int]:
    """Field checks shared by messages and count_tokens; returns the walk and prompt tokens."""
    unknown = set(payload) - KNOWN_FIELDS
    if unknown:
        raise invalid_request(f"{min(unknown)}: Extra inputs are not permitted")
    conversation = _Conversation()
    count = conversation.walk(payload.get("messages"))
    system = _system_text(payload.get("system"))
    messages = count + (1 if system else 0)
    tokens = estimate_tokens(conversation.chars + len(system)) + MESSAGE_OVERHEAD_TOKENS * messages
    return conversation, tokens


def parse_messages(payload: dict[str, Any]) -> NativeRequest:
    """A ``POST /v1/messages`` body, validated."""
    model = _model(payload)
    max_tokens = _max_tokens(payload, required=True)
    conversation, prompt_tokens = _common(payload)
    _number(payload, "temperature", 1.0)
    _number(payload, "top_p", 1.0)
    top_k = payload.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise invalid_request("top_k: Input should be a non-negative integer")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream: Input should be a valid boolean")
    tools = _tools(payload)
    return NativeRequest(
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        prompt_tokens=prompt_tokens,
        quoted=conversation.quoted,
        stop_sequences=_stop_sequences(payload),
        tool_call=_tool_call(payload, tools, conversation.user_text),
        blocked=SAFETY_TRIGGER in conversation.user_text,
    )


def parse_count_tokens(payload: dict[str, Any]) -> tuple[str, int]:
    """A ``POST /v1/messages/count_tokens`` body: the model and the prompt's token estimate."""
    model = _model(payload)
    _, prompt_tokens = _common(payload)
    return model, prompt_tokens
