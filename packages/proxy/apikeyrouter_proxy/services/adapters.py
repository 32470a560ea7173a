"""Provider adapters by ``kind``, all on one shared upstream HTTP transport.

One transport (one aiohttp session, one keep-alive pool) for every provider: connection setup is
paid once per upstream host, not once per adapter or request. Adapters for Anthropic and Gemini
are imported on demand so a core without them still serves OpenAI-compatible providers.
"""

from __future__ import annotations

import importlib
from typing import Any

from apikeyrouter import OpenAIAdapter
from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.config.schema import ProviderConfig

#: kind -> (module, class) of the core adapter implementing it.
_ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("apikeyrouter.infrastructure.adapters.openai_adapter", "OpenAIAdapter"),
    "anthropic": ("apikeyrouter.infrastructure.adapters.anthropic_adapter", "AnthropicAdapter"),
    "gemini": ("apikeyrouter.infrastructure.adapters.gemini_adapter", "GeminiAdapter"),
}


def adapter_class(kind: str) -> type[ProviderAdapter]:
    """The adapter class for ``kind``; a clear error if this core does not ship it."""
    if kind == "openai":
        return OpenAIAdapter
    try:
        module_name, class_name = _ADAPTERS[kind]
    except KeyError:
        raise ConfigurationError(f"unknown provider kind {kind!r}", param="kind") from None
    try:
        module = importlib.import_module(module_name)
        cls: Any = getattr(module, class_name)
    except (ImportError, AttributeError):
        raise ConfigurationError(
            f"provider kind {kind!r} is not available in this version of apikeyrouter",
            param="kind",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, ProviderAdapter)):
        raise ConfigurationError(f"{module_name}.{class_name} is not a provider adapter")
    return cls


def build_adapter(provider: ProviderConfig, transport: HttpTransport) -> ProviderAdapter:
    cls: Any = adapter_class(provider.kind)
    options: dict[str, Any] = {"transport": transport}
    if provider.model_map:
        options["model_map"] = dict(provider.model_map)
    adapter: ProviderAdapter = cls(provider.effective_base_url, **options)
    return adapter
