"""What the caller wants, in provider-neutral (OpenAI) terms."""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RAW = "raw"  # any JSON API call (not an LLM): only the model/route name is interpreted


class RoutingObjective(StrEnum):
    FAIRNESS = "fairness"
    RELIABILITY = "reliability"
    COST = "cost"
    LATENCY = "latency"
    QUOTA = "quota"


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


class RequestIntent(BaseModel):
    """A request in OpenAI shape plus the routing facts the router needs.

    ``body`` is the caller's OpenAI-format body; fields the router does not understand are
    forwarded untouched to OpenAI-compatible upstreams.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoint: Endpoint = Endpoint.CHAT
    model: str = Field(min_length=1)
    body: dict[str, Any]
    stream: bool = False
    max_tokens: int | None = None
    client_id: str | None = None
    request_id: str = Field(default_factory=new_request_id)
    objective: RoutingObjective | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
