"""Server-sent-event plumbing shared by the streaming adapters.

OpenAI, Anthropic and Gemini all stream as SSE, and only ``data:`` lines carry anything used here
(``event:`` names repeat the JSON's own ``type``; ids, comments and keep-alives carry nothing), so
reading a line and owning the open response are written once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream
from apikeyrouter.domain.models.outcome import RateLimitInfo
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.transport.base import HttpStreamResponse, TransportError
from apikeyrouter.utils.exceptions import StreamInterruptedError
from apikeyrouter.utils.redaction import redact


def sse_data(line: bytes) -> bytes | None:
    """The payload of a ``data:`` line, stripped; ``None`` for every other kind of line."""
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip()


def sse_json(line: bytes) -> Any:
    """The JSON value of a ``data:`` line; ``None`` for other lines and for data that is not
    JSON, which is skipped rather than fatal (a keep-alive must not break a healthy stream)."""
    data = sse_data(line)
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def stream_broke_off(exc: TransportError, secret: str) -> StreamInterruptedError:
    """The error for a connection lost mid-stream; transport messages can echo request details,
    so the key is scrubbed before the message can reach a caller or a log."""
    return StreamInterruptedError(f"upstream stream broke off: {redact(str(exc), secret)}")


class SseUpstreamStream(UpstreamStream):
    """An :class:`UpstreamStream` over one open HTTP response, which it owns and closes.

    Subclasses implement :meth:`_iterate`; iterating and closing are the same for every
    provider, so they are not repeated per adapter.
    """

    def __init__(self, response: HttpStreamResponse, rate_limit: RateLimitInfo) -> None:
        self._response = response
        self.rate_limit = rate_limit
        self.usage: Usage | None = None

    @abstractmethod
    def _iterate(self) -> AsyncIterator[bytes]:
        """OpenAI chunk payloads as JSON bytes; must close the response when it ends."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def aclose(self) -> None:
        await self._response.aclose()
