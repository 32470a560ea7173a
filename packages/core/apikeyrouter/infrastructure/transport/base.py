"""A minimal HTTP transport contract, so adapters don't care which client library sends bytes.

The default is aiohttp (measured several times faster than httpx here); tests and benchmarks
can swap in the in-process ASGI transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass


class TransportError(Exception):
    """The request did not produce a response: connect failure, reset, or a broken body."""


class TransportTimeout(TransportError):
    """No (complete) response within the allowed time."""


@dataclass(slots=True)
class HttpResponse:
    status: int
    #: Looked up by lower-case name; aiohttp's mapping is case-insensitive, so it is passed on
    #: without the per-response copy a lower-cased dict would cost.
    headers: Mapping[str, str]
    body: bytes


class HttpStreamResponse(ABC):
    status: int
    headers: Mapping[str, str]

    @abstractmethod
    def iter_lines(self) -> AsyncIterator[bytes]:
        """Yield the body line by line (without the trailing newline)."""

    @abstractmethod
    async def read(self) -> bytes:
        """Read the whole remaining body (used for error responses)."""

    @abstractmethod
    async def aclose(self) -> None: ...


class HttpTransport(ABC):
    @abstractmethod
    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpResponse: ...

    @abstractmethod
    async def open_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpStreamResponse:
        """Send the request and return once the status and headers are in.

        ``timeout`` bounds the wait for the first byte and each later read.
        """

    @abstractmethod
    async def close(self) -> None: ...
