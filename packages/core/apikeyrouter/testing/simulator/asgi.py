"""Minimal raw-ASGI plumbing: types, body reading, response sending.

The simulator is an upstream in benchmarks of a proxy that itself does thousands of requests per
second, so it must not be the bottleneck: no framework, no request objects, headers as the raw
byte pairs ASGI already hands us, bodies sent as pre-built bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = [
    "JSON_HEADERS",
    "SSE_HEADERS",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "SimulatedDisconnect",
    "find_header",
    "read_body",
    "send_json",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class SimulatedDisconnect(Exception):
    """Raised by the app to make the server cut the connection mid-response.

    Raising after the response has started is the only portable way, under any ASGI server, to
    close a connection abruptly (no final chunk, truncated body). The thread server filters this
    exception out of uvicorn's error log because it is intended.
    """


class ClientDisconnected(Exception):
    """The client went away while the request body was being read."""


def find_header(scope: Scope, name: bytes) -> bytes | None:
    """Return the first value of a (lower-case) header, scanning the raw ASGI pairs."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(receive: Receive) -> bytes:
    """Read the whole request body; one message (the common case) costs no join."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_response(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """Send a complete response with a content-length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, payload: Any, headers: Headers | None = None) -> None:
    """Serialise with orjson and send as ``application/json``."""
    all_headers = JSON_HEADERS if headers is None else [*JSON_HEADERS, *headers]
    await send_response(send, status, all_headers, orjson.dumps(payload))
