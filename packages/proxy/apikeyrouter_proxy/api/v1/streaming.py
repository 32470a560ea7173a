"""Server-sent events for ``"stream": true``: one ``data:`` line per upstream chunk, then
``data: [DONE]``.

Failover happens inside the router until the first chunk is in hand, so errors before that are
ordinary JSON error responses with the right status. After output has started the status line
is gone: a broken upstream ends the stream with an explicit ``data: {"error": ...}`` event and
then ``[DONE]``, which the ``openai`` SDK raises as an APIError instead of returning a silently
truncated answer. If the caller disconnects, the upstream stream is closed at once (and the key
is accounted for what it served).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
from apikeyrouter import RequestIntent, RoutedStream
from apikeyrouter.utils.exceptions import StreamInterruptedError

from apikeyrouter_proxy.asgi_types import Message, Receive, Send
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.error_handler import (
    internal_error_payload,
    log_unexpected,
)
from apikeyrouter_proxy.middleware.responses import routing_headers
from apikeyrouter_proxy.observability.tracing import traced_open_stream
from apikeyrouter_proxy.services.runtime import ProxyRuntime

DONE = b"data: [DONE]\n\n"
#: Status recorded for a stream the caller abandoned (nginx's convention; never sent).
CLIENT_CLOSED = 499
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _open(runtime: ProxyRuntime, intent: RequestIntent) -> RoutedStream:
    router = runtime.service.router
    if runtime.tracing is None:
        return await router.open_stream(intent)
    return await traced_open_stream(runtime.tracing, router, intent)


def _event(data: bytes) -> Message:
    """One SSE event carrying ``data``; more follow (at least the final ``[DONE]``)."""
    return {"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True}


async def _pump(stream: RoutedStream, ctx: RequestContext, send: Send) -> None:
    chunks: AsyncIterator[bytes] = aiter(stream)
    try:
        async for payload in chunks:
            await send(_event(payload))
    except StreamInterruptedError as exc:
        await send(_event(orjson.dumps(exc.to_openai_error())))
    except Exception as exc:
        log_unexpected(exc, ctx.request_id, ctx.path)
        await send(_event(orjson.dumps(internal_error_payload(ctx.request_id))))
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": DONE, "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stream_response(
    runtime: ProxyRuntime,
    intent: RequestIntent,
    ctx: RequestContext,
    receive: Receive,
    send: Send,
) -> None:
    stream = await _open(runtime, intent)
    ctx.key_id = stream.key_used
    ctx.provider = stream.provider_id
    ctx.attempt_records = stream.attempts
    ctx.attempts = len(stream.attempts) + 1
    headers = [*_SSE_HEADERS, (b"x-request-id", ctx.request_id.encode())]
    headers.extend(routing_headers(stream.key_used, stream.provider_id, ctx.attempts))
    ctx.status = 200
    ctx.response_started = True
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    pump = asyncio.ensure_future(_pump(stream, ctx, send))
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not pump.done():
            ctx.status = CLIENT_CLOSED
            pump.cancel()
        watcher.cancel()
        await asyncio.gather(pump, watcher, return_exceptions=True)
    ctx.attempts = len(stream.attempts)
    runtime.record_usage(
        stream.key_used, stream.provider_id, stream.decision.model, ctx.client_id, stream.usage
    )
    if not pump.cancelled() and (error := pump.exception()) is not None:
        raise error
