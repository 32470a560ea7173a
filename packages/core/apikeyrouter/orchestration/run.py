"""Per-request bookkeeping: the plan's current step, the attempts, and each attempt's lease."""

from __future__ import annotations

from dataclasses import dataclass, field

from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.domain.interfaces.state_store import Reservation
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.cost_model import Budget, CostEstimate
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.policy import ResolvedPolicy
from apikeyrouter.domain.models.request_context import RequestIntent, RoutingObjective
from apikeyrouter.domain.models.response import AttemptRecord
from apikeyrouter.domain.models.routing_decision import RoutingDecision

PROVIDER_FAILURES = frozenset(
    {FailureKind.PROVIDER_ERROR, FailureKind.TIMEOUT, FailureKind.CONNECTION}
)


@dataclass(frozen=True, slots=True)
class Step:
    """One target in a request's plan: a concrete model, optionally pinned to a provider."""

    model: str
    provider_id: str | None = None
    reason: str = "requested"  # "requested", "group member", "fallback"

    def __str__(self) -> str:
        return self.model if self.provider_id is None else f"{self.provider_id}/{self.model}"


@dataclass(slots=True)
class Lease:
    """One attempt's hold on a key: what was chosen, and the quota reserved for it."""

    key: APIKey
    adapter: ProviderAdapter
    reservation: Reservation
    decision: RoutingDecision
    started: float
    estimated_prompt_tokens: int
    cost_estimate: CostEstimate
    budgets: tuple[Budget, ...] = ()
    probe: bool = False


@dataclass(slots=True)
class RequestRun:
    """The bookkeeping of one request across its plan steps and attempts."""

    intent: RequestIntent  # as the caller sent it
    objective: RoutingObjective | None
    deadline: float
    started: float
    policy: ResolvedPolicy
    max_attempts: int
    step: Step
    step_intent: RequestIntent  # ``intent`` with the step's model
    tried: set[str] = field(default_factory=set)
    attempts: list[AttemptRecord] = field(default_factory=list)
    failures: list[ProviderFailure] = field(default_factory=list)
    step_failures: list[ProviderFailure] = field(default_factory=list)
    last_excluded: dict[str, int] = field(default_factory=dict)
    steps_tried: list[str] = field(default_factory=list)

    def enter(self, step: Step) -> None:
        """Move to the next step of the plan; keys tried for another model may serve this one."""
        self.step = step
        if step.model != self.intent.model:
            body = {**self.intent.body, "model": step.model}
            self.step_intent = self.intent.model_copy(update={"model": step.model, "body": body})
        else:
            self.step_intent = self.intent
        self.tried = set()
        self.step_failures = []
        self.steps_tried.append(str(step))
