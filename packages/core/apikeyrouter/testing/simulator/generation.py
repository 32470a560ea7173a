"""Building and sending successful answers: plain JSON, SSE streams and truncated ones.

Replies are deterministic (``Simulated reply to: <first 40 chars of the last user message>``)
so tests can assert on content; a stream is split into one chunk per completion token so
``chunk_delay_ms`` behaves like per-token latency. Without a chunk delay the whole stream goes
out in one write: the bytes on the wire are the same, and benchmarks stay cheap.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson

from . import openai_wire as wire
from .asgi import JSON_HEADERS, SSE_HEADERS, Headers, Send, SimulatedDisconnect, send_response
from .parsing import EmbeddingRequest, GenerationRequest

__all__ = ["Reply", "build_reply", "send_embeddings", "send_generation"]

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
    drop_after: int | None,
) -> None:
    """Send a complete answer, or raise :class:`SimulatedDisconnect` after a partial one.

    ``drop_after``: for a stream, the number of SSE events sent before the cut (never
    ``[DONE]``); for a plain answer, any value truncates the body halfway.
    """
    model = request.model
    if not request.stream:
        body = orjson.dumps(_full_body(id_, model, reply, request, chat))
        await _send_maybe_truncated(send, [*JSON_HEADERS, *headers], body, drop_after)
        return
    events = (_chat_events if chat else _text_events)(id_, model, reply, request)
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    if drop_after is not None:
        for event in events[:drop_after]:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
        raise SimulatedDisconnect
    if not chunk_delay_s:
        events.append(wire.DONE)
        await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})
        return
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(chunk_delay_s)
    await send({"type": "http.response.body", "body": wire.DONE, "more_body": False})


async def _send_maybe_truncated(
    send: Send, headers: Headers, body: bytes, drop_after: int | None
) -> None:
    if drop_after is None:
        await send_response(send, 200, headers, body)
        return
    # Promise the full length, deliver half, cut: the client sees an incomplete body.
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise SimulatedDisconnect


async def send_embeddings(
    send: Send, headers: Headers, request: EmbeddingRequest, dimensions: int, drop: bool
) -> None:
    vectors = [wire.embedding_vector(item, dimensions) for item in request.inputs]
    payload = wire.embeddings_body(request.model, vectors, request.prompt_tokens, request.as_base64)
    body = orjson.dumps(payload)
    await _send_maybe_truncated(send, [*JSON_HEADERS, *headers], body, 0 if drop else None)
