"""The components and live maps every part of the orchestration shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apikeyrouter.domain.components.cost_controller import CostController
from apikeyrouter.domain.components.failure_handler import FailureHandler
from apikeyrouter.domain.components.key_manager import KeyManager
from apikeyrouter.domain.components.policy_engine import PolicyEngine
from apikeyrouter.domain.components.quota_awareness_engine import QuotaAwarenessEngine
from apikeyrouter.domain.components.routing_engine import RoutingEngine
from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.domain.interfaces.state_store import CircuitSnapshot, StateStore
from apikeyrouter.domain.models.cost_model import BudgetEvent
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.provider import Provider
from apikeyrouter.orchestration.write_behind import WriteBehind


@dataclass(slots=True)
class RouterContext:
    store: StateStore
    keys: KeyManager
    quota: QuotaAwarenessEngine
    engine: RoutingEngine
    failures: FailureHandler
    cost: CostController
    policies: PolicyEngine
    clock: Callable[[], float]
    log: Any
    record_decisions: bool = True
    #: When set, commits and decisions go to the store in background batches (a shared store:
    #: the reservation is then a request's only round trip).
    write_behind: WriteBehind | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    adapters: dict[str, ProviderAdapter] = field(default_factory=dict)
    stats: dict[str, KeyStats] = field(default_factory=dict)
    circuits: dict[str, CircuitSnapshot] = field(default_factory=dict)  # failed keys only
    budget_listeners: list[Callable[[BudgetEvent], None]] = field(default_factory=list)
