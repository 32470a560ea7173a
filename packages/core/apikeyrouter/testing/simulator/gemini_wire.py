"""Gemini (Generative Language API v1beta) wire format: bodies, SSE chunks and errors.

Errors are ``google.rpc.Status`` objects (``{"error": {"code", "message", "status",
"details"}}``) whose typed ``details`` carry what a client needs: the ``QuotaFailure`` that says
which quota ran out (per minute or per day), the ``RetryInfo`` with the retry delay and the
``ErrorInfo`` reason ``API_KEY_INVALID``. Gemini sends no rate-limit headers at all, so neither
does the simulator: the ``RetryInfo`` of a 429 is the only hint a router gets.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson

from .errors import ApiError
from .native import Finish, NativeReply

__all__ = [
    "BAD_KEY_MESSAGE",
    "error_body",
    "invalid_argument",
    "invalid_key",
    "missing_key",
    "model_not_found",
    "model_object",
    "quota_exhausted",
    "rate_limited",
    "response",
    "retry_delay",
    "server_error",
    "sse",
    "stream_chunks",
    "supported_methods",
    "unknown_field",
]

BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
_TYPE = "type.googleapis.com/google.rpc."
_SERVICE = "generativelanguage.googleapis.com"
_HELP_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_FINISH = {
    Finish.END: "STOP",
    Finish.STOP_SEQUENCE: "STOP",
    Finish.TOOL_CALL: "STOP",
    Finish.MAX_TOKENS: "MAX_TOKENS",
    Finish.SAFETY: "SAFETY",
}
_QUOTA_IDS = {
    "requests": ("generate_content_requests", "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": (
        "generate_content_input_token_count",
        "GenerateContentInputTokensPerModelPerMinute",
    ),
    "day": ("generate_content_requests", "GenerateRequestsPerDayPerProjectPerModel"),
}
_HARM_CATEGORIES = (
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, error_body(400, "INVALID_ARGUMENT", message))


def unknown_field(name: str, parent: str = "") -> ApiError:
    """Google's JSON parser rejects fields the message type does not have."""
    at = f" at '{parent}'" if parent else ""
    message = f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
    violation = {"field": parent, "description": message} if parent else {"description": message}
    details = [{"@type": _TYPE + "BadRequest", "fieldViolations": [violation]}]
    return ApiError(400, error_body(400, "INVALID_ARGUMENT", message, details))


def invalid_key() -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {
            "@type": _TYPE + "ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": _SERVICE},
        },
        {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": BAD_KEY_MESSAGE},
    ]
    return error_body(400, "INVALID_ARGUMENT", BAD_KEY_MESSAGE, details)


def missing_key() -> dict[str, Any]:
    message = (
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )
    return error_body(403, "PERMISSION_DENIED", message)


def model_not_found(model: str, method: str) -> dict[str, Any]:
    message = (
        f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    return error_body(404, "NOT_FOUND", message)


def retry_delay(seconds: float) -> str:
    """A protobuf ``Duration`` in whole seconds, rounded up (``"7s"``)."""
    return f"{max(1, math.ceil(seconds - 1e-9))}s"


def _quota_failure(kind: str, model: str, limit: int) -> dict[str, Any]:
    metric, quota_id = _QUOTA_IDS[kind]
    violation = {
        "quotaMetric": f"{_SERVICE}/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    return {"@type": _TYPE + "QuotaFailure", "violations": [violation]}


def _help() -> dict[str, Any]:
    link = {"description": "Learn more about Gemini API quotas", "url": _HELP_URL}
    return {"@type": _TYPE + "Help", "links": [link]}


def _exhausted(details: list[dict[str, Any]], wait_s: float | None) -> dict[str, Any]:
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        f"For more information on this error, head to: {_HELP_URL}."
    )
    if wait_s is not None and not math.isinf(wait_s) and wait_s > 0:
        message += f" Please retry in {wait_s:.3f}s."
        details = [*details, {"@type": _TYPE + "RetryInfo", "retryDelay": retry_delay(wait_s)}]
    return error_body(429, "RESOURCE_EXHAUSTED", message, details)


def rate_limited(kind: str, model: str, limit: int, wait_s: float) -> dict[str, Any]:
    """A per-minute quota (``requests`` or ``tokens``) ran out; ``RetryInfo`` unless it never
    can fit."""
    return _exhausted([_quota_failure(kind, model, limit), _help()], wait_s)


def quota_exhausted(model: str, limit: int) -> dict[str, Any]:
    """The hard quota: a per-day quota (``...PerDay...``) with no ``RetryInfo``."""
    return _exhausted([_quota_failure("day", model, limit), _help()], None)


def server_error(status: int) -> dict[str, Any]:
    if status == 503:
        return error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    message = "An internal error has occurred. Please retry or report the problem."
    return error_body(500, "INTERNAL", message)


# -- responses ----------------------------------------------------------------------------------


def thought_signature(name: str) -> str:
    """The opaque signature the simulator puts on a function call (base64, as Google's are)."""
    return base64.b64encode(f"sim-thought:{name}".encode()).decode()


def _parts(reply: NativeReply, text: str) -> list[dict[str, Any]]:
    call = reply.tool_call
    if call is not None:
        function_call = {"name": call.name, "args": call.arguments}
        return [{"functionCall": function_call, "thoughtSignature": thought_signature(call.name)}]
    return [{"text": text}]


def _candidate(
    reply: NativeReply, index: int, text: str, final: bool, with_ratings: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    if reply.finish is not Finish.SAFETY:
        candidate["content"] = {"parts": _parts(reply, text), "role": "model"}
    if final:
        candidate["finishReason"] = _FINISH[reply.finish]
    candidate["index"] = index
    if reply.finish is Finish.SAFETY:
        candidate["safetyRatings"] = [
            {"category": c, "probability": "NEGLIGIBLE"} for c in _HARM_CATEGORIES[:-1]
        ] + [{"category": _HARM_CATEGORIES[-1], "probability": "HIGH", "blocked": True}]
    elif with_ratings:
        candidate["safetyRatings"] = []
    return candidate


def _usage(prompt_tokens: int, candidates_tokens: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens,
    }


def response(
    reply: NativeReply, count: int, prompt_tokens: int, model: str, response_id: str
) -> dict[str, Any]:
    """A whole ``GenerateContentResponse`` with ``count`` identical candidates."""
    return {
        "candidates": [_candidate(reply, i, reply.text, True, True) for i in range(count)],
        "usageMetadata": _usage(prompt_tokens, reply.tokens * count),
        "modelVersion": model,
        "responseId": response_id,
    }


def stream_chunks(
    reply: NativeReply, count: int, prompt_tokens: int, model: str, response_id: str
) -> list[dict[str, Any]]:
    """The slices a stream sends: one per text piece, ``finishReason`` and the final usage on
    the last; a tool call or a blocked candidate comes as a single slice."""
    pieces = reply.pieces if reply.tool_call is None and reply.pieces else [reply.text]
    chunks = []
    for n, piece in enumerate(pieces, 1):
        final = n == len(pieces)
        used = reply.tokens if final else reply.tokens * n // len(pieces)
        chunks.append(
            {
                "candidates": [_candidate(reply, i, piece, final, False) for i in range(count)],
                "usageMetadata": _usage(prompt_tokens, used * count),
                "modelVersion": model,
                "responseId": response_id,
            }
        )
    return chunks


def sse(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event; Google ends events with CRLF pairs."""
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


# -- models -------------------------------------------------------------------------------------


def supported_methods(model: str) -> list[str]:
    """Advertised methods: by name, embedding models embed and the rest generate (the list is
    informational; the simulator serves every method on every listed model)."""
    if "embedding" in model:
        return ["embedContent", "batchEmbedContents", "countTextTokens"]
    return ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]


def _display_name(model: str) -> str:
    words = model.split("-")
    return " ".join(w if any(c.isdigit() for c in w) else w.capitalize() for w in words)


def model_object(model: str) -> dict[str, Any]:
    embedding = "embedding" in model
    entry: dict[str, Any] = {
        "name": f"models/{model}",
        "baseModelId": model,
        "version": "001",
        "displayName": _display_name(model),
        "description": f"Simulated {model}",
        "inputTokenLimit": 2048 if embedding else 1_048_576,
        "outputTokenLimit": 1 if embedding else 65_536,
        "supportedGenerationMethods": supported_methods(model),
    }
    if not embedding:
        entry.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
    return entry
