"""Gemini ``streamGenerateContent?alt=sse`` -> OpenAI ``chat.completion.chunk`` payloads.

Each SSE ``data:`` line is a whole ``GenerateContentResponse`` holding the next slice of every
candidate. Gemini sends no end marker, so a stream counts as complete only once a candidate
reported a ``finishReason`` (or the prompt was blocked); anything else is a broken stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from apikeyrouter.domain.models.outcome import RateLimitInfo
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.adapters.gemini_translation import (
    ToolCallIds,
    first_object,
    is_blocked,
    map_finish_reason,
    split_parts,
    usage_from_gemini,
)
from apikeyrouter.infrastructure.adapters.openai_replies import chunk, usage_chunk
from apikeyrouter.infrastructure.adapters.sse import SseUpstreamStream, sse_json, stream_broke_off
from apikeyrouter.infrastructure.transport.base import HttpStreamResponse, TransportError
from apikeyrouter.utils.exceptions import StreamInterruptedError
from apikeyrouter.utils.redaction import redact


class GeminiStreamError(Exception):
    """An ``{"error": ...}`` object arrived in place of a response slice."""


class GeminiChunkTranslator:
    """Turns response slices into OpenAI chunks; keeps ids, tool indexes and the last usage."""

    def __init__(self, model: str, created: int, response_id: str) -> None:
        self._model = model
        self._created = created
        self._id = response_id
        self._ids = ToolCallIds()
        self._started: set[int] = set()
        self._tool_counts: dict[int, int] = {}
        self._usage: Usage | None = None
        self.finished = False

    def _chunk(self, choice: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return chunk(self._id, self._created, self._model, choice, delta, finish)

    def translate(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one slice; raises :class:`GeminiStreamError` for an error object."""
        error = payload.get("error")
        if isinstance(error, dict):
            raise GeminiStreamError(str(error.get("message") or error.get("status") or "error"))
        if isinstance(payload.get("responseId"), str) and not self._started:
            self._id = payload["responseId"]
        if isinstance(payload.get("modelVersion"), str):
            self._model = payload["modelVersion"]
        if isinstance(payload.get("usageMetadata"), dict):
            self._usage = usage_from_gemini(payload["usageMetadata"])
        chunks: list[dict[str, Any]] = []
        candidates = payload.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
            if isinstance(candidate, dict):
                chunks.extend(self._candidate(position, candidate))
        if not candidates and is_blocked(payload):
            chunks.extend(self._open(0))
            chunks.append(self._chunk(0, {}, "content_filter"))
            self.finished = True
        return chunks

    def _open(self, choice: int) -> list[dict[str, Any]]:
        if choice in self._started:
            return []
        self._started.add(choice)
        return [self._chunk(choice, {"role": "assistant", "content": ""}, None)]

    def _candidate(self, position: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        index = candidate.get("index")
        choice = index if isinstance(index, int) else position
        chunks = self._open(choice)
        content = candidate.get("content")
        text, calls = split_parts(
            content.get("parts") if isinstance(content, dict) else None, self._ids
        )
        if text:
            chunks.append(self._chunk(choice, {"content": text}, None))
        if calls:
            first = self._tool_counts.get(choice, 0)
            self._tool_counts[choice] = first + len(calls)
            indexed = [{"index": first + i, **call} for i, call in enumerate(calls)]
            chunks.append(self._chunk(choice, {"tool_calls": indexed}, None))
        reason = map_finish_reason(candidate.get("finishReason"), choice in self._tool_counts)
        if reason is not None:
            chunks.append(self._chunk(choice, {}, reason))
            self.finished = True
        return chunks

    def final_chunk(self) -> dict[str, Any]:
        """The closing ``choices: []`` chunk with the usage of the whole call."""
        self._usage = self._usage or Usage()
        return usage_chunk(self._id, self._created, self._model, self._usage)

    @property
    def usage(self) -> Usage | None:
        return self._usage


def parse_sse_payload(line: bytes) -> dict[str, Any] | None:
    """The response slice (or error) on a ``data:`` line, unwrapped from a one-element array."""
    return first_object(sse_json(line))


class GeminiStream(SseUpstreamStream):
    """An open Gemini stream, yielding OpenAI chunk payloads as JSON bytes."""

    def __init__(
        self,
        response: HttpStreamResponse,
        rate_limit: RateLimitInfo,
        translator: GeminiChunkTranslator,
        secret: str,
    ) -> None:
        super().__init__(response, rate_limit)
        self._translator = translator
        self._secret = secret

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            async for line in self._response.iter_lines():
                payload = parse_sse_payload(line)
                if payload is None:
                    continue
                for chunk in self._translator.translate(payload):
                    yield orjson.dumps(chunk)
        except GeminiStreamError as exc:
            detail = redact(str(exc), self._secret)
            raise StreamInterruptedError(f"upstream stream error: {detail}") from None
        except TransportError as exc:
            raise stream_broke_off(exc, self._secret) from exc
        finally:
            await self._response.aclose()
        if not self._translator.finished:
            raise StreamInterruptedError("upstream stream ended before a finishReason")
        final = self._translator.final_chunk()
        self.usage = self._translator.usage
        yield orjson.dumps(final)
