"""Management API schemas for providers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apikeyrouter_proxy.config.schema import IDENT_PATTERN, ProviderKind
from apikeyrouter_proxy.schemas.keys import CircuitView


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=IDENT_PATTERN)
    kind: ProviderKind = "openai"
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    models: list[str] | None = Field(default=None, max_length=1024)
    model_map: dict[str, str] = Field(default_factory=dict, max_length=1024)
    options: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="Adapter options for this kind, as under providers[].options in the config.",
    )


class ProviderView(BaseModel):
    id: str
    kind: str
    base_url: str
    models: list[str] | None = None
    source: str
    capabilities: dict[str, Any]
    keys: int
    keys_by_state: dict[str, int]


class KeyHealthView(BaseModel):
    key_id: str
    state: str
    routable: bool
    cooldown_until: float | None = None
    circuit: CircuitView


class ProviderHealthView(BaseModel):
    provider_id: str
    status: str = Field(description="healthy, degraded, down, or no_keys")
    routable_keys: int
    keys_by_state: dict[str, int]
    circuits: dict[str, int]
    keys: list[KeyHealthView]
