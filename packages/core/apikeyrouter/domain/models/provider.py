"""Provider descriptions: what a provider can do, so the router never sends it what it can't."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProviderCapabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    chat: bool = True
    completions: bool = False
    embeddings: bool = False
    streaming: bool = True
    tools: bool = False
    vision: bool = False
    list_models: bool = True
    raw: bool = False  # accepts arbitrary (non-LLM) requests: Endpoint.RAW
    context_window: int | None = None


class Provider(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: str = Field(description="Adapter family, e.g. 'openai'.")
    base_url: str
    capabilities: ProviderCapabilities = Field(default_factory=ProviderCapabilities)
    models: frozenset[str] | None = Field(
        default=None, description="Models served; None means the provider accepts any model name."
    )

    def serves_model(self, model: str) -> bool:
        return self.models is None or model in self.models
