"""API key records and their lifecycle state machine.

A key's identity (``id``) is random and stable: it survives rotation and never reveals anything
about the secret, so it is safe to log, to put in metrics labels and to return from APIs.
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class KeyState(StrEnum):
    AVAILABLE = "available"
    THROTTLED = "throttled"
    EXHAUSTED = "exhausted"
    RECOVERING = "recovering"
    DISABLED = "disabled"
    INVALID = "invalid"


# Which states a key may move to from each state. ``invalid`` is terminal except for an operator
# re-enabling it (after rotation, say); automatic recovery paths never leave it.
ALLOWED_TRANSITIONS: dict[KeyState, frozenset[KeyState]] = {
    KeyState.AVAILABLE: frozenset(
        {KeyState.THROTTLED, KeyState.EXHAUSTED, KeyState.DISABLED, KeyState.INVALID}
    ),
    KeyState.THROTTLED: frozenset(
        {
            KeyState.AVAILABLE,
            KeyState.RECOVERING,
            KeyState.EXHAUSTED,
            KeyState.DISABLED,
            KeyState.INVALID,
        }
    ),
    KeyState.EXHAUSTED: frozenset(
        {KeyState.RECOVERING, KeyState.AVAILABLE, KeyState.DISABLED, KeyState.INVALID}
    ),
    KeyState.RECOVERING: frozenset(
        {
            KeyState.AVAILABLE,
            KeyState.THROTTLED,
            KeyState.EXHAUSTED,
            KeyState.DISABLED,
            KeyState.INVALID,
        }
    ),
    KeyState.DISABLED: frozenset({KeyState.AVAILABLE}),
    KeyState.INVALID: frozenset({KeyState.DISABLED, KeyState.AVAILABLE}),
}

#: States in which a key may receive traffic (subject to cooldown and circuit breaker).
ROUTABLE_STATES: frozenset[KeyState] = frozenset({KeyState.AVAILABLE, KeyState.RECOVERING})
#: States a key leaves on its own once its cooldown has passed.
SELF_HEALING_STATES: frozenset[KeyState] = frozenset({KeyState.THROTTLED, KeyState.EXHAUSTED})


def can_transition(current: KeyState, target: KeyState) -> bool:
    return current == target or target in ALLOWED_TRANSITIONS[current]


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


class KeyLimits(BaseModel):
    """Configured limits. ``None`` means "not configured"; the quota engine may learn it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    requests_per_day: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    spend_per_month: float | None = Field(default=None, gt=0)

    def is_empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


#: The counters :meth:`KeyUsage.record_success` writes.
_SUCCESS_FIELDS = frozenset(
    {"requests", "successes", "prompt_tokens", "completion_tokens", "cost_usd", "last_used_at"}
)


class KeyUsage(BaseModel):
    """Lifetime counters. Cheap to update; windowed counters live in the state store."""

    model_config = ConfigDict(validate_assignment=False)

    requests: int = 0
    successes: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    last_used_at: float | None = None

    def record_success(
        self, prompt_tokens: int, completion_tokens: int, cost_usd: float | None, at: float
    ) -> None:
        """Count one served request. Runs on every request, so it writes the fields directly
        (pydantic's ``__setattr__`` costs about a microsecond per field and checks nothing
        here: assignment is not validated)."""
        fields = self.__dict__
        fields["requests"] += 1
        fields["successes"] += 1
        fields["prompt_tokens"] += prompt_tokens
        fields["completion_tokens"] += completion_tokens
        if cost_usd is not None:
            fields["cost_usd"] += cost_usd
        fields["last_used_at"] = at
        self.__pydantic_fields_set__.update(_SUCCESS_FIELDS)


class APIKey(BaseModel):
    """One provider credential. ``encrypted_material`` is AES-GCM ciphertext, never the secret."""

    model_config = ConfigDict(validate_assignment=False)

    id: str = Field(default_factory=new_key_id)
    provider_id: str
    encrypted_material: str = Field(repr=False, exclude=True)
    fingerprint: str = Field(
        description="Last 4 characters of the secret, for humans telling keys apart.",
        default="",
    )
    state: KeyState = KeyState.AVAILABLE
    limits: KeyLimits = Field(default_factory=KeyLimits)
    weight: float = Field(default=1.0, gt=0)
    tags: frozenset[str] = frozenset()
    metadata: dict[str, Any] = Field(default_factory=dict)
    models: frozenset[str] | None = Field(
        default=None, description="Models this key may serve; None means every model."
    )
    excluded_models: frozenset[str] = frozenset()
    usage: KeyUsage = Field(default_factory=KeyUsage)
    cooldown_until: float | None = None
    state_reason: str | None = None
    created_at: float = Field(default_factory=time.time)
    state_changed_at: float = Field(default_factory=time.time)

    def serves_model(self, model: str) -> bool:
        if model in self.excluded_models:
            return False
        return self.models is None or model in self.models

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view without any key material, for listings and APIs."""
        data = self.model_dump(mode="json", exclude={"encrypted_material"})
        data["tags"] = sorted(self.tags)
        data["excluded_models"] = sorted(self.excluded_models)
        if self.models is not None:
            data["models"] = sorted(self.models)
        return data


class StateTransition(BaseModel):
    """Audit record of one key state change."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    from_state: KeyState
    to_state: KeyState
    reason: str
    at: float = Field(default_factory=time.time)
    actor: str = "router"
    request_id: str | None = None
