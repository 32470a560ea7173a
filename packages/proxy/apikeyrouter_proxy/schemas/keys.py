"""Management API schemas for keys. Key material is write-only: accepted, never returned."""

from __future__ import annotations

from typing import Any

from apikeyrouter import APIKey, KeyState
from apikeyrouter.domain.models.quota_state import ExhaustionPrediction
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from apikeyrouter_proxy.config.schema import IDENT_PATTERN

_LIMIT_NAMES = (
    "requests_per_minute",
    "tokens_per_minute",
    "requests_per_day",
    "tokens_per_day",
    "spend_per_month",
)


class LimitFields(BaseModel):
    """Per-key limits; omitted means "not configured" (null in an update clears one)."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    requests_per_day: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    spend_per_month: float | None = Field(default=None, gt=0)

    def limit_values(self, only_set: bool = False) -> dict[str, Any]:
        names = (
            [n for n in _LIMIT_NAMES if n in self.model_fields_set] if only_set else _LIMIT_NAMES
        )
        return {name: getattr(self, name) for name in names}


class KeyCreate(LimitFields):
    model_config = ConfigDict(extra="forbid")

    provider_id: str = Field(min_length=1, max_length=64)
    key: SecretStr = Field(min_length=1, max_length=4096, description="The secret; write-only.")
    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=IDENT_PATTERN)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    tags: list[str] = Field(default_factory=list, max_length=64)
    models: list[str] | None = Field(default=None, max_length=1024)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)


class KeyUpdate(LimitFields):
    """Only the fields sent change. ``models: null`` lifts a model restriction."""

    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(default=None, gt=0, le=1_000_000)
    tags: list[str] | None = Field(default=None, max_length=64)
    models: list[str] | None = Field(default=None, max_length=1024)
    state: KeyState | None = None
    reason: str | None = Field(default=None, max_length=200)


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(min_length=1, max_length=4096, description="The new secret.")


class KeyLimitsView(BaseModel):
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    spend_per_month: float | None = None


class KeyUsageView(BaseModel):
    requests: int
    successes: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    last_used_at: float | None = None


class KeyView(BaseModel):
    id: str
    provider_id: str
    fingerprint: str = Field(description="The secret's last four characters, for humans.")
    state: KeyState
    state_reason: str | None = None
    limits: KeyLimitsView
    weight: float
    tags: list[str]
    models: list[str] | None = None
    excluded_models: list[str]
    usage: KeyUsageView
    cooldown_until: float | None = None
    created_at: float
    state_changed_at: float
    source: str = Field(description="'config' (owned by the config file) or 'api'.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, key: APIKey) -> KeyView:
        metadata = {k: v for k, v in key.metadata.items() if k != "source"}
        return cls(
            id=key.id,
            provider_id=key.provider_id,
            fingerprint=key.fingerprint,
            state=key.state,
            state_reason=key.state_reason,
            limits=KeyLimitsView(**key.limits.model_dump()),
            weight=key.weight,
            tags=sorted(key.tags),
            models=sorted(key.models) if key.models is not None else None,
            excluded_models=sorted(key.excluded_models),
            usage=KeyUsageView(
                requests=key.usage.requests,
                successes=key.usage.successes,
                failures=key.usage.failures,
                prompt_tokens=key.usage.prompt_tokens,
                completion_tokens=key.usage.completion_tokens,
                last_used_at=key.usage.last_used_at,
            ),
            cooldown_until=key.cooldown_until,
            created_at=key.created_at,
            state_changed_at=key.state_changed_at,
            source=str(key.metadata.get("source", "api")),
            metadata=metadata,
        )


class RevokedView(BaseModel):
    key_id: str
    revoked: bool = True
    previous_state: KeyState
    at: float


class WindowView(BaseModel):
    metric: str
    window_seconds: float
    limit: float
    used: float
    reserved: float
    remaining: float
    utilization: float
    resets_at: float | None = None
    confidence: str


class CircuitView(BaseModel):
    state: str
    consecutive_failures: int
    open_until: float | None = None


class KeyQuotaView(BaseModel):
    key_id: str
    state: KeyState
    routable: bool
    capacity: str = Field(description="abundant, constrained, critical, exhausted or recovering")
    confidence: str = Field(description="exact (provider headers), estimated or unknown")
    cooldown_until: float | None = None
    circuit: CircuitView
    windows: list[WindowView] = Field(description="One entry per configured limit.")
    prediction: ExhaustionPrediction = Field(
        description="At the current (smoothed) pace: which window runs out first, when, and "
        "whether before it resets (such a key is de-prioritised early)."
    )
