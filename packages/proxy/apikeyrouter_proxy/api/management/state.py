"""``/api/v1/state``: a summary, recent routing decisions (with explanations), the audit trail."""

from __future__ import annotations

import time
from collections import Counter

from apikeyrouter import RoutingDecision
from apikeyrouter.domain.models.api_key import StateTransition
from fastapi import APIRouter, Query

from apikeyrouter_proxy.api.management.budgets import budget_view
from apikeyrouter_proxy.api.management.deps import API_PREFIX, RuntimeDep
from apikeyrouter_proxy.schemas.budgets import KeySpendView, SpendView
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.state import ConfigStatusView, SummaryView
from apikeyrouter_proxy.services.insight import routable_key_count
from apikeyrouter_proxy.services.spend import budget_readings

router = APIRouter(prefix=API_PREFIX + "/state", tags=["state"])
_ERRORS = error_responses(401, 403, 422)


@router.get("/summary", response_model=SummaryView, responses=_ERRORS)
async def summary(runtime: RuntimeDep) -> SummaryView:
    """Keys by state, providers, requests served, and how the last config reload went."""
    router_ = runtime.service.router
    keys = router_.keys.list_keys()
    status = runtime.reload_status
    return SummaryView(
        ready=runtime.ready,
        uptime_seconds=round(time.time() - runtime.started_at, 3),
        keys_total=len(keys),
        keys_by_state=dict(Counter(k.state.value for k in keys)),
        routable_keys=routable_key_count(router_),
        providers=list(runtime.service.providers()),
        clients=runtime.clients.ids(),
        requests_served=runtime.metrics.served,
        requests_by_status_class=runtime.metrics.status_classes(),
        config=ConfigStatusView(
            path=str(runtime.config_path) if runtime.config_path is not None else None,
            reloads_applied=status.applied,
            reloads_rejected=status.rejected,
            last_applied_at=status.last_applied_at,
            last_error=status.last_error,
            last_error_at=status.last_error_at,
            last_changes={k: v for k, v in status.last_report.items() if v},
        ),
    )


@router.get("/decisions", response_model=list[RoutingDecision], responses=_ERRORS)
async def decisions(
    runtime: RuntimeDep, limit: int = Query(default=50, ge=1, le=1000)
) -> list[RoutingDecision]:
    """The most recent routing decisions, newest last, each with its one-line explanation."""
    return await runtime.service.router.recent_decisions(limit)


@router.get("/audit", response_model=list[StateTransition], responses=_ERRORS)
async def audit(
    runtime: RuntimeDep,
    key_id: str | None = Query(default=None, max_length=128),
    limit: int = Query(default=100, ge=1, le=10_000),
) -> list[StateTransition]:
    """Key state transitions (who, when, why), optionally for one key, newest last."""
    return await runtime.service.router.store.list_audit(key_id, limit)


@router.get("/spend", response_model=SpendView, responses=_ERRORS)
async def spend(runtime: RuntimeDep) -> SpendView:
    """Spend per key (actual cost of what each served, this process), every budget's status,
    how far cost and token estimates were from the real figures, and unpriced models."""
    router_ = runtime.service.router
    keys = [
        KeySpendView(
            key_id=k.id,
            provider_id=k.provider_id,
            cost_usd=k.usage.cost_usd,
            requests=k.usage.requests,
            prompt_tokens=k.usage.prompt_tokens,
            completion_tokens=k.usage.completion_tokens,
        )
        for k in router_.keys.list_keys()
    ]
    return SpendView(
        total_usd=sum(k.cost_usd for k in keys),
        keys=keys,
        budgets=[budget_view(runtime, r) for r in await budget_readings(router_)],
        reconciliation=router_.cost.stats(),
        unpriced_models=sorted(router_.cost.unpriced_models()),
        token_estimates=router_.quota.token_estimates.summary(),
    )
