"""Provider adapters by ``kind``, all on one shared upstream HTTP transport.

The core's adapter registry knows every kind (``openai``, ``openai_compatible``,
``azure_openai``, ``anthropic``, ``gemini``, ``generic``); the provider's ``options`` block,
checked per kind by :mod:`apikeyrouter_proxy.config.provider_options`, supplies the kind's own
arguments. One transport (one aiohttp session, one keep-alive pool) serves every provider:
connection setup is paid once per upstream host, not once per adapter or request.
"""

from __future__ import annotations

from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.infrastructure.adapters.registry import build_adapter as build_registered
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.config.provider_options import adapter_arguments, option_problems
from apikeyrouter_proxy.config.schema import ProviderConfig
from apikeyrouter_proxy.config.yaml_source import format_path
from pydantic import ValidationError


def build_adapter(provider: ProviderConfig, transport: HttpTransport) -> ProviderAdapter:
    """The adapter for ``provider``; :class:`ConfigurationError` naming the option at fault."""
    problems = option_problems(provider)
    if problems:
        loc, message = problems[0]
        param = format_path(("options", *loc))
        raise ConfigurationError(f"provider {provider.id!r}: {param}: {message}", param=param)
    try:
        arguments = adapter_arguments(provider)
    except ValidationError as exc:  # option_problems saw none: only a bug could get here
        raise ConfigurationError(f"provider {provider.id!r}: invalid options") from exc
    return build_registered(provider.kind, transport=transport, **arguments)
