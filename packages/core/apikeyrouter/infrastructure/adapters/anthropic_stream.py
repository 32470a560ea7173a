"""Anthropic SSE events -> OpenAI ``chat.completion.chunk`` payloads.

:class:`AnthropicChunkTranslator` is the pure state machine (one event in, zero or more chunks
out); :class:`AnthropicStream` feeds it from the wire. The router and the proxy only ever see
OpenAI chunks, so a client cannot tell which provider served it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from apikeyrouter.domain.models.outcome import RateLimitInfo
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.adapters.anthropic_translation import (
    map_stop_reason,
    usage_from_anthropic,
)
from apikeyrouter.infrastructure.adapters.openai_replies import chunk, usage_chunk
from apikeyrouter.infrastructure.adapters.sse import SseUpstreamStream, sse_json, stream_broke_off
from apikeyrouter.infrastructure.transport.base import HttpStreamResponse, TransportError
from apikeyrouter.utils.exceptions import StreamInterruptedError
from apikeyrouter.utils.redaction import redact


class AnthropicStreamError(Exception):
    """An ``error`` event in the stream: the upstream gave up after answering 200."""

    def __init__(self, error_type: str | None, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class AnthropicChunkTranslator:
    """Turns Messages stream events into OpenAI chunks, tracking ids, tool indexes and usage."""

    def __init__(self, model: str, created: int) -> None:
        self._model = model
        self._created = created
        self._id = "msg_unknown"
        self._raw_usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self.started = False
        self.finished = False
        self.usage: Usage | None = None

    def translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one event; raises :class:`AnthropicStreamError` for an ``error`` event."""
        kind = event.get("type")
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            error = event.get("error")
            error = error if isinstance(error, dict) else {}
            etype = error.get("type") if isinstance(error.get("type"), str) else None
            raise AnthropicStreamError(etype, str(error.get("message") or "stream error"))
        return []  # ping, content_block_stop and future event types carry nothing for OpenAI

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """Anthropic has no ``n``: every chunk belongs to choice 0."""
        return chunk(self._id, self._created, self._model, 0, delta, finish_reason)

    def _message_start(self, message: Any) -> list[dict[str, Any]]:
        if isinstance(message, dict):
            self._id = str(message.get("id") or self._id)
            self._model = str(message.get("model") or self._model)
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._raw_usage.update(usage)
        self.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text":
            text = block.get("text")
            return [self._chunk({"content": text})] if isinstance(text, str) and text else []
        if block.get("type") != "tool_use":
            return []  # thinking and server-tool blocks have no OpenAI chunk equivalent
        tool_index = len(self._tool_index)
        self._tool_index[_index(event)] = tool_index
        call = {
            "index": tool_index,
            "id": str(block.get("id") or f"call_{tool_index}"),
            "type": "function",
            "function": {"name": str(block.get("name") or ""), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta":
            text = delta.get("text")
            return [self._chunk({"content": text})] if isinstance(text, str) and text else []
        if delta.get("type") == "input_json_delta":
            partial = delta.get("partial_json")
            tool_index = self._tool_index.get(_index(event))
            if tool_index is None or not isinstance(partial, str) or not partial:
                return []
            call = {"index": tool_index, "function": {"arguments": partial}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        usage = event.get("usage")
        if isinstance(usage, dict):
            # Counts here are cumulative; later values replace the message_start estimates.
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
        delta = event.get("delta")
        reason = map_stop_reason(delta.get("stop_reason")) if isinstance(delta, dict) else None
        return [self._chunk({}, reason)] if reason is not None else []

    def _message_stop(self) -> list[dict[str, Any]]:
        self.finished = True
        self.usage = usage_from_anthropic(self._raw_usage)
        return [usage_chunk(self._id, self._created, self._model, self.usage)]


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else -1


def parse_sse_data(line: bytes) -> dict[str, Any] | None:
    """The JSON object of a ``data:`` line; ``event:`` lines are redundant with its ``type``."""
    value = sse_json(line)
    return value if isinstance(value, dict) else None


class AnthropicStream(SseUpstreamStream):
    """An open Messages stream, yielding OpenAI chunk payloads as JSON bytes.

    :meth:`first_event` lets the adapter read up to the first event before handing the stream
    out, so an overload reported as the first event still fails over to another key.
    """

    def __init__(
        self,
        response: HttpStreamResponse,
        rate_limit: RateLimitInfo,
        translator: AnthropicChunkTranslator,
        secret: str,
    ) -> None:
        super().__init__(response, rate_limit)
        self._lines = response.iter_lines()
        self._translator = translator
        self._secret = secret
        self._pending: list[dict[str, Any]] = []

    async def _next_event(self) -> dict[str, Any] | None:
        async for line in self._lines:
            event = parse_sse_data(line)
            if event is not None:
                return event
        return None

    async def first_event(self) -> bool:
        """Read and translate events until the first chunk exists; False if the body ended.

        Raises :class:`AnthropicStreamError` or :class:`TransportError` so the caller can
        classify them as an ordinary failed call.
        """
        while not self._pending:
            event = await self._next_event()
            if event is None:
                return False
            self._pending.extend(self._translator.translate(event))
        return True

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            while True:
                for chunk in self._pending:
                    yield orjson.dumps(chunk)
                self._pending.clear()
                if self._translator.finished:
                    break
                event = await self._next_event()
                if event is None:
                    break
                self._pending = self._translator.translate(event)
                self.usage = self._translator.usage
        except AnthropicStreamError as exc:
            detail = redact(exc.message, self._secret)
            raise StreamInterruptedError(
                f"upstream stream error ({exc.error_type}): {detail}"
            ) from None
        except TransportError as exc:
            raise stream_broke_off(exc, self._secret) from exc
        finally:
            await self._response.aclose()
        if not self._translator.finished:
            raise StreamInterruptedError("upstream stream ended without message_stop")
