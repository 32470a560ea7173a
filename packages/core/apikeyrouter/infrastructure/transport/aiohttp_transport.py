"""The default transport: one shared aiohttp session with a keep-alive pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp

from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
    TransportError,
    TransportTimeout,
)


class _AiohttpStream(HttpStreamResponse):
    def __init__(self, response: aiohttp.ClientResponse, read_timeout: float) -> None:
        self._response = response
        self._read_timeout = read_timeout
        self.status = response.status
        self.headers = response.headers  # case-insensitive already: no copy

    async def iter_lines(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    line = await content.readline()
                if not line:
                    return
                yield line.rstrip(b"\r\n")
        except TimeoutError as exc:
            raise TransportTimeout("upstream stream stalled") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"upstream stream broke: {type(exc).__name__}") from exc

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._read_timeout):
                return await self._response.read()
        except TimeoutError as exc:
            raise TransportTimeout("upstream body stalled") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"upstream body broke: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(HttpTransport):
    """Created lazily inside the running loop, since an aiohttp session binds to its loop."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 256,
        max_connections_per_host: int = 0,
        keepalive_seconds: float = 30.0,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._per_host = max_connections_per_host
        self._keepalive = keepalive_seconds

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._per_host,
                keepalive_timeout=self._keepalive,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                raise_for_status=False,
            )
            self._session = session
            self._owns_session = True
        return session

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        session = self._get_session()
        try:
            # aiohttp's own total timeout covers connect, send and the body read with the one
            # timer it arms anyway (an asyncio.timeout around it would arm a second).
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                payload = await response.read()
                return HttpResponse(response.status, response.headers, payload)
        except TimeoutError as exc:
            raise TransportTimeout(f"no response within {timeout:.3g}s") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"upstream connection failed: {type(exc).__name__}") from exc

    async def open_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpStreamResponse:
        session = self._get_session()
        try:
            async with asyncio.timeout(timeout):
                response = await session.request(method, url, headers=headers, data=body)
        except TimeoutError as exc:
            raise TransportTimeout(f"no response within {timeout:.3g}s") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"upstream connection failed: {type(exc).__name__}") from exc
        return _AiohttpStream(response, timeout)

    async def close(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()
        self._session = None
