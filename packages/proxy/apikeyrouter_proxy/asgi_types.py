"""ASGI type aliases shared by the raw handlers (kept loose: ASGI messages are plain dicts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apikeyrouter_proxy.middleware.context import RequestContext

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A hot-path handler: ASGI plus the request context the gateway created.
HotHandler = Callable[[Scope, Receive, Send, "RequestContext"], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
