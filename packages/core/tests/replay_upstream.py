"""A fake upstream for adapter tests: an ASGI app that replays canned replies and records
every request it was sent, so a test can check the exact wire format an adapter produced."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from apikeyrouter.infrastructure.transport.asgi_transport import Message, Scope


@dataclass
class Reply:
    status: int = 200
    body: bytes | Sequence[bytes] = b"{}"  # several parts: sent as a stream, one at a time
    headers: dict[str, str] = field(default_factory=dict)
    break_after: bool = False  # raise once the parts are sent: a stream cut mid-way


@dataclass
class Seen:
    method: str
    path: str
    query: str  # as sent, undecoded
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def params(self) -> dict[str, list[str]]:
        """The query string decoded (blank values kept)."""
        return parse_qs(self.query, keep_blank_values=True)


class ReplayUpstream:
    """Replays ``replies`` in order (the last one repeats) and records each request in
    ``seen``."""

    def __init__(self, *replies: Reply) -> None:
        self._replies = list(replies) or [Reply()]
        self.seen: list[Seen] = []

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        message = await receive()
        self.seen.append(
            Seen(
                scope["method"],
                scope["path"],
                scope["query_string"].decode(),
                {k.decode(): v.decode() for k, v in scope["headers"]},
                bytes(message.get("body", b"")),
            )
        )
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        parts = [reply.body] if isinstance(reply.body, bytes) else list(reply.body)
        for index, part in enumerate(parts):
            more = reply.break_after or index < len(parts) - 1
            await send({"type": "http.response.body", "body": part, "more_body": more})
        if reply.break_after:
            raise ConnectionResetError(f"cut off while serving {scope['query_string']!r}")
