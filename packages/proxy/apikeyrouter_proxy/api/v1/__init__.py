"""The OpenAI-compatible ``/v1`` surface: lean ASGI handlers, dispatched by exact path."""

from __future__ import annotations

from apikeyrouter import Endpoint

from apikeyrouter_proxy.api.v1.completions import CompletionEndpoint
from apikeyrouter_proxy.api.v1.models import MODEL_PREFIX, MODELS_PATH, ModelsEndpoint
from apikeyrouter_proxy.asgi_types import HotHandler
from apikeyrouter_proxy.services.runtime import ProxyRuntime

__all__ = ["MODEL_PREFIX", "hot_routes"]


def hot_routes(runtime: ProxyRuntime) -> dict[str, HotHandler]:
    """Exact path -> handler. ``/v1/models/{id}`` is matched by prefix in the gateway."""
    return {
        "/v1/chat/completions": CompletionEndpoint(runtime, Endpoint.CHAT),
        "/v1/completions": CompletionEndpoint(runtime, Endpoint.COMPLETIONS),
        "/v1/embeddings": CompletionEndpoint(runtime, Endpoint.EMBEDDINGS),
        MODELS_PATH: ModelsEndpoint(runtime),
    }
