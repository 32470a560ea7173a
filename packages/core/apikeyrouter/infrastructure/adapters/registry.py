"""Adapters by kind name, so that configuration (the proxy's YAML) can say which wire a provider
speaks without importing classes: ``build_adapter("generic", base_url=..., key_in="query")``.

Errors are :class:`ConfigurationError` naming the kind and the offending option, because they
surface at startup or on a config reload, where "which line is wrong" is all that matters.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.infrastructure.adapters.anthropic_adapter import AnthropicAdapter
from apikeyrouter.infrastructure.adapters.gemini_adapter import GeminiAdapter
from apikeyrouter.infrastructure.adapters.generic_http_adapter import (
    GenericHttpAdapter,
    azure_openai,
    openai_compatible,
)
from apikeyrouter.infrastructure.adapters.generic_http_config import GenericHttpConfig
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter.utils.exceptions import ConfigurationError

__all__ = ["AdapterFactory", "build_adapter", "known_kinds"]

AdapterFactory = Callable[..., ProviderAdapter]


def _generic(
    *,
    config: GenericHttpConfig | Mapping[str, Any] | None = None,
    transport: HttpTransport | None = None,
    clock: Callable[[], float] = time.time,
    **fields: Any,
) -> GenericHttpAdapter:
    """The config's fields directly as options, or a ready ``config`` (model or mapping)."""
    if config is not None and fields:
        raise TypeError(f"give either config or its fields, not both ({', '.join(fields)})")
    if config is None:
        config = fields
    if not isinstance(config, GenericHttpConfig):
        config = GenericHttpConfig.model_validate(dict(config))
    return GenericHttpAdapter(config, transport=transport, clock=clock)


_FACTORIES: dict[str, AdapterFactory] = {
    "openai": OpenAIAdapter,
    "openai_compatible": openai_compatible,
    "azure_openai": azure_openai,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "generic": _generic,
}


def known_kinds() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    """One line per problem, each starting with the field it concerns."""
    parts: list[str] = []
    first: str | None = None
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        first = first or location or None
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts), first


def build_adapter(kind: str, **options: Any) -> ProviderAdapter:
    """The adapter for ``kind`` built with ``options`` (its constructor's keyword arguments;
    for ``generic``, the fields of :class:`GenericHttpConfig` plus ``transport``/``clock``)."""
    factory = _FACTORIES.get(kind)
    if factory is None:
        raise ConfigurationError(
            f"unknown adapter kind {kind!r}; known kinds: {', '.join(known_kinds())}",
            param="kind",
        )
    if factory is not _generic:
        try:
            inspect.signature(factory).bind(**options)
        except TypeError as exc:
            raise ConfigurationError(
                f"adapter kind {kind!r} does not accept these options: {exc}", param="kind"
            ) from None
    try:
        return factory(**options)
    except ValidationError as exc:
        detail, field = _describe(exc)
        raise ConfigurationError(
            f"invalid {kind!r} adapter options: {detail}", param=field
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid {kind!r} adapter options: {exc}", param="kind") from exc
