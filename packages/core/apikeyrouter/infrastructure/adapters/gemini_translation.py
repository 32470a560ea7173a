"""OpenAI chat/embeddings <-> Gemini generateContent/embedContent, as pure functions.

No I/O here, so the whole mapping is testable offline. A request Gemini cannot express raises
:class:`InvalidRequestError`, which the adapter returns as a caller fault without a call.
"""

from __future__ import annotations

import base64
import mimetypes
import struct
from typing import Any

import orjson

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
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
#: Google's documented stand-in for a thought signature on history Gemini did not write (a
#: conversation begun on another provider, say): Gemini 3 refuses a function call step whose
#: first call has no signature at all.
FOREIGN_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

Part = dict[str, Any]


def first_object(value: Any) -> dict[str, Any] | None:
    """The JSON object in ``value``: some Google endpoints wrap a reply (errors especially, also
    in streams) in a one-element array."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return value if isinstance(value, dict) else None


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
    call_names: dict[str, str] = {}  # tool_call id -> function name, for functionResponse

    def turn(role: Any, message: dict[str, Any], position: int) -> tuple[str, list[Part]]:
        if role == "user":
            return "user", _user_parts(message.get("content"), position)
        if role == "assistant":
            return "model", _model_parts(message, position, call_names)
        if role == "tool":
            return "user", [_function_response(message, position, call_names)]
        raise unsupported_role(role, position)

    return split_conversation(messages, system_text=_plain_text, build_turn=turn, items_key="parts")


def _plain_text(content: Any, position: int) -> str:
    """Gemini has only text to carry an earlier assistant refusal, so refusal parts pass."""
    return plain_text(content, position, allow_refusal=True)


def _text_part(text: str) -> Part:
    return {"text": text}


def _user_parts(content: Any, position: int) -> list[Part]:
    return user_content(content, position, text=_text_part, image=image_part, provider="Gemini")


def image_part(image_url: Any, param: str) -> Part:
    """Data URLs go inline; other URLs become ``fileData`` references for Gemini to fetch."""
    url = image_source_url(image_url, param)
    if url.startswith("data:"):
        data_url = parse_base64_data_url(url)
        if data_url is None or data_url.media_type is None:
            raise InvalidRequestError("data: URLs must be base64 with a media type", param=param)
        return {"inlineData": {"mimeType": data_url.media_type, "data": data_url.data}}
    file_data: dict[str, str] = {"fileUri": url}
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    if guessed:
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _model_parts(message: dict[str, Any], position: int, call_names: dict[str, str]) -> list[Part]:
    parts: list[Part] = []
    text = _plain_text(message.get("content"), position)
    if text:
        parts.append(_text_part(text))
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
        args = tool_call_arguments(function, param)
        part: Part = {"functionCall": {"name": name, "args": args}}
        signature = _thought_signature(call)
        if signature is None and index == 0:
            signature = FOREIGN_THOUGHT_SIGNATURE  # the step's first call must carry one
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _thought_signature(call: dict[str, Any]) -> str | None:
    """The signature a Gemini reply gave this call, as the caller sent it back: in
    ``extra_content.google.thought_signature``, where Google's OpenAI-compatible API puts it."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


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
    stop = stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
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
    function = tool_function(tool, f"tools.{index}")
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
    name = forced_function_name(choice)
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


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
    """The visible text and the OpenAI tool calls in a candidate's parts (thoughts skipped).

    A call's thought signature goes with it in ``extra_content.google.thought_signature``, as
    Google's own OpenAI-compatible API returns it, so a caller that keeps the message in its
    history hands it back and Gemini 3 accepts the next step."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict):
            converted = tool_call(ids.next(call.get("id")), call.get("name"), call.get("args"))
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                converted["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(converted)
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
        message = assistant_message(text if text or not calls else None, calls)
        index = candidate.get("index")
        finish_reason = map_finish_reason(candidate.get("finishReason"), bool(calls)) or "stop"
        choices.append(
            completion_choice(index if isinstance(index, int) else position, message, finish_reason)
        )
    if not choices:
        finish_reason = "content_filter" if is_blocked(payload) else "stop"
        choices.append(completion_choice(0, assistant_message("", []), finish_reason))
    return chat_completion(
        str(payload.get("responseId") or response_id),
        created,
        str(payload.get("modelVersion") or model),
        choices,
        usage_from_gemini(payload.get("usageMetadata")),
    )


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
