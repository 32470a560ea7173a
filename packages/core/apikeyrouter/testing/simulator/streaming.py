"""Sending a streamed answer the same way for every wire format: whole, paced, cut or errored.

The formats differ only in how an event is spelled (OpenAI and Gemini ``data:`` lines,
Anthropic ``event:`` + ``data:``, Gemini's JSON-array stream), so the formats build their list of
encoded events and this module owns the timing and the failure modes: ``chunk_delay`` pacing,
the ``drop_stream`` cut (the connection dies mid-body) and the ``stream_error`` ending (an
in-band error event, then a clean end of the body, as providers do when they give up after 200).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .asgi import Headers, Send, SimulatedDisconnect, send_response

__all__ = ["Cut", "send_maybe_truncated", "send_stream"]


@dataclass(frozen=True, slots=True)
class Cut:
    """How a stream ends early: after ``after`` events, with ``error_event`` (an in-band error,
    then a clean end) or, when it is None, by cutting the connection."""

    after: int
    error_event: bytes | None = None


async def send_stream(
    send: Send,
    headers: Headers,
    events: list[bytes],
    chunk_delay_s: float,
    cut: Cut | None = None,
    tail: bytes = b"",
) -> bool:
    """Send a 200 with ``events`` then ``tail`` (e.g. ``[DONE]``); True if it went out whole.

    Returns False when ``cut`` ended it with an error event; raises :class:`SimulatedDisconnect`
    when ``cut`` drops the connection. Without a chunk delay the whole stream goes out in one
    write: the bytes on the wire are the same, and benchmarks stay cheap.
    """
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if cut is not None:
        for event in events[: cut.after]:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
        if cut.error_event is None:
            raise SimulatedDisconnect
        await send({"type": "http.response.body", "body": cut.error_event, "more_body": False})
        return False
    if not chunk_delay_s:
        body = b"".join(events) + tail
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(chunk_delay_s)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    return True


async def send_maybe_truncated(send: Send, headers: Headers, body: bytes, truncate: bool) -> None:
    """Send a complete body, or (``truncate``) promise it all, deliver half and cut."""
    if not truncate:
        await send_response(send, 200, headers, body)
        return
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise SimulatedDisconnect
