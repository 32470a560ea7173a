"""Shared plumbing for HTTP adapters: one transport, JSON helpers, transport-failure mapping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.transport.aiohttp_transport import AiohttpTransport
from apikeyrouter.infrastructure.transport.base import HttpTransport, TransportTimeout


def transport_failure(exc: Exception) -> ProviderFailure:
    """A request that produced no usable response."""
    if isinstance(exc, TransportTimeout):
        return ProviderFailure(FailureKind.TIMEOUT, None, f"upstream timed out: {exc}")
    return ProviderFailure(FailureKind.CONNECTION, None, f"upstream connection failed: {exc}")


def parse_json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def usage_from_openai(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    total = int(raw.get("total_tokens") or prompt + completion)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


class HttpProviderAdapter(ProviderAdapter):
    """Base for adapters that talk HTTP through a shared :class:`HttpTransport`."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: HttpTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport = transport if transport is not None else AiohttpTransport()
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def close(self) -> None:
        await self._transport.close()
