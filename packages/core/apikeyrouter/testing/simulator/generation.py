"""Building and sending successful OpenAI answers: plain JSON, SSE streams and truncated ones.

Replies are deterministic (``Simulated reply to: <first 40 chars of the last user message>``)
so tests can assert on content; a stream is split into one chunk per completion token so
``chunk_delay_ms`` behaves like per-token latency (pacing and cuts live in :mod:`streaming`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from . import openai_wire as wire
from .asgi import JSON_HEADERS, SSE_HEADERS, Headers, Send
from .parsing import EmbeddingRequest, GenerationRequest
from .streaming import Cut, send_maybe_truncated, send_stream

__all__ = [
    "QUOTED_CHARS",
    "REPLY_PREFIX_CHAT",
    "Reply",
    "build_reply",
    "send_embeddings",
    "send_generation",
]

REPLY_PREFIX_CHAT = "Simulated reply to: "
REPLY_PREFIX_TEXT = "Simulated completion of: "
QUOTED_CHARS = 40


class Reply:
    """The deterministic answer to one generation request."""

    __slots__ = ("completion_tokens", "finish_reason", "texts", "tokens_per_choice")

    def __init__(self, texts: list[str], tokens_per_choice: int, finish_reason: str) -> None:
        self.texts = texts
        self.tokens_per_choice = tokens_per_choice
        self.completion_tokens = tokens_per_choice * len(texts)
        self.finish_reason = finish_reason


def build_reply(request: GenerationRequest, chat: bool, natural_tokens: int) -> Reply:
    """Completion length = min(max_tokens, natural length); a cut reply ends with ``length``."""
    limit = request.max_tokens
    tokens = natural_tokens if limit is None else min(limit, natural_tokens)
    truncated = tokens < natural_tokens
    prefix = REPLY_PREFIX_CHAT if chat else REPLY_PREFIX_TEXT
    texts = []
    for source in request.sources:
        text = prefix + source[:QUOTED_CHARS]
        if truncated:
            text = text[: math.ceil(len(text) * tokens / natural_tokens)]
        texts.append(text)
    return Reply(texts, tokens, "length" if truncated else "stop")


def _chat_events(id_: str, model: str, reply: Reply, request: GenerationRequest) -> list[bytes]:
    created = int(time.time())
    with_usage = request.include_usage
    events = [
        wire.sse(
            wire.chat_chunk(
                id_, created, model, {"role": "assistant", "content": "", "refusal": None},
                None, None, with_usage,
            )
        )
    ]  # fmt: skip
    for piece in wire.split_content(reply.texts[0], reply.tokens_per_choice):
        delta = {"content": piece}
        events.append(wire.sse(wire.chat_chunk(id_, created, model, delta, None, None, with_usage)))
    events.append(
        wire.sse(wire.chat_chunk(id_, created, model, {}, reply.finish_reason, None, with_usage))
    )
    if with_usage:
        totals = wire.usage(request.prompt_tokens, reply.completion_tokens)
        events.append(wire.sse(wire.chat_chunk(id_, created, model, None, None, totals, True)))
    return events


def _text_events(id_: str, model: str, reply: Reply, request: GenerationRequest) -> list[bytes]:
    created = int(time.time())
    with_usage = request.include_usage
    events = []
    for index, text in enumerate(reply.texts):
        for piece in wire.split_content(text, reply.tokens_per_choice):
            choice = (index, piece, None)
            events.append(wire.sse(wire.text_chunk(id_, created, model, choice, None, with_usage)))
        final = (index, "", reply.finish_reason)
        events.append(wire.sse(wire.text_chunk(id_, created, model, final, None, with_usage)))
    if with_usage:
        totals = wire.usage(request.prompt_tokens, reply.completion_tokens)
        events.append(wire.sse(wire.text_chunk(id_, created, model, None, totals, True)))
    return events


def _full_body(id_: str, model: str, reply: Reply, request: GenerationRequest, chat: bool) -> Any:
    totals = wire.usage(request.prompt_tokens, reply.completion_tokens)
    created = int(time.time())
    if chat:
        return wire.chat_completion(
            id_, created, model, reply.texts[0], reply.finish_reason, totals
        )
    pairs = [(text, reply.finish_reason) for text in reply.texts]
    return wire.text_completion(id_, created, model, pairs, totals)


async def send_generation(
    send: Send,
    headers: Headers,
    id_: str,
    request: GenerationRequest,
    reply: Reply,
    chat: bool,
    chunk_delay_s: float,
    cut: Cut | None,
) -> bool:
    """Send the answer; False if a ``cut`` ended the stream with an error event.

    ``cut`` (a ``drop_stream`` or ``stream_error`` fault): for a stream, the number of SSE events
    sent before the cut (never ``[DONE]``); for a plain answer, the body is truncated halfway
    (a ``stream_error`` on a plain answer is turned into an error status by the caller).
    """
    model = request.model
    if not request.stream:
        body = orjson.dumps(_full_body(id_, model, reply, request, chat))
        await send_maybe_truncated(send, [*JSON_HEADERS, *headers], body, cut is not None)
        return True
    events = (_chat_events if chat else _text_events)(id_, model, reply, request)
    return await send_stream(
        send, [*SSE_HEADERS, *headers], events, chunk_delay_s, cut, tail=wire.DONE
    )


async def send_embeddings(
    send: Send, headers: Headers, request: EmbeddingRequest, dimensions: int, drop: bool
) -> None:
    vectors = [wire.embedding_vector(item, dimensions) for item in request.inputs]
    payload = wire.embeddings_body(request.model, vectors, request.prompt_tokens, request.as_base64)
    body = orjson.dumps(payload)
    await send_maybe_truncated(send, [*JSON_HEADERS, *headers], body, drop)
