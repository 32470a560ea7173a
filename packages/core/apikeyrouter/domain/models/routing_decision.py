"""Why a request went where it went."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from apikeyrouter.domain.models.request_context import RoutingObjective


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """One ranked candidate. A plain dataclass: several are built per request."""

    key_id: str
    provider_id: str
    score: float
    components: dict[str, float] = field(default_factory=dict)


class RoutingDecision(BaseModel):
    request_id: str
    objective: RoutingObjective
    model: str
    chosen_key_id: str | None = None
    provider_id: str | None = None
    candidates: list[CandidateScore] = Field(
        default_factory=list, description="Best-ranked candidates, best first (top few only)."
    )
    considered: int = 0
    excluded: dict[str, int] = Field(
        default_factory=dict, description="Why keys were not candidates, with counts."
    )
    attempt: int = 1
    explanation: str = ""
    at: float = Field(default_factory=time.time)
