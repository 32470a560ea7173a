"""Request body size limit, enforced while reading and before any parsing.

A declared ``Content-Length`` over the limit is refused without reading a byte; a chunked body
is counted as it arrives and refused the moment it passes the limit, so an oversized body never
sits in memory whole and never reaches the JSON parser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from apikeyrouter_proxy.asgi_types import Message, Receive
from apikeyrouter_proxy.middleware.errors import BodyTooLarge, ClientDisconnected


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole request body (hot path: one ``receive`` for the common single-chunk body)."""
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def limited_receive(
    receive: Receive, limit: int, on_exceeded: Callable[[], Awaitable[None]]
) -> Receive:
    """Wrap ``receive`` for apps that read the body themselves (FastAPI). Past the limit,
    ``on_exceeded`` answers 413 and the app sees a disconnect, so it stops reading."""
    size = 0
    exceeded = False

    async def counting_receive() -> Message:
        nonlocal size, exceeded
        if exceeded:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                exceeded = True
                await on_exceeded()
                return {"type": "http.disconnect"}
        return message

    return counting_receive
