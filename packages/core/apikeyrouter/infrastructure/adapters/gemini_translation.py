"""OpenAI chat/embeddings <-> Gemini generateContent/embedContent, as pure functions.

No I/O here, so the whole mapping is testable offline. A request Gemini cannot express raises
:class:`InvalidRequestError`, which the adapter returns as a caller fault without a call.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import struct
from typing import Any

import orjson

from apikeyrouter.domain.models.response import Usage
from apikeyrouter.utils.exceptions import InvalidRequestError

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.S
)
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

Part = dict[str, Any]


def strip_model_prefix(name: str) -> str:
    """Gemini names models ``models/<id>``; callers and routing use the bare id."""
    return name.removeprefix("models/")


def map_finish_reason(reason: Any, has_tool_calls: bool) -> str | None:
    """OpenAI ``finish_reason`` for a Gemini ``finishReason`` (``None`` while still running)."""
    if not isinstance(reason, str) or not reason:
        return None
    mapped = _FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def usage_from_gemini(raw: Any) -> Usage:
    """Thinking tokens are billed as output, so they count as completion tokens, as at OpenAI."""
    if not isinstance(raw, dict):
        return Usage()
    prompt = _int(raw.get("promptTokenCount")) + _int(raw.get("toolUsePromptTokenCount"))
    thoughts = _int(raw.get("thoughtsTokenCount"))
    completion = _int(raw.get("candidatesTokenCount")) + thoughts
    total = _int(raw.get("totalTokenCount")) or prompt + completion
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        prompt_tokens_details={"cached_tokens": _int(raw.get("cachedContentTokenCount"))},
        completion_tokens_details={"reasoning_tokens": thoughts},
    )


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.isdigit():  # int64 fields may arrive as JSON strings
        return int(value)
    return 0


# --------------------------------------------------------------------------- chat request


def to_gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """A ``GenerateContentRequest`` body (the model goes in the URL) from an OpenAI chat body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    system, contents = _translate_messages(messages)
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        request["tools"] = [
            {"functionDeclarations": [_declaration(t, i) for i, t in enumerate(tools)]}
        ]
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config is not None:
            request["toolConfig"] = tool_config
    return request


def _translate_messages(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system_parts: list[str] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name, for functionResponse
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
            gemini_role, parts = "user", _user_parts(message.get("content"), position)
        elif role == "assistant":
            gemini_role, parts = "model", _model_parts(message, position, call_names)
        elif role == "tool":
            gemini_role, parts = "user", [_function_response(message, position, call_names)]
        else:
            raise InvalidRequestError(
                f"unsupported message role {role!r}", param=f"messages.{position}.role"
            )
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return "\n\n".join(system_parts), contents


def _plain_text(content: Any, position: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise InvalidRequestError(
                    "only text parts are allowed here", param=f"messages.{position}.content"
                )
            texts.append(str(part.get("text") or part.get("refusal") or ""))
        return "\n".join(t for t in texts if t)
    raise InvalidRequestError("content must be a string or a list", param=f"messages.{position}")


def _user_parts(content: Any, position: int) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(
            "content must be a string or a list", param=f"messages.{position}.content"
        )
    parts: list[Part] = []
    for index, item in enumerate(content):
        param = f"messages.{position}.content.{index}"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            assert isinstance(item, dict)
            text = str(item.get("text") or "")
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            assert isinstance(item, dict)
            parts.append(image_part(item.get("image_url"), param))
        else:
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported by the Gemini API", param=param
            )
    return parts


def image_part(image_url: Any, param: str) -> Part:
    """Data URLs go inline; other URLs become ``fileData`` references for Gemini to fetch."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("image_url.url is required", param=param)
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or ";base64" not in match.group("params") or not match.group("mime"):
            raise InvalidRequestError("data: URLs must be base64 with a media type", param=param)
        return {
            "inlineData": {"mimeType": match.group("mime").lower(), "data": match.group("data")}
        }
    file_data: dict[str, str] = {"fileUri": url}
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    if guessed:
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _model_parts(message: dict[str, Any], position: int, call_names: dict[str, str]) -> list[Part]:
    parts: list[Part] = []
    text = _plain_text(message.get("content"), position)
    if text:
        parts.append({"text": text})
    tool_calls = message.get("tool_calls")
    for index, call in enumerate(tool_calls if isinstance(tool_calls, list) else []):
        param = f"messages.{position}.tool_calls.{index}"
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise InvalidRequestError("tool call needs a function name", param=param)
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            call_names[call_id] = name
        parts.append({"functionCall": {"name": name, "args": _arguments(function, param)}})
    return parts


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


def _function_response(message: dict[str, Any], position: int, call_names: dict[str, str]) -> Part:
    """Gemini matches results to calls by function name, so recover it from the call id."""
    call_id = message.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    name = name or (message.get("name") if isinstance(message.get("name"), str) else None)
    if not name:
        raise InvalidRequestError(
            "tool message does not answer an earlier tool call",
            param=f"messages.{position}.tool_call_id",
        )
    text = _plain_text(message.get("content"), position)
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = text
    # functionResponse.response must be a JSON object; wrap anything else.
    response = parsed if isinstance(parsed, dict) else {"result": parsed}
    return {"functionResponse": {"name": name, "response": response}}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[target] = float(value)
    for source, target in (("n", "candidateCount"), ("seed", "seed"), ("top_k", "topK")):
        value = body.get(source)
        if isinstance(value, int) and not isinstance(value, bool):
            config[target] = value
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = [str(s) for s in stop if s]
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            config["responseMimeType"] = "application/json"
        elif response_format.get("type") == "json_schema":
            config["responseMimeType"] = "application/json"
            spec = response_format.get("json_schema")
            if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
                config["responseJsonSchema"] = spec["schema"]
    return config


def _declaration(tool: Any, index: int) -> dict[str, Any]:
    """A function declaration. The schema goes in ``parametersJsonSchema``, which takes JSON
    Schema as OpenAI callers write it (``parameters`` takes only an OpenAPI subset and rejects
    keys such as ``additionalProperties``)."""
    param = f"tools.{index}"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidRequestError("only function tools are supported", param=param)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("function tools need a name", param=f"{param}.function")
    declaration: dict[str, Any] = {
        "name": function["name"],
        "description": str(function.get("description") or ""),
    }
    schema = function.get("parameters")
    if isinstance(schema, dict) and schema:
        declaration["parametersJsonSchema"] = schema
    return declaration


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE_MODES[choice]}}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
            }
    raise InvalidRequestError("unsupported tool_choice", param="tool_choice")


# --------------------------------------------------------------------------- chat response


class ToolCallIds:
    """Gemini function calls usually carry no id; OpenAI needs one per call, stable within a
    response, so tool results can be matched back to the call."""

    def __init__(self) -> None:
        self._count = 0

    def next(self, given: Any) -> str:
        call_id = given if isinstance(given, str) and given else f"call_{self._count}"
        self._count += 1
        return call_id


def split_parts(parts: Any, ids: ToolCallIds) -> tuple[str, list[dict[str, Any]]]:
    """The visible text and the OpenAI tool calls in a candidate's parts (thoughts skipped)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append(
                {
                    "id": ids.next(call.get("id")),
                    "type": "function",
                    "function": {
                        "name": str(call.get("name") or ""),
                        "arguments": orjson.dumps(call.get("args") or {}).decode(),
                    },
                }
            )
    return "".join(texts), calls


def from_gemini_response(
    payload: dict[str, Any], model: str, created: int, response_id: str
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body for a ``GenerateContentResponse``.

    A prompt blocked outright (no candidates, ``promptFeedback.blockReason``) becomes an empty
    answer with ``finish_reason: content_filter``, which is how OpenAI reports a filtered reply.
    """
    ids = ToolCallIds()
    choices: list[dict[str, Any]] = []
    candidates = payload.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        if not isinstance(candidate, dict):
            continue
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        text, calls = split_parts(parts, ids)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
        }
        if calls:
            message["tool_calls"] = calls
        index = candidate.get("index")
        choices.append(
            {
                "index": index if isinstance(index, int) else position,
                "message": message,
                "finish_reason": map_finish_reason(candidate.get("finishReason"), bool(calls))
                or "stop",
                "logprobs": None,
            }
        )
    if not choices:
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter" if is_blocked(payload) else "stop",
                "logprobs": None,
            }
        )
    usage = usage_from_gemini(payload.get("usageMetadata"))
    return {
        "id": str(payload.get("responseId") or response_id),
        "object": "chat.completion",
        "created": created,
        "model": str(payload.get("modelVersion") or model),
        "choices": choices,
        "usage": usage.model_dump(),
    }


def is_blocked(payload: dict[str, Any]) -> bool:
    feedback = payload.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


# --------------------------------------------------------------------------- embeddings


def to_gemini_embedding_request(body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    """The method (``embedContent`` or ``batchEmbedContents``) and its body.

    A single string uses the single call; a list uses the batch call, one request per input, so
    the answer's order matches the caller's.
    """
    raw = body.get("input")
    dimensions = body.get("dimensions")
    extra: dict[str, Any] = {}
    if isinstance(dimensions, int) and not isinstance(dimensions, bool):
        extra["outputDimensionality"] = dimensions
    if isinstance(raw, str):
        return "embedContent", {"content": {"parts": [{"text": raw}]}, **extra}
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        requests = [
            {"model": f"models/{model}", "content": {"parts": [{"text": item}]}, **extra}
            for item in raw
        ]
        return "batchEmbedContents", {"requests": requests}
    raise InvalidRequestError(
        "input must be a string or a list of strings (token arrays are not supported by Gemini)",
        param="input",
    )


def from_gemini_embedding_response(
    payload: dict[str, Any], model: str, encoding_format: Any = None
) -> dict[str, Any]:
    """An OpenAI embeddings list body; ``encoding_format: base64`` packs float32 little-endian,
    as OpenAI does."""
    if isinstance(payload.get("embeddings"), list):
        vectors = [_values(e) for e in payload["embeddings"]]
    else:
        vectors = [_values(payload.get("embedding"))]
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _encode(vector) if encoding_format == "base64" else vector,
        }
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def _values(embedding: Any) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, dict) else None
    return [float(v) for v in values] if isinstance(values, list) else []


def _encode(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
