"""A request's plan: which (provider, model) targets to try, in order.

A logical model name may be a *model group* (``smart`` -> ``gpt-4o`` on openai and
``claude-sonnet-4-5`` on anthropic), tried in the given order or in a weighted random order per
request. After the requested model (or group) come the policy's fallback steps. The router
moves to the next step when no key of the current one can serve.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apikeyrouter.domain.models.policy import ResolvedPolicy
from apikeyrouter.orchestration.run import Step
from apikeyrouter.utils.bounded_cache import remember


class GroupMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    provider: str | None = None
    weight: float = Field(default=1.0, gt=0)


class ModelGroup(BaseModel):
    """A logical model served by concrete models on several providers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    members: tuple[GroupMember, ...] = Field(min_length=1)
    strategy: Literal["ordered", "weighted"] = "ordered"

    @field_validator("members", mode="before")
    @classmethod
    def _accept_strings(cls, value: object) -> object:
        """``"anthropic/claude-sonnet-4-5"`` or ``"gpt-4o"`` are shorthand for a member."""
        if not isinstance(value, list | tuple):
            return value
        members: list[object] = []
        for item in value:
            if isinstance(item, str):
                provider, _, model = item.rpartition("/")
                members.append({"model": model, "provider": provider or None})
            else:
                members.append(item)
        return members


#: Bound on the cache of one-step plans (model names come from callers).
_MAX_SINGLE_PLANS = 4096


class RoutePlanner:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._groups: dict[str, ModelGroup] = {}
        self._rng = rng or random.Random()
        self._single: dict[str, list[Step]] = {}

    def add_group(self, group: ModelGroup) -> None:
        self._groups[group.name] = group

    def remove_group(self, name: str) -> bool:
        return self._groups.pop(name, None) is not None

    def groups(self) -> list[ModelGroup]:
        return list(self._groups.values())

    def is_group(self, name: str) -> bool:
        return name in self._groups

    def _expand(self, model: str, provider_id: str | None, reason: str) -> list[Step]:
        group = self._groups.get(model)
        if group is None:
            return [Step(model, provider_id, reason)]
        members = list(group.members)
        if group.strategy == "weighted" and len(members) > 1:
            # Weighted order without replacement: draw the next member in proportion to weight.
            ordered: list[GroupMember] = []
            while members:
                pick = self._rng.choices(members, weights=[m.weight for m in members])[0]
                members.remove(pick)
                ordered.append(pick)
            members = ordered
        label = f"member of {group.name}" if reason == "requested" else reason
        return [Step(m.model, m.provider or provider_id, label) for m in members]

    def steps(self, model: str, policy: ResolvedPolicy) -> list[Step]:
        """The plan for a request; callers only read it."""
        if not policy.fallback and model not in self._groups:
            # The usual plan, one step: shared per model rather than rebuilt per request.
            single = self._single.get(model)
            if single is None:
                single = remember(self._single, model, [Step(model)], _MAX_SINGLE_PLANS)
            return single
        plan: list[Step] = []
        seen: set[tuple[str, str | None]] = set()

        def add(steps: Iterable[Step]) -> None:
            for step in steps:
                if (step.model, step.provider_id) not in seen:
                    seen.add((step.model, step.provider_id))
                    plan.append(step)

        add(self._expand(model, None, "requested"))
        for fallback in policy.fallback:
            add(self._expand(fallback.model, fallback.provider, "fallback"))
        return plan
