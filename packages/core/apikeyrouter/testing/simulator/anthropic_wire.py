"""Anthropic Messages API wire format: bodies, SSE events, errors and rate-limit headers.

The router's Anthropic adapter and the official SDK parse these shapes, so they follow the
published API: errors are ``{"type": "error", "error": {"type", "message"}}``, streams are
named SSE events, and the ``anthropic-ratelimit-*`` headers carry absolute RFC 3339 reset
times (not durations, as OpenAI's do).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from .asgi import Headers
from .errors import ApiError
from .limiter import KeyState
from .native import Finish, NativeReply

__all__ = [
    "API_VERSIONS",
    "CREDIT_MESSAGE",
    "error_body",
    "error_event",
    "event",
    "invalid_request",
    "message_body",
    "model_object",
    "rate_headers",
    "rate_limited_message",
    "retry_after",
    "rfc3339",
    "stop_reason",
    "stream_events",
]

API_VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
"""The ``anthropic-version`` values the API accepts."""

CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
"""What Anthropic answers (400) once an account's prepaid credit is spent: the hard quota."""

_STOP_REASONS = {
    Finish.END: "end_turn",
    Finish.MAX_TOKENS: "max_tokens",
    Finish.STOP_SEQUENCE: "stop_sequence",
    Finish.TOOL_CALL: "tool_use",
    Finish.SAFETY: "refusal",
}
_CREATED_AT = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def invalid_request(message: str) -> ApiError:
    return ApiError(400, error_body("invalid_request_error", message))


def rfc3339(epoch_s: float) -> str:
    """UTC, whole seconds rounded up, so a client that waits until then never arrives early."""
    return datetime.fromtimestamp(math.ceil(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_headers(state: KeyState, now: float, wall: float) -> Headers:
    """``anthropic-ratelimit-*`` for the configured limits; ``wall`` is the epoch time at ``now``.

    The simulator has one token bucket where Anthropic keeps input and output apart, so the
    ``input-tokens`` and ``output-tokens`` families repeat the ``tokens`` one.
    """
    headers: Headers = []
    rpm, tpm = state.rpm, state.tpm
    if rpm is not None:
        reset = rfc3339(wall + rpm.time_to_full(now)).encode()
        headers += [
            (b"anthropic-ratelimit-requests-limit", b"%d" % rpm.capacity),
            (b"anthropic-ratelimit-requests-remaining", b"%d" % rpm.remaining(now)),
            (b"anthropic-ratelimit-requests-reset", reset),
        ]
    if tpm is not None:
        reset = rfc3339(wall + tpm.time_to_full(now)).encode()
        limit, remaining = b"%d" % tpm.capacity, b"%d" % tpm.remaining(now)
        for family in (b"tokens", b"input-tokens", b"output-tokens"):
            prefix = b"anthropic-ratelimit-" + family
            headers += [
                (prefix + b"-limit", limit),
                (prefix + b"-remaining", remaining),
                (prefix + b"-reset", reset),
            ]
    return headers


def retry_after(seconds: float) -> Headers:
    """``retry-after`` in whole seconds, rounded up; none when waiting cannot help."""
    if math.isinf(seconds) or seconds <= 0:
        return []
    return [(b"retry-after", b"%d" % max(1, math.ceil(seconds - 1e-9)))]


def rate_limited_message(kind: str, limit: int, requested: int, wait_s: float) -> str:
    unit = "requests per minute" if kind == "requests" else "tokens per minute"
    if math.isinf(wait_s):
        return (
            f"This request would exceed your rate limit of {limit} {unit} on its own "
            f"({requested} requested); reduce the prompt or max_tokens."
        )
    return (
        f"This request would exceed your rate limit of {limit} {unit}. "
        "See the anthropic-ratelimit-* response headers for current usage and retry later."
    )


def stop_reason(reply: NativeReply) -> str:
    return _STOP_REASONS[reply.finish]


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _content(reply: NativeReply, tool_id: str) -> list[dict[str, Any]]:
    if reply.finish is Finish.SAFETY:
        return []
    call = reply.tool_call
    if call is not None:
        return [{"type": "tool_use", "id": tool_id, "name": call.name, "input": call.arguments}]
    return [{"type": "text", "text": reply.text}]


def message_body(
    id_: str, model: str, reply: NativeReply, input_tokens: int, tool_id: str
) -> dict[str, Any]:
    return {
        "id": id_,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(reply, tool_id),
        "stop_reason": stop_reason(reply),
        "stop_sequence": reply.stop_sequence,
        "usage": usage(input_tokens, reply.tokens),
    }


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(type_: str, message: str) -> bytes:
    """What Anthropic writes into a stream it abandons after the 200 (e.g. when overloaded)."""
    return event("error", error_body(type_, message))


def stream_events(
    id_: str, model: str, reply: NativeReply, input_tokens: int, tool_id: str
) -> list[bytes]:
    """message_start, content_block_start, ping, content_block_delta..., content_block_stop,
    message_delta, message_stop: the order the Messages API streams them in. A refusal has no
    content block: message_start, ping, message_delta, message_stop."""
    start: dict[str, Any] = {
        "id": id_,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(input_tokens, 1),
    }
    call = reply.tool_call
    if call is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in reply.pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in reply.pieces]
    events = [event("message_start", {"type": "message_start", "message": start})]
    refused = reply.finish is Finish.SAFETY
    if not refused:
        opening = {"type": "content_block_start", "index": 0, "content_block": block}
        events.append(event("content_block_start", opening))
    events.append(event("ping", {"type": "ping"}))
    if not refused:
        events += [
            event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        ]
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events += [
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reply), "stop_sequence": reply.stop_sequence},
                "usage": {"output_tokens": reply.tokens},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return events


def display_name(model: str) -> str:
    """``claude-sonnet-4-5`` -> ``Claude Sonnet 4.5``; a trailing date stamp is left out."""
    words: list[str] = []
    numbers: list[str] = []
    for part in model.split("-"):
        if re.fullmatch(r"\d{8}", part):
            continue
        if part.isdigit():
            numbers.append(part)
            continue
        if numbers:
            words.append(".".join(numbers))
            numbers = []
        words.append(part[:1].upper() + part[1:])
    if numbers:
        words.append(".".join(numbers))
    return " ".join(words)


def model_object(model: str, position: int) -> dict[str, Any]:
    """A model entry; ``created_at`` is fixed per list position so answers are reproducible."""
    return {
        "type": "model",
        "id": model,
        "display_name": display_name(model),
        "created_at": rfc3339(_CREATED_AT - position * 86_400),
    }
