"""Offline token estimate for a request, used to reserve quota before the call.

A calibrated character-based estimate (about 4 characters per token for English text with
BPE tokenizers, plus per-message framing). It errs high rather than low: a reservation that is
too large only delays a request; one that is too small can overshoot a key's limit.
"""

from __future__ import annotations

from typing import Any

from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
DEFAULT_COMPLETION_TOKENS = 256
IMAGE_TOKENS = 765  # a high-detail 512px tile set; images are rarely cheaper


def _text_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in ("image_url", "image", "input_image"):
                    total += IMAGE_TOKENS
                else:
                    total += _content_tokens(part.get("text") or part.get("content") or "")
            else:
                total += _content_tokens(part)
        return total
    if content is None:
        return 0
    return _text_tokens(str(content))


def estimate_prompt_tokens(intent: RequestIntent) -> int:
    body = intent.body
    if intent.endpoint is Endpoint.CHAT:
        total = REPLY_PRIMING_TOKENS
        for message in body.get("messages") or ():
            if isinstance(message, dict):
                total += TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
                if "tool_calls" in message:
                    total += _text_tokens(str(message["tool_calls"]))
        if "tools" in body:
            total += _text_tokens(str(body["tools"]))
        return total
    field = "prompt" if intent.endpoint is Endpoint.COMPLETIONS else "input"
    return _content_tokens(body.get(field))


def completion_allowance(
    intent: RequestIntent, default_completion: int = DEFAULT_COMPLETION_TOKENS
) -> int:
    """The most the completion may use: what providers charge a rate limit up front."""
    if intent.endpoint is Endpoint.EMBEDDINGS:
        return 0
    return intent.max_tokens if intent.max_tokens is not None else default_completion


def estimate_total_tokens(
    intent: RequestIntent, default_completion: int = DEFAULT_COMPLETION_TOKENS
) -> int:
    """Prompt plus the completion allowance."""
    return estimate_prompt_tokens(intent) + completion_allowance(intent, default_completion)
