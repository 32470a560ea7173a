"""``/api/v1/budgets``: budgets with their spend this period; create, replace, delete.

Spend comes from the state store (shared by every replica on a shared store). Replacing a
budget keeps its period's spend: the counter is named by the budget id and the period, not by
the limit. Budgets created here belong to the API (reloads leave them alone) and are saved in
the durable store when there is one; config budgets edited here get the file's version back
on the next applied reload.
"""

from __future__ import annotations

from typing import Annotated, Any

from apikeyrouter.domain.models.cost_model import Budget
from fastapi import APIRouter, Body, Path, Response
from pydantic import ValidationError

from apikeyrouter_proxy.api.management.deps import API_PREFIX, RuntimeDep
from apikeyrouter_proxy.api.management.validation import from_validation_error
from apikeyrouter_proxy.middleware.errors import RouteNotFound, Unprocessable
from apikeyrouter_proxy.schemas.budgets import BudgetDeleted, BudgetView
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.openapi import json_body, model_schema
from apikeyrouter_proxy.services.governance_store import persist_budget
from apikeyrouter_proxy.services.runtime import ProxyRuntime
from apikeyrouter_proxy.services.spend import BudgetReading, budget_reading, budget_readings

router = APIRouter(prefix=API_PREFIX + "/budgets", tags=["budgets"])
_ERRORS = error_responses(401, 403, 404, 422)
BudgetId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def budget_view(runtime: ProxyRuntime, reading: BudgetReading) -> BudgetView:
    status = reading.status
    budget = status.budget
    return BudgetView(
        id=budget.id,
        source=runtime.service.governance.budget_source(budget.id),
        budget=budget,
        spent_usd=status.spent_usd,
        reserved_usd=reading.reserved_usd,
        remaining_usd=status.remaining_usd,
        exceeded=status.exceeded,
        period_index=status.period_index,
        period_start=status.period_start,
        period_end=status.period_end,
    )


def _get(runtime: ProxyRuntime, budget_id: str) -> Budget:
    budget = runtime.router.cost.get_budget(budget_id)
    if budget is None:
        raise RouteNotFound(f"no budget {budget_id!r}", param="budget_id", code="budget_not_found")
    return budget


@router.get("", response_model=list[BudgetView], responses=_ERRORS)
async def list_budgets(runtime: RuntimeDep) -> list[BudgetView]:
    """Every budget with its spend, in-flight reservations, remainder and period bounds."""
    return [budget_view(runtime, r) for r in await budget_readings(runtime.router)]


@router.get("/{budget_id}", response_model=BudgetView, responses=_ERRORS)
async def get_budget(budget_id: BudgetId, runtime: RuntimeDep) -> BudgetView:
    budget = _get(runtime, budget_id)
    return budget_view(runtime, await budget_reading(runtime.router, budget))


@router.put(
    "/{budget_id}",
    response_model=BudgetView,
    responses={**_ERRORS, 201: {"model": BudgetView, "description": "Created"}},
    openapi_extra=json_body(model_schema(Budget, optional=("id",))),
)
async def put_budget(
    budget_id: BudgetId,
    body: Annotated[dict[str, Any], Body()],
    runtime: RuntimeDep,
    response: Response,
) -> BudgetView:
    """Create (201) or replace (200) a budget; the body is the budget, its ``id`` optional.
    Enforced from the next request on."""
    data = dict(body)
    if data.setdefault("id", budget_id) != budget_id:
        raise Unprocessable("id: the body names a different budget than the URL", param="id")
    try:
        budget = Budget.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    previous = runtime.service.governance.put_budget(budget)
    await persist_budget(runtime, budget.id)
    response.status_code = 201 if previous is None else 200
    return budget_view(runtime, await budget_reading(runtime.router, budget))


@router.delete("/{budget_id}", response_model=BudgetDeleted, responses=_ERRORS)
async def delete_budget(budget_id: BudgetId, runtime: RuntimeDep) -> BudgetDeleted:
    """Stop enforcing a budget (its spend counter simply expires with its period)."""
    governance = runtime.service.governance
    source = governance.budget_source(budget_id)
    _get(runtime, budget_id)
    governance.remove_budget(budget_id)
    await persist_budget(runtime, budget_id)
    return BudgetDeleted(id=budget_id, source=source)
