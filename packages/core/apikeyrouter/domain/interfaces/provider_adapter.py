"""The contract every provider adapter meets, so the core never branches on a provider name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from apikeyrouter.domain.models.outcome import ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.domain.models.response import Usage


@dataclass(slots=True)
class UpstreamSuccess:
    """A successful non-streaming call, translated to OpenAI format."""

    body: dict[str, Any]
    usage: Usage
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)
    status: int = 200
    #: The upstream's bytes when ``body`` is exactly their parse (no translation), so the
    #: proxy can pass them on without serialising ``body`` again. None after a translation.
    raw: bytes | None = None


class UpstreamStream(ABC):
    """An open streaming response. Iterate for OpenAI-format chunk payloads (JSON bytes).

    Iteration raises :class:`StreamInterrupted` if the upstream breaks off mid-stream.
    ``usage`` is filled in once the final chunk has been seen.
    """

    rate_limit: RateLimitInfo
    usage: Usage | None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


#: What a call to an adapter produces: success, or a classified failure (never an exception for
#: an upstream error, so the hot path does not pay for raising).
AdapterResult = UpstreamSuccess | ProviderFailure
StreamResult = UpstreamStream | ProviderFailure


class ProviderAdapter(ABC):
    """Speaks one provider's wire format over a shared HTTP client."""

    kind: str = "abstract"
    base_url: str
    capabilities: ProviderCapabilities

    def supports(self, endpoint: Endpoint, stream: bool) -> bool:
        caps = self.capabilities
        if stream and not caps.streaming:
            return False
        if endpoint is Endpoint.CHAT:
            return caps.chat
        if endpoint is Endpoint.COMPLETIONS:
            return caps.completions
        if endpoint is Endpoint.RAW:
            return caps.raw
        return caps.embeddings

    @abstractmethod
    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        """Make one non-streaming call with ``secret``; classify any failure."""

    @abstractmethod
    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        """Start a streaming call; a failure before the first byte comes back as a result."""

    @abstractmethod
    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        """Models this key can use, as the provider reports them."""

    async def close(self) -> None:  # noqa: B027 - adapters without connections need nothing
        """Release the adapter's connections."""
