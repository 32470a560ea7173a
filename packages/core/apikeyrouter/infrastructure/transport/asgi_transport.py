"""In-process transport: calls an ASGI app directly, no sockets.

For tests and for benchmarks that want to measure the router without the network stack.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
    TransportError,
    TransportTimeout,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_END = object()


class _AsgiStream(HttpStreamResponse):
    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        queue: asyncio.Queue[object],
        task: asyncio.Task[None],
        timeout: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self._queue = queue
        self._task = task
        self._timeout = timeout
        self._buffer = b""

    async def _next_piece(self) -> bytes | None:
        try:
            async with asyncio.timeout(self._timeout):
                item = await self._queue.get()
        except TimeoutError as exc:
            raise TransportTimeout("in-process stream stalled") from exc
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise TransportError(f"in-process app failed: {type(item).__name__}") from item
        assert isinstance(item, bytes)
        return item

    async def iter_lines(self) -> AsyncIterator[bytes]:
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line.rstrip(b"\r")
            piece = await self._next_piece()
            if piece is None:
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    yield line
                return
            self._buffer += piece

    async def read(self) -> bytes:
        parts = [self._buffer]
        self._buffer = b""
        while (piece := await self._next_piece()) is not None:
            parts.append(piece)
        return b"".join(parts)

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class ASGITransport(HttpTransport):
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    @staticmethod
    def _scope(method: str, url: str, headers: Mapping[str, str]) -> Scope:
        parts = urlsplit(url)
        host = parts.hostname or "testserver"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw_headers.append((b"host", host.encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": parts.scheme or "http",
            "path": parts.path or "/",
            "raw_path": (parts.path or "/").encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 1),
            "server": (host, port),
        }

    async def _start(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[
        asyncio.Future[tuple[int, dict[str, str]]], asyncio.Queue[object], asyncio.Task[None]
    ]:
        loop = asyncio.get_running_loop()
        start: asyncio.Future[tuple[int, dict[str, str]]] = loop.create_future()
        queue: asyncio.Queue[object] = asyncio.Queue()
        request_sent = False
        disconnected = asyncio.Event()

        async def receive() -> Message:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = {
                    k.decode().lower(): v.decode() for k, v in message.get("headers", [])
                }
                start.set_result((int(message["status"]), response_headers))
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    queue.put_nowait(bytes(chunk))
                if not message.get("more_body", False):
                    queue.put_nowait(_END)

        async def run() -> None:
            try:
                await self._app(self._scope(method, url, headers), receive, send)
            except Exception as exc:
                if not start.done():
                    start.set_exception(TransportError(f"app failed: {type(exc).__name__}"))
                else:
                    queue.put_nowait(exc)
                return
            finally:
                disconnected.set()
            if not start.done():
                start.set_exception(TransportError("app returned without a response"))
            queue.put_nowait(_END)

        task = loop.create_task(run())
        return start, queue, task

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        stream = await self.open_stream(method, url, headers, body, timeout)
        try:
            payload = await stream.read()
        finally:
            await stream.aclose()
        return HttpResponse(stream.status, stream.headers, payload)

    async def open_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpStreamResponse:
        start, queue, task = await self._start(method, url, headers, body)
        try:
            async with asyncio.timeout(timeout):
                status, response_headers = await start
        except TimeoutError as exc:
            task.cancel()
            raise TransportTimeout(f"no response within {timeout:.3g}s") from exc
        return _AsgiStream(status, response_headers, queue, task, timeout)

    async def close(self) -> None:
        return None
