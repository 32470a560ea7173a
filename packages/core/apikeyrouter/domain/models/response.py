"""What the router hands back to the caller."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apikeyrouter.domain.models.routing_decision import RoutingDecision


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AttemptRecord(BaseModel):
    """One upstream try of a request: which key, and what happened."""

    key_id: str
    provider_id: str
    outcome: str  # "success" or a FailureKind value
    status: int | None = None
    latency_ms: float = 0.0


class RouterResponse(BaseModel):
    """A successful routed call. ``body`` is the OpenAI-format response body."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    body: dict[str, Any]
    key_used: str
    provider_id: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    decision: RoutingDecision
    attempts: list[AttemptRecord] = Field(default_factory=list)
    latency_ms: float = 0.0
    cost_usd: float | None = Field(
        default=None, description="Estimated cost of the call (None when the model is unpriced)."
    )
    raw_body: bytes | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description=(
            "The upstream's response bytes when ``body`` is exactly their parse (an "
            "OpenAI-format provider, nothing translated): what a proxy passes on as is."
        ),
    )

    @property
    def content(self) -> str | None:
        """The first choice's text (chat message content or completion text)."""
        choices = self.body.get("choices")
        if not choices:
            return None
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            return content if isinstance(content, str) else None
        text = first.get("text")
        return text if isinstance(text, str) else None

    @property
    def raw(self) -> dict[str, Any]:
        return self.body
