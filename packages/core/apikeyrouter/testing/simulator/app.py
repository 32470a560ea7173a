"""The raw ASGI application: which front end answers a request, and the lifespan protocol.

The wire format is chosen by path and by how the key is sent: ``/v1/messages`` and any other
``/v1`` request carrying ``x-api-key`` speak Anthropic (both OpenAI and Anthropic list models at
``GET /v1/models``, so the credential style is what tells them apart), except OpenAI's own
generation endpoints; ``/v1beta/`` speaks Gemini, every other ``/v1`` request OpenAI, and
``/_sim/`` is the admin API.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from .admin import AdminApi
from .anthropic_api import AnthropicApi
from .asgi import Receive, Scope, Send, find_header
from .gemini_api import GeminiApi
from .openai_api import OPENAI_POST_PATHS, OpenAIApi, invalid_url

if TYPE_CHECKING:
    from .provider import SimulatedProvider

__all__ = ["SimulatorApp"]


class SimulatorApp:
    """ASGI callable behind :class:`SimulatedProvider`."""

    def __init__(self, provider: SimulatedProvider) -> None:
        self._p = provider
        ids = itertools.count(1)
        self._admin = AdminApi(provider)
        self._openai = OpenAIApi(provider, ids)
        self._anthropic = AnthropicApi(provider, ids)
        self._gemini = GeminiApi(provider, ids)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                if _is_anthropic(path, scope):
                    await self._anthropic(path, scope, receive, send)
                else:
                    await self._openai(path, scope, receive, send)
            elif path.startswith("/v1beta/"):
                await self._gemini(path, scope, receive, send)
            elif path.startswith("/_sim/"):
                await self._admin(scope, receive, send)
            else:
                await invalid_url(scope, send, 404)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._p.holds.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._p.release_holds()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _is_anthropic(path: str, scope: Scope) -> bool:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return path not in OPENAI_POST_PATHS and find_header(scope, b"x-api-key") is not None
