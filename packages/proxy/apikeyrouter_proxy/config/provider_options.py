"""A provider's ``options:`` block, checked per ``kind`` and turned into adapter arguments.

Every adapter in the core's registry takes different keyword arguments (Anthropic an
``api_version``, Azure its ``deployments``, the generic HTTP adapter a whole API description).
The config keeps one free-form ``options`` mapping per provider so the YAML reads like the
adapter's documentation, and this module gives each kind a strict model for it: a typo in an
option is an error naming ``providers[i].options.<field>`` (the loader adds the line), checked
before anything is built. The same models produce the arguments for ``build_adapter``, so what
was validated is exactly what the adapter gets.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.infrastructure.adapters.generic_http_adapter import (
    AZURE_API_VERSION,
    OPENAI_COMPATIBLE_PRESETS,
)
from apikeyrouter.infrastructure.adapters.generic_http_config import GenericHttpConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from apikeyrouter_proxy.config.schema import ProviderConfig

#: Options the generic kind takes from the provider itself, not from ``options``.
_PROVIDER_LEVEL = {"base_url": "base_url", "model_map": "model_map"}
#: (path inside ``options``, message) - one entry per problem found.
OptionProblem = tuple[tuple[str | int, ...], str]


class _Options(BaseModel):
    """What every LLM adapter accepts besides its URL and model map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extra_headers: dict[str, str] = Field(default_factory=dict)
    capabilities: ProviderCapabilities | None = None

    @field_validator("extra_headers")
    @classmethod
    def _no_line_breaks(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if "\r" in header or "\n" in header or "\r" in name or "\n" in name:
                raise ValueError(f"the header {name!r} contains a line break")
        return value

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for the adapter: only what was set, so its defaults apply."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class OpenAIOptions(_Options):
    pass


class GeminiOptions(_Options):
    pass


class AnthropicOptions(_Options):
    api_version: str = Field(default="2023-06-01", min_length=1)
    default_max_tokens: int = Field(default=4096, gt=0)


class OpenAICompatibleOptions(_Options):
    preset: str | None = Field(
        default=None, description="vllm, ollama, groq, together, ... (gives the base URL)."
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in OPENAI_COMPATIBLE_PRESETS:
            known = ", ".join(sorted(OPENAI_COMPATIBLE_PRESETS))
            raise ValueError(f"unknown preset {value!r}; known presets: {known}")
        return value


class AzureOpenAIOptions(_Options):
    api_version: str | None = Field(
        default=AZURE_API_VERSION,
        description="null selects the version-less v1 API (the deployment named in the body).",
    )
    deployments: dict[str, str] = Field(
        default_factory=dict, description="Logical model -> deployment name."
    )


OPTION_MODELS: dict[str, type[_Options]] = {
    "openai": OpenAIOptions,
    "anthropic": AnthropicOptions,
    "gemini": GeminiOptions,
    "openai_compatible": OpenAICompatibleOptions,
    "azure_openai": AzureOpenAIOptions,
}


def _problems(exc: ValidationError, model: type[BaseModel]) -> list[OptionProblem]:
    found: list[OptionProblem] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            message = _unknown_option(str(loc[0]), model)
        found.append((loc, message))
    return found


def _unknown_option(name: str, model: type[BaseModel]) -> str:
    allowed = sorted(set(model.model_fields) - set(_PROVIDER_LEVEL))
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown option {name!r} ({hint})"


def _generic_config(provider: ProviderConfig) -> GenericHttpConfig:
    """The generic adapter's API description: ``base_url`` and ``model_map`` come from the
    provider (like every other kind), everything else from ``options``."""
    return GenericHttpConfig.model_validate(
        {
            **provider.options,
            "base_url": provider.base_url or "",
            "model_map": dict(provider.model_map),
        }
    )


def option_problems(provider: ProviderConfig) -> list[OptionProblem]:
    """Everything wrong with ``provider.options`` for its kind (empty when it is fine)."""
    if provider.kind == "generic":
        clashes: list[OptionProblem] = [
            ((name,), f"set it on the provider itself (providers[].{field}), not in options")
            for name, field in _PROVIDER_LEVEL.items()
            if name in provider.options
        ]
        if clashes:
            return clashes
        try:
            _generic_config(provider)
        except ValidationError as exc:
            return _problems(exc, GenericHttpConfig)
        return []
    model = OPTION_MODELS.get(provider.kind)
    if model is None:  # the schema's kind literal and this table are kept in step
        return [((), f"no options are known for provider kind {provider.kind!r}")]
    try:
        model.model_validate(provider.options)
    except ValidationError as exc:
        return _problems(exc, model)
    return []


def adapter_arguments(provider: ProviderConfig) -> dict[str, Any]:
    """Keyword arguments for ``registry.build_adapter(provider.kind, ...)`` (no transport).

    Raises ``pydantic.ValidationError`` for bad options (the caller turns it into a
    configuration error); a config that went through the loader never does.
    """
    kind = provider.kind
    model_map: Mapping[str, str] = provider.model_map
    if kind == "generic":
        return {"config": _generic_config(provider)}
    options = OPTION_MODELS[kind].model_validate(provider.options)
    arguments = options.arguments()
    if isinstance(options, AzureOpenAIOptions):
        arguments["deployments"] = {**model_map, **options.deployments}
        arguments["base_url"] = provider.base_url
        return arguments
    if model_map:
        arguments["model_map"] = dict(model_map)
    if kind == "openai_compatible":
        arguments["base_url"] = provider.base_url  # None: the preset's URL
    else:
        arguments["base_url"] = provider.effective_base_url
    return arguments
