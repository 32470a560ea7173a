"""Request validation and the simulator's deterministic token arithmetic.

Validation answers bad input the way OpenAI does (400 ``invalid_request_error`` with ``param``),
because the router must learn to pass such errors back instead of failing over. Token counts are
a fixed, documented estimate (ceil(chars / 4), +3 per chat message) so tests can predict exactly
what a request costs against a TPM bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .openai_wire import invalid_request

__all__ = [
    "EmbeddingRequest",
    "GenerationRequest",
    "estimate_tokens",
    "load_json",
    "parse_chat",
    "parse_completion",
    "parse_embeddings",
]

MESSAGE_OVERHEAD_TOKENS = 3


@dataclass(slots=True)
class GenerationRequest:
    """What the simulator needs from a chat or legacy completion request."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    sources: list[str]  # one per choice: the text the deterministic reply quotes


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str | tuple[int, ...]]
    prompt_tokens: int
    dimensions: int | None
    as_base64: bool


def estimate_tokens(chars: int) -> int:
    """ceil(chars / 4): the usual rule of thumb, exact enough for limits and deterministic."""
    return (chars + 3) // 4


def load_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_request(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON."
        ) from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.")
    return payload


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("you must provide a model parameter", param="model")
    return model


def _stream_flags(payload: dict[str, Any]) -> tuple[bool, bool]:
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("'stream_options' must be an object", param="stream_options")
    if options is not None and not stream:
        raise invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return stream, bool(options and options.get("include_usage") is True)


def _max_tokens(payload: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_request(
                f"Invalid '{name}': expected an integer of at least 1.",
                param=name,
                code="invalid_value",
            )
        return value
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def parse_chat(payload: dict[str, Any]) -> GenerationRequest:
    model = _model(payload)
    messages = payload.get("messages")
    if messages is None:
        raise invalid_request(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array.", param="messages")
    chars = 0
    last_user = ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid_request(
                f"Invalid value for 'messages[{index}]': expected an object with a 'role'.",
                param=f"messages[{index}]",
            )
        text = _content_text(message.get("content"))
        chars += len(text)
        if message["role"] == "user":
            last_user = text
    stream, include_usage = _stream_flags(payload)
    return GenerationRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(payload),
        prompt_tokens=estimate_tokens(chars) + MESSAGE_OVERHEAD_TOKENS * len(messages),
        sources=[last_user],
    )


def parse_completion(payload: dict[str, Any]) -> GenerationRequest:
    model = _model(payload)
    prompt = payload.get("prompt", "")
    prompts: list[tuple[str, int]]
    if isinstance(prompt, str):
        prompts = [(prompt, estimate_tokens(len(prompt)))]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = [(p, estimate_tokens(len(p))) for p in prompt]
    elif isinstance(prompt, list) and prompt and all(_is_token_list(p) for p in prompt):
        prompts = [("", len(p)) for p in prompt]
    elif _is_token_list(prompt) and prompt:
        prompts = [("", len(prompt))]
    else:
        raise invalid_request(
            "'prompt' must be a string, an array of strings or an array of token arrays.",
            param="prompt",
        )
    stream, include_usage = _stream_flags(payload)
    return GenerationRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(payload),
        prompt_tokens=sum(tokens for _, tokens in prompts),
        sources=[text for text, _ in prompts],
    )


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def parse_embeddings(payload: dict[str, Any]) -> EmbeddingRequest:
    model = _model(payload)
    raw = payload.get("input")
    inputs: list[str | tuple[int, ...]]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, str) for i in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(_is_token_list(i) and i for i in raw):
        inputs = [tuple(i) for i in raw]
    elif isinstance(raw, list) and raw and _is_token_list(raw):
        inputs = [tuple(raw)]
    elif raw is None:
        raise invalid_request(
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    else:
        raise invalid_request(
            "'input' must be a non-empty string, array of strings or array of token arrays.",
            param="input",
        )
    dimensions = payload.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= 8192
    ):
        raise invalid_request("'dimensions' must be an integer from 1 to 8192.", param="dimensions")
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid_request(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    tokens = sum(
        estimate_tokens(len(item)) if isinstance(item, str) else len(item) for item in inputs
    )
    return EmbeddingRequest(model, inputs, tokens, dimensions, encoding == "base64")
