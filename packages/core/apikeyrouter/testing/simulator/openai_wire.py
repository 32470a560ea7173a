"""OpenAI wire format: response bodies, SSE chunks and error bodies.

Clients under test (the router's OpenAI adapter, the official SDK) parse these shapes strictly,
so they mirror what api.openai.com returns field for field, including the ``null`` fields.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from functools import lru_cache
from typing import Any

import orjson

from .config import mask_key
from .errors import ApiError

__all__ = [
    "DONE",
    "STREAM_ERROR_MESSAGE",
    "ApiError",
    "chat_chunk",
    "chat_completion",
    "embedding_vector",
    "embeddings_body",
    "error_body",
    "insufficient_quota",
    "invalid_api_key",
    "model_not_found",
    "models_body",
    "rate_limited",
    "server_error",
    "split_content",
    "sse",
    "sse_error",
    "text_chunk",
    "text_completion",
    "usage",
]

DONE = b"data: [DONE]\n\n"
SYSTEM_FINGERPRINT = "fp_simulated"


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, error_body(message, "invalid_request_error", code, param))


def invalid_api_key(key: str | None) -> dict[str, Any]:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = (
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
    return error_body(message, "invalid_request_error", "invalid_api_key")


def model_not_found(model: str) -> dict[str, Any]:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return error_body(message, "invalid_request_error", "model_not_found")


def rate_limited(kind: str, limit: int, used: int, requested: int, wait_s: float) -> dict[str, Any]:
    """``kind`` is ``requests`` or ``tokens``, which is also the error ``type`` OpenAI uses."""
    unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    if math.isinf(wait_s):
        message = f"Request too large for {unit}: Limit {limit}, Requested {requested}."
    else:
        message = (
            f"Rate limit reached for {unit}: Limit {limit}, Used {used}, Requested {requested}. "
            f"Please try again in {_human_wait(wait_s)}."
        )
    return error_body(message, kind, "rate_limit_exceeded")


def _human_wait(seconds: float) -> str:
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def insufficient_quota() -> dict[str, Any]:
    message = "You exceeded your current quota, please check your plan and billing details."
    return error_body(message, "insufficient_quota", "insufficient_quota")


def server_error(status: int) -> dict[str, Any]:
    if status == 503:
        message = "The server is overloaded or not ready yet."
    else:
        message = "The server had an error while processing your request. Sorry about that!"
    return error_body(message, "server_error")


STREAM_ERROR_MESSAGE = (
    "The server had an error while streaming the response (injected by the simulator)."
)


def sse_error() -> bytes:
    """The in-band error OpenAI writes into a stream it has to abandon (no ``[DONE]`` follows)."""
    return sse(error_body(STREAM_ERROR_MESSAGE, "server_error"))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chat_completion(
    id_: str, created: int, model: str, content: str, finish_reason: str, usage_: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chat_chunk(
    id_: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None,
    usage_: dict[str, int] | None,
    with_usage_field: bool,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` builds the final usage-only chunk."""
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        # With include_usage OpenAI puts "usage": null on every chunk and the totals on the last.
        chunk["usage"] = usage_
    return chunk


def text_completion(
    id_: str, created: int, model: str, texts: list[tuple[str, str]], usage_: dict[str, int]
) -> dict[str, Any]:
    """A legacy ``text_completion``; ``texts`` holds (text, finish_reason) per choice."""
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
            for i, (text, finish) in enumerate(texts)
        ],
        "usage": usage_,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def text_chunk(
    id_: str,
    created: int,
    model: str,
    choice: tuple[int, str, str | None] | None,
    usage_: dict[str, int] | None,
    with_usage_field: bool,
) -> dict[str, Any]:
    """A streamed legacy chunk; ``choice`` is (index, text, finish_reason) or None for usage."""
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": []
        if choice is None
        else [
            {"text": choice[1], "index": choice[0], "logprobs": None, "finish_reason": choice[2]}
        ],
    }
    if with_usage_field:
        chunk["usage"] = usage_
    return chunk


def split_content(content: str, pieces: int) -> list[str]:
    """Split a reply into ``pieces`` nearly equal parts (one per "token" streamed)."""
    pieces = max(1, min(pieces, len(content)))
    size, extra = divmod(len(content), pieces)
    out: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(content[start:end])
        start = end
    return out


@lru_cache(maxsize=4096)
def embedding_vector(source: str | tuple[int, ...], dimensions: int) -> tuple[float, ...]:
    """A deterministic unit vector derived from a hash of the input.

    Same text, same vector, across runs and machines, so tests can compare embeddings; cached
    because benchmarks send the same inputs over and over.
    """
    data = source.encode() if isinstance(source, str) else orjson.dumps(list(source))
    raw = struct.unpack(f"<{dimensions}H", hashlib.shake_256(data).digest(2 * dimensions))
    values = [v / 32767.5 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(round(v / norm, 6) for v in values)


def embeddings_body(
    model: str, vectors: list[tuple[float, ...]], prompt_tokens: int, as_base64: bool
) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(vectors):
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_body(models: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(m, created) for m in models]}


def model_body(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "apikeyrouter-sim"}
