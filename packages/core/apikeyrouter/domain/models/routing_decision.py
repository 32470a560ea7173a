"""Why a request went where it went.

The one-line ``explanation`` is computed from the decision's fields when it is read (logged,
stored, returned), not when the decision is made: formatting it cost about a tenth of the
router's work per request, and most decisions are never read one by one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, computed_field

from apikeyrouter.domain.models.request_context import RoutingObjective


@dataclass(slots=True)
class CandidateScore:
    """One ranked candidate. A plain (not frozen: three times cheaper to build) dataclass,
    since several are built per request; never changed after ranking."""

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
    notes: list[str] = Field(
        default_factory=list,
        description="What else shaped this attempt: keys failed over from, the plan step served.",
    )
    at: float = Field(default_factory=time.time)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def explanation(self) -> str:
        """One line a human can read: what was chosen, by which objective, and why."""
        return explain(self)


def explain(decision: RoutingDecision) -> str:
    """The ``explanation`` of ``decision`` (see :attr:`RoutingDecision.explanation`)."""
    if decision.chosen_key_id is None:
        excluded = ", ".join(f"{reason}: {count}" for reason, count in decision.excluded.items())
        return f"no key could serve {decision.model}: {decision.considered} considered" + (
            f" ({excluded})" if excluded else ""
        )
    chosen = next((c for c in decision.candidates if c.key_id == decision.chosen_key_id), None)
    reason = ""
    if chosen is not None:
        parts = ", ".join(f"{k}={v:g}" for k, v in chosen.components.items())
        reason = f" ({parts})"
        runner_up = next(
            (c for c in decision.candidates if c.key_id != decision.chosen_key_id), None
        )
        if runner_up is not None:
            reason += f", next best {runner_up.key_id} scored {runner_up.score:g}"
    excluded_text = ""
    if decision.excluded:
        excluded_text = "; excluded " + ", ".join(
            f"{reason_}: {count}" for reason_, count in sorted(decision.excluded.items())
        )
    attempt = f"attempt {decision.attempt}: " if decision.attempt > 1 else ""
    notes = "".join(f"; {note}" for note in decision.notes)
    return (
        f"{attempt}chose {decision.chosen_key_id} ({decision.provider_id}) for {decision.model} "
        f"by {decision.objective.value}{reason}; "
        f"{decision.considered} key(s) considered{excluded_text}{notes}"
    )
